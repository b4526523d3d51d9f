/**
 * The kernel's reverse map: for every frame, each (mm, virtual address) whose PTE refers to it
 * (normal and device entries; swap and migration entries hold no frame reference).
 *
 * Layout: one slot per frame number in a dense array: nothing (unmapped), the one mapping (the usual
 * case: no list, no hashing), or the list of mappings of a frame mapped more than once. Ranged zaps
 * and installs touch one slot per page (a Map of lists cost two hash lookups per page).
 */
import type { Pfn } from './api.js';
import type { Mm } from './mm.js';

export interface RmapEntry {
  readonly mm: Mm;
  readonly va: number;
}

type Slot = RmapEntry | RmapEntry[] | undefined;

export class Rmap {
  private readonly slots: Slot[] = [];

  add(pfn: Pfn, mm: Mm, va: number): void {
    const s = this.slots;
    while (s.length <= pfn) s.push(undefined); // dense (a sparse store would make it a dictionary)
    const cur = s[pfn];
    const e: RmapEntry = { mm, va };
    if (cur === undefined) s[pfn] = e;
    else if (Array.isArray(cur)) cur.push(e);
    else s[pfn] = [cur, e];
  }

  remove(pfn: Pfn, mm: Mm, va: number): void {
    const cur = pfn < this.slots.length ? this.slots[pfn] : undefined;
    if (cur === undefined)
      throw new Error(`rmap: pfn ${pfn} has no mappings (removing mm ${mm.id} 0x${va.toString(16)})`);
    if (!Array.isArray(cur)) {
      if (cur.mm !== mm || cur.va !== va)
        throw new Error(`rmap: pfn ${pfn} not mapped by mm ${mm.id} at 0x${va.toString(16)}`);
      this.slots[pfn] = undefined;
      return;
    }
    let i = 0;
    while (i < cur.length && (cur[i].mm !== mm || cur[i].va !== va)) i++;
    if (i === cur.length)
      throw new Error(`rmap: pfn ${pfn} not mapped by mm ${mm.id} at 0x${va.toString(16)}`);
    cur.splice(i, 1);
    if (cur.length === 1) this.slots[pfn] = cur[0];
  }

  /** A snapshot of the mappings of `pfn`. */
  walk(pfn: Pfn): RmapEntry[] {
    const cur = pfn < this.slots.length ? this.slots[pfn] : undefined;
    if (cur === undefined) return [];
    return Array.isArray(cur) ? [...cur] : [cur];
  }

  count(pfn: Pfn): number {
    const cur = pfn < this.slots.length ? this.slots[pfn] : undefined;
    if (cur === undefined) return 0;
    return Array.isArray(cur) ? cur.length : 1;
  }

  /** Every mapped frame with its mappings (a fresh list per frame), in frame order. */
  *entries(): IterableIterator<[Pfn, RmapEntry[]]> {
    for (let pfn = 0; pfn < this.slots.length; pfn++) {
      const cur = this.slots[pfn];
      if (cur !== undefined) yield [pfn, Array.isArray(cur) ? [...cur] : [cur]];
    }
  }
}
