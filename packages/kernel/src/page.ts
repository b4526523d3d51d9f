/**
 * Physical memory: page frames and page descriptors, both in SharedArrayBuffers.
 *
 * Frame `pfn` occupies bytes [pfn*4096, pfn*4096+4096) of `mem`. Its descriptor is four int32 words
 * in `desc` (see {@link DESC_WORDS}): flags, refcount, mapcount, private. Every descriptor word is
 * changed with `Atomics`, so workers may read them; only the kernel thread changes refcount and
 * mapcount. Frame 0 is reserved (never allocated), so a PTE value of 0 always means "none".
 *
 * Flags word width: 32 bits (an Int32Array element); bits 0..12 are used, 19 remain. The 2008 patch
 * needed a 64-bit-only flag bit; here the limit is the 32-bit word (documented in docs/kernel.md).
 */
import { KernelError, PAGE_SIZE, type Pfn } from './api.js';
import { sleepOn } from './atomics.js';

export const DESC_WORDS = 4;
export const D_FLAGS = 0;
export const D_REFCOUNT = 1;
export const D_MAPCOUNT = 2;
/**
 * Device owner id (a frame with device entries: always an anonymous page in ordinary VMAs) or lease
 * slot (a driver frame, allocPage, mapped with PTE_LEASED in driver VMAs; read by process workers).
 * The two never meet: device entries exist only in ordinary VMAs, leases only on driver frames.
 */
export const D_PRIVATE = 3;

export const PG_locked = 1 << 0;
export const PG_referenced = 1 << 1;
export const PG_dirty = 1 << 2;
export const PG_lru = 1 << 3;
export const PG_active = 1 << 4;
export const PG_swapcache = 1 << 5;
export const PG_external_rmap = 1 << 6;
export const PG_anon = 1 << 7;
export const PG_pagetable = 1 << 8;
export const PG_driver = 1 << 9;
export const PG_free = 1 << 10;
export const PG_device = 1 << 11;
export const PG_reserved = 1 << 12;

export const FLAG_NAMES: ReadonlyArray<readonly [number, string]> = [
  [PG_locked, 'locked'],
  [PG_referenced, 'referenced'],
  [PG_dirty, 'dirty'],
  [PG_lru, 'lru'],
  [PG_active, 'active'],
  [PG_swapcache, 'swapcache'],
  [PG_external_rmap, 'external_rmap'],
  [PG_anon, 'anon'],
  [PG_pagetable, 'pagetable'],
  [PG_driver, 'driver'],
  [PG_free, 'free'],
  [PG_device, 'device'],
  [PG_reserved, 'reserved'],
];

/**
 * Largest frame count: 4 GiB of physical memory. A PTE could address 2^24 frames (24-bit frame
 * number), but physical memory is one Uint8Array over one SharedArrayBuffer, and Node 20 caps a typed
 * array at 2^32 bytes (a larger kernel failed at boot with a bare RangeError), and the access path
 * turns byte offsets into word indexes with `>>> 2`, which is exact only below 2^32. The daemon's
 * --frames has the same bound.
 */
export const MAX_FRAMES = 1 << 20;

export function flagNames(flags: number): string[] {
  const out: string[] = [];
  for (const [bit, name] of FLAG_NAMES) if (flags & bit) out.push(name);
  return out;
}

/**
 * Pre-touch window (frames). A SharedArrayBuffer's memory is mapped lazily by the host: the first
 * write into a never-used 4 KiB frame takes a host page fault (and the host's zeroing), which was
 * measured at a few % of a remote read fault (the attacher copies the granted page into a fresh
 * frame while the faulting worker waits). Touching every frame at boot would commit all of physical
 * memory up front, so instead the kernel keeps the next PRETOUCH_AHEAD never-used frames touched,
 * off the fault path (setImmediate), topping the window up when allocation comes within half of it.
 * At most PRETOUCH_AHEAD * 4 KiB (1 MiB) more resident memory than the frames ever allocated.
 */
export const PRETOUCH_AHEAD = 256;
const PRETOUCH_BATCH = 16;

/** writeFrame's aligned staging copy of an unaligned source page (kernel thread only). */
const BOUNCE = new Uint8Array(PAGE_SIZE);

/** The source of zeroed frames (read only: never handed out). */
const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

export class PhysMem {
  readonly frames: number;
  readonly mem: SharedArrayBuffer;
  readonly descSab: SharedArrayBuffer;
  readonly bytes: Uint8Array;
  readonly words: Int32Array;
  readonly desc: Int32Array;
  private readonly freeStack: Int32Array;
  private nrFreeFrames = 0;
  /** Frames [1, touchedTo) have been handed out or pre-touched (their host pages exist). */
  private touchedTo = 1;
  private touchPending = false;
  /** Pre-touch up to here: PRETOUCH_AHEAD past the highest frame handed out. */
  private touchTarget = 0;

  constructor(frames: number) {
    if (!Number.isInteger(frames) || frames < 16 || frames > MAX_FRAMES) {
      throw new KernelError('EINVAL', `frames must be an integer in [16, ${MAX_FRAMES}]`);
    }
    this.frames = frames;
    this.mem = new SharedArrayBuffer(frames * PAGE_SIZE);
    this.descSab = new SharedArrayBuffer(frames * DESC_WORDS * 4);
    this.bytes = new Uint8Array(this.mem);
    this.words = new Int32Array(this.mem);
    this.desc = new Int32Array(this.descSab);
    this.freeStack = new Int32Array(frames);
    // Push in descending order so low frames are handed out first. Frame 0 is reserved.
    for (let pfn = frames - 1; pfn >= 1; pfn--) {
      this.freeStack[this.nrFreeFrames++] = pfn;
      this.desc[pfn * DESC_WORDS + D_FLAGS] = PG_free;
    }
    this.desc[D_FLAGS] = PG_reserved;
    this.pretouch(PRETOUCH_AHEAD);
  }

  /**
   * Make the host back frames [touchedTo, upTo). `Atomics.add(word, 0)` is a write to the host (so
   * it maps the page) that changes no value even if the frame were in use: safe on any frame, any
   * thread, at any time, and it leaves a never-used frame's contents (zero) as they were.
   */
  private pretouch(upTo: number): void {
    const end = Math.min(upTo, this.frames);
    const words = this.words;
    for (let pfn = this.touchedTo; pfn < end; pfn++) Atomics.add(words, pfn * (PAGE_SIZE >> 2), 0);
    if (end > this.touchedTo) this.touchedTo = end;
  }

  /**
   * Allocation handed out `pfn`: if it is within half a window of the untouched frames, top the
   * window up after this turn. Never-used frames are handed out in ascending order (the free stack
   * was filled descending; freed frames, already touched, are pushed on top), so the frames still
   * to come are those at and above `touchedTo`. The top-up runs in batches of PRETOUCH_BATCH frames,
   * one per turn of the event loop: a host page fault was measured at up to ~7 us on a loaded VM,
   * and a whole window in one turn would hold up the I/O (a fault's reply) queued behind it.
   */
  private aheadOf(pfn: Pfn): void {
    if (pfn + 1 + PRETOUCH_AHEAD > this.touchTarget) this.touchTarget = pfn + 1 + PRETOUCH_AHEAD;
    if (this.touchPending || pfn + (PRETOUCH_AHEAD >> 1) < this.touchedTo || this.touchedTo >= this.frames)
      return;
    this.scheduleTouch();
  }

  private scheduleTouch(): void {
    this.touchPending = true;
    setImmediate(() => {
      this.touchPending = false;
      this.pretouch(Math.min(this.touchTarget, this.touchedTo + PRETOUCH_BATCH));
      if (this.touchedTo < Math.min(this.touchTarget, this.frames)) this.scheduleTouch();
    }).unref();
  }

  get nrFree(): number {
    return this.nrFreeFrames;
  }

  /**
   * Take a free frame: zeroed (unless `zero` is false: the caller overwrites all of it in the same
   * synchronous section), refcount 1, flags 0. Returns -1 when none is free. Kernel thread only.
   */
  allocFrame(zero = true): Pfn {
    if (this.nrFreeFrames === 0) return -1;
    const pfn = this.freeStack[--this.nrFreeFrames];
    const d = pfn * DESC_WORDS;
    this.aheadOf(pfn);
    // a copy of a zero page, not fill(0): on a SharedArrayBuffer V8's fill is ~4x slower than set
    if (zero) this.bytes.set(ZERO_PAGE, pfn * PAGE_SIZE);
    Atomics.store(this.desc, d + D_FLAGS, 0);
    Atomics.store(this.desc, d + D_REFCOUNT, 1);
    Atomics.store(this.desc, d + D_MAPCOUNT, 0);
    Atomics.store(this.desc, d + D_PRIVATE, 0);
    return pfn;
  }

  /** Return a frame to the free list. The caller proved nothing refers to it (refcount reached 0). */
  freeFrame(pfn: Pfn): void {
    const d = pfn * DESC_WORDS;
    const locked = Atomics.load(this.desc, d + D_FLAGS) & PG_locked;
    Atomics.store(this.desc, d + D_FLAGS, PG_free | locked);
    Atomics.store(this.desc, d + D_REFCOUNT, 0);
    Atomics.store(this.desc, d + D_MAPCOUNT, 0);
    Atomics.store(this.desc, d + D_PRIVATE, 0);
    this.freeStack[this.nrFreeFrames++] = pfn;
  }

  isFree(pfn: Pfn): boolean {
    return (this.flags(pfn) & PG_free) !== 0;
  }

  valid(pfn: Pfn): boolean {
    return Number.isInteger(pfn) && pfn >= 1 && pfn < this.frames;
  }

  flags(pfn: Pfn): number {
    return Atomics.load(this.desc, pfn * DESC_WORDS + D_FLAGS);
  }
  setFlag(pfn: Pfn, bit: number): void {
    Atomics.or(this.desc, pfn * DESC_WORDS + D_FLAGS, bit);
  }
  clearFlag(pfn: Pfn, bit: number): void {
    Atomics.and(this.desc, pfn * DESC_WORDS + D_FLAGS, ~bit);
  }
  testFlag(pfn: Pfn, bit: number): boolean {
    return (this.flags(pfn) & bit) !== 0;
  }
  /** Atomically clear `bit` and return whether it was set. */
  testClearFlag(pfn: Pfn, bit: number): boolean {
    return (Atomics.and(this.desc, pfn * DESC_WORDS + D_FLAGS, ~bit) & bit) !== 0;
  }

  /**
   * Clear `bit` as "take the page lock, clear the bit, release the lock" would, in ONE atomic step:
   * a compareExchange of the flags word that succeeds only on a word without PG_locked, so the bit
   * still only changes while nobody else holds the lock, and no sleeper can be waiting for this
   * unlocked value (a sleeper waits on a locked word: nothing to notify). True if done (or the bit
   * was clear), false if someone holds the page lock (nothing changed). test/page.test.ts checks it.
   */
  clearFlagIfUnlocked(pfn: Pfn, bit: number): boolean {
    const idx = pfn * DESC_WORDS + D_FLAGS;
    for (;;) {
      const cur = Atomics.load(this.desc, idx);
      if (!(cur & bit)) return true;
      if (cur & PG_locked) return false;
      if (Atomics.compareExchange(this.desc, idx, cur, cur & ~bit) === cur) return true;
    }
  }

  refcount(pfn: Pfn): number {
    return Atomics.load(this.desc, pfn * DESC_WORDS + D_REFCOUNT);
  }
  getRef(pfn: Pfn): void {
    Atomics.add(this.desc, pfn * DESC_WORDS + D_REFCOUNT, 1);
  }
  /** Drop a reference; returns the new count. The caller frees the frame at 0. */
  dropRef(pfn: Pfn): number {
    const n = Atomics.sub(this.desc, pfn * DESC_WORDS + D_REFCOUNT, 1) - 1;
    if (n < 0) throw new Error(`refcount underflow on pfn ${pfn}`);
    return n;
  }
  mapcount(pfn: Pfn): number {
    return Atomics.load(this.desc, pfn * DESC_WORDS + D_MAPCOUNT);
  }
  addMapcount(pfn: Pfn, delta: number): number {
    return Atomics.add(this.desc, pfn * DESC_WORDS + D_MAPCOUNT, delta) + delta;
  }
  getPrivate(pfn: Pfn): number {
    return Atomics.load(this.desc, pfn * DESC_WORDS + D_PRIVATE);
  }
  setPrivate(pfn: Pfn, v: number): void {
    Atomics.store(this.desc, pfn * DESC_WORDS + D_PRIVATE, v);
  }

  /**
   * Copy `data` (PAGE_SIZE bytes, any buffer) into frame `pfn`. V8 copies into a SharedArrayBuffer
   * with relaxed atomic stores, a machine word at a time only when the source and the destination
   * are both word aligned, else ONE BYTE at a time: about 6x slower (64 pages from an odd offset:
   * ~150 us against ~25 us measured with Node 20). test/frame-copy.test.ts checks the contents from
   * every source alignment. A frame is
   * always aligned; a page decoded from a wire frame (a `bin` payload, wherever the message put it)
   * usually is not, so it is first copied into an aligned private buffer (a plain memcpy, no atomics:
   * neither side is shared) and from there into the frame.
   */
  writeFrame(pfn: Pfn, data: Uint8Array): void {
    if ((data.byteOffset & 7) === 0) this.bytes.set(data, pfn * PAGE_SIZE);
    else {
      BOUNCE.set(data);
      this.bytes.set(BOUNCE, pfn * PAGE_SIZE);
    }
  }

  frameBytes(pfn: Pfn): Uint8Array {
    return this.bytes.subarray(pfn * PAGE_SIZE, pfn * PAGE_SIZE + PAGE_SIZE);
  }

  copyFrame(from: Pfn, to: Pfn): void {
    this.bytes.copyWithin(to * PAGE_SIZE, from * PAGE_SIZE, from * PAGE_SIZE + PAGE_SIZE);
  }

  // ---- the page lock ---------------------------------------------------------------------------

  trylockPage(pfn: Pfn): boolean {
    return trylockPage(this.desc, pfn);
  }

  /**
   * Sleep until the page lock is ours (kernel thread: Atomics.waitAsync). Bounded: ETIMEDOUT.
   * Waiters wait on the flags word; unlockPage notifies it.
   */
  async lockPage(pfn: Pfn, timeoutMs = 5000): Promise<void> {
    const idx = pfn * DESC_WORDS + D_FLAGS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const cur = Atomics.load(this.desc, idx);
      if (!(cur & PG_locked)) {
        if (Atomics.compareExchange(this.desc, idx, cur, cur | PG_locked) === cur) return;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new KernelError('ETIMEDOUT', `lockPage(${pfn}) timed out after ${timeoutMs} ms`);
      await sleepOn(this.desc, idx, cur, left);
    }
  }

  unlockPage(pfn: Pfn): void {
    unlockPage(this.desc, pfn);
  }
}

/** Try to take the page lock without sleeping. Usable from any thread. */
export function trylockPage(desc: Int32Array, pfn: Pfn): boolean {
  const idx = pfn * DESC_WORDS + D_FLAGS;
  for (;;) {
    const cur = Atomics.load(desc, idx);
    if (cur & PG_locked) return false;
    if (Atomics.compareExchange(desc, idx, cur, cur | PG_locked) === cur) return true;
  }
}

/** Release the page lock and wake every sleeper (they re-compete). */
export function unlockPage(desc: Int32Array, pfn: Pfn): void {
  const idx = pfn * DESC_WORDS + D_FLAGS;
  const old = Atomics.and(desc, idx, ~PG_locked);
  if (!(old & PG_locked)) throw new KernelError('EPERM', `unlockPage(${pfn}): page not locked`);
  Atomics.notify(desc, idx);
}

/** Sleeping page lock for worker threads (Atomics.wait). Bounded: ETIMEDOUT. */
export function lockPageSync(desc: Int32Array, pfn: Pfn, timeoutMs = 5000): void {
  const idx = pfn * DESC_WORDS + D_FLAGS;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const cur = Atomics.load(desc, idx);
    if (!(cur & PG_locked)) {
      if (Atomics.compareExchange(desc, idx, cur, cur | PG_locked) === cur) return;
      continue;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new KernelError('ETIMEDOUT', `lockPage(${pfn}) timed out`);
    Atomics.wait(desc, idx, cur, left);
  }
}

/**
 * A count per frame (Map-like: get/set/delete, get gives undefined for 0; and Set-like: add/has), in
 * an Int32Array grown on demand: the kernel's device-entry counts, pins and driver frames, changed
 * once per page by ranged operations (a 1024-page update paid ~0.25 us per page for a Map's hashing).
 */
export class FrameCounts {
  private c = new Int32Array(64);
  private n = 0;
  private sum = 0;

  /** Frames with a non-zero count. */
  get size(): number {
    return this.n;
  }
  /** The sum of every count. */
  get total(): number {
    return this.sum;
  }
  get(pfn: Pfn): number | undefined {
    const v = pfn < this.c.length ? this.c[pfn] : 0;
    return v === 0 ? undefined : v;
  }
  has(pfn: Pfn): boolean {
    return pfn < this.c.length && this.c[pfn] !== 0;
  }
  set(pfn: Pfn, v: number): this {
    if (pfn >= this.c.length) {
      let len = this.c.length;
      while (len <= pfn) len *= 2;
      const g = new Int32Array(len);
      g.set(this.c);
      this.c = g;
    }
    const old = this.c[pfn];
    if (old === 0 && v !== 0) this.n++;
    else if (old !== 0 && v === 0) this.n--;
    this.sum += v - old;
    this.c[pfn] = v;
    return this;
  }
  /** Set-like: count 1. */
  add(pfn: Pfn): this {
    return this.set(pfn, 1);
  }
  delete(pfn: Pfn): boolean {
    if (pfn >= this.c.length || this.c[pfn] === 0) return false;
    this.sum -= this.c[pfn];
    this.c[pfn] = 0;
    this.n--;
    return true;
  }
}
