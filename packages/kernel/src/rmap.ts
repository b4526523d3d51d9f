/**
 * The kernel's reverse map: for every frame, each (mm, virtual address) whose PTE refers to it
 * (normal and device entries; swap and migration entries hold no frame reference).
 */
import type { Pfn } from './api.js';
import type { Mm } from './mm.js';

export interface RmapEntry {
  readonly mm: Mm;
  readonly va: number;
}

export class Rmap {
  private readonly map = new Map<Pfn, RmapEntry[]>();

  add(pfn: Pfn, mm: Mm, va: number): void {
    const l = this.map.get(pfn);
    if (l) l.push({ mm, va });
    else this.map.set(pfn, [{ mm, va }]);
  }

  remove(pfn: Pfn, mm: Mm, va: number): void {
    const l = this.map.get(pfn);
    if (!l) throw new Error(`rmap: pfn ${pfn} has no mappings (removing mm ${mm.id} 0x${va.toString(16)})`);
    let i = 0;
    while (i < l.length && (l[i].mm !== mm || l[i].va !== va)) i++;
    if (i === l.length) throw new Error(`rmap: pfn ${pfn} not mapped by mm ${mm.id} at 0x${va.toString(16)}`);
    if (l.length === 1) {
      this.map.delete(pfn);
      return;
    }
    l.splice(i, 1);
  }

  /** A snapshot of the mappings of `pfn`. */
  walk(pfn: Pfn): RmapEntry[] {
    return [...(this.map.get(pfn) ?? [])];
  }

  count(pfn: Pfn): number {
    return this.map.get(pfn)?.length ?? 0;
  }

  entries(): IterableIterator<[Pfn, RmapEntry[]]> {
    return this.map.entries();
  }
}
