/**
 * The two kernel notifiers the driver registers.
 *
 * Per-mm notifier (one per source address space): munmap, mprotect, COW (fork or a write breaking
 * COW), exit release, and anything else that changes the source's page tables. On
 * invalidateRangeStart every remote copy of the affected segment pages is invalidated (with write-back
 * where the data survives), same-instance attachers' PTEs are zapped and the source's device entries
 * cleared; the page gen moves so a grant racing with it retries. Non-blockable ranges get 'again'
 * when there is anything to do. release tears every segment of the mm down (segment-gone).
 *
 * Global rmap notifier (the 2008 patch): tryToUnmap / pageMkclean call invalidatePage(pfn) with the
 * page lock held after the kernel's own rmap walk. The driver invalidates every remote mapper of the
 * frame, collects every ack (dirty data written into the frame, reported as `dirty`), and returns
 * ok; if a mapper misses the deadline it is fenced and the result is {ok:false} so reclaim keeps the
 * page this time (counted as a reclaim refusal).
 */
import type {
  InvalidateEvent,
  MmHandle,
  MmuNotifierOps,
  MmuNotifierRange,
  RmapInvalidateResult,
  RmapNotifierOps,
} from '@xpmesh/kernel';
import type { InvalidateReason } from '@xpmesh/protocol';
import { teardownSegment } from './home.js';
import { type InvalidateResult, invalidatePages } from './invalidate.js';
import { toRanges } from './ranges.js';
import { devModeAt, pageAddr } from './source-pte.js';
import type { DriverState } from './state.js';
import { type Attachment, DEV_CLEAR, type Segment } from './state.js';

const REASON: Record<InvalidateEvent, InvalidateReason> = {
  unmap: 'unmap',
  protection: 'protection',
  cow: 'cow',
  migrate: 'migrate',
  reclaim: 'reclaim',
  release: 'release',
  clear: 'clean',
  device: 'protection',
};

/** Events after which the source frame of the page may change. */
const FRAME_CHANGES = new Set<InvalidateEvent>(['unmap', 'cow', 'release', 'migrate', 'reclaim']);

/** Same-instance attachments of a segment (they map its frames directly). */
function localAttachments(d: DriverState, seg: Segment): Attachment[] {
  const out: Attachment[] = [];
  for (const a of d.attachments.values()) if (a.grant.local && a.grant.segid === seg.segid) out.push(a);
  return out;
}

/**
 * Per page of the range being worked on, whether the source PTE holds a device entry of ours
 * (deviceEntryModes fills it: one page-table walk per segment overlap, not one deviceEntryAt per
 * page). Module-level and reused: the notifier runs its page loop synchronously, before any await.
 */
let devScratch = new Uint8Array(1024);

function devModes(d: DriverState, seg: Segment, p0: number, p1: number): Uint8Array | undefined {
  if (seg.mm.exiting) return undefined; // devModeAt: DEV_CLEAR for every page of an exiting mm
  if (devScratch.length < p1 - p0) devScratch = new Uint8Array(p1 - p0);
  // the kernel answers up to MAX_RANGE_PAGES (1024) pages a call
  for (let p = p0; p < p1; p += 1024) {
    const n = Math.min(1024, p1 - p);
    d.kernel.deviceEntryModes(seg.mm, pageAddr(d, seg, p), n, d.deviceOwner, devScratch.subarray(p - p0));
  }
  return devScratch;
}

/**
 * The pages of [p0,p1) of `seg` this range invalidation has to work on (pushed onto `out`), each
 * page's sequence bumped. One pass over the range (issue 15): device entries come from one ranged
 * query, the same-instance attachments are looked up once. A page needs work when a remote copy,
 * a device entry of ours or a same-instance mapping of it exists — exactly the old per-page
 * needsWork (rmap.hasPage, devModeAt !== DEV_CLEAR, an attachment's mapped[i]).
 */
function collectRange(
  d: DriverState,
  seg: Segment,
  p0: number,
  p1: number,
  range: MmuNotifierRange,
  out: number[],
): void {
  const event = range.event;
  const rm = d.rmap;
  const k = d.kernel;
  const slot = seg.slot;
  const pfn = seg.pfn;
  const gen = seg.gen;
  const locals = localAttachments(d, seg);
  // asked for on the first page without remote copies (a range every page of which has copies, the
  // usual first invalidation, needs no device-entry answer at all)
  let dev: Uint8Array | undefined;
  let devAsked = false;
  const leftToRmap = range.blockable && (event === 'reclaim' || event === 'migrate');
  const frameChanges = FRAME_CHANGES.has(event);
  for (let p = p0; p < p1; p++) {
    gen[p]++; // seg.bumpSeq(p): a grant in progress retries
    const hasCopies = rm.hasPage(pfn[p], slot, p);
    // Reclaim and migration of an exported frame: its remote copies are left to the rmap
    // notifier (the 2008 path), which the kernel calls for this very frame after its local
    // unmap, page lock held, before the frame is written out, copied or freed, and calls once
    // per BATCH of frames (invalidatePages), so a mapper gets one invalidate per batch, not
    // one per page. Nothing can map the page anew meanwhile: gen moved just above (a grant
    // rechecks it under the page lock), the kernel's interval sequence moved (a grant's
    // mmuIntervalReadRetry), and getUserPage on the swap/migration entry sleeps on the page
    // lock that reclaim/migration holds until the frame is gone or restored. A frame with
    // reverse-map entries has PG_external_rmap (invariant 2), so the notifier does run for it.
    // (reclaim-fence.test.ts: batched reclaim with a remote writer's dirty data.) Only for a
    // blockable range: direct reclaim (non-blockable) still gets 'again' below for a page with
    // remote copies, as before, rather than waiting for remote acks inside an allocation.
    if (leftToRmap && hasCopies && k.pageExported(pfn[p])) continue;
    let work = hasCopies;
    if (!work) {
      if (!devAsked) {
        dev = devModes(d, seg, p0, p1);
        devAsked = true;
      }
      work = dev !== undefined && dev[p - p0] !== 0;
    }
    for (let j = 0; !work && j < locals.length; j++) {
      const a = locals[j];
      const i = p - a.firstPage;
      if (i >= 0 && i < a.npages && a.mapped[i] !== 0) work = true;
    }
    if (work) out.push(p);
    else if (frameChanges) {
      pfn[p] = -1;
      if (event === 'reclaim') markSwapped(seg, p);
    }
  }
}

export function mmNotifierOps(d: DriverState, mm: MmHandle): MmuNotifierOps {
  return {
    // No callback here unregisters this registration (RmapNotifierOps.contextFree, for a per-mm
    // one): its unregister is teardownSegment's, and only for an mm that is not exiting, while the
    // one callback that reaches teardownSegment is `release`, which runs for an exiting mm (the
    // other caller is xpmem_remove, a syscall, not a callback). So the kernel runs these without
    // the notifier context: no promise hooks switched on for a reclaim batch's local unmap.
    contextFree: true,
    invalidateRangeStart(range) {
      if (range.event === 'device') return undefined; // our own device entries
      const rec = d.mms.get(range.mm.id);
      if (!rec) return undefined;
      const ps = d.kernel.pageSize;
      let hits: Hit[] | undefined;
      for (const seg of rec.segs) {
        const lo = Math.max(range.start, seg.vaddr);
        const hi = Math.min(range.end, seg.vaddr + seg.size);
        if (lo >= hi) continue;
        const p0 = (lo - (lo % ps) - seg.vaddr) / ps;
        const p1 = Math.ceil((hi - seg.vaddr) / ps);
        const pages: number[] = [];
        collectRange(d, seg, p0, p1, range, pages);
        if (pages.length === 0) continue;
        hits ??= [];
        hits.push([seg, pages]);
      }
      if (hits === undefined) return undefined;
      if (!range.blockable) return 'again';
      return invalidateHits(d, hits, range.event);
    },
    release(m) {
      if (m.id !== mm.id) return undefined;
      return (async () => {
        const rec = d.mms.get(m.id);
        if (!rec) return;
        for (const seg of [...rec.segs]) await teardownSegment(d, seg, 'exit');
        d.mms.delete(m.id);
      })();
    },
  };
}

/** Pages of one segment a notifier works on. The page list is never changed once bracketed. */
type Hit = [Segment, number[]];

/** The per-mm notifier's work on its hits, inside their bracket (a module-level function: no per-call closure). */
async function invalidateHits(d: DriverState, hits: Hit[], event: InvalidateEvent): Promise<void> {
  enterBrackets(hits);
  try {
    for (let i = 0; i < hits.length; i++) await invalidateSourcePages(d, hits[i][0], hits[i][1], event);
  } finally {
    leaveBrackets(hits);
  }
}

/**
 * A notifier's pages are marked busy (the bracket): no grant or local map of them can start or
 * finish until its work, including the bookkeeping after the acks, is done. leaveBrackets must be
 * given the same hits (same page lists, unchanged: nothing writes to a bracketed page list).
 */
function enterBrackets(hits: readonly Hit[]): void {
  for (let h = 0; h < hits.length; h++) {
    const [seg, pages] = hits[h];
    for (let i = 0; i < pages.length; i++) seg.enterBracket(pages[i]);
  }
}

function leaveBrackets(hits: readonly Hit[]): void {
  for (let h = 0; h < hits.length; h++) {
    const [seg, pages] = hits[h];
    for (let i = 0; i < pages.length; i++) seg.leaveBracket(pages[i]);
  }
}

/** Run `fn` with the pages of `hits` bracketed (see enterBrackets). */
async function bracket<T>(hits: readonly Hit[], fn: () => Promise<T>): Promise<T> {
  enterBrackets(hits);
  try {
    return await fn();
  } finally {
    leaveBrackets(hits);
  }
}

async function invalidateSourcePages(d: DriverState, seg: Segment, pages: number[], event: InvalidateEvent) {
  const k = d.kernel;
  const writeback = event !== 'unmap' && event !== 'release';
  await invalidatePages(d, seg, pages, { reason: REASON[event], writeback, downgrade: false });
  // Same-instance attachers map the source frames: zapped, one kernel call per run of pages.
  if (event !== 'reclaim' && event !== 'migrate') {
    const zapped = zapLocalAttachers(d, seg, pages);
    if (zapped) await zapped;
  }
  // Source device entries back to normal PTEs, one ranged call per run of pages (only adds access:
  // no shootdown, as with clearDeviceEntry). Runs are exactly the pages of this call.
  if (!seg.mm.exiting) {
    for (let i = 0; i < pages.length; ) {
      let j = i + 1;
      while (j < pages.length && pages[j] === pages[j - 1] + 1) j++;
      try {
        k.clearDeviceEntries(
          seg.mm,
          pageAddr(d, seg, pages[i]),
          pageAddr(d, seg, pages[j - 1] + 1),
          d.deviceOwner,
        );
      } catch (e) {
        d.log.debug({ err: e }, 'xpmem: clearDeviceEntries during invalidation');
      }
      i = j;
    }
  }
  const dev = seg.dev;
  for (let i = 0; i < pages.length; i++) dev[pages[i]] = DEV_CLEAR;
  if (FRAME_CHANGES.has(event)) {
    const forget = event === 'unmap' || event === 'release';
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i];
      if (!d.rmap.hasPage(seg.pfn[p], seg.slot, p)) seg.pfn[p] = -1;
      if (forget && seg.pageState(p) === 'swapped') seg.transition(p, 'forget');
      if (event === 'reclaim') markSwapped(seg, p);
    }
  }
}

/**
 * (issue 17) The kernel is swapping out a page of a segment and every remote copy is gone: the
 * directory says `swapped` (in /pages, the page-state events and the view) until a grant swaps it
 * back in or the frame goes away. Both notifiers mark it: the per-mm notifier for the pages it
 * handles, the rmap notifier for exported frames left to it (blockable reclaim). If the
 * kernel keeps the page after all (a later step of reclaim fails), the state still says swapped:
 * the next grant moves it on exactly as from `home`.
 */
function markSwapped(seg: Segment, p: number): void {
  if (seg.pageState(p) === 'home') seg.transition(p, 'swap-out');
}

/** Zap `pages` of a segment in its same-instance attachments (fenceLocalAttachers for a write, ranged). */
function zapLocalAttachers(
  d: DriverState,
  seg: Segment,
  pages: readonly number[],
): Promise<void> | undefined {
  const locals = localAttachments(d, seg);
  // none (the usual case): nothing to await, no promise made
  return locals.length === 0 ? undefined : zapAttachments(d, locals, pages);
}

async function zapAttachments(d: DriverState, locals: Attachment[], pages: readonly number[]): Promise<void> {
  const k = d.kernel;
  const ps = k.pageSize;
  for (const att of locals) {
    const idx: number[] = [];
    for (const p of pages) {
      const i = p - att.firstPage;
      if (i < 0 || i >= att.npages || att.mapped[i] === 0) continue;
      att.mapped[i] = 0;
      idx.push(i);
    }
    for (const [first, n] of toRanges(idx)) {
      const a = att.vaddr + first * ps;
      await k.zapDriverRange(att.mm, a, a + n * ps);
    }
  }
}

export function rmapNotifierOps(d: DriverState): RmapNotifierOps {
  const ops: RmapNotifierOps = {
    // No callback here unregisters the rmap registration: its one unregister is Driver.unload's,
    // which no notifier callback reaches (they invalidate, fence and update the directory only).
    // So the kernel may run them without the notifier context (RmapNotifierOps.contextFree): no
    // process-wide promise hooks for the whole of a reclaim batch's invalidation (issue 15).
    contextFree: true,
    async invalidatePage(pfn, reason): Promise<RmapInvalidateResult> {
      const k = d.kernel;
      const es = d.rmap.entries(pfn);
      if (es.length === 0) {
        if (k.pageExported(pfn)) k.unexportPage(pfn);
        return { ok: true, dirty: false };
      }
      const groups = new Map<Segment, number[]>();
      for (const e of es) {
        const seg = d.segBySlot.get(e.seg);
        if (!seg) continue;
        const list = groups.get(seg) ?? [];
        groups.set(seg, list);
        if (!list.includes(e.page)) list.push(e.page);
        seg.bumpSeq(e.page);
      }
      return bracket([...groups], () => invalidateFrame(d, pfn, reason, groups));
    },

    /**
     * A batch of frames (reclaim / migration batches): every remote copy of every frame invalidated
     * with ONE invalidatePages call per segment, so each mapper gets one invalidate per segment per
     * batch instead of one per page. Per frame the contract is invalidatePage's (every page lock is
     * held by the kernel; entries are looked up and dirty data written on that frame). A segment page
     * whose entries sit on two frames of the batch (a stale frame and the current one) cannot share
     * one per-page frame map: such frames go through invalidatePage, one at a time, afterwards.
     * An outcome is per call: a mapper fenced during the call fails every frame of the call (the
     * kernel keeps them this time: a refusal, never a frame freed under a copy).
     */
    async invalidatePages(pfns, reason): Promise<RmapInvalidateResult[]> {
      const k = d.kernel;
      const out: RmapInvalidateResult[] = new Array(pfns.length);
      /** segment → (page → frame) for the batched call */
      const bySeg = new Map<Segment, Map<number, number>>();
      /** frame index → its (segment, pages) */
      const frames = new Map<number, Map<Segment, number[]>>();
      const later: number[] = [];
      /**
       * Frames whose entries all belong to one segment page (the usual case): that page, kept in
       * two arrays instead of a (segment → pages) map per frame. Nothing is allocated per such
       * frame: what a batch makes before the acks lives for the whole remote round trip (issue 15).
       */
      const soleSeg: Array<Segment | undefined> = new Array(pfns.length);
      const solePage = new Int32Array(pfns.length);
      let toInvalidate = 0;
      for (let i = 0; i < pfns.length; i++) {
        const pfn = pfns[i];
        const sole = d.rmap.soleOwner(pfn);
        const seg1 = sole >= 0 ? d.segBySlot.get(d.rmap.segAt(sole)) : undefined;
        if (seg1 !== undefined) {
          // exactly the general path below for a frame with one (segment, page) group
          const p = d.rmap.pageAt(sole);
          let m = bySeg.get(seg1);
          const owner = m?.get(p);
          if (owner !== undefined && owner !== pfn) {
            later.push(i);
            continue;
          }
          if (!m) {
            m = new Map();
            bySeg.set(seg1, m);
          }
          m.set(p, pfn);
          seg1.bumpSeq(p);
          soleSeg[i] = seg1;
          solePage[i] = p;
          toInvalidate++;
          continue;
        }
        const es = d.rmap.entries(pfn);
        if (es.length === 0) {
          if (k.pageExported(pfn)) k.unexportPage(pfn);
          out[i] = { ok: true, dirty: false };
          continue;
        }
        const groups = new Map<Segment, number[]>();
        let clash = false;
        for (const e of es) {
          const seg = d.segBySlot.get(e.seg);
          if (!seg) continue;
          const owner = bySeg.get(seg)?.get(e.page);
          if (owner !== undefined && owner !== pfn) clash = true;
          const list = groups.get(seg) ?? [];
          groups.set(seg, list);
          if (!list.includes(e.page)) list.push(e.page);
        }
        if (clash) {
          later.push(i);
          continue;
        }
        for (const [seg, pages] of groups) {
          let m = bySeg.get(seg);
          if (!m) {
            m = new Map();
            bySeg.set(seg, m);
          }
          for (const p of pages) {
            m.set(p, pfn);
            seg.bumpSeq(p);
          }
        }
        frames.set(i, groups);
        toInvalidate++;
      }
      if (toInvalidate > 0) {
        const hits: Array<[Segment, number[]]> = [...bySeg].map(([seg, m]) => [seg, [...m.keys()]]);
        // (module-level functions, no closure made per batch: V8 recompiled such a closure after
        // every full GC, ~30 ms of a compiler thread each time; issue 15)
        enterBrackets(hits);
        try {
          const r = await invalidateBatchSegs(d, hits, bySeg, reason);
          afterBatch(d, pfns, reason, r, soleSeg, solePage, frames, out);
        } finally {
          leaveBrackets(hits);
        }
      }
      for (const i of later) out[i] = await ops.invalidatePage(pfns[i], reason);
      return out;
    },
  };
  return ops;
}

/** Every segment of a batch invalidated at once (rmapNotifierOps.invalidatePages), its result per segment. */
async function invalidateBatchSegs(
  d: DriverState,
  hits: ReadonlyArray<[Segment, number[]]>,
  bySeg: ReadonlyMap<Segment, Map<number, number>>,
  reason: InvalidateReason,
): Promise<Map<Segment, InvalidateResult>> {
  const r = new Map<Segment, InvalidateResult>();
  const calls: Array<Promise<void>> = new Array(hits.length);
  for (let h = 0; h < hits.length; h++)
    calls[h] = invalidateBatchSeg(d, hits[h][0], hits[h][1], bySeg, reason, r);
  await Promise.all(calls);
  return r;
}

async function invalidateBatchSeg(
  d: DriverState,
  seg: Segment,
  pages: number[],
  bySeg: ReadonlyMap<Segment, Map<number, number>>,
  reason: InvalidateReason,
  r: Map<Segment, InvalidateResult>,
): Promise<void> {
  r.set(
    seg,
    await invalidatePages(d, seg, pages, {
      reason,
      writeback: true,
      downgrade: false,
      lockHeld: true,
      pfns: bySeg.get(seg),
    }),
  );
}

/** The directory after a batch's invalidation and each frame's result into `out`, in frame order. */
function afterBatch(
  d: DriverState,
  pfns: readonly number[],
  reason: InvalidateReason,
  r: ReadonlyMap<Segment, InvalidateResult>,
  soleSeg: ReadonlyArray<Segment | undefined>,
  solePage: Int32Array,
  frames: ReadonlyMap<number, Map<Segment, number[]>>,
  out: RmapInvalidateResult[],
): void {
  // sole-owner frames and the others interleaved, in frame order as before
  for (let i = 0; i < pfns.length; i++) {
    const seg1 = soleSeg[i];
    if (seg1 !== undefined) {
      const sr = r.get(seg1)!;
      const p = solePage[i];
      afterPage(d, pfns[i], reason, seg1, p, sr.ok);
      out[i] = frameResult(d, sr.ok, sr.dirtyPages?.has(p) === true);
      continue;
    }
    const groups = frames.get(i);
    if (groups === undefined) continue;
    let ok = true;
    let dirty = false;
    for (const [seg, pages] of groups) {
      const sr = r.get(seg)!;
      ok &&= sr.ok;
      for (const p of pages) if (sr.dirtyPages?.has(p)) dirty = true;
    }
    out[i] = afterFrame(d, pfns[i], reason, groups, ok, dirty);
  }
}

async function invalidateFrame(
  d: DriverState,
  pfn: number,
  reason: InvalidateReason,
  groups: Map<Segment, number[]>,
): Promise<RmapInvalidateResult> {
  let ok = true;
  let dirty = false;
  await Promise.all(
    [...groups].map(async ([seg, pages]) => {
      const r = await invalidatePages(d, seg, pages, {
        reason,
        writeback: true,
        downgrade: false,
        lockHeld: true,
        pfn,
      });
      ok &&= r.ok;
      dirty ||= r.dirty;
    }),
  );
  return afterFrame(d, pfn, reason, groups, ok, dirty);
}

/** The directory after the remote copies of frame `pfn` were invalidated (ok: every mapper acked). */
function afterFrame(
  d: DriverState,
  pfn: number,
  reason: InvalidateReason,
  groups: Map<Segment, number[]>,
  ok: boolean,
  dirty: boolean,
): RmapInvalidateResult {
  for (const [seg, pages] of groups) for (const p of pages) afterPage(d, pfn, reason, seg, p, ok);
  return frameResult(d, ok, dirty);
}

/** afterFrame for one segment page `p` of frame `pfn`. */
function afterPage(
  d: DriverState,
  pfn: number,
  reason: InvalidateReason,
  seg: Segment,
  p: number,
  ok: boolean,
): void {
  const k = d.kernel;
  if (reason === 'clean') {
    // the page stays: no copy is left, so the source PTE goes back to normal (our device entry
    // would keep it unevictable); a grant racing with this retries (it checks seg.dev)
    if (
      seg.pfn[p] === pfn &&
      devModeAt(d, seg, p, pfn) !== DEV_CLEAR &&
      d.rmap.entries(pfn, seg.slot, p).length === 0
    ) {
      try {
        if (!seg.mm.exiting) k.clearDeviceEntry(seg.mm, pageAddr(d, seg, p));
      } catch (e) {
        d.log.debug({ err: e }, 'xpmem: clearDeviceEntry after clean');
      }
      seg.dev[p] = DEV_CLEAR;
    }
    return;
  }
  if (seg.pfn[p] !== pfn) {
    // the directory had lost track of this frame (its entries were found through the kernel's pfn)
    if (d.rmap.entries(seg.pfn[p], seg.slot, p).length === 0) seg.pfn[p] = -1;
    return;
  }
  seg.pfn[p] = -1;
  seg.dev[p] = DEV_CLEAR; // the kernel's own rmap walk replaced the source PTE
  if (ok && reason === 'reclaim') markSwapped(seg, p);
}

/** A frame's result (ok: every mapper of every page of it acked). */
function frameResult(d: DriverState, ok: boolean, dirty: boolean): RmapInvalidateResult {
  if (!ok) {
    d.counters.reclaimRefusals++;
    return { ok: false, reason: 'a remote mapper missed the ack deadline and was fenced' };
  }
  return { ok: true, dirty };
}
