/**
 * System calls on an address space: mmap (anonymous), munmap, mprotect, and exit_mmap. Argument
 * errors are thrown before any state changes.
 */
import { KernelError, PAGE_SIZE, type Pfn, PROT_READ, PROT_WRITE } from './api.js';
import type { Kernel } from './kernel.js';
import {
  checkUserRange,
  freePageTables,
  leafEnd,
  MMAP_BASE,
  MMAP_END,
  type Mm,
  pageAlignUp,
  type Vma,
} from './mm.js';
import {
  invalidateRangeStart,
  mmuNotifierInvalidateRangeEnd,
  mmuNotifierInvalidateRangeStart,
  mmuNotifierRelease,
} from './mmu-notifier.js';
import { PG_device, PG_dirty } from './page.js';
import {
  KIND_DEVICE,
  KIND_NORMAL,
  KIND_SWAP,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_WRITE,
  pteKind,
  ptePfn,
  walk,
} from './pagetable.js';
import { flushTlb } from './tlb.js';

export function checkProt(prot: number): void {
  if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE)) !== 0) {
    throw new KernelError('EINVAL', `bad prot ${prot}`);
  }
}

/** Choose and insert a VMA. Synchronous: nothing to invalidate in a fresh range. */
export function doMmap(mm: Mm, length: number, prot: number, addr?: number, driver?: Vma['driver']): number {
  if (!Number.isInteger(length) || length <= 0 || length > MMAP_END - MMAP_BASE) {
    throw new KernelError('EINVAL', `bad length ${length}`);
  }
  checkProt(prot);
  const len = pageAlignUp(length);
  let start: number;
  if (addr !== undefined) {
    checkUserRange(addr, len);
    if (mm.overlaps(addr, addr + len).length > 0) {
      throw new KernelError('EINVAL', `range 0x${addr.toString(16)}+${len} overlaps an existing mapping`);
    }
    start = addr;
  } else {
    start = mm.findFree(len);
    if (start < 0) throw new KernelError('ENOMEM', 'no free address range');
  }
  if (mm.exiting) throw new KernelError('ESRCH', 'address space is exiting');
  mm.insertVma({ start, end: start + len, prot, driver });
  return start;
}

export interface ZappedPte {
  address: number;
  pfn: Pfn;
  dirty: boolean;
  write: boolean;
}

/**
 * Clear every PTE of [start,end) in one synchronous section: frame mappings leave the rmap and
 * mapcount (their references are returned for the caller to drop AFTER the TLB shootdown), swap
 * entries drop their slot reference, migration entries just vanish.
 */
export function zapPteRange(k: Kernel, mm: Mm, start: number, end: number): ZappedPte[] {
  const out: ZappedPte[] = [];
  const words = k.phys.words;
  for (let va = start; va < end; ) {
    const stop = Math.min(end, leafEnd(va));
    let pi = walk(words, mm.root, va);
    if (pi < 0) {
      va = stop;
      continue;
    }
    for (; va < stop; pi++, va += PAGE_SIZE) {
      const old = Atomics.exchange(words, pi, 0);
      if (old === 0) continue;
      const kind = pteKind(old);
      if (kind === KIND_NORMAL || kind === KIND_DEVICE) {
        const pfn = ptePfn(old);
        if (old & PTE_DIRTY) k.phys.setFlag(pfn, PG_dirty);
        if (kind === KIND_DEVICE) dropDeviceEntry(k, pfn);
        k.phys.addMapcount(pfn, -1);
        k.rmap.remove(pfn, mm, va);
        out.push({ address: va, pfn, dirty: (old & PTE_DIRTY) !== 0, write: (old & PTE_WRITE) !== 0 });
      } else if (kind === KIND_SWAP) {
        k.swap?.put(ptePfn(old));
      }
    }
  }
  return out;
}

export function dropDeviceEntry(k: Kernel, pfn: Pfn): void {
  const n = (k.deviceEntries.get(pfn) ?? 0) - 1;
  if (n <= 0) {
    k.deviceEntries.delete(pfn);
    k.phys.clearFlag(pfn, PG_device);
  } else k.deviceEntries.set(pfn, n);
}

export async function doMunmap(k: Kernel, mm: Mm, addr: number, length: number): Promise<void> {
  checkUserRange(addr, length);
  const len = pageAlignUp(length);
  const unlock = await mm.lock.write(k.timeouts.lockTimeoutMs);
  try {
    if (mm.exiting) throw new KernelError('ESRCH', 'address space is exiting');
    if (mm.overlaps(addr, addr + len).length === 0) return;
    await unmapRangeLocked(k, mm, addr, addr + len);
  } finally {
    unlock();
  }
}

/**
 * munmap for drivers (xpmem_detach): remove [start,end), which must be covered by driver VMAs
 * (EINVAL otherwise, or if unaligned), exactly as munmap would: PTEs zapped with a full TLB
 * shootdown, frame references dropped, the address range released, the VMAs' close op called for
 * the removed pieces. An exiting (or exited) mm: returns without doing anything (exit tears the VMAs
 * down and closes them itself). Takes the mmap lock for write: never call it from a fault op of the
 * same mm (that fault holds the lock for read).
 */
export async function doMunmapDriver(k: Kernel, mm: Mm, start: number, end: number): Promise<void> {
  if (
    !Number.isInteger(start) ||
    !Number.isInteger(end) ||
    start % PAGE_SIZE ||
    end % PAGE_SIZE ||
    end <= start
  )
    throw new KernelError('EINVAL', 'munmapDriver: unaligned or empty range');
  if (mm.exiting || mm.dead) return;
  const unlock = await mm.lock.write(k.timeouts.lockTimeoutMs);
  try {
    if (mm.exiting || mm.dead) return;
    let cur = start;
    for (const v of mm.overlaps(start, end)) {
      if (v.start > cur || !v.driver) break;
      cur = v.end;
    }
    if (cur < end) {
      throw new KernelError(
        'EINVAL',
        `munmapDriver: 0x${start.toString(16)}..0x${end.toString(16)} is not covered by driver VMAs`,
      );
    }
    await unmapRangeLocked(k, mm, start, end);
  } finally {
    unlock();
  }
}

/**
 * The body of munmap (mmap lock held for write): invalidateRangeStart('unmap'), remove the VMAs,
 * zap the PTEs, TLB shootdown, drop the frame references, invalidateRangeEnd, then close the driver
 * VMA pieces that went away.
 */
async function unmapRangeLocked(k: Kernel, mm: Mm, start: number, end: number): Promise<void> {
  const range = { mm: mm.handle, start, end, event: 'unmap' as const, blockable: true };
  await mmuNotifierInvalidateRangeStart(k, range);
  let zapped: ZappedPte[] = [];
  let removed: Vma[] = [];
  try {
    removed = mm.carve(start, end);
    zapped = zapPteRange(k, mm, start, end);
    await flushTlb(k, [mm]);
    for (const z of zapped) k.putFrame(z.pfn);
  } finally {
    mmuNotifierInvalidateRangeEnd(range);
  }
  await closeDriverVmas(k, mm, removed);
}

async function closeDriverVmas(k: Kernel, mm: Mm, removed: Vma[]): Promise<void> {
  for (const v of removed) {
    if (!v.driver) continue;
    try {
      await v.driver.close(mm.handle, v.start, v.end);
    } catch (e) {
      k.logger.warn({ mm: mm.id, err: String(e) }, 'driver VMA close failed');
    }
  }
}

export async function doMprotect(
  k: Kernel,
  mm: Mm,
  addr: number,
  length: number,
  prot: number,
): Promise<void> {
  checkUserRange(addr, length);
  checkProt(prot);
  const len = pageAlignUp(length);
  const end = addr + len;
  const unlock = await mm.lock.write(k.timeouts.lockTimeoutMs);
  try {
    if (mm.exiting) throw new KernelError('ESRCH', 'address space is exiting');
    // The whole range must be mapped by ordinary VMAs (Linux: ENOMEM for holes).
    let cur = addr;
    for (const v of mm.overlaps(addr, end)) {
      if (v.start > cur) break;
      if (v.driver) throw new KernelError('EACCES', 'mprotect on a driver mapping');
      cur = v.end;
    }
    if (cur < end) throw new KernelError('ENOMEM', 'mprotect range not fully mapped');
    const range = { mm: mm.handle, start: addr, end, event: 'protection' as const, blockable: true };
    // no turn of the event loop when no notifier has work (as zapDriverRange); otherwise awaited
    const started = invalidateRangeStart(k, range);
    if (started !== 'ok') await started;
    try {
      const pieces = mm.carve(addr, end);
      for (const p of pieces) mm.insertVma({ ...p, prot });
      mergeVmas(mm);
      const words = k.phys.words;
      for (let va = addr; va < end; ) {
        const stop = Math.min(end, leafEnd(va));
        let pi = walk(words, mm.root, va);
        if (pi < 0) {
          va = stop;
          continue;
        }
        for (; va < stop; pi++, va += PAGE_SIZE) {
          let pte = Atomics.load(words, pi);
          for (;;) {
            if (pteKind(pte) !== KIND_NORMAL || pte === 0) break;
            let want = pte;
            if (!(prot & PROT_WRITE)) want &= ~PTE_WRITE;
            if (!(prot & PROT_READ)) want &= ~(PTE_PRESENT | PTE_WRITE);
            else if (!(pte & PTE_PRESENT)) want |= PTE_PRESENT; // leaving PROT_NONE: readable again
            if (want === pte) break;
            const prev = Atomics.compareExchange(words, pi, pte, want);
            if (prev === pte) {
              if (pte & PTE_DIRTY) k.phys.setFlag(ptePfn(pte), PG_dirty);
              break;
            }
            pte = prev;
          }
        }
      }
      await flushTlb(k, [mm]);
    } finally {
      mmuNotifierInvalidateRangeEnd(range);
    }
  } finally {
    unlock();
  }
}

function mergeVmas(mm: Mm): void {
  const out: Vma[] = [];
  for (const v of mm.vmas) {
    const last = out[out.length - 1];
    if (last && last.end === v.start && last.prot === v.prot && !last.driver && !v.driver) last.end = v.end;
    else out.push({ ...v });
  }
  mm.vmas = out;
}

/**
 * exit_mmap: notifiers' release first (no page of the mm is freed before every release finished),
 * then every mapping is zapped, driver VMAs closed, page tables freed. The process's worker is
 * already gone, so no shootdown wait is needed.
 */
export async function exitMmap(k: Kernel, mm: Mm): Promise<void> {
  let unlock: (() => void) | null = null;
  try {
    unlock = await mm.lock.write(k.timeouts.lockTimeoutMs);
  } catch (e) {
    k.logger.warn({ mm: mm.id, err: String(e) }, 'exit: mmap lock timed out; tearing down anyway');
  }
  try {
    await mmuNotifierRelease(k, mm);
    const vmas = mm.vmas;
    mm.vmas = [];
    const zapped: ZappedPte[] = [];
    for (const v of vmas) zapped.push(...zapPteRange(k, mm, v.start, v.end));
    await flushTlb(k, [mm]);
    if (!mm.releaseDone && zapped.length > 0) k.violations.push(`mm ${mm.id}: pages freed before release`);
    for (const z of zapped) k.putFrame(z.pfn);
    await closeDriverVmas(k, mm, vmas);
    freePageTables(k.phys, mm);
    mm.dead = true;
    k.mms.delete(mm.id);
  } finally {
    unlock?.();
  }
}

export const PAGE = PAGE_SIZE;
