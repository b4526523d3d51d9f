/**
 * Fencing. An instance whose session ends ('down': missed heartbeats or closed), or that misses an
 * ack deadline, is fenced: PeerNetwork.fence (epoch bump: it must come back as a new session), its
 * permits are revoked and anything from its old session is refused (minEpoch) at once. Its
 * reverse-map entries are dropped only when its lease has certainly run out: the instance may be
 * alive (cut off, slow, paused) and it uses its copies until basis + leaseMs, where basis is a ping
 * of its that our side of the session answered, so before the close. We wait leaseMs + margin from
 * the close; then no copy of it can be in use and waiting invalidations complete without it. A page
 * it held for writing reverts to the last written-back data at the home: counted in
 * lostDirtyPages, event 'lost-dirty'.
 */

import { epochAtMost } from './rmap.js';
import { syncHomePte } from './source-pte.js';
import type { DriverState, FenceEvent, LostDirtyEvent, Segment } from './state.js';
import { unexportIfEmpty } from './unexport.js';

export async function fenceNode(
  d: DriverState,
  node: string,
  epoch: number,
  why: string,
  callNet: boolean,
): Promise<void> {
  if (node === d.self) return;
  const before = d.minEpoch.get(node) ?? 0;
  if (epoch + 1 > before) {
    d.minEpoch.set(node, epoch + 1);
    d.counters.fences++;
    d.events.emit('fence', { node, epoch, why } satisfies FenceEvent);
    d.log.warn({ node, epoch, why }, 'xpmem: fencing instance');
  }
  if (callNet) {
    try {
      d.net.fence(node, why);
    } catch (e) {
      d.log.debug({ err: e, node }, 'xpmem: net.fence failed');
    }
  }
  for (const p of [...d.permits.values()]) {
    if (p.node === node && p.epoch <= epoch) {
      d.permits.delete(p.apid);
      d.permitBySlot.delete(p.slot);
    }
  }
  await leaseExpiry(d, node, epoch);
  const idx = d.nodeIndex.get(node);
  if (idx === undefined) return;
  const dropped = d.rmap.filter((e) => e.node === idx && epochAtMost(e.epoch, epoch));
  const touched = new Map<Segment, Set<number>>();
  const frames = new Set<number>();
  for (const e of dropped) {
    d.rmap.remove(e.pfn, idx, e.seg, e.page);
    frames.add(e.pfn);
    const seg = d.segBySlot.get(e.seg);
    if (!seg) continue;
    if (e.write) {
      d.counters.lostDirtyPages++;
      d.events.emit('lost-dirty', { segid: seg.segid, page: e.page, node } satisfies LostDirtyEvent);
    }
    const left = d.rmap.entries(e.pfn, e.seg, e.page).length;
    d.transition(seg, e.page, left ? 'drop' : 'drop-last');
    const set = touched.get(seg) ?? new Set<number>();
    touched.set(seg, set);
    set.add(e.page);
  }
  for (const pfn of frames) unexportIfEmpty(d, pfn, false);
  for (const [seg, pages] of touched) {
    for (const p of pages) if (seg.inval[p] === 0) await syncHomePte(d, seg, p);
  }
}

/**
 * Resolves when every lease `node` took from us in sessions up to `epoch` has run out: leaseMs +
 * margin after now (the session is closed by the time we are called). Concurrent fences of one node
 * share the wait.
 */
function leaseExpiry(d: DriverState, node: string, epoch: number): Promise<void> {
  const cur = d.fencing.get(node);
  if (cur && cur.epoch >= epoch) return cur.done;
  const done = new Promise<void>((resolve) => {
    d.clock.setTimeout(resolve, d.leaseMs + d.leaseMarginMs);
  });
  const rec = { epoch, done };
  d.fencing.set(node, rec);
  void done.then(() => {
    if (d.fencing.get(node) === rec) d.fencing.delete(node);
  });
  return done;
}
