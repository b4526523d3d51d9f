/**
 * Page migration (as compaction does it): move an anonymous page to another frame.
 *
 * lock old → reference → allocate and lock new → tryToUnmap with migration entries (faults on them
 * sleep on the old page's lock) + shootdown → rmap notifiers ('migrate', may fail: restore, keep) →
 * copy → every migration entry becomes a PTE to the new frame (W and D kept) → old frame freed.
 */
import type { Pfn } from './api.js';
import type { Kernel } from './kernel.js';
import { PG_dirty, PG_external_rmap, PG_referenced } from './page.js';
import { mkMigrationPte, mkPte, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, walk } from './pagetable.js';
import { type ReclaimOutcome, restoreUnmapped, tryToUnmap, unevictableReason } from './reclaim.js';

export type MigrateOutcome =
  | Exclude<ReclaimOutcome, 'reclaimed' | 'referenced' | 'no_swap' | 'io_error'>
  | 'nomem';

export async function migratePage(k: Kernel, pfn: Pfn): Promise<Pfn | MigrateOutcome> {
  const r = await migrateInner(k, pfn);
  if (typeof r === 'number') k.stats.migrated++;
  else k.stats.migrateFailed++;
  return r;
}

async function migrateInner(k: Kernel, pfn: Pfn): Promise<Pfn | MigrateOutcome> {
  const ph = k.phys;
  k.checkPfn(pfn);
  const why = unevictableReason(k, pfn);
  if (why) return why as MigrateOutcome;
  if (!ph.trylockPage(pfn)) return 'busy';
  k.pin(pfn);
  const np = ph.allocFrame();
  if (np < 0) {
    ph.unlockPage(pfn);
    k.unpin(pfn);
    return 'nomem';
  }
  ph.trylockPage(np);
  try {
    const migPte = mkMigrationPte(pfn);
    const unmapped = await tryToUnmap(k, pfn, migPte, 'migrate', true);
    if (unmapped === 'again') return 'again';
    if (ph.testFlag(pfn, PG_external_rmap)) {
      const res = await k.rmapNotifiers.invalidatePage(pfn, 'migrate');
      if (!res.ok) {
        restoreUnmapped(k, pfn, unmapped, () => {});
        return 'external_failed';
      }
      if (res.dirty) ph.setFlag(pfn, PG_dirty);
      ph.clearFlag(pfn, PG_external_rmap);
    }
    ph.copyFrame(pfn, np);
    ph.setFlag(np, ph.flags(pfn) & (PG_dirty | PG_referenced));
    const words = ph.words;
    for (const e of unmapped) {
      if (e.replacement === 0 || e.mm.dead) continue;
      const pi = walk(words, e.mm.root, e.va);
      if (pi < 0 || Atomics.load(words, pi) !== migPte) continue;
      Atomics.store(words, pi, mkPte(np, PTE_PRESENT | (e.old & (PTE_WRITE | PTE_DIRTY))));
      ph.getRef(np);
      ph.addMapcount(np, 1);
      k.rmap.add(np, e.mm, e.va);
    }
    k.lruDel(pfn);
    k.lruAdd(np);
    return np;
  } finally {
    ph.unlockPage(np);
    k.putFrame(np); // the allocation reference; the new PTEs hold their own
    ph.unlockPage(pfn);
    k.unpin(pfn);
  }
}
