/**
 * Page reclaim: the LRU (second chance on young bits), tryToUnmap, pageMkclean, swap-out, shrink
 * (direct and background reclaim).
 *
 * Order of a swap-out of page P (reclaimPage):
 *   trylock P → take a reference → young? keep → allocate a slot, P enters the swap cache →
 *   tryToUnmap: invalidateRangeStart on every mapping's mm (all started, then all awaited), then in
 *   one synchronous section every PTE becomes a swap entry (exact dirty bit from the exchange) and
 *   invalidatePage(mm, va) is called → TLB shootdown → invalidateRangeEnd →
 *   if PG_external_rmap: the rmap notifiers (page lock held, may sleep) — on failure the PTEs are
 *   restored, P is kept with its flag, and it is counted → write P to the slot → free P → unlock.
 * Faults on the swap entries meanwhile find P in the swap cache and sleep on its page lock.
 *
 * Device entries do not pin a page. tryToUnmap replaces a 'readonly' or 'none' device entry exactly
 * like a present PTE (device-entry accounting updated in the same synchronous section) and
 * restoreUnmapped puts the DEVICE entry back if the rmap notifiers fail. A 'none' entry means the
 * frame is stale (a remote holds the page for writing): the rmap notifier brings the remote data
 * home (writePageData, dirty:true) and only after it reported ok is the frame written to swap (or
 * copied, for migration). A 'none' entry on a page WITHOUT PG_external_rmap has nobody to bring the
 * data home, so such a page stays unevictable.
 */
import { type MmuNotifierRange, PAGE_SIZE, type Pfn, PROT_READ, PROT_WRITE } from './api.js';
import type { Kernel } from './kernel.js';
import type { Mm } from './mm.js';
import {
  invalidateRangeStart,
  mmuNotifierClearFlushYoung,
  mmuNotifierInvalidatePage,
  mmuNotifierInvalidateRangeEnd,
  mmuNotifierInvalidateRangeStart,
} from './mmu-notifier.js';
import {
  PG_anon,
  PG_device,
  PG_dirty,
  PG_driver,
  PG_external_rmap,
  PG_lru,
  PG_pagetable,
  PG_referenced,
  PG_swapcache,
} from './page.js';
import {
  KIND_DEVICE,
  KIND_NORMAL,
  mkSwapPte,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
  pteKind,
  ptePfn,
  walk,
} from './pagetable.js';
import type { RmapOutcome } from './rmap-notifier.js';
import { dropDeviceEntry } from './syscalls.js';
import { flushTlb, shootdown, tlbInvalidateMm } from './tlb.js';

export type ReclaimOutcome =
  | 'reclaimed'
  | 'referenced'
  | 'external_failed'
  | 'busy'
  | 'pinned'
  | 'unevictable'
  | 'no_swap'
  | 'again'
  | 'io_error';

export interface UnmappedEntry {
  readonly mm: Mm;
  readonly va: number;
  /** The PTE before unmapping (W and D bits matter). */
  readonly old: number;
  /** The entry written in its place (swap or migration entry); 0 for zapped driver-VMA entries. */
  readonly replacement: number;
  /** For a device entry (`old` of KIND_DEVICE): its owner, restored with the entry. */
  readonly owner?: number;
}

/**
 * True if some mapping of `pfn` is a device entry in mode 'none' (no access: the frame is stale,
 * the current data is with a remote writer).
 */
function hasNoAccessDeviceEntry(k: Kernel, pfn: Pfn): boolean {
  const words = k.phys.words;
  for (const { mm, va } of k.rmap.walk(pfn)) {
    const pi = walk(words, mm.root, va);
    const pte = pi >= 0 ? Atomics.load(words, pi) : 0;
    if (pteKind(pte) === KIND_DEVICE && ptePfn(pte) === pfn && !(pte & PTE_PRESENT)) return true;
  }
  return false;
}

/**
 * Why a page cannot be unmapped for reclaim/migration at all, or null. Device entries do not pin a
 * page (tryToUnmap unmaps them and the rmap notifier brings remote data home), except a 'none'
 * entry on a page without PG_external_rmap: no rmap notifier would run, so the stale frame would be
 * written out or copied.
 */
export function unevictableReason(k: Kernel, pfn: Pfn): ReclaimOutcome | null {
  const f = k.phys.flags(pfn);
  if (!(f & PG_lru) || !(f & PG_anon) || f & (PG_driver | PG_pagetable)) return 'unevictable';
  // the flag first: an exported page (most pages with device entries) skips the map lookup
  if (!(f & PG_external_rmap) && k.deviceEntries.get(pfn) && hasNoAccessDeviceEntry(k, pfn))
    return 'unevictable';
  if (k.phys.refcount(pfn) !== k.phys.mapcount(pfn)) return 'pinned';
  return null;
}

/**
 * Test and clear the young bits of every mapping of `pfn` (page_referenced), including secondary
 * mappings through the per-mm notifiers' clearFlushYoung.
 */
export function pageReferenced(k: Kernel, pfn: Pfn): boolean {
  let young = k.phys.testClearFlag(pfn, PG_referenced);
  const words = k.phys.words;
  for (const { mm, va } of k.rmap.walk(pfn)) {
    const pi = walk(words, mm.root, va);
    if (pi >= 0) {
      let pte = Atomics.load(words, pi);
      while (pte & PTE_YOUNG && ptePfn(pte) === pfn) {
        const prev = Atomics.compareExchange(words, pi, pte, pte & ~PTE_YOUNG);
        if (prev === pte) {
          young = true;
          tlbInvalidateMm(mm); // the next read must walk (and set the young bit) again: no TLB hit
          break;
        }
        pte = prev;
      }
    }
    if (mmuNotifierClearFlushYoung(mm, va, va + PAGE_SIZE)) young = true;
  }
  return young;
}

/**
 * Unmap every local mapping of `pfn` (the caller holds the page lock and a reference). Each PTE in an
 * ordinary VMA — present, PROT_NONE, or a device entry ('readonly' or 'none') — becomes
 * `replacement`; entries in driver VMAs are zapped to none (the driver re-faults). Device-entry
 * accounting (k.deviceEntries, PG_device) changes in the same synchronous section as the PTE.
 * Returns what was unmapped, or 'again' if a notifier refused or the rmap would not settle (or a
 * 'none' device entry appeared on a page without PG_external_rmap). Completes the TLB shootdown
 * before returning.
 */
export async function tryToUnmap(
  k: Kernel,
  pfn: Pfn,
  replacement: number,
  event: 'reclaim' | 'migrate',
  blockable: boolean,
  onReplace: () => void = () => {},
): Promise<UnmappedEntry[] | 'again'> {
  const started: MmuNotifierRange[] = [];
  const covered = (mm: Mm, va: number) => started.some((r) => r.mm === mm.handle && r.start === va);
  const endAll = () => {
    for (const r of started) mmuNotifierInvalidateRangeEnd(r);
  };
  for (let round = 0; ; round++) {
    const todo = k.rmap.walk(pfn).filter((e) => !covered(e.mm, e.va));
    if (todo.length === 0) break;
    if (round === 4) {
      endAll();
      return 'again';
    }
    for (const e of todo) {
      const range = { mm: e.mm.handle, start: e.va, end: e.va + PAGE_SIZE, event, blockable };
      // 'ok' synchronously when no callback slept (no notifier, or nothing to do): no turn taken.
      // Taking none only removes interleavings; the rounds re-walk the rmap either way.
      const r = invalidateRangeStart(k, range);
      if (r !== 'ok' && (await r) === 'again') {
        endAll();
        return 'again';
      }
      started.push(range);
    }
  }
  // One synchronous section: no await until every PTE is replaced.
  const words = k.phys.words;
  const entries = k.rmap.walk(pfn);
  const exported = k.phys.testFlag(pfn, PG_external_rmap);
  for (const { mm, va } of entries) {
    const pi = walk(words, mm.root, va);
    const pte = pi >= 0 ? Atomics.load(words, pi) : 0;
    const kind = pteKind(pte);
    const isDevice = kind === KIND_DEVICE;
    if (
      !covered(mm, va) ||
      (kind !== KIND_NORMAL && !isDevice) ||
      ptePfn(pte) !== pfn ||
      (isDevice && (!!mm.findVma(va)?.driver || (!(pte & PTE_PRESENT) && !exported)))
    ) {
      endAll();
      return 'again';
    }
  }
  const out: UnmappedEntry[] = [];
  for (const { mm, va } of entries) {
    const pi = walk(words, mm.root, va);
    const isDriver = !!mm.findVma(va)?.driver;
    const rep = isDriver ? 0 : replacement;
    const old = Atomics.exchange(words, pi, rep);
    if (rep !== 0) onReplace();
    if (old & PTE_DIRTY) k.phys.setFlag(pfn, PG_dirty);
    let owner: number | undefined;
    if (pteKind(old) === KIND_DEVICE) {
      owner = k.phys.getPrivate(pfn);
      dropDeviceEntry(k, pfn);
    }
    k.phys.addMapcount(pfn, -1);
    k.phys.dropRef(pfn); // the caller's reference keeps it above 0
    k.rmap.remove(pfn, mm, va);
    out.push(
      owner === undefined ? { mm, va, old, replacement: rep } : { mm, va, old, replacement: rep, owner },
    );
    mmuNotifierInvalidatePage(k, mm, va);
  }
  // The shootdown completes before endAll and the return, as before; when no process of these mms
  // is inside an access window (the usual case) it is complete on return and no turn is taken
  // (one promise and one await less per page; taking none only removes interleavings).
  const sd = shootdown(
    k,
    out.map((e) => e.mm),
  );
  if (sd) await sd;
  endAll();
  return out;
}

/**
 * Put back the PTEs tryToUnmap replaced (a notifier failed). Entries changed meanwhile (munmap,
 * exit) are skipped. A device entry is restored as the same device entry (same mode and owner) with
 * its accounting; a normal PTE gets no more access than the VMA allows now (an mprotect may have
 * run while the swap/migration entry was in place). `onRestore` undoes per-entry side effects (swap
 * slot references).
 */
export function restoreUnmapped(k: Kernel, pfn: Pfn, entries: UnmappedEntry[], onRestore: () => void): void {
  const words = k.phys.words;
  for (const e of entries) {
    if (e.replacement === 0 || e.mm.dead || e.mm.exiting) continue;
    const pi = walk(words, e.mm.root, e.va);
    if (pi < 0 || Atomics.load(words, pi) !== e.replacement) continue;
    let pte = e.old & ~(PTE_YOUNG | PTE_DIRTY);
    const isDevice = pteKind(e.old) === KIND_DEVICE;
    if (!isDevice) {
      const prot = e.mm.findVma(e.va)?.prot ?? 0;
      if (!(prot & PROT_WRITE)) pte &= ~PTE_WRITE;
      if (!(prot & PROT_READ)) pte &= ~(PTE_PRESENT | PTE_WRITE);
    }
    Atomics.store(words, pi, pte);
    k.phys.getRef(pfn);
    k.phys.addMapcount(pfn, 1);
    k.rmap.add(pfn, e.mm, e.va);
    if (isDevice) {
      k.deviceEntries.set(pfn, (k.deviceEntries.get(pfn) ?? 0) + 1);
      k.phys.setFlag(pfn, PG_device);
      if (e.owner !== undefined) k.phys.setPrivate(pfn, e.owner);
    }
    onRestore();
  }
}

/** Reclaim one page (swap it out). `force` ignores the young bits (kernel.reclaimPage). */
export async function reclaimPage(
  k: Kernel,
  pfn: Pfn,
  opts: { force: boolean; blockable: boolean },
): Promise<ReclaimOutcome> {
  const c = await reclaimStart(k, pfn, opts);
  let o: ReclaimOutcome;
  if (typeof c === 'string') o = c;
  else {
    const res = k.phys.testFlag(pfn, PG_external_rmap)
      ? await k.rmapNotifiers.invalidatePage(pfn, 'reclaim')
      : undefined;
    [o] = await reclaimFinish(k, [c], [res]);
  }
  k.stats.reclaim[o] = (k.stats.reclaim[o] ?? 0) + 1;
  return o;
}

/**
 * Reclaim a batch of pages with ONE rmap-notifier dispatch for all of them (the multi-page
 * `invalidatePages`, as mainline calls notifiers once per range) and one swap write per run of
 * consecutive slots: every page is locked, unmapped locally (swap entries in place) and held; then
 * the exported ones go to the rmap notifiers in one call; then the pages whose outcome allows it
 * are written out together and freed, the others restored.
 * Per page this is exactly reclaimPage's order (local unmap, then rmap notifiers with the page lock
 * held, then write-out): only the notifier calls and the writes of the batch are merged. Page locks
 * are only ever TRIED here ('busy' otherwise), so holding several at once cannot deadlock with
 * another reclaimer.
 */
export async function reclaimPages(
  k: Kernel,
  pfns: readonly Pfn[],
  opts: { force: boolean; blockable: boolean },
): Promise<ReclaimOutcome[]> {
  const started = await Promise.all(pfns.map((pfn) => reclaimStart(k, pfn, opts)));
  const held: Unmapped[] = [];
  const exported: Pfn[] = [];
  for (const c of started) {
    if (typeof c === 'string') continue;
    held.push(c);
    if (k.phys.testFlag(c.pfn, PG_external_rmap)) exported.push(c.pfn);
  }
  const results = new Map<Pfn, RmapOutcome>();
  if (exported.length > 0) {
    try {
      const rs = await k.rmapNotifiers.invalidatePages(exported, 'reclaim');
      for (let i = 0; i < exported.length; i++) results.set(exported[i], rs[i]);
    } catch (e) {
      // The dispatch itself threw (nothing ok was reported): every exported page of the batch is
      // kept as for a failed outcome (PTEs restored, a fork's copy of a swap entry given data), the
      // rest finish as usual, everything is released, and the error is the caller's.
      const failed: RmapOutcome = { ok: false, dirty: false, failures: [`threw: ${String(e)}`] };
      await reclaimFinish(
        k,
        held,
        held.map((c) => (k.phys.testFlag(c.pfn, PG_external_rmap) ? failed : undefined)),
      );
      throw e;
    }
  }
  const finished = await reclaimFinish(
    k,
    held,
    held.map((c) => results.get(c.pfn)),
  );
  let j = 0;
  const out = started.map((c) => (typeof c === 'string' ? c : finished[j++]));
  for (const o of out) k.stats.reclaim[o] = (k.stats.reclaim[o] ?? 0) + 1;
  return out;
}

/** A page reclaimStart locked, pinned, put in the swap cache and unmapped locally. */
interface Unmapped {
  pfn: Pfn;
  slot: number;
  unmapped: UnmappedEntry[];
}

/** Drop what reclaimStart took: the swap-cache slot, the page lock, the pin. */
function reclaimRelease(k: Kernel, pfn: Pfn, slot: number): void {
  const ph = k.phys;
  if (slot >= 0) {
    k.swapCache.delete(slot);
    ph.clearFlag(pfn, PG_swapcache);
    k.swap!.unreserve(slot);
  }
  ph.unlockPage(pfn);
  k.unpin(pfn);
}

/**
 * First half of a swap-out: trylock, pin, young check, swap slot, tryToUnmap. Returns an outcome
 * (everything released again) or the unmapped page, still locked and pinned, for reclaimFinish.
 */
async function reclaimStart(
  k: Kernel,
  pfn: Pfn,
  opts: { force: boolean; blockable: boolean },
): Promise<ReclaimOutcome | Unmapped> {
  const ph = k.phys;
  k.checkPfn(pfn);
  const why = unevictableReason(k, pfn);
  if (why) return why;
  const swap = k.swap;
  if (!swap) return 'no_swap';
  if (!ph.trylockPage(pfn)) return 'busy';
  k.pin(pfn);
  let slot = -1;
  let held = false;
  try {
    if (!opts.force && pageReferenced(k, pfn)) {
      k.lru.delete(pfn);
      k.lru.add(pfn);
      return 'referenced';
    }
    slot = swap.alloc();
    if (slot < 0) return 'no_swap';
    k.swapCache.set(slot, pfn);
    ph.setFlag(pfn, PG_swapcache);
    const swapPte = mkSwapPte(slot);
    // Each swap entry takes its slot reference in the same synchronous section that writes it.
    const unmapped = await tryToUnmap(k, pfn, swapPte, 'reclaim', opts.blockable, () => swap.get(slot));
    if (unmapped === 'again') return 'again';
    held = true;
    return { pfn, slot, unmapped };
  } finally {
    if (!held) reclaimRelease(k, pfn, slot);
  }
}

/**
 * Second half, for a batch of pages reclaimStart holds: given each page's rmap-notifier outcome
 * (when it has PG_external_rmap), keep it (restore the PTEs) or write it out and free it. The pages
 * to write go to swap together (SwapArea.writeBatch: one pwritev per run of consecutive slots); a
 * page is written only after ITS notifier outcome said ok (every remote copy gone, dirty data home),
 * exactly as one page at a time. Always releases what reclaimStart took, for every page.
 */
async function reclaimFinish(
  k: Kernel,
  cs: readonly Unmapped[],
  res: ReadonlyArray<RmapOutcome | undefined>,
): Promise<ReclaimOutcome[]> {
  const ph = k.phys;
  const swap = k.swap!;
  const out: ReclaimOutcome[] = new Array(cs.length);
  let thrown: { e: unknown } | undefined;
  try {
    /** Indices of the pages that go to swap now. */
    const toWrite: number[] = [];
    for (let i = 0; i < cs.length; i++) {
      const { pfn, slot, unmapped } = cs[i];
      try {
        if (ph.testFlag(pfn, PG_external_rmap)) {
          // the flag only changes under the page lock, which we hold: it was set when the batch was
          // dispatched, so `res[i]` is this page's outcome (a caller without one asks now)
          const r = res[i] ?? (await k.rmapNotifiers.invalidatePage(pfn, 'reclaim'));
          if (!r.ok) {
            out[i] = 'external_failed';
            restoreUnmapped(k, pfn, unmapped, () => swap.put(slot));
            // fork may have copied a swap entry meanwhile: give that copy valid data.
            if (swap.ref(slot) > 0) await swap.write(slot, ph.frameBytes(pfn).slice());
            k.logger.debug({ pfn, failures: r.failures }, 'reclaim: rmap notifier failed, page kept');
            continue;
          }
          if (r.dirty) ph.setFlag(pfn, PG_dirty);
          ph.clearFlag(pfn, PG_external_rmap);
        }
        if (swap.ref(slot) > 0) toWrite.push(i);
      } catch (e) {
        // as when each page finished on its own: this page is released (finally), the rest of the
        // batch completes, then the error is the caller's
        out[i] = 'busy';
        thrown ??= { e };
      }
    }
    // The frames themselves go to the write, no copy: nothing can change one until the write has
    // completed. Its page lock is held (released in `finally`, after this await), so no fault on its
    // swap entries (they sleep on the lock), no migration, mkclean or other reclaim touches it; every
    // local PTE was replaced and the TLB shootdown completed in tryToUnmap, so no process writes
    // through a stale translation; an exported page's rmap notifiers reported ok, so every remote
    // copy is gone and its dirty data was written into the frame BEFORE that (a mapper that did not
    // ack was fenced: outcome not ok, the page is not written); and the frame is freed only after
    // the write (reclaimRelease). swap-batch.test.ts checks each frame is locked and unmapped for
    // the whole write, and the data that comes back.
    const errs =
      toWrite.length > 0
        ? await swap.writeBatch(
            toWrite.map((i) => cs[i].slot),
            toWrite.map((i) => ph.frameBytes(cs[i].pfn)),
          )
        : [];
    for (let w = 0; w < toWrite.length; w++) {
      const i = toWrite[w];
      const { pfn, slot, unmapped } = cs[i];
      if (errs[w] !== null) {
        k.logger.error({ pfn, slot, err: String(errs[w]) }, 'swap write failed');
        restoreUnmapped(k, pfn, unmapped, () => swap.put(slot));
        out[i] = 'io_error';
        continue;
      }
      k.stats.swapOuts++;
    }
    for (let i = 0; i < cs.length; i++) {
      if (out[i] !== undefined) continue;
      const { pfn } = cs[i];
      if (ph.mapcount(pfn) !== 0 || ph.refcount(pfn) !== 1) {
        // Cannot happen while we hold the page lock; refuse to free rather than corrupt.
        k.violations.push(`reclaim: pfn ${pfn} gained users while locked`);
        out[i] = 'busy';
        continue;
      }
      k.lruDel(pfn);
      ph.clearFlag(pfn, PG_dirty | PG_referenced);
      out[i] = 'reclaimed';
    }
  } finally {
    for (const c of cs) reclaimRelease(k, c.pfn, c.slot);
  }
  if (thrown) throw thrown.e;
  return out;
}

export interface ShrinkResult {
  scanned: number;
  reclaimed: number;
  outcomes: Record<string, number>;
  /**
   * Why the scan ended: `done` (nr pages reclaimed), `deadline` (budgetMs passed), `scan-limit`
   * (2 × the LRU size + 8 pages looked at: the rest is referenced or refused), `empty` (no LRU page).
   */
  stoppedBy: 'done' | 'deadline' | 'scan-limit' | 'empty';
}

export interface ShrinkLimits {
  /** No new page is started once this many ms have passed (a page in flight completes). */
  budgetMs?: number;
  /**
   * Pages reclaimed at once, as one batch (1..64, default 1): each under its own page lock, their
   * rmap notifiers called once for the batch (reclaimPages).
   */
  concurrency?: number;
  /**
   * Batches in flight at once (1..4, default 1): the next batch is unmapped and its notifiers
   * dispatched while the previous one waits for its acks or its swap write.
   */
  batches?: number;
}

export const MAX_SHRINK_CONCURRENCY = 64;
export const MAX_SHRINK_BATCHES = 4;
/**
 * Pages per batch of the kernel's own reclaim (kswapd and direct reclaim), mainline's
 * SWAP_CLUSTER_MAX: shrink_folio_list unmaps a cluster of this many pages and flushes once, so an
 * exported page's rmap notifier is called once per cluster, not once per page (issue 15).
 */
export const RECLAIM_BATCH = 32;

/**
 * Reclaim up to `nr` pages from the LRU (oldest first, young pages get a second chance), looking at
 * no more than 2 × the LRU size + 8 pages, within `limits.budgetMs`, in batches of up to
 * `limits.concurrency` pages (reclaimPages: the batch's swap-outs overlap, and their rmap notifiers
 * are called once for the batch, so remote invalidations go out per batch, not per page).
 */
export async function shrink(
  k: Kernel,
  nr: number,
  blockable = true,
  limits: ShrinkLimits = {},
): Promise<ShrinkResult> {
  const width = Math.max(1, Math.min(MAX_SHRINK_CONCURRENCY, Math.floor(limits.concurrency ?? 1)));
  const depth = Math.max(1, Math.min(MAX_SHRINK_BATCHES, Math.floor(limits.batches ?? 1)));
  // The scan's state in one object, and the per-page and per-batch steps module-level functions of
  // it (takePage, runBatch): closures made per shrink call had their optimised code thrown away by
  // every full GC and were recompiled on each call (issue 15).
  const s: ShrinkScan = {
    k,
    nr,
    res: { scanned: 0, reclaimed: 0, outcomes: {}, stoppedBy: 'done' },
    budget: k.lru.size * 2 + 8,
    deadline: limits.budgetMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + limits.budgetMs,
    // One live iterator over the LRU. Every page it yields is rotated to the tail at once, so its
    // next entry is always the LRU head. (Taking the head with `lru.values().next()` on every step
    // walks over the deleted slots at the front of the Set's table each time: quadratic in the LRU
    // size.)
    it: k.lru.values(),
    inFlight: new Set<Pfn>(),
    stop: null,
    running: new Map<number, Promise<void>>(),
    failed: undefined,
  };
  // Pages are taken `width` at a time and reclaimed as one batch (reclaimPages: one rmap-notifier
  // dispatch for the batch, so a driver can send one invalidation per mapper per batch). Up to
  // `depth` batches are in flight: while one waits for its notifiers (remote acks) or its swap
  // write, the next is unmapped and dispatched. Batches never share a page (inFlight), and each is
  // exactly what a concurrent reclaimer's batch would be: page locks only tried, per page the order
  // of reclaimPage.
  for (let id = 0; ; id++) {
    const batch: Pfn[] = [];
    while (!s.failed && batch.length < width) {
      const pfn = takePage(s);
      if (pfn === null) break;
      s.inFlight.add(pfn);
      batch.push(pfn);
    }
    if (batch.length === 0) {
      // takePage found nothing to start. If it stopped for good (`stop`), or nothing is in flight,
      // the scan is over. Else every page it could see is in a batch still in flight (or enough
      // pages are on their way): wait for one to end, then scan again — its pages that were not
      // reclaimed (busy, referenced, refused) are back on the LRU, and pages still to reclaim may
      // remain. (It used to end here, reporting 'done' with fewer than nr pages reclaimed while the
      // LRU still held pages, whenever more than one batch was in flight.) Terminates: each pass
      // either scans a page (bounded by `budget`) or waits for one of the finitely many running
      // batches.
      if (s.stop !== null || s.failed || s.running.size === 0) break;
      await Promise.race(s.running.values());
      continue;
    }
    s.running.set(id, runBatch(s, id, batch, blockable));
    if (s.running.size >= depth) await Promise.race(s.running.values());
  }
  while (s.running.size > 0) await Promise.race(s.running.values());
  if (s.failed) throw s.failed.e;
  // takePage returned null with nothing in flight, so either nr pages were reclaimed or `stop` says
  // why not (with an empty inFlight, takePage returns null only for those two reasons).
  const res = s.res;
  res.stoppedBy = res.reclaimed >= nr ? 'done' : (s.stop ?? 'done');
  return res;
}

/** A shrink call's scan (see shrink). */
interface ShrinkScan {
  readonly k: Kernel;
  readonly nr: number;
  readonly res: ShrinkResult;
  /** Pages looked at, at most (2 × the LRU size + 8). */
  readonly budget: number;
  readonly deadline: number;
  it: IterableIterator<Pfn>;
  /** Pages this call is reclaiming right now (already rotated to the tail). */
  readonly inFlight: Set<Pfn>;
  stop: ShrinkResult['stoppedBy'] | null;
  /** Batches in flight, by number; each removes itself when it has ended (runBatch). */
  readonly running: Map<number, Promise<void>>;
  failed: { e: unknown } | undefined;
}

/** The next page for a batch of the scan (rotated to the LRU tail), or null: see shrink. */
function takePage(s: ShrinkScan): Pfn | null {
  const k = s.k;
  const res = s.res;
  let skipped = 0;
  for (;;) {
    if (s.stop) return null;
    if (res.reclaimed + s.inFlight.size >= s.nr) return null; // enough reclaimed or on their way
    if (res.scanned >= s.budget) s.stop = 'scan-limit';
    else if (performance.now() >= s.deadline) s.stop = 'deadline';
    else if (k.lru.size === 0) s.stop = 'empty';
    else {
      const n = s.it.next();
      if (n.done) {
        s.it = k.lru.values();
        continue;
      }
      const pfn = n.value;
      if (s.inFlight.has(pfn)) {
        // The scan came round to a page of the batch being gathered: skip it; if only such pages
        // are left, the batch is complete.
        if (++skipped > s.inFlight.size) return null;
        continue;
      }
      k.lru.delete(pfn);
      k.lru.add(pfn);
      res.scanned++;
      return pfn;
    }
  }
}

/** One batch of the scan: reclaimPages, its outcomes counted; then its pages leave inFlight and it leaves running. */
async function runBatch(s: ShrinkScan, id: number, batch: Pfn[], blockable: boolean): Promise<void> {
  try {
    const outcomes = await reclaimPages(s.k, batch, { force: false, blockable });
    const res = s.res;
    for (const o of outcomes) {
      res.outcomes[o] = (res.outcomes[o] ?? 0) + 1;
      if (o === 'reclaimed') res.reclaimed++;
    }
  } catch (e) {
    s.failed ??= { e };
  } finally {
    for (const pfn of batch) s.inFlight.delete(pfn);
    s.running.delete(id);
  }
}

/**
 * page_mkclean: write-protect every local mapping of `pfn` and collect the dirty bits, then ask the
 * rmap notifiers (event 'clean') to write-protect remote mappings and return remote dirt. A failed
 * notifier is retried (bounded). Returns whether the page was dirty. The caller holds the page lock.
 * Device entries are left alone: a 'readonly' one is already write-protected (no W, no D), and a
 * 'none' one stays — the rmap notifier's 'clean' callback makes the remote writer write back.
 */
export async function pageMkclean(
  k: Kernel,
  pfn: Pfn,
  retries = 5,
): Promise<{ dirty: boolean; clean: boolean }> {
  const words = k.phys.words;
  let dirty = k.phys.testClearFlag(pfn, PG_dirty);
  const entries = k.rmap.walk(pfn).filter((e) => {
    const pi = walk(words, e.mm.root, e.va);
    return pi >= 0 && Atomics.load(words, pi) & PTE_WRITE;
  });
  const ranges = entries.map((e) => ({
    mm: e.mm.handle,
    start: e.va,
    end: e.va + PAGE_SIZE,
    event: 'clear' as const,
    blockable: true,
  }));
  const started: typeof ranges = [];
  try {
    for (const r of ranges) {
      if ((await mmuNotifierInvalidateRangeStart(k, r)) === 'ok') started.push(r);
    }
    for (const { mm, va } of entries) {
      const pi = walk(words, mm.root, va);
      if (pi < 0) continue;
      let pte = Atomics.load(words, pi);
      while (pte & PTE_PRESENT && ptePfn(pte) === pfn && pteKind(pte) !== KIND_DEVICE) {
        const prev = Atomics.compareExchange(words, pi, pte, pte & ~(PTE_WRITE | PTE_DIRTY));
        if (prev === pte) {
          if (pte & PTE_DIRTY) dirty = true;
          mmuNotifierInvalidatePage(k, mm, va);
          break;
        }
        pte = prev;
      }
    }
    await flushTlb(
      k,
      entries.map((e) => e.mm),
    );
  } finally {
    for (const r of started) mmuNotifierInvalidateRangeEnd(r);
  }
  let clean = true;
  if (k.phys.testFlag(pfn, PG_external_rmap)) {
    clean = false;
    for (let i = 0; i <= retries; i++) {
      if (i > 0) {
        k.stats.mkcleanRetries++;
        await new Promise((r) => setTimeout(r, Math.min(100, 5 * 2 ** i)));
      }
      const res = await k.rmapNotifiers.invalidatePage(pfn, 'clean');
      if (res.ok) {
        if (res.dirty) dirty = true;
        clean = true;
        break;
      }
    }
  }
  return { dirty, clean };
}
