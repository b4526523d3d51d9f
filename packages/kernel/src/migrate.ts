/**
 * Page migration (as compaction does it): move an anonymous page to another frame.
 *
 * lock old → reference → allocate and lock new → tryToUnmap with migration entries (faults on them
 * sleep on the old page's lock) + shootdown → rmap notifiers ('migrate', may fail: restore, keep) →
 * copy → every migration entry becomes a PTE to the new frame (W and D kept) → old frame freed.
 *
 * Device entries ('readonly' or 'none') are unmapped like present PTEs (tryToUnmap). The copy is
 * taken only AFTER the rmap notifiers returned ok, so for a 'none' entry the remote writer's data
 * (written into the old frame by the notifier) is what moves. A former device entry becomes an
 * ordinary PTE to the new frame — present if the VMA is readable, read-only (a write faults and
 * reuses the page) — the driver re-applies device entries when it next grants remote copies.
 */
import { type Pfn, PROT_READ, PROT_WRITE } from './api.js';
import type { Kernel } from './kernel.js';
import { PG_dirty, PG_external_rmap, PG_referenced } from './page.js';
import {
  KIND_DEVICE,
  mkMigrationPte,
  mkPte,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_WRITE,
  pteKind,
  walk,
} from './pagetable.js';
import {
  type ReclaimOutcome,
  restoreUnmapped,
  tryToUnmap,
  type UnmappedEntry,
  unevictableReason,
} from './reclaim.js';
import type { RmapOutcome } from './rmap-notifier.js';

export type MigrateOutcome =
  | Exclude<ReclaimOutcome, 'reclaimed' | 'referenced' | 'no_swap' | 'io_error'>
  | 'nomem';

export async function migratePage(k: Kernel, pfn: Pfn): Promise<Pfn | MigrateOutcome> {
  const c = await migrateStart(k, pfn);
  let r: Pfn | MigrateOutcome;
  if (typeof c === 'string') r = c;
  else {
    const res = k.phys.testFlag(pfn, PG_external_rmap)
      ? await k.rmapNotifiers.invalidatePage(pfn, 'migrate')
      : undefined;
    r = await migrateFinish(k, c, res);
  }
  count(k, r);
  return r;
}

/**
 * Migrate a batch of pages with ONE rmap-notifier dispatch for all of them (invalidatePages): each
 * page is locked and unmapped (migration entries in place) first, then the exported ones go to the
 * notifiers together, then each is copied and remapped, or restored if its outcome failed. Per page
 * the order is migratePage's; only the notifier calls are merged. Page locks are only TRIED.
 */
export async function migratePages(k: Kernel, pfns: readonly Pfn[]): Promise<Array<Pfn | MigrateOutcome>> {
  const started = await Promise.all(pfns.map((pfn) => migrateStart(k, pfn)));
  const exported: Pfn[] = [];
  for (const c of started) {
    if (typeof c !== 'string' && k.phys.testFlag(c.pfn, PG_external_rmap)) exported.push(c.pfn);
  }
  const results = new Map<Pfn, RmapOutcome>();
  if (exported.length > 0) {
    const rs = await k.rmapNotifiers.invalidatePages(exported, 'migrate');
    for (let i = 0; i < exported.length; i++) results.set(exported[i], rs[i]);
  }
  const out = await Promise.all(
    started.map((c) => (typeof c === 'string' ? c : migrateFinish(k, c, results.get(c.pfn)))),
  );
  for (const r of out) count(k, r);
  return out;
}

function count(k: Kernel, r: Pfn | MigrateOutcome): void {
  if (typeof r === 'number') k.stats.migrated++;
  else k.stats.migrateFailed++;
}

/** A page migrateStart locked, pinned and unmapped, with its new frame (locked, pinned). */
interface Moving {
  pfn: Pfn;
  np: Pfn;
  unmapped: UnmappedEntry[];
}

function migrateRelease(k: Kernel, pfn: Pfn, np: Pfn): void {
  const ph = k.phys;
  ph.unlockPage(np);
  k.unpin(np); // the allocation reference; the new PTEs hold their own
  ph.unlockPage(pfn);
  k.unpin(pfn);
}

async function migrateStart(k: Kernel, pfn: Pfn): Promise<Moving | MigrateOutcome> {
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
  // The allocation reference is accounted as a pin, so check({ quiescent: false }) stays exact while
  // the migration awaits (notifiers, shootdown).
  k.pins.set(np, (k.pins.get(np) ?? 0) + 1);
  let held = false;
  try {
    const unmapped = await tryToUnmap(k, pfn, mkMigrationPte(pfn), 'migrate', true);
    if (unmapped === 'again') return 'again';
    held = true;
    return { pfn, np, unmapped };
  } finally {
    if (!held) migrateRelease(k, pfn, np);
  }
}

async function migrateFinish(
  k: Kernel,
  c: Moving,
  res: RmapOutcome | undefined,
): Promise<Pfn | MigrateOutcome> {
  const ph = k.phys;
  const { pfn, np, unmapped } = c;
  const migPte = mkMigrationPte(pfn);
  try {
    if (ph.testFlag(pfn, PG_external_rmap)) {
      // the flag only changes under the page lock, which we hold: `res` is this page's outcome
      const r = res ?? (await k.rmapNotifiers.invalidatePage(pfn, 'migrate'));
      if (!r.ok) {
        restoreUnmapped(k, pfn, unmapped, () => {});
        return 'external_failed';
      }
      if (r.dirty) ph.setFlag(pfn, PG_dirty);
      ph.clearFlag(pfn, PG_external_rmap);
    }
    ph.copyFrame(pfn, np);
    ph.setFlag(np, ph.flags(pfn) & (PG_dirty | PG_referenced));
    const words = ph.words;
    for (const e of unmapped) {
      if (e.replacement === 0 || e.mm.dead) continue;
      const pi = walk(words, e.mm.root, e.va);
      if (pi < 0 || Atomics.load(words, pi) !== migPte) continue;
      // Never more access than the VMA allows now (mprotect may have run meanwhile).
      const prot = e.mm.findVma(e.va)?.prot ?? 0;
      let bits =
        pteKind(e.old) === KIND_DEVICE
          ? PTE_PRESENT // the device entry had no W/D (its dirt is in PG_dirty, copied above)
          : e.old & (PTE_PRESENT | PTE_WRITE | PTE_DIRTY);
      if (!(prot & PROT_WRITE)) bits &= ~PTE_WRITE;
      if (!(prot & PROT_READ)) bits &= ~(PTE_PRESENT | PTE_WRITE);
      Atomics.store(words, pi, mkPte(np, bits));
      ph.getRef(np);
      ph.addMapcount(np, 1);
      k.rmap.add(np, e.mm, e.va);
    }
    k.lruDel(pfn);
    k.lruAdd(np);
    return np;
  } finally {
    migrateRelease(k, pfn, np);
  }
}
