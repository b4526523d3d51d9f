/**
 * Page faults (handle_mm_fault): anonymous first touch, write to a read-only PTE (COW break or
 * reuse), swap-in (from the swap cache or the swap file), device entries (the owning driver brings
 * the page home), migration entries (wait for the migration's page lock), driver VMAs (the driver
 * installs the PTE, or, for a present PTE_LEASED entry whose lease expired, waits for renewal).
 *
 * Every path snapshots the PTE, may await (allocation, I/O, notifiers, drivers), and then
 * re-validates the PTE inside one synchronous section before installing: the kernel thread runs
 * one task at a time, and processes only ever set the young/dirty bits of present PTEs.
 */

import { FAULT_KILLED, FAULT_RETRY, FAULT_SIGBUS, FAULT_SIGSEGV } from './access.js';
import { KernelError, PAGE_SIZE, PROT_WRITE } from './api.js';
import type { Kernel } from './kernel.js';
import { LEASE_SLOTS } from './lease.js';
import { type Mm, protAllows, pteIndex, type Vma } from './mm.js';
import {
  mmuNotifierInvalidatePage,
  mmuNotifierInvalidateRangeEnd,
  mmuNotifierInvalidateRangeStart,
} from './mmu-notifier.js';
import { PG_anon, PG_dirty, PG_locked, PG_swapcache } from './page.js';
import {
  KIND_DEVICE,
  KIND_MIGRATION,
  KIND_NORMAL,
  KIND_SWAP,
  mkPte,
  PTE_DIRTY,
  PTE_LEASED,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
  pteKind,
  ptePfn,
} from './pagetable.js';
import { flushTlb } from './tlb.js';

export type FaultStep = 'done' | 'retry';

/** True if `va` has a present PTE_LEASED entry whose lease is not valid now (for the statistics). */
function leaseExpiredAt(k: Kernel, mm: Mm, va: number): boolean {
  const pi = pteIndex(k.phys, mm, va, false);
  const pte = pi >= 0 ? Atomics.load(k.phys.words, pi) : 0;
  if (!(pte & PTE_PRESENT && pte & PTE_LEASED)) return false;
  const slot = k.phys.getPrivate(ptePfn(pte));
  return !(slot >= 1 && slot < LEASE_SLOTS && k.leases.valid(slot));
}

/** The fault entry for a process: returns the FAULT_* code the process receives. */
export async function handleMmFault(k: Kernel, mm: Mm, address: number, write: boolean): Promise<number> {
  const va = address - (address % PAGE_SIZE);
  k.stats.faults++;
  let unlock: () => void;
  try {
    unlock = mm.lock.tryRead() ?? (await mm.lock.read(k.timeouts.lockTimeoutMs));
  } catch {
    k.stats.sigbus++;
    return FAULT_SIGBUS;
  }
  try {
    for (let attempt = 0; attempt < 64; attempt++) {
      if (mm.exiting) return FAULT_KILLED;
      const vma = mm.findVma(va);
      if (!vma || !protAllows(vma.prot, write)) {
        k.stats.segv++;
        if (vma?.driver && write) k.stats.driverWriteDenied++;
        return FAULT_SIGSEGV;
      }
      if (vma.driver) {
        // Every fault in a driver VMA goes to the driver, including one on a present entry: a
        // PTE_LEASED entry whose lease expired (the driver waits for renewal and returns; the access
        // then retries) or a write to a read-only entry.
        k.stats.driverFaults++;
        if (leaseExpiredAt(k, mm, va)) k.stats.leaseFaults++;
        await vma.driver.fault({ mm: mm.handle, address: va, write });
        return FAULT_RETRY;
      }
      if ((await faultAnon(k, mm, vma, va, write)) === 'done') return FAULT_RETRY;
    }
    return FAULT_RETRY;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'SIGSEGV') {
      k.stats.segv++;
      return FAULT_SIGSEGV;
    }
    if (code !== 'SIGBUS') k.logger.warn({ mm: mm.id, va, err: String(e) }, 'page fault failed: SIGBUS');
    k.stats.sigbus++;
    return FAULT_SIGBUS;
  } finally {
    unlock();
  }
}

/** Resolve one fault in an ordinary VMA (the caller holds the mmap lock for read). */
export async function faultAnon(k: Kernel, mm: Mm, vma: Vma, va: number, write: boolean): Promise<FaultStep> {
  const words = k.phys.words;
  const pi = pteIndex(k.phys, mm, va, true);
  if (pi < 0) throw new KernelError('SIGBUS', 'no memory for a page table');
  const pte = Atomics.load(words, pi);
  if (pte === 0) return doAnonymousPage(k, mm, vma, va, pi, write);
  const pfn = ptePfn(pte);
  switch (pteKind(pte)) {
    case KIND_NORMAL:
      if (!(pte & PTE_PRESENT)) {
        // PROT_NONE entry but the VMA allows the access now: make it present again.
        const bits = PTE_PRESENT | (vma.prot & PROT_WRITE && k.phys.mapcount(pfn) === 1 ? PTE_WRITE : 0);
        Atomics.compareExchange(words, pi, pte, pte | bits);
        return 'retry';
      }
      if (!write || pte & PTE_WRITE) return 'done';
      return doWpPage(k, mm, vma, va, pi, pte);
    case KIND_SWAP:
      return doSwapPage(k, mm, vma, va, pi, pte, write);
    case KIND_DEVICE: {
      if (!write && pte & PTE_PRESENT) return 'done';
      const dev = k.devices.get(k.phys.getPrivate(pfn));
      if (!dev) throw new KernelError('SIGBUS', `device entry of an unknown device at 0x${va.toString(16)}`);
      k.stats.deviceFaults++;
      await dev.fault({ mm: mm.handle, address: va, write });
      return 'done';
    }
    case KIND_MIGRATION:
      await k.phys.lockPage(pfn, k.timeouts.lockTimeoutMs);
      k.phys.unlockPage(pfn);
      return 'retry';
    default:
      throw new KernelError('SIGBUS', `corrupt PTE 0x${(pte >>> 0).toString(16)}`);
  }
}

async function doAnonymousPage(
  k: Kernel,
  mm: Mm,
  vma: Vma,
  va: number,
  pi: number,
  write: boolean,
): Promise<FaultStep> {
  const pfn = await k.allocUserFrame();
  if (Atomics.load(k.phys.words, pi) !== 0 || mm.exiting || mm.findVma(va) !== vma) {
    k.putFrame(pfn);
    return 'retry';
  }
  k.phys.setFlag(pfn, PG_anon);
  const bits = PTE_PRESENT | PTE_YOUNG | (vma.prot & PROT_WRITE ? PTE_WRITE | (write ? PTE_DIRTY : 0) : 0);
  Atomics.store(k.phys.words, pi, mkPte(pfn, bits));
  k.phys.addMapcount(pfn, 1);
  k.rmap.add(pfn, mm, va);
  k.lruAdd(pfn);
  k.stats.minorFaults++;
  return 'done';
}

const STATE_MASK = ~(PTE_YOUNG | PTE_DIRTY);

/** Write to a present read-only PTE in a writable VMA: reuse the page if we are its only user, else copy. */
async function doWpPage(
  k: Kernel,
  mm: Mm,
  _vma: Vma,
  va: number,
  pi: number,
  pte: number,
): Promise<FaultStep> {
  const words = k.phys.words;
  const pfn = ptePfn(pte);
  if (
    k.phys.mapcount(pfn) === 1 &&
    k.phys.refcount(pfn) === 1 &&
    !k.phys.testFlag(pfn, PG_locked | PG_swapcache)
  ) {
    k.stats.cowReuse++;
    const prev = Atomics.compareExchange(words, pi, pte, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG);
    return prev === pte ? 'done' : 'retry';
  }
  const np = await k.allocUserFrame();
  const range = { mm: mm.handle, start: va, end: va + PAGE_SIZE, event: 'cow' as const, blockable: true };
  if ((await mmuNotifierInvalidateRangeStart(k, range)) === 'again') {
    k.putFrame(np);
    return 'retry';
  }
  try {
    let cur = Atomics.load(words, pi);
    if ((cur & STATE_MASK) !== (pte & STATE_MASK) || mm.exiting) {
      k.putFrame(np);
      return 'retry';
    }
    k.phys.copyFrame(pfn, np);
    k.phys.setFlag(np, PG_anon);
    for (;;) {
      const prev = Atomics.compareExchange(
        words,
        pi,
        cur,
        mkPte(np, PTE_PRESENT | PTE_WRITE | PTE_YOUNG | PTE_DIRTY),
      );
      if (prev === cur) break;
      if ((prev & STATE_MASK) !== (pte & STATE_MASK)) {
        k.putFrame(np);
        return 'retry';
      }
      cur = prev;
    }
    if (cur & PTE_DIRTY) k.phys.setFlag(pfn, PG_dirty);
    mmuNotifierInvalidatePage(k, mm, va);
    k.phys.addMapcount(np, 1);
    k.rmap.add(np, mm, va);
    k.lruAdd(np);
    k.phys.addMapcount(pfn, -1);
    k.rmap.remove(pfn, mm, va);
    // The old PTE's reference is ours now: keep it until no access can still use the old entry.
    await flushTlb(k, [mm]);
    k.putFrame(pfn);
    k.stats.cowFaults++;
    return 'done';
  } finally {
    mmuNotifierInvalidateRangeEnd(range);
  }
}

async function doSwapPage(
  k: Kernel,
  mm: Mm,
  vma: Vma,
  va: number,
  pi: number,
  pte: number,
  write: boolean,
): Promise<FaultStep> {
  const swap = k.swap;
  if (!swap) throw new KernelError('SIGBUS', 'swap entry without a swap area');
  const words = k.phys.words;
  const slot = ptePfn(pte);
  const cached = k.swapCache.get(slot);
  if (cached !== undefined) {
    await k.phys.lockPage(cached, k.timeouts.lockTimeoutMs);
    try {
      if (Atomics.load(words, pi) !== pte || k.swapCache.get(slot) !== cached) return 'retry';
      k.phys.getRef(cached);
      k.phys.addMapcount(cached, 1);
      k.rmap.add(cached, mm, va);
      Atomics.store(words, pi, mkPte(cached, PTE_PRESENT | PTE_YOUNG));
      swap.put(slot);
      k.stats.swapCacheHits++;
      return 'retry';
    } finally {
      k.phys.unlockPage(cached);
    }
  }
  const np = await k.allocUserFrame();
  try {
    await swap.read(slot, k.phys.frameBytes(np));
  } catch (e) {
    k.putFrame(np);
    throw new KernelError('SIGBUS', `swap-in of slot ${slot} failed: ${String(e)}`);
  }
  if (Atomics.load(words, pi) !== pte || k.swapCache.has(slot) || mm.exiting) {
    k.putFrame(np);
    return 'retry';
  }
  const bits = PTE_PRESENT | PTE_YOUNG | (vma.prot & PROT_WRITE ? PTE_WRITE | (write ? PTE_DIRTY : 0) : 0);
  Atomics.store(words, pi, mkPte(np, bits));
  k.phys.addMapcount(np, 1);
  k.rmap.add(np, mm, va);
  k.lruAdd(np);
  swap.put(slot);
  k.stats.swapIns++;
  return 'done';
}
