/**
 * fork: copy an address space with copy-on-write.
 *
 * Under the parent's mmap lock (write): invalidateRangeStart('cow') on every writable VMA, then every
 * present PTE is write-protected in the parent (exact dirty bit kept) and shared read-only with the
 * child. Pages that are pinned (refcount > mapcount) or exported (PG_external_rmap) are copied for
 * the child at once instead (mainline's rule for DMA-pinned pages): their users keep seeing the
 * parent's page. Swap entries are shared (slot reference). Migration entries are waited out. Device
 * entries: before copying, the kernel asks the device to bring 'none' pages home (fault with
 * write=false) so the child never inherits a page whose only valid copy is remote; 'readonly'
 * device entries give the child an ordinary read-only PTE. Driver VMAs are not inherited.
 */
import { KernelError, PAGE_SIZE, PROT_WRITE } from './api.js';
import type { Kernel } from './kernel.js';
import { forEachPteSlot, type Mm, pteIndex } from './mm.js';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.js';
import { PG_anon, PG_dirty, PG_external_rmap } from './page.js';
import {
  KIND_DEVICE,
  KIND_MIGRATION,
  KIND_NORMAL,
  KIND_SWAP,
  mkPte,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_WRITE,
  pteKind,
  ptePfn,
} from './pagetable.js';
import { flushTlb } from './tlb.js';

/** Bring 'none' device pages of `mm` home before fork (outside the write lock: drivers may fault). */
export async function resolveDeviceEntries(k: Kernel, mm: Mm): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const pending: number[] = [];
    for (const v of mm.vmas) {
      if (v.driver) continue;
      forEachPteSlot(k.phys, mm, v.start, v.end, (pi, va) => {
        const pte = Atomics.load(k.phys.words, pi);
        if (pteKind(pte) === KIND_DEVICE && !(pte & PTE_PRESENT)) pending.push(va);
      });
    }
    if (pending.length === 0) return;
    for (const va of pending) {
      const pi = pteIndex(k.phys, mm, va, false);
      const pte = pi >= 0 ? Atomics.load(k.phys.words, pi) : 0;
      if (pteKind(pte) !== KIND_DEVICE || pte & PTE_PRESENT) continue;
      const dev = k.devices.get(k.phys.getPrivate(ptePfn(pte)));
      await dev?.fault({ mm: mm.handle, address: va, write: false });
    }
  }
}

/** Copy the parent's mappings into the (empty) child mm. The caller spawns the child's worker. */
export async function copyMm(k: Kernel, parent: Mm, child: Mm): Promise<void> {
  await resolveDeviceEntries(k, parent);
  const unlock = await parent.lock.write(k.timeouts.lockTimeoutMs);
  const ranges = parent.vmas
    .filter((v) => !v.driver && v.prot & PROT_WRITE)
    .map((v) => ({ mm: parent.handle, start: v.start, end: v.end, event: 'cow' as const, blockable: true }));
  const started: typeof ranges = [];
  try {
    if (parent.exiting) throw new KernelError('ESRCH', 'parent is exiting');
    for (const r of ranges) {
      await mmuNotifierInvalidateRangeStart(k, r);
      started.push(r);
    }
    const words = k.phys.words;
    for (const v of parent.vmas) {
      if (v.driver) continue;
      child.insertVma({ start: v.start, end: v.end, prot: v.prot });
      for (let va = v.start; va < v.end; va += PAGE_SIZE) {
        const ppi = pteIndex(k.phys, parent, va, false);
        if (ppi < 0) {
          va = (Math.floor(va / 2 ** 22) + 1) * 2 ** 22 - PAGE_SIZE;
          continue;
        }
        let pte = Atomics.load(words, ppi);
        while (pteKind(pte) === KIND_MIGRATION && pte !== 0) {
          // Migration holds the page lock until the entry is replaced: sleep on it, then re-read.
          await k.phys.lockPage(ptePfn(pte), k.timeouts.lockTimeoutMs);
          k.phys.unlockPage(ptePfn(pte));
          pte = Atomics.load(words, ppi);
        }
        if (pte === 0) continue;
        const cpi = pteIndex(k.phys, child, va, true);
        if (cpi < 0) throw new KernelError('ENOMEM', 'no memory for the child page table');
        const kind = pteKind(pte);
        if (kind === KIND_SWAP) {
          k.swap?.get(ptePfn(pte));
          Atomics.store(words, cpi, pte);
          continue;
        }
        if (kind !== KIND_NORMAL && kind !== KIND_DEVICE) continue;
        const pfn = ptePfn(pte);
        const present = kind === KIND_DEVICE ? true : (pte & PTE_PRESENT) !== 0;
        const pinned = k.phys.refcount(pfn) > k.phys.mapcount(pfn) || k.phys.testFlag(pfn, PG_external_rmap);
        if (pinned) {
          const np = k.phys.allocFrame();
          if (np < 0) throw new KernelError('ENOMEM', 'no memory to copy a pinned page');
          k.phys.copyFrame(pfn, np);
          k.phys.setFlag(np, PG_anon);
          Atomics.store(
            words,
            cpi,
            mkPte(np, (present ? PTE_PRESENT : 0) | (v.prot & PROT_WRITE ? PTE_WRITE : 0)),
          );
          k.phys.addMapcount(np, 1);
          k.rmap.add(np, child, va);
          k.lruAdd(np);
          continue;
        }
        if (kind === KIND_NORMAL) {
          // Write-protect the parent (exact dirty bit: compareExchange against the process's CAS).
          let cur = pte;
          while (cur & PTE_WRITE) {
            const prev = Atomics.compareExchange(words, ppi, cur, cur & ~PTE_WRITE);
            if (prev === cur) break;
            cur = prev;
          }
          if (cur & PTE_DIRTY) k.phys.setFlag(pfn, PG_dirty);
        }
        Atomics.store(words, cpi, mkPte(pfn, present ? PTE_PRESENT : 0));
        k.phys.getRef(pfn);
        k.phys.addMapcount(pfn, 1);
        k.rmap.add(pfn, child, va);
      }
    }
    await flushTlb(k, [parent]);
    k.stats.forks++;
  } finally {
    for (const r of started) mmuNotifierInvalidateRangeEnd(r);
    unlock();
  }
}
