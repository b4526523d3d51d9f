/**
 * The invalidation engine at the home: send `invalidate` to every instance that maps any of the
 * pages, IN PARALLEL, one message per instance per call (pages as ranges), and complete only when
 * every ack is in. Dirty data returned in an ack is written back into the frame (version + 1). An
 * instance that misses the ack deadline (or whose session ends) is fenced: its entries are dropped
 * and the operation completes without it. While it runs, the pages are 'invalidating' and no grant
 * is made (grants wait in waitIdle).
 */
import type { Invalidate, InvalidateReason, PageRange } from '@xpmesh/protocol';
import type { XpmemDriver } from './driver.js';
import { codeOf } from './errors.js';
import { fenceNode } from './fence.js';
import type { Segment } from './state.js';

export interface InvalidateOptions {
  reason: InvalidateReason;
  /** Pages held for writing must send their data back. */
  writeback: boolean;
  /** Writers may keep a read copy (a recall for a read). */
  downgrade: boolean;
  /** Leave this instance's copies alone (the requester of an upgrade). */
  except?: number;
  /** Only invalidate write copies. */
  onlyWriters?: boolean;
  /** The caller holds the page lock (the rmap notifier path). */
  lockHeld?: boolean;
}

export interface InvalidateResult {
  /** Every mapper acked (false: some were fenced instead). */
  ok: boolean;
  /** Some mapper returned dirty data. */
  dirty: boolean;
}

/** Pages of data in one message (protocol limit maxPagesPerMessage). */
export const MAX_PAGES = 64;

export function toRanges(pages: number[]): PageRange[] {
  const sorted = [...new Set(pages)].sort((a, b) => a - b);
  const out: PageRange[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === p) last[1]++;
    else out.push([p, 1]);
  }
  return out;
}

export async function invalidatePages(
  d: XpmemDriver,
  seg: Segment,
  pages: number[],
  o: InvalidateOptions,
): Promise<InvalidateResult> {
  const byNode = new Map<number, number[]>();
  const touched: number[] = [];
  for (const p of pages) {
    const es = d.rmap
      .entries(seg.pfn[p], seg.slot, p)
      .filter((e) => e.node !== o.except && (!o.onlyWriters || e.write));
    if (es.length === 0) continue;
    touched.push(p);
    for (const e of es) {
      const list = byNode.get(e.node) ?? [];
      byNode.set(e.node, list);
      list.push(p);
    }
  }
  if (touched.length === 0) return { ok: true, dirty: false };
  const frames = new Set(touched.map((p) => seg.pfn[p]));
  for (const p of touched) {
    seg.inval[p]++;
    d.transition(seg, p, 'invalidate-begin');
  }
  let ok = true;
  let dirty = false;
  const t0 = d.clock.now();
  try {
    // Order on the wire. A grant that completed before this invalidation returns its map-ok to the
    // protocol layer through a chain of promise continuations; the link sends in enqueue order. One
    // macrotask here lets every such reply be enqueued first, so a mapper never sees the invalidate
    // of a copy before the map-ok that granted it (it would ack "nothing" and then install a copy
    // the home believes gone). The attacher keeps the matching rule on its side (handleInvalidate).
    await new Promise<void>((resolve) => setImmediate(resolve));
    const batches: Array<[number, number[]]> = [];
    for (const [node, ps] of byNode) {
      // an ack carries at most MAX_PAGES dirty pages: a write-back round is split so that no message
      // covers more than MAX_PAGES pages the instance holds for writing (read copies cost nothing)
      let cur: number[] = [];
      let writes = 0;
      for (const p of ps.sort((a, b) => a - b)) {
        const w =
          o.writeback && d.rmap.entries(seg.pfn[p], seg.slot, p).some((e) => e.node === node && e.write);
        if (w && writes === MAX_PAGES) {
          batches.push([node, cur]);
          cur = [];
          writes = 0;
        }
        cur.push(p);
        if (w) writes++;
      }
      if (cur.length) batches.push([node, cur]);
    }
    await Promise.all(
      batches.map(async ([node, ps]) => {
        const name = d.nodeNames[node];
        const epoch = d.epochs.get(name) ?? 0;
        d.counters.invalidationsSent++;
        try {
          const ack = await d.request<Invalidate>(
            name,
            {
              t: 'invalidate',
              segid: seg.segid,
              ranges: toRanges(ps),
              reason: o.reason,
              writeback: o.writeback,
              downgrade: o.downgrade,
            },
            d.ackTimeoutMs,
          );
          d.counters.invalidationsAcked++;
          const asked = new Set(ps);
          for (const pd of ack.dirty) {
            if (!asked.has(pd.page)) continue;
            const i = d.rmap.find(seg.pfn[pd.page], node, seg.slot, pd.page);
            if (i < 0 || !d.rmap.entry(i).write) continue; // only a writer's data counts
            if (writeBack(d, seg, pd.page, pd.data)) dirty = true;
          }
          for (const p of ps) {
            const i = d.rmap.find(seg.pfn[p], node, seg.slot, p);
            if (i < 0) continue;
            if (o.downgrade) d.rmap.setWrite(i, false);
            else d.rmap.remove(seg.pfn[p], node, seg.slot, p);
          }
        } catch (err) {
          ok = false;
          d.log.warn(
            { node: name, segid: seg.segid, code: codeOf(err) },
            'xpmem: invalidate not acked; fencing',
          );
          await fenceNode(d, name, epoch, `invalidate not acked: ${codeOf(err)}`, true);
        }
      }),
    );
  } finally {
    for (const p of touched) {
      seg.inval[p]--;
      if (seg.inval[p] === 0) {
        const left = d.rmap.entries(seg.pfn[p], seg.slot, p);
        d.transition(seg, p, left.length ? 'downgrade-end' : 'invalidate-end');
        d.wakeIdle(seg, p);
      }
    }
    for (const pfn of frames) await unexportIfEmpty(d, pfn, o.lockHeld === true);
  }
  d.events.emit('invalidated', {
    segid: seg.segid,
    pages: touched.length,
    peers: byNode.size,
    reason: o.reason,
    ok,
    ms: d.clock.now() - t0,
  });
  return { ok, dirty };
}

/** Write a writer's data back into the home frame; the page's version moves on. */
export function writeBack(d: XpmemDriver, seg: Segment, page: number, data: Uint8Array): boolean {
  const k = d.kernel;
  const pfn = seg.pfn[page];
  if (pfn < 0 || data.byteLength !== k.pageSize) return false;
  k.writePageData(pfn, data);
  k.setPageDirty(pfn);
  seg.version[page]++;
  return true;
}

/**
 * Clear PG_external_rmap once the driver's reverse map for the frame is empty, under the page lock
 * (held by the caller on the rmap-notifier path; otherwise taken with trylock, or later in the
 * background if the kernel holds it right now, e.g. while reclaim walks the page).
 */
export async function unexportIfEmpty(d: XpmemDriver, pfn: number, lockHeld: boolean): Promise<void> {
  const k = d.kernel;
  if (pfn < 0 || !d.rmap.isEmpty(pfn) || !k.pageExported(pfn)) return;
  if (lockHeld) {
    k.unexportPage(pfn);
    return;
  }
  if (k.trylockPage(pfn)) {
    try {
      if (d.rmap.isEmpty(pfn) && k.pageExported(pfn)) k.unexportPage(pfn);
    } finally {
      k.unlockPage(pfn);
    }
    return;
  }
  void d.guard('deferred unexport', async () => {
    await k.lockPage(pfn, d.ackTimeoutMs);
    try {
      if (d.rmap.isEmpty(pfn) && k.pageExported(pfn)) k.unexportPage(pfn);
    } finally {
      k.unlockPage(pfn);
    }
  });
}
