/**
 * Address spaces (mm_struct): VMAs, the page-table root, the mmap lock, the per-mm notifier list
 * and the invalidation sequence counter (mmu_interval_read_begin/retry).
 */
import {
  type DriverVmaOps,
  KernelError,
  type MmHandle,
  type MmuNotifierOps,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
} from './api.js';
import { RwSem } from './lock.js';
import { PG_pagetable, type PhysMem } from './page.js';
import { L1_SHIFT, PT_ENTRIES, PTE_PFN_SHIFT, PTE_PRESENT, walk } from './pagetable.js';
import { NotifierList } from './srcu.js';

/** User address range handed out by mmap: [MMAP_BASE, MMAP_END). Page 0..MMAP_BASE never maps. */
export const MMAP_BASE = 0x1000_0000;
export const MMAP_END = 0xf000_0000;

export interface Vma {
  start: number;
  end: number;
  prot: number;
  /** Present for driver VMAs (XPMEM attachments): faults go to the driver. */
  driver?: DriverVmaOps;
}

let nextMmId = 1;

export class Mm {
  readonly id = nextMmId++;
  readonly handle: MmHandle;
  readonly lock: RwSem;
  readonly notifiers = new NotifierList<MmuNotifierOps>();
  vmas: Vma[] = [];
  exiting = false;
  /** Set once every notifier's release finished; pages may be freed from then on. */
  releaseDone = false;
  dead = false;
  /** Invalidation sequence: bumped at every range start and end. */
  invSeq = 0;
  /** Number of invalidations in progress. */
  invActive = 0;
  readonly invWaiters: Array<() => void> = [];
  /** The owning process's control words while its worker runs; null once it is gone. */
  ctl: Int32Array | null = null;

  constructor(
    readonly pid: number,
    readonly uid: number,
    readonly gid: number,
    readonly root: number,
  ) {
    const self = this;
    this.lock = new RwSem(`mmap_lock(mm ${this.id})`);
    this.handle = Object.freeze({
      id: this.id,
      pid,
      uid,
      gid,
      get exiting() {
        return self.exiting;
      },
    });
  }

  findVma(va: number): Vma | undefined {
    // VMAs are few; a linear scan over a sorted array is fine and obviously correct.
    for (const v of this.vmas) {
      if (va < v.start) return undefined;
      if (va < v.end) return v;
    }
    return undefined;
  }

  overlaps(start: number, end: number): Vma[] {
    return this.vmas.filter((v) => v.start < end && start < v.end);
  }

  insertVma(v: Vma): void {
    this.vmas.push(v);
    this.vmas.sort((a, b) => a.start - b.start);
  }

  /** Remove [start,end) from the VMA list, splitting VMAs at the edges. Returns the removed pieces. */
  carve(start: number, end: number): Vma[] {
    const removed: Vma[] = [];
    const keep: Vma[] = [];
    for (const v of this.vmas) {
      if (v.end <= start || end <= v.start) {
        keep.push(v);
        continue;
      }
      if (v.start < start) keep.push({ ...v, end: start });
      if (end < v.end) keep.push({ ...v, start: end });
      removed.push({ ...v, start: Math.max(v.start, start), end: Math.min(v.end, end) });
    }
    keep.sort((a, b) => a.start - b.start);
    this.vmas = keep;
    return removed;
  }

  /** First free gap of `length` bytes in [MMAP_BASE, MMAP_END), or -1. */
  findFree(length: number): number {
    let cur = MMAP_BASE;
    for (const v of this.vmas) {
      if (v.end <= cur) continue;
      if (v.start - cur >= length) return cur;
      cur = Math.max(cur, v.end);
    }
    return MMAP_END - cur >= length ? cur : -1;
  }
}

export function protAllows(prot: number, write: boolean): boolean {
  return write ? (prot & PROT_WRITE) !== 0 : (prot & PROT_READ) !== 0;
}

/**
 * Index of the leaf PTE for `va` in physical memory's int32 view. With `alloc`, a missing leaf
 * table is allocated from physical memory (returns -1 if no frame is free).
 */
export function pteIndex(phys: PhysMem, mm: Mm, va: number, alloc: boolean): number {
  const pi = walk(phys.words, mm.root, va);
  if (pi >= 0 || !alloc) return pi;
  const table = phys.allocFrame();
  if (table < 0) return -1;
  phys.setFlag(table, PG_pagetable);
  Atomics.store(phys.words, mm.root * PT_ENTRIES + (va >>> L1_SHIFT), (table << PTE_PFN_SHIFT) | PTE_PRESENT);
  return walk(phys.words, mm.root, va);
}

/**
 * First virtual address past the leaf table that covers `va` (where the next root entry starts):
 * the slots of [va, min(end, leafEnd(va))) are consecutive, from walk(va) on. Range loops walk once
 * per leaf table with it, and run their body inline (no callback: a closure made per call and called
 * per page was re-optimised by V8 on every call of a large range, ~1 ms of compiler CPU each).
 */
export function leafEnd(va: number): number {
  return (Math.floor(va / 2 ** L1_SHIFT) + 1) * 2 ** L1_SHIFT;
}

/** Calls fn for every existing leaf PTE slot in [start,end) (skips missing leaf tables). */
export function forEachPteSlot(
  phys: PhysMem,
  mm: Mm,
  start: number,
  end: number,
  fn: (pi: number, va: number) => void,
): void {
  for (let va = start; va < end; ) {
    const stop = Math.min(end, leafEnd(va));
    const pi0 = walk(phys.words, mm.root, va);
    if (pi0 < 0) {
      va = stop;
      continue;
    }
    for (let pi = pi0; va < stop; pi++, va += PAGE_SIZE) fn(pi, va);
  }
}

/** Free the leaf tables and the root of an exited mm (all PTEs already zapped). */
export function freePageTables(phys: PhysMem, mm: Mm): void {
  for (let i = 0; i < PT_ENTRIES; i++) {
    const r = Atomics.load(phys.words, mm.root * PT_ENTRIES + i);
    if (r & PTE_PRESENT) {
      const t = r >>> PTE_PFN_SHIFT;
      Atomics.store(phys.words, mm.root * PT_ENTRIES + i, 0);
      phys.clearFlag(t, PG_pagetable);
      phys.dropRef(t);
      phys.freeFrame(t);
    }
  }
  phys.clearFlag(mm.root, PG_pagetable);
  phys.dropRef(mm.root);
  phys.freeFrame(mm.root);
}

export function checkUserRange(addr: number, length: number): void {
  if (!Number.isInteger(addr) || !Number.isInteger(length) || length <= 0) {
    throw new KernelError('EINVAL', 'address and length must be integers, length > 0');
  }
  if (addr % PAGE_SIZE !== 0)
    throw new KernelError('EINVAL', `address 0x${addr.toString(16)} not page-aligned`);
  if (addr < MMAP_BASE || addr + length > MMAP_END) {
    throw new KernelError('EINVAL', `range 0x${addr.toString(16)}+${length} outside user space`);
  }
}

export function pageAlignUp(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}
