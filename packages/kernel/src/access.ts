/**
 * User memory access as a process (worker thread) performs it: walk the page table in shared
 * memory, set young/dirty with compareExchange, copy the bytes, or trap to the kernel.
 *
 * In-flight protocol (the TLB-shootdown half that lives in the process): every access to one page
 * runs inside a window announced in the per-process control word C_SEQ, which is odd while the
 * window is open. The window opens BEFORE the PTE is read and closes AFTER the data access. A
 * kernel path that changed a PTE waits (tlb.ts) until C_SEQ is even or has moved on, so no access
 * that could have used the old entry is still running when it frees, reuses, copies or writes out
 * the frame. A window never spans a page fault (the fault is taken with the window closed).
 *
 * Leases: an entry with PTE_LEASED (a driver frame held under a lease from its home instance) is used
 * only if the lease recorded in the frame's descriptor (D_PRIVATE = slot) is valid on this thread's
 * own clock; otherwise the access leaves its window and takes the page fault exactly as for a missing
 * entry (the driver's fault op waits for renewal). Checked inside the window, so it holds even when
 * the kernel thread has not run since the lease ran out (a stopped and continued instance). Only
 * leased entries pay for it: one descriptor load, the table read (lease.ts) and one clock read.
 *
 * Software TLB (read32 only). Like a CPU, the process caches translations: a direct-mapped table of
 * TLB_SIZE entries (virtual page → frame, and whether the entry is leased), tagged AS A WHOLE with the
 * TLB generation (C_TLB_GEN) it was filled under. A read32 that hits is: the tag compare, the data
 * load D (an Atomics.load, like the raw baseline's), and a PLAIN read G of C_TLB_GEN (an Atomics.load
 * is a call to a builtin in V8, as costly as all the rest). If the generation still equals the tag
 * the value is returned; otherwise it is discarded, the table emptied and retagged, and the read
 * walks the page table inside a window as above (and caches what it found). A hit opens no window,
 * so a shootdown does not wait for it; instead two rules hold:
 *
 *   Rule K (kernel, tlb.ts): a PTE change that removes or moves read access (zap, swap, migration
 *   or 'none' device entry, PROT_NONE, another frame) is followed by a shootdown, which moves
 *   C_TLB_GEN on (an Atomics write) and then performs an Atomics load BEFORE the kernel frees,
 *   reuses, copies or writes out the old frame — the order the window protocol already requires.
 *   A change that only adds read access to the same frame (none → present, a W, Y or D bit set,
 *   device 'readonly' → normal) needs nothing: a cached entry is still a correct translation. A
 *   change that must be noticed by the NEXT access without waiting for any (PTE_YOUNG cleared by
 *   page_referenced, PTE_LEASED added) calls tlbInvalidate, which only moves the generation on.
 *   Rule F (fill, read32Slow): an entry is cached only from a walk that began after the process
 *   read the generation the table is tagged with, and after it published that tag in C_TLB_ACK.
 *
 * Claim: a TLB hit never returns a value written to a frame after the shootdown that followed the
 * change of the PTE it was cached from began, i.e. it guarantees exactly what the window protocol
 * guarantees a read. Proof. The entry was cached from a walk that read PTE P (mapping frame F)
 * after the process read generation T and stored C_TLB_ACK = T (rule F). The hit returned, so its
 * generation load G read T. If the PTE still maps F, the hit is a read through the page table. Else
 * a change S came after the walk (which saw P), and by rule K a generation move B after S, and B
 * precedes every write X to F that the page table no longer allowed (freeing, reuse by another
 * page or owner, a copy). B reads C_TLB_ACK after S, hence after the walk and the ack store, so it
 * reads T and never writes T (tlbInvalidate skips it; so do all later moves while the ack is T:
 * no ABA even after 2^32 moves). If the data load D had read such an X, then G — after D in
 * program order — reads B's generation or a later one, not T: contradiction. So D read F before
 * B. Why G sees B when D saw X. In the ECMAScript memory model this is immediate when X is an
 * Atomics write: B happens-before X (the kernel's program order, or, for another process writing F
 * after it was mapped there again, through the Atomics PTE store that process's walk read), X
 * synchronizes-with D (both seq-cst), D is before G in program order, so B happens-before G; and by
 * the model's coherent-reads rule no read — a plain one included — that B happens-before may read
 * the generation B overwrote. For plain writes X (frames copied or zeroed with TypedArray.set) the
 * model gives no such edge, and the argument rests, as a seqlock reader's does in C, on how V8
 * compiles it: its compiler never moves an access across a seq-cst Atomics operation (nor a load
 * above a call), so D then G and B then the rule-K load then X reach the CPU in program order; on
 * x64, D and G are MOVs, which TSO never reorders with each other, and B is an XCHG, which no later
 * store passes; on arm64, D is an LDAR (acquire: G is ordered after it), B an STLR (or LDAXR/STLXR,
 * LDADDAL) and the rule-K load an LDAR, which the architecture keeps in order (RCsc) and before every
 * later access; both are multi-copy atomic, so that order holds for every observer, also for the
 * writes of another process that maps F later (they follow its read of a PTE stored after B).
 * test/tlb-cache.test.ts reads a page in a tight loop while the kernel migrates, zaps and poisons
 * the old frames: it fails when rule K's generation move is skipped.
 *
 * Writes (write32, cas32, write) and byte-range reads (read, readInto) do not use the TLB: they
 * walk inside a window every time (a write through a stale translation cannot be taken back).
 */
import { KernelError, PAGE_SIZE } from './api.js';
import { readLeaseDeadline } from './lease.js';
import { D_PRIVATE, DESC_WORDS } from './page.js';
import {
  L1_SHIFT,
  PT_ENTRIES,
  PTE_DIRTY,
  PTE_LEASED,
  PTE_PFN_SHIFT,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
} from './pagetable.js';

/** Control words shared between one process and the kernel. */
export const C_SEQ = 0;
/** Number of kernel shootdowns waiting on C_SEQ: the process notifies only when non-zero. */
export const C_SHOOT_WAITERS = 1;
/** 1 while a fault is pending in the kernel; the kernel stores 0 and notifies when resolved. */
export const C_FAULT_STATE = 2;
export const C_FAULT_RESULT = 3;
/** Set by the kernel when the process is being killed: pending and future faults end it. */
export const C_KILLED = 4;
/**
 * TLB generation: moved on by every TLB shootdown of the mm (tlb.ts, kernel thread only), read by the
 * process after each read through its software TLB (see "Software TLB" above).
 */
export const C_TLB_GEN = 5;
/**
 * The generation the process's software TLB is tagged with (stored by the process whenever it
 * retags its TLB; read by the kernel when it moves C_TLB_GEN on, so the generation never comes
 * back to this value while entries are tagged with it: no ABA after 2^32 shootdowns).
 */
export const C_TLB_ACK = 6;
export const CTL_WORDS = 8;

export const FAULT_RETRY = 0;
export const FAULT_SIGSEGV = 1;
export const FAULT_SIGBUS = 2;
export const FAULT_KILLED = 3;

/** Entries of the software TLB (direct-mapped by virtual page number). */
export const TLB_SIZE = 1024;
const TLB_MASK = TLB_SIZE - 1;
/** Tag bit of a leased entry (page numbers are < 2^20): a plain hit compares the tag with the page number alone. */
const TAG_LEASED = 1 << 20;
const TAG_EMPTY = -1;
/** Most pages one readInto window covers (a shootdown may wait for all of them: keep it short). */
const WINDOW_PAGES = 16;

/**
 * Copies between physical memory (a SharedArrayBuffer) and a user's buffer. V8 copies into or out
 * of a SharedArrayBuffer with relaxed atomic accesses, a machine word at a time only when the
 * source and the destination are both 8-byte aligned, else ONE BYTE at a time (64 pages: ~25 us
 * against ~150 us measured with Node 20; PhysMem.writeFrame has the same cure). So: the < 8 bytes
 * up to the shared side's first 8-byte boundary are copied as they are; the rest, if the user's
 * side is not 8-byte aligned there, goes through STAGE, a private aligned buffer: shared <-> STAGE
 * is a word copy (both aligned), STAGE <-> user a plain memcpy (neither side shared).
 * test/user-copy.test.ts checks every alignment pair. Process-worker thread only (one STAGE per
 * thread: module state is per worker).
 */
const STAGE = new Uint8Array(WINDOW_PAGES * 4096);
/** Shorter copies are not worth two. */
const STAGE_MIN = 256;

/** dst[at, at+n) = shared[off, off+n). n <= STAGE.length. */
export function copyFromShared(
  shared: Uint8Array,
  off: number,
  n: number,
  dst: Uint8Array,
  at: number,
): void {
  if (n < STAGE_MIN) {
    dst.set(shared.subarray(off, off + n), at);
    return;
  }
  const head = (8 - (off & 7)) & 7;
  if (head > 0) dst.set(shared.subarray(off, off + head), at);
  const o = off + head;
  const a = at + head;
  const rest = n - head;
  if (((dst.byteOffset + a) & 7) === 0) dst.set(shared.subarray(o, o + rest), a);
  else {
    STAGE.set(shared.subarray(o, o + rest));
    dst.set(STAGE.subarray(0, rest), a);
  }
}

/** shared[off, off+n) = src[from, from+n). n <= STAGE.length. */
export function copyToShared(
  shared: Uint8Array,
  off: number,
  src: Uint8Array,
  from: number,
  n: number,
): void {
  if (n < STAGE_MIN) {
    shared.set(src.subarray(from, from + n), off);
    return;
  }
  const head = (8 - (off & 7)) & 7;
  if (head > 0) shared.set(src.subarray(from, from + head), off);
  const o = off + head;
  const f = from + head;
  const rest = n - head;
  if (((src.byteOffset + f) & 7) === 0) shared.set(src.subarray(f, f + rest), o);
  else {
    STAGE.set(src.subarray(f, f + rest));
    shared.set(STAGE.subarray(0, rest), o);
  }
}

/**
 * Module-private copies of C_TLB_GEN and PT_ENTRIES - 1 for read32's hit path: V8 folds a private
 * module constant into the code, but loads (and hole-checks) an exported or imported one on every use.
 */
const GEN_WORD = 5;
const WORD_IN_PAGE = 1023;
/** Frames whose int32 index (pfn * 1024) fits an int32 are cached; higher frames always walk. */
const TLB_MAX_PFN = 1 << 21;

/** The global `performance` is a getter in Node: read it once (a lease check reads the clock per access). */
const perf = performance;

if (GEN_WORD !== C_TLB_GEN || WORD_IN_PAGE !== PT_ENTRIES - 1)
  throw new Error('access.ts: constants disagree');

export type FaultPoster = (address: number, write: boolean) => void;

/** Thrown inside the process when it is being killed; never caught by programs' signal handlers. */
export class ProcessKilled extends Error {
  constructor() {
    super('process killed');
    this.name = 'ProcessKilled';
  }
}

export class UserAccess {
  private readonly bytes: Uint8Array;
  private readonly words: Int32Array;
  private readonly ctl: Int32Array;
  private readonly rootBase: number;
  private readonly desc: Int32Array;
  private readonly leaseDeadlines: Float64Array;
  private readonly leaseEpoch: Int32Array;
  private readonly clockOrigin = performance.timeOrigin;
  /**
   * The software TLB: entry i is [tag, frame's int32 index] at [2i, 2i+1]; tag = page number
   * (| TAG_LEASED), or TAG_EMPTY. Every entry is valid for generation `tlbGen` (file comment).
   */
  private readonly tlb = new Int32Array(TLB_SIZE * 2).fill(TAG_EMPTY);
  private tlbGen = 0;
  /** The PTE the last successful enter() used. */
  private lastPte = 0;

  constructor(
    mem: SharedArrayBuffer,
    ctl: SharedArrayBuffer,
    rootPfn: number,
    private readonly postFault: FaultPoster,
    private readonly faultTimeoutMs: number,
    desc: SharedArrayBuffer,
    leases: SharedArrayBuffer,
  ) {
    this.bytes = new Uint8Array(mem);
    this.words = new Int32Array(mem);
    this.ctl = new Int32Array(ctl);
    this.rootBase = rootPfn * PT_ENTRIES;
    this.desc = new Int32Array(desc);
    this.leaseDeadlines = new Float64Array(leases);
    this.leaseEpoch = new Int32Array(leases, 0, 1);
  }

  /**
   * The lease of a PTE_LEASED entry is valid now (on this thread's clock; see lease.ts). The slot is
   * a plain (not Atomics) read of the descriptor: the kernel stores it before the PTE that refers to
   * it, and this thread read that PTE with Atomics.load (on a walk; a TLB entry is cached from such a
   * walk, and a same-frame installPte that sets a new slot moves the TLB generation on), so the store
   * happens-before this read (and int32 reads do not tear). Cost: this read, the lease-table read,
   * one clock read.
   */
  private leaseHeld(pte: number): boolean {
    return this.leaseHeldPfn(pte >>> PTE_PFN_SHIFT);
  }

  private leaseHeldPfn(pfn: number): boolean {
    const slot = this.desc[pfn * DESC_WORDS + D_PRIVATE];
    const deadline = readLeaseDeadline(this.leaseDeadlines, this.leaseEpoch, slot);
    return deadline > this.clockOrigin + perf.now();
  }

  /**
   * Open the window for one page and translate `va`. Returns the byte offset in physical memory of
   * `va`; the window is then open and the caller MUST call `leave()` right after its data access.
   */
  private enter(va: number, write: boolean): number {
    for (;;) {
      Atomics.add(this.ctl, C_SEQ, 1);
      const off = this.translate(va, write);
      if (off >= 0) return off;
      this.leave();
      this.fault(va, write);
    }
  }

  /**
   * The walk of enter(), with the window ALREADY OPEN: the byte offset of `va` in physical memory,
   * young (and for a write dirty) set; or -1 if the access needs a page fault (the caller leaves
   * its window before taking it).
   */
  private translate(va: number, write: boolean): number {
    const words = this.words;
    const r = Atomics.load(words, this.rootBase + (va >>> L1_SHIFT));
    if (!(r & PTE_PRESENT)) return -1;
    const pi = (r >>> PTE_PFN_SHIFT) * PT_ENTRIES + ((va >>> 12) & (PT_ENTRIES - 1));
    let pte = Atomics.load(words, pi);
    while (pte & PTE_PRESENT && (!write || pte & PTE_WRITE)) {
      if (pte & PTE_LEASED && !this.leaseHeld(pte)) return -1; // expired: fault as if not present
      const want = pte | PTE_YOUNG | (write ? PTE_DIRTY : 0);
      const prev = want === pte ? pte : Atomics.compareExchange(words, pi, pte, want);
      if (prev === pte) {
        this.lastPte = pte;
        return (pte >>> PTE_PFN_SHIFT) * PAGE_SIZE + (va & (PAGE_SIZE - 1));
      }
      pte = prev;
    }
    return -1;
  }

  private leave(): void {
    Atomics.add(this.ctl, C_SEQ, 1);
    if (Atomics.load(this.ctl, C_SHOOT_WAITERS) !== 0) Atomics.notify(this.ctl, C_SEQ);
  }

  /** Trap to the kernel and sleep until it resolves the fault. Throws the signal it delivers. */
  private fault(va: number, write: boolean): void {
    const ctl = this.ctl;
    if (Atomics.load(ctl, C_KILLED)) throw new ProcessKilled();
    Atomics.store(ctl, C_FAULT_STATE, 1);
    this.postFault(va, write);
    const deadline = Date.now() + this.faultTimeoutMs;
    while (Atomics.load(ctl, C_FAULT_STATE) === 1) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new KernelError('SIGBUS', `page fault at 0x${va.toString(16)} not resolved in time`);
      Atomics.wait(ctl, C_FAULT_STATE, 1, left);
    }
    const res = Atomics.load(ctl, C_FAULT_RESULT);
    if (res === FAULT_RETRY) return;
    if (res === FAULT_KILLED) throw new ProcessKilled();
    const sig = res === FAULT_SIGSEGV ? 'SIGSEGV' : 'SIGBUS';
    throw new KernelError(sig, `${write ? 'write' : 'read'} at 0x${va.toString(16)}`);
  }

  private static checkRange(addr: number, len: number): void {
    if (!Number.isInteger(addr) || !Number.isInteger(len) || addr < 0 || len < 0 || addr + len > 2 ** 32) {
      throw new KernelError('EFAULT', `bad user range 0x${Number(addr).toString(16)}+${len}`);
    }
  }

  /**
   * Copy [addr, addr + dst.length) into dst. One window covers up to WINDOW_PAGES pages: each page
   * is walked inside it (as enter() would) and pages that sit in consecutive frames are copied with
   * one `set`; a page that needs a fault ends the window first (a window never spans a fault).
   */
  readInto(addr: number, dst: Uint8Array): void {
    UserAccess.checkRange(addr, dst.length);
    const bytes = this.bytes;
    const len = dst.length;
    let done = 0;
    while (done < len) {
      let runOff = this.enter(addr + done, false); // window open
      let runAt = done;
      let runLen = Math.min(len - done, PAGE_SIZE - ((addr + done) & (PAGE_SIZE - 1)));
      done += runLen;
      for (let pages = 1; done < len && pages < WINDOW_PAGES; pages++) {
        const off = this.translate(addr + done, false); // page-aligned from here on
        if (off < 0) break; // needs a fault: copy what we have, leave; enter() above takes it
        const n = Math.min(len - done, PAGE_SIZE);
        if (off !== runOff + runLen) {
          copyFromShared(bytes, runOff, runLen, dst, runAt);
          runOff = off;
          runAt = done;
          runLen = 0;
        }
        runLen += n;
        done += n;
      }
      copyFromShared(bytes, runOff, runLen, dst, runAt);
      this.leave();
    }
  }

  read(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.readInto(addr, out);
    return out;
  }

  write(addr: number, src: Uint8Array): void {
    UserAccess.checkRange(addr, src.length);
    const bytes = this.bytes;
    let done = 0;
    const len = src.length;
    while (done < len) {
      const va = addr + done;
      const n = Math.min(len - done, PAGE_SIZE - (va & (PAGE_SIZE - 1)));
      const off = this.enter(va, true);
      copyToShared(bytes, off, src, done, n);
      this.leave();
      done += n;
    }
  }

  private static checkWord(addr: number): void {
    UserAccess.checkRange(addr, 4);
    if (addr & 3) throw new KernelError('EINVAL', `unaligned 32-bit access at 0x${addr.toString(16)}`);
  }

  /** One aligned 32-bit read. A TLB hit is the whole fast path (file comment: "Software TLB"). */
  read32(addr: number): number {
    if ((addr & 3) === 0 && addr === addr >>> 0) {
      const vpn = addr >>> 12;
      const i = (vpn & TLB_MASK) << 1;
      const tlb = this.tlb;
      const tag = tlb[i];
      // a leased entry is used only while its lease holds, checked on every access as the walk does
      if (tag === vpn || (tag === (vpn | TAG_LEASED) && this.leaseHeldPfn(tlb[i + 1] >>> 10))) {
        const v = Atomics.load(this.words, tlb[i + 1] + ((addr >>> 2) & WORD_IN_PAGE));
        // A plain read of the generation, deliberately (the file comment proves it suffices): an
        // Atomics.load is a builtin call in V8, as costly as the whole rest of this path.
        if (this.ctl[GEN_WORD] === this.tlbGen) return v;
      }
    }
    return this.read32Slow(addr);
  }

  /** Empty the TLB and tag it with generation `g`, published in C_TLB_ACK before any fill (rule F). */
  private tlbRetag(g: number): void {
    this.tlb.fill(TAG_EMPTY);
    this.tlbGen = g;
    Atomics.store(this.ctl, C_TLB_ACK, g);
  }

  /**
   * read32 that missed, whose lease expired or whose generation moved on: walk in a window (the
   * walk checks a lease itself and faults if it expired), then cache what the walk used.
   */
  private read32Slow(addr: number): number {
    UserAccess.checkWord(addr);
    const tlb = this.tlb;
    const vpn = addr >>> 12;
    const i = (vpn & TLB_MASK) << 1;
    // Rule F: the generation is read (and the table retagged if it moved) before the walk.
    const g = Atomics.load(this.ctl, C_TLB_GEN);
    if (g !== this.tlbGen) this.tlbRetag(g);
    tlb[i] = TAG_EMPTY; // (an expired leased entry) until the walk below succeeds
    const off = this.enter(addr, false);
    const v = Atomics.load(this.words, off >>> 2);
    this.leave();
    const pfn = this.lastPte >>> PTE_PFN_SHIFT;
    if (pfn < TLB_MAX_PFN) {
      tlb[i] = this.lastPte & PTE_LEASED ? vpn | TAG_LEASED : vpn;
      tlb[i + 1] = pfn << 10;
    }
    return v;
  }

  write32(addr: number, v: number): void {
    UserAccess.checkWord(addr);
    const off = this.enter(addr, true);
    Atomics.store(this.words, off >>> 2, v | 0);
    this.leave();
  }

  /** Compare-and-swap a 32-bit word; returns the old value. Takes a write fault even if it fails. */
  cas32(addr: number, expect: number, v: number): number {
    UserAccess.checkWord(addr);
    const off = this.enter(addr, true);
    const old = Atomics.compareExchange(this.words, off >>> 2, expect | 0, v | 0);
    this.leave();
    return old;
  }
}
