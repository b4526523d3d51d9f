/**
 * The invalidation engine at the home: send `invalidate` to every instance that maps any of the
 * pages, IN PARALLEL, one message per instance per call (pages as ranges), and complete only when
 * every ack is in. Dirty data returned in an ack is written back into the frame (version + 1). An
 * instance that misses the ack deadline (or whose session ends) is fenced: its entries are dropped
 * and the operation completes without it. While it runs, the pages are 'invalidating' and no grant
 * is made (grants wait in waitIdle).
 */
import type { Invalidate, InvalidateReason, PageData } from '@xpmesh/protocol';
import { codeOf } from './errors.js';
import { fenceNode } from './fence.js';
import { MAX_PAGES, toRanges } from './ranges.js';
import { epochAtMost } from './rmap.js';
import type { DriverState, Segment } from './state.js';
import { unexportEmpty } from './unexport.js';

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
  /**
   * The frame the kernel is working on (the rmap notifier path): entries are looked up, and dirty
   * data written back, on this frame, whatever the directory last recorded in seg.pfn.
   */
  pfn?: number;
  /**
   * Per page, the frame the kernel is working on (a batch of frames from the rmap notifier's
   * invalidatePages: each page of the call on its own frame). Takes precedence over `pfn`.
   */
  pfns?: ReadonlyMap<number, number>;
}

export interface InvalidateResult {
  /** Every mapper acked (false: some were fenced instead). */
  ok: boolean;
  /** Some mapper returned dirty data. */
  dirty: boolean;
  /** The pages whose dirty data was written back (a subset of the call's pages). */
  dirtyPages?: Set<number>;
}

export async function invalidatePages(
  d: DriverState,
  seg: Segment,
  pages: number[],
  o: InvalidateOptions,
): Promise<InvalidateResult> {
  // one invalidation of a page at a time (see waitInvalidations); the entries are read after it
  // (checked here first so that the usual case, nothing in flight, does not wait a turn)
  if (anyInvalidating(seg, pages)) await seg.waitInvalidations(pages);
  // The options' fields read per page or per entry are read once here: callers pass option objects
  // of several shapes, and a property load from them in the page loops was megamorphic (issue 15).
  const fr: FrameSource = { pfns: o.pfns, pfn: o.pfn };
  const except = o.except;
  const onlyWriters = o.onlyWriters === true;
  const byNode = new Map<number, number[]>();
  /**
   * Per node, the pages it held for WRITING when the entries were read (only with writeback). While
   * the pages are 'invalidating' (from beginInvalidation below until endInvalidation) no grant of
   * them is made (mayGrant is false: grants wait in waitIdle and re-check under the page lock), and
   * no other invalidation of them runs (waitInvalidations above), so no entry can become a write
   * entry meanwhile: a page missing here has no write entry of that node to look for after the ack.
   * The per-page rm.find of the write-back steps below is skipped for it (the common case: read
   * copies); a page present here is still looked up, since its entry may be gone by then (detach,
   * fence). ranged-grant.test.ts ("more than 64 written pages") and wire-duties.test.ts check it.
   */
  const writersOf = o.writeback ? new Map<number, Set<number>>() : undefined;
  /** Entries of sessions that are over (the node came back with a new epoch): fenced, not asked. */
  const staleSessions = new Map<number, number>();
  const touched: number[] = [];
  let sessions: Map<string, number> | undefined;
  const rm = d.rmap;
  // the node of the previous entry, its current epoch and its page list: entries come in runs of one
  // node (a range one mapper holds), so the per-entry lookups by name are made once per run
  let lastNode = -1;
  let lastCur: number | undefined;
  let lastList: number[] | undefined;
  const slot = seg.slot;
  for (let k = 0; k < pages.length; k++) {
    const p = pages[k];
    let hit = false;
    // the entries of the page, read as we go (nothing below changes the map)
    for (let i = rm.firstSlotOf(frameOf(seg, fr, p), slot, p); i >= 0; i = rm.nextSlotOf(i, slot, p)) {
      const node = rm.nodeAt(i);
      if (node === except || (onlyWriters && !rm.isWrite(i))) continue;
      hit = true;
      sessions ??= new Map(d.net.sessions().map((x) => [x.node, x.epoch]));
      if (node !== lastNode) {
        lastNode = node;
        lastCur = sessions.get(d.nodeNames[node]) ?? d.epochs.get(d.nodeNames[node]);
        lastList = byNode.get(node);
      }
      const cur = lastCur;
      if (cur !== undefined && epochAtMost(rm.epochAt(i), cur - 1)) {
        // an entry of a session before the current one: fence everything up to the one before
        staleSessions.set(node, cur - 1);
        continue;
      }
      let list = lastList;
      if (!list) {
        list = [];
        byNode.set(node, list);
        lastList = list;
      }
      list.push(p);
      if (writersOf && rm.isWrite(i)) {
        let w = writersOf.get(node);
        if (!w) {
          w = new Set();
          writersOf.set(node, w);
        }
        w.add(p);
      }
    }
    if (hit) touched.push(p);
  }
  if (touched.length === 0) return { ok: true, dirty: false };
  // Every copy granted so far (also one whose map-ok is still on the wire behind this invalidate)
  // is covered; grants cannot happen for these pages until this invalidation ends.
  const upTo = d.grantSeq;
  // (unexportEmpty takes each frame once or more: a repeat, e.g. the one frame of o.pfn, is skipped)
  const frames: number[] = [];
  for (let i = 0; i < touched.length; i++) {
    const f = frameOf(seg, fr, touched[i]);
    if (f !== frames[frames.length - 1]) frames.push(f);
  }
  seg.beginInvalidations(touched);
  let ok = true;
  let dirty = false;
  const dirtyPages = new Set<number>();
  const t0 = d.clock.now();
  try {
    // Order on the wire needs no care: a map-ok may reach the mapper after this invalidate (its reply
    // travels through promise continuations); `upTo` tells the mapper that the grant is covered.
    const batches: Array<[number, number[]]> = [];
    for (const [node, ps] of byNode) {
      // an ack carries at most MAX_PAGES dirty pages: a write-back round is split so that no message
      // covers more than MAX_PAGES pages the instance holds for writing (read copies cost nothing)
      let cur: number[] = [];
      let writes = 0;
      const wr = writersOf?.get(node);
      // pages come in ascending order from the caller's list unless it was not sorted
      if (!isAscending(ps)) ps.sort((a, b) => a - b);
      // at most MAX_PAGES pages held for writing (w below is true only for a page of wr): no message
      // can go over the limit, so the split below would give this one batch (no per-page copy)
      if (!wr || wr.size <= MAX_PAGES) {
        batches.push([node, ps]);
        continue;
      }
      for (const p of ps) {
        let w = false;
        if (wr?.has(p)) {
          const i = rm.find(frameOf(seg, fr, p), node, seg.slot, p);
          w = i >= 0 && rm.isWrite(i);
        }
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
    const work: Array<Promise<void>> = [...staleSessions].map(([node, epoch]) =>
      fenceNode(d, d.nodeNames[node], epoch, 'entries of an ended session', false),
    );
    await Promise.all([
      ...work,
      ...batches.map(async ([node, ps]) => {
        const name = d.nodeNames[node];
        const epoch = sessions?.get(name) ?? d.epochs.get(name) ?? 0;
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
              upTo,
            },
            d.ackTimeoutMs,
          );
          d.counters.invalidationsAcked++;
          if (applyAck(d, seg, fr, o.downgrade, node, ps, ack.dirty, writersOf?.get(node), dirtyPages))
            dirty = true;
        } catch (err) {
          ok = false;
          d.log.warn(
            { node: name, segid: seg.segid, code: codeOf(err) },
            'xpmem: invalidate not acked; fencing',
          );
          await fenceNode(d, name, epoch, `invalidate not acked: ${codeOf(err)}`, true);
        }
      }),
    ]);
  } finally {
    const left = new Uint8Array(touched.length);
    for (let i = 0; i < touched.length; i++) {
      const p = touched[i];
      if (rm.hasPage(frameOf(seg, fr, p), seg.slot, p)) left[i] = 1;
    }
    seg.endInvalidations(touched, left);
    unexportEmpty(d, frames, o.lockHeld === true);
  }
  d.events.emit('invalidated', {
    segid: seg.segid,
    pages: touched.length,
    peers: byNode.size,
    reason: o.reason,
    ok,
    ms: d.clock.now() - t0,
  });
  return { ok, dirty, dirtyPages };
}

/**
 * The ack of `node` for pages `ps` is in: write back the dirty data its write copies returned (into
 * `dirtyPages`; true if any), count write copies returned without data, and drop (or, downgrading,
 * make read-only) the node's entries of `ps`. A module-level function, with the per-page loops that
 * used to live in the per-call closure of invalidatePages (see frameOf).
 */
function applyAck(
  d: DriverState,
  seg: Segment,
  fr: FrameSource,
  downgrade: boolean,
  node: number,
  ps: readonly number[],
  ackDirty: readonly PageData[],
  wr: ReadonlySet<number> | undefined,
  dirtyPages: Set<number>,
): boolean {
  const rm = d.rmap;
  const name = d.nodeNames[node];
  let dirty = false;
  const asked = ackDirty.length ? new Set(ps) : undefined;
  const returned = ackDirty.length ? new Set<number>() : undefined;
  for (const pd of ackDirty) {
    if (!asked?.has(pd.page)) continue;
    const i = rm.find(frameOf(seg, fr, pd.page), node, seg.slot, pd.page);
    if (i < 0 || !rm.isWrite(i)) continue; // only a writer's data counts
    returned?.add(pd.page);
    if (writeBack(d, seg, pd.page, pd.data, frameOf(seg, fr, pd.page))) {
      dirty = true;
      dirtyPages.add(pd.page);
    }
  }
  // (issue 17) With writeback, a mapper must return every page it holds for writing
  // (docs/protocol.md, "A mapper's duties on invalidate"). A page it did not return is
  // accepted (the home keeps its own data) and counted: writebackWithoutData, event
  // 'writeback-without-data'. An invalidate that overtook the grant is the benign cause.
  if (wr)
    for (const p of ps) {
      if (!wr.has(p) || returned?.has(p)) continue;
      const i = rm.find(frameOf(seg, fr, p), node, seg.slot, p);
      if (i < 0 || !rm.isWrite(i)) continue;
      d.counters.writebackWithoutData++;
      d.events.emit('writeback-without-data', { segid: seg.segid, page: p, node: name });
    }
  for (const p of ps) {
    if (downgrade) {
      const i = rm.find(frameOf(seg, fr, p), node, seg.slot, p);
      if (i >= 0) rm.setWrite(i, false);
    } else rm.delete(frameOf(seg, fr, p), node, seg.slot, p);
  }
  return dirty;
}

/**
 * Where a call's frames come from (InvalidateOptions.pfns and .pfn), in an object of one shape.
 */
interface FrameSource {
  readonly pfns: ReadonlyMap<number, number> | undefined;
  readonly pfn: number | undefined;
}

/**
 * The frame of page `p` for this call (fr.pfns, then fr.pfn, then the directory). A module-level
 * function, not a closure made per call: V8 re-optimised such a closure, called per page, on every
 * call of a large range (~1 ms of compiler CPU per 1024-page invalidation).
 */
function frameOf(seg: Segment, fr: FrameSource, p: number): number {
  return fr.pfns?.get(p) ?? fr.pfn ?? seg.pfn[p];
}

/**
 * seg.invalidating(p) for any page of `pages`: the counters read directly in an indexed loop (issue
 * 15: an iterator and a method call per page cost ~50 ns a page before the loop was optimised).
 */
function anyInvalidating(seg: Segment, pages: readonly number[]): boolean {
  const inval = seg.inval;
  for (let i = 0; i < pages.length; i++) if (inval[pages[i]] > 0) return true;
  return false;
}

function isAscending(xs: readonly number[]): boolean {
  for (let i = 1; i < xs.length; i++) if (xs[i - 1] >= xs[i]) return false;
  return true;
}

/** Write a writer's data back into the home frame; the page's version moves on. */
export function writeBack(
  d: DriverState,
  seg: Segment,
  page: number,
  data: Uint8Array,
  pfn = seg.pfn[page],
): boolean {
  const k = d.kernel;
  if (pfn < 0 || data.byteLength !== k.pageSize) return false;
  k.writePageData(pfn, data);
  k.setPageDirty(pfn);
  seg.version[page]++;
  return true;
}
