/**
 * The driver-side reverse map: for every exported frame, which remote instance maps it, for which
 * segment page, through which permit (apid), read or write, in which session epoch.
 *
 * Layout (struct of arrays, one slot per entry, singly linked per frame):
 *   next   Int32   4 B   next entry of the same frame (-1 ends the chain; also the free list)
 *   seg    Uint32  4 B   segment slot (driver-wide index)
 *   page   Uint32  4 B   bits 0-30: page index within the segment (< 2^31: a segment is at most
 *                        2^32 bytes = 2^20 pages); bit 31: write access
 *   apid   Uint32  4 B   permit slot
 *   epoch  Uint32  4 B   the mapper's session epoch when the entry was made, modulo 2^32 (compare
 *                        with epochAtMost: epochs of one node only grow, by far less than 2^31)
 *   node   Uint16  2 B   instance index (up to 65535 peers)
 * = 22 bytes per entry, plus `head`, an Int32 per frame number seen (4 B per frame, shared by all
 * entries of the frame). The frame of an entry is not stored: every way to reach an entry starts
 * from its frame's chain. Capacity doubles on demand; `bytes()` reports what is allocated.
 *
 * Invariant (checked by the driver, asserted in tests): PG_external_rmap is set on a frame iff its
 * chain is non-empty.
 */
/** Write access: the top bit of an entry's page word. */
const WRITE_BIT = 0x80000000;
const PAGE_MASK = 0x7fffffff;
/** Entry bytes per slot (see Layout). */
const SLOT_BYTES = 22;

/** ReverseMap.pageMask bits. */
export const PM_ANY = 1;
export const PM_WRITE = 2;
export const PM_OTHER = 4;
export const PM_OTHER_WRITE = 8;

export interface RmapEntry {
  readonly idx: number;
  readonly pfn: number;
  readonly seg: number;
  readonly page: number;
  readonly node: number;
  readonly apid: number;
  readonly epoch: number;
  readonly write: boolean;
}

export class ReverseMap {
  private cap = 0;
  private next = new Int32Array(0);
  private seg = new Uint32Array(0);
  private page = new Uint32Array(0);
  private apid = new Uint32Array(0);
  private epoch = new Uint32Array(0);
  private node = new Uint16Array(0);
  private head = new Int32Array(0);
  private freeList = -1;
  private used = 0;

  constructor(initialCapacity = 256) {
    this.grow(initialCapacity);
  }

  get size(): number {
    return this.used;
  }

  /** Bytes held by the map's arrays. */
  bytes(): number {
    return this.cap * SLOT_BYTES + this.head.length * 4;
  }

  /** Add or update the entry (pfn, node, seg, page). Returns true if a new entry was added. */
  add(
    pfn: number,
    node: number,
    seg: number,
    page: number,
    apid: number,
    epoch: number,
    write: boolean,
  ): boolean {
    if (!Number.isInteger(page) || page < 0 || page > PAGE_MASK) throw new RangeError(`rmap: page ${page}`);
    const found = this.find(pfn, node, seg, page);
    if (found >= 0) {
      this.apid[found] = apid;
      this.epoch[found] = epoch;
      this.page[found] = write ? (page | WRITE_BIT) >>> 0 : page;
      return false;
    }
    if (this.freeList < 0) this.grow(this.cap * 2);
    const i = this.freeList;
    this.freeList = this.next[i];
    this.ensureHead(pfn);
    this.seg[i] = seg;
    this.page[i] = write ? (page | WRITE_BIT) >>> 0 : page;
    this.apid[i] = apid;
    this.epoch[i] = epoch;
    this.node[i] = node;
    this.next[i] = this.head[pfn];
    this.head[pfn] = i;
    this.used++;
    return true;
  }

  find(pfn: number, node: number, seg: number, page: number): number {
    if (pfn < 0 || pfn >= this.head.length) return -1;
    for (let i = this.head[pfn]; i >= 0; i = this.next[i]) {
      if (this.node[i] === node && this.seg[i] === seg && (this.page[i] & PAGE_MASK) === page) return i;
    }
    return -1;
  }

  /**
   * The slot of the first entry of frame `pfn` when every entry of the frame belongs to one segment
   * page (the usual exported frame: one page, held by any number of nodes); -1 if the frame has no
   * entry, -2 if its entries belong to more than one segment page. Read it with segAt / pageAt.
   */
  soleOwner(pfn: number): number {
    if (pfn < 0 || pfn >= this.head.length) return -1;
    const first = this.head[pfn];
    if (first < 0) return -1;
    const seg = this.seg[first];
    const page = this.page[first] & PAGE_MASK;
    for (let i = this.next[first]; i >= 0; i = this.next[i]) {
      if (this.seg[i] !== seg || (this.page[i] & PAGE_MASK) !== page) return -2;
    }
    return first;
  }

  /** The segment slot of the entry in slot `i`. */
  segAt(i: number): number {
    return this.seg[i];
  }

  /** The segment page of the entry in slot `i`. */
  pageAt(i: number): number {
    return this.page[i] & PAGE_MASK;
  }

  isEmpty(pfn: number): boolean {
    return pfn < 0 || pfn >= this.head.length || this.head[pfn] < 0;
  }

  /**
   * Entries of segment page (seg, page) on the frame: a bit set, no allocation (hot paths: grants,
   * invalidations). Bit 0: some entry; bit 1: some write entry; bit 2: some entry of an instance
   * other than `node` (when given); bit 3: some write entry of such an instance.
   */
  pageMask(pfn: number, seg: number, page: number, node = -1): number {
    if (pfn < 0 || pfn >= this.head.length) return 0;
    let m = 0;
    for (let i = this.head[pfn]; i >= 0; i = this.next[i]) {
      const pw = this.page[i];
      if (this.seg[i] !== seg || (pw & PAGE_MASK) !== page) continue;
      const w = pw >= WRITE_BIT;
      m |= w ? PM_ANY | PM_WRITE : PM_ANY;
      if (this.node[i] !== node) m |= w ? PM_OTHER | PM_OTHER_WRITE : PM_OTHER;
    }
    return m;
  }

  /** True if the frame holds an entry for segment page (seg, page). */
  hasPage(pfn: number, seg: number, page: number): boolean {
    if (pfn < 0 || pfn >= this.head.length) return false;
    for (let i = this.head[pfn]; i >= 0; i = this.next[i]) {
      if (this.seg[i] === seg && (this.page[i] & PAGE_MASK) === page) return true;
    }
    return false;
  }

  /**
   * Slots of the entries of segment page (seg, page) on the frame, appended to `out` (which the
   * caller may reuse): the allocation-free form of entries(pfn, seg, page). Read them with nodeAt,
   * epochAt, isWrite before the map changes.
   */
  slotsOf(pfn: number, seg: number, page: number, out: number[]): number[] {
    if (pfn < 0 || pfn >= this.head.length) return out;
    for (let i = this.head[pfn]; i >= 0; i = this.next[i]) {
      if (this.seg[i] === seg && (this.page[i] & PAGE_MASK) === page) out.push(i);
    }
    return out;
  }

  /**
   * The first slot of the entries of segment page (seg, page) on the frame, -1 if none; the next one
   * is nextSlotOf(slot, seg, page). slotsOf without a list: a walk that only reads (the map must not
   * change until it ends). The invalidation's page loop uses it (issue 15: slotsOf's list reset and
   * push cost a builtin call per page).
   */
  firstSlotOf(pfn: number, seg: number, page: number): number {
    if (pfn < 0 || pfn >= this.head.length) return -1;
    return this.matchFrom(this.head[pfn], seg, page);
  }

  /** The slot after `i` (from firstSlotOf) of the entries of (seg, page) on the same frame, -1 if none. */
  nextSlotOf(i: number, seg: number, page: number): number {
    return this.matchFrom(this.next[i], seg, page);
  }

  private matchFrom(i: number, seg: number, page: number): number {
    for (; i >= 0; i = this.next[i]) if (this.seg[i] === seg && (this.page[i] & PAGE_MASK) === page) return i;
    return -1;
  }

  nodeAt(i: number): number {
    return this.node[i];
  }

  epochAt(i: number): number {
    return this.epoch[i];
  }

  /** Whether the entry in slot `i` (from find) is a write entry. */
  isWrite(i: number): boolean {
    return this.page[i] >= WRITE_BIT;
  }

  /** Entries of a frame (optionally only those of one segment page). */
  entries(pfn: number, seg?: number, page?: number): RmapEntry[] {
    const out: RmapEntry[] = [];
    if (pfn < 0 || pfn >= this.head.length) return out;
    for (let i = this.head[pfn]; i >= 0; i = this.next[i]) {
      if (seg !== undefined && (this.seg[i] !== seg || (this.page[i] & PAGE_MASK) !== page)) continue;
      out.push(this.entry(i, pfn));
    }
    return out;
  }

  /** The entry in slot `i` of frame `pfn`'s chain (from find / slotsOf on that frame). */
  entry(i: number, pfn: number): RmapEntry {
    const pw = this.page[i];
    return {
      idx: i,
      pfn,
      seg: this.seg[i],
      page: pw & PAGE_MASK,
      node: this.node[i],
      apid: this.apid[i],
      epoch: this.epoch[i],
      write: pw >= WRITE_BIT,
    };
  }

  setWrite(i: number, write: boolean): void {
    const p = this.page[i] & PAGE_MASK;
    this.page[i] = write ? (p | WRITE_BIT) >>> 0 : p;
  }

  /** Remove the entry (pfn, node, seg, page); returns it, or undefined if absent. */
  remove(pfn: number, node: number, seg: number, page: number): RmapEntry | undefined {
    const i = this.unlink(pfn, node, seg, page);
    return i < 0 ? undefined : this.entry(i, pfn);
  }

  /** Remove the entry (pfn, node, seg, page) without building it; true if it was there. */
  delete(pfn: number, node: number, seg: number, page: number): boolean {
    return this.unlink(pfn, node, seg, page) >= 0;
  }

  /** Unlink the entry and put its slot on the free list (its fields stay readable until reused). */
  private unlink(pfn: number, node: number, seg: number, page: number): number {
    if (pfn < 0 || pfn >= this.head.length) return -1;
    let prev = -1;
    for (let i = this.head[pfn]; i >= 0; prev = i, i = this.next[i]) {
      if (this.node[i] === node && this.seg[i] === seg && (this.page[i] & PAGE_MASK) === page) {
        if (prev < 0) this.head[pfn] = this.next[i];
        else this.next[prev] = this.next[i];
        this.next[i] = this.freeList;
        this.freeList = i;
        this.used--;
        return i;
      }
    }
    return -1;
  }

  /** Every live entry matching `pred` (a scan over the slots: used by fencing and status). */
  filter(pred: (e: RmapEntry) => boolean): RmapEntry[] {
    const out: RmapEntry[] = [];
    for (let pfn = 0; pfn < this.head.length; pfn++) {
      for (let i = this.head[pfn]; i >= 0; i = this.next[i]) {
        const e = this.entry(i, pfn);
        if (pred(e)) out.push(e);
      }
    }
    return out;
  }

  /** The node indexes that have an entry (the driver's node prune: state.ts pruneNodes). */
  nodes(): Set<number> {
    const out = new Set<number>();
    for (let pfn = 0; pfn < this.head.length; pfn++)
      for (let i = this.head[pfn]; i >= 0; i = this.next[i]) out.add(this.node[i]);
    return out;
  }

  /** Frames with a non-empty chain. */
  frames(): number[] {
    const out: number[] = [];
    for (let pfn = 0; pfn < this.head.length; pfn++) if (this.head[pfn] >= 0) out.push(pfn);
    return out;
  }

  private ensureHead(pfn: number): void {
    if (pfn < this.head.length) return;
    let n = Math.max(64, this.head.length);
    while (n <= pfn) n *= 2;
    const h = new Int32Array(n).fill(-1);
    h.set(this.head);
    this.head = h;
  }

  private grow(n: number): void {
    const old = this.cap;
    const g = <T extends Int32Array | Uint32Array | Uint16Array>(a: T, C: new (n: number) => T): T => {
      const b = new C(n);
      b.set(a);
      return b;
    };
    this.next = g(this.next, Int32Array);
    this.seg = g(this.seg, Uint32Array);
    this.page = g(this.page, Uint32Array);
    this.apid = g(this.apid, Uint32Array);
    this.epoch = g(this.epoch, Uint32Array);
    this.node = g(this.node, Uint16Array);
    for (let i = n - 1; i >= old; i--) {
      this.next[i] = this.freeList;
      this.freeList = i;
    }
    this.cap = n;
  }
}

/**
 * True if the stored (32-bit) entry epoch is at most `epoch` (a full session epoch), in serial-number
 * arithmetic: session epochs of one node only grow (a Date.now()-based first epoch exceeds 2^32, so
 * the entry keeps the low 32 bits), and two live epochs of one node differ by far less than 2^31.
 */
export function epochAtMost(entryEpoch: number, epoch: number): boolean {
  return ((entryEpoch - (epoch >>> 0)) | 0) <= 0;
}
