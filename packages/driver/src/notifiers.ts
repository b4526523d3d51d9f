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
  RmapInvalidateResult,
  RmapNotifierOps,
} from '@xpmesh/kernel';
import type { InvalidateReason } from '@xpmesh/protocol';
import { teardownSegment } from './home.js';
import { invalidatePages } from './invalidate.js';
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

function needsWork(d: DriverState, seg: Segment, p: number, locals: readonly Attachment[]): boolean {
  if (d.rmap.hasPage(seg.pfn[p], seg.slot, p)) return true;
  if (devModeAt(d, seg, p) !== DEV_CLEAR) return true;
  for (const a of locals) {
    const i = p - a.firstPage;
    if (i >= 0 && i < a.npages && a.mapped[i] !== 0) return true;
  }
  return false;
}

export function mmNotifierOps(d: DriverState, mm: MmHandle): MmuNotifierOps {
  return {
    invalidateRangeStart(range) {
      if (range.event === 'device') return undefined; // our own device entries
      const rec = d.mms.get(range.mm.id);
      if (!rec) return undefined;
      const ps = d.kernel.pageSize;
      const hits: Array<[Segment, number[]]> = [];
      for (const seg of rec.segs) {
        const lo = Math.max(range.start, seg.vaddr);
        const hi = Math.min(range.end, seg.vaddr + seg.size);
        if (lo >= hi) continue;
        const pages: number[] = [];
        const locals = localAttachments(d, seg);
        for (let a = lo - (lo % ps); a < hi; a += ps) {
          const p = (a - seg.vaddr) / ps;
          seg.gen[p]++; // a grant in progress retries
          if (needsWork(d, seg, p, locals)) pages.push(p);
          else if (FRAME_CHANGES.has(range.event)) seg.pfn[p] = -1;
        }
        if (pages.length) hits.push([seg, pages]);
      }
      if (hits.length === 0) return undefined;
      if (!range.blockable) return 'again';
      return bracket(d, hits, async () => {
        for (const [seg, pages] of hits) await invalidateSourcePages(d, seg, pages, range.event);
      });
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

/**
 * Run a notifier's work with its pages marked busy: no grant or local map of them can start or
 * finish until the work, including the bookkeeping after the acks, is done.
 */
async function bracket<T>(d: DriverState, hits: Iterable<[Segment, Iterable<number>]>, fn: () => Promise<T>) {
  const held: Array<[Segment, number[]]> = [];
  for (const [seg, pages] of hits) {
    const ps = [...pages];
    for (const p of ps) seg.busy[p]++;
    held.push([seg, ps]);
  }
  try {
    return await fn();
  } finally {
    for (const [seg, ps] of held) {
      for (const p of ps) {
        seg.busy[p]--;
        d.wakeIdle(seg, p);
      }
    }
  }
}

async function invalidateSourcePages(d: DriverState, seg: Segment, pages: number[], event: InvalidateEvent) {
  const k = d.kernel;
  const writeback = event !== 'unmap' && event !== 'release';
  await invalidatePages(d, seg, pages, { reason: REASON[event], writeback, downgrade: false });
  // Same-instance attachers map the source frames: zapped, one kernel call per run of pages.
  if (event !== 'reclaim' && event !== 'migrate') await zapLocalAttachers(d, seg, pages);
  // Source device entries back to normal PTEs, one ranged call per run of pages (only adds access:
  // no shootdown, as with clearDeviceEntry). Runs are exactly the pages of this call.
  if (!seg.mm.exiting) {
    for (const [first, n] of toRanges(pages)) {
      try {
        k.clearDeviceEntries(seg.mm, pageAddr(d, seg, first), pageAddr(d, seg, first + n), d.deviceOwner);
      } catch (e) {
        d.log.debug({ err: e }, 'xpmem: clearDeviceEntries during invalidation');
      }
    }
  }
  const frameChanges = FRAME_CHANGES.has(event);
  const forget = event === 'unmap' || event === 'release';
  for (const p of pages) {
    seg.dev[p] = DEV_CLEAR;
    if (frameChanges && !d.rmap.hasPage(seg.pfn[p], seg.slot, p)) seg.pfn[p] = -1;
    if (forget && seg.pageState(p) === 'swapped') d.transition(seg, p, 'forget');
  }
}

/** Zap `pages` of a segment in its same-instance attachments (fenceLocalAttachers for a write, ranged). */
async function zapLocalAttachers(d: DriverState, seg: Segment, pages: readonly number[]): Promise<void> {
  const k = d.kernel;
  const ps = k.pageSize;
  for (const att of localAttachments(d, seg)) {
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
  return {
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
        seg.gen[e.page]++;
      }
      return bracket(d, [...groups], () => invalidateFrame(d, pfn, reason, groups));
    },
  };
}

async function invalidateFrame(
  d: DriverState,
  pfn: number,
  reason: InvalidateReason,
  groups: Map<Segment, number[]>,
): Promise<RmapInvalidateResult> {
  const k = d.kernel;
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
  for (const [seg, pages] of groups) {
    for (const p of pages) {
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
        continue;
      }
      if (seg.pfn[p] !== pfn) {
        // the directory had lost track of this frame (its entries were found through the kernel's pfn)
        if (d.rmap.entries(seg.pfn[p], seg.slot, p).length === 0) seg.pfn[p] = -1;
        continue;
      }
      seg.pfn[p] = -1;
      seg.dev[p] = DEV_CLEAR; // the kernel's own rmap walk replaced the source PTE
      if (ok && reason === 'reclaim' && seg.pageState(p) === 'home') d.transition(seg, p, 'swap-out');
    }
  }
  if (!ok) {
    d.counters.reclaimRefusals++;
    return { ok: false, reason: 'a remote mapper missed the ack deadline and was fenced' };
  }
  return { ok: true, dirty };
}
