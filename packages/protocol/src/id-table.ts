/**
 * The outstanding requests of one link, by request id: slot `id & mask` of a power-of-two array
 * kept at most half full, instead of a Map. A serial round trip inserts and deletes one entry each
 * time; V8's hash Map then rebuilds its table every few round trips (deleted entries are only
 * dropped by a rehash), an array slot is a store. Ids are handed out here (allocId): sequential from
 * 1 (wrapping after 2^32 − 1 back to 1, as before), skipping any id whose slot is taken, so no two
 * entries share a slot and a lookup is one load and one compare (a reply's `re` that is not an
 * outstanding id, whatever its value, finds nothing). The table grows (doubling; ids distinct modulo
 * n stay distinct modulo 2n) and never shrinks: at most 2 × the link's maxOutstandingRequests slots.
 * test/id-table.test.ts compares it with a Map under random operations (fast-check).
 */
export interface IdEntry {
  /** The request id (set by the caller from allocId()). */
  id: number;
  /** Insertion order (set by the table). */
  seq: number;
}

export class IdTable<T extends IdEntry> {
  private slots: (T | undefined)[];
  private mask: number;
  private nextId = 1;
  private nextSeq = 0;
  /** Entries held. */
  size = 0;

  constructor(initialSlots = 16) {
    let n = 4;
    while (n < initialSlots) n *= 2;
    this.slots = new Array<T | undefined>(n).fill(undefined);
    this.mask = n - 1;
  }

  /** An id no entry holds, for the next set(); room for it is made first (at most half full). */
  allocId(): number {
    if ((this.size + 1) * 2 > this.slots.length) this.grow();
    for (;;) {
      const id = this.nextId;
      this.nextId = id >= 0xffffffff ? 1 : id + 1;
      if (this.slots[id & this.mask] === undefined) return id;
    }
  }

  /** Adds an entry whose id came from the latest allocId() (its slot is free). */
  set(e: T): void {
    const i = e.id & this.mask;
    if (this.slots[i] !== undefined) throw new Error(`id table: slot of ${e.id} taken`);
    e.seq = this.nextSeq++;
    this.slots[i] = e;
    this.size++;
  }

  get(id: number): T | undefined {
    const e = this.slots[id & this.mask];
    return e !== undefined && e.id === id ? e : undefined;
  }

  /** Removes and returns the entry of `id`, if held. */
  take(id: number): T | undefined {
    const i = id & this.mask;
    const e = this.slots[i];
    if (e === undefined || e.id !== id) return undefined;
    this.slots[i] = undefined;
    this.size--;
    return e;
  }

  /** Every entry, in insertion order (a copy: the table may change while it is walked). */
  entries(): T[] {
    const out: T[] = [];
    if (this.size === 0) return out;
    for (const e of this.slots) if (e !== undefined) out.push(e);
    return out.sort((a, b) => a.seq - b.seq);
  }

  clear(): void {
    this.slots.fill(undefined);
    this.size = 0;
  }

  private grow(): void {
    const old = this.slots;
    const n = old.length * 2;
    this.slots = new Array<T | undefined>(n).fill(undefined);
    this.mask = n - 1;
    for (const e of old) if (e !== undefined) this.slots[e.id & this.mask] = e;
  }
}
