/** xpmem_release: give a permit back; attachments made through it are detached first. */
import type { Ok, PeerSession, Release } from '@xpmesh/protocol';
import { dropPermit, removedSegmentOf } from './home.js';
import type { DriverState } from './state.js';
import { xpmemDetach } from './xpmem-detach.js';

export async function xpmemRelease(d: DriverState, pid: number, apid: string): Promise<void> {
  const g = d.grants.get(apid);
  if (!g || g.pid !== pid) d.refuse('no_permit', 'E_NO_PERMIT', `no permit ${apid} for pid ${pid}`);
  for (const att of [...d.attachments.values()]) {
    if (att.grant === g) await xpmemDetach(d, att.mm.pid, att.vaddr);
  }
  d.grants.delete(apid);
  if (g.local) {
    const p = d.permits.get(apid);
    if (p) await dropPermit(d, p);
    return;
  }
  // (issue 17) after segment-gone the home has no such permit: releasing is a local no-op
  if (g.gone) return;
  try {
    await d.request<Release>(g.home, { t: 'release', apid });
  } catch (e) {
    d.log.debug({ err: e, apid }, 'xpmem: release not delivered (home gone); permit dropped locally');
  }
}

export async function handleRelease(
  d: DriverState,
  from: PeerSession,
  msg: Release,
): Promise<Omit<Ok, 're'>> {
  const p = d.permits.get(msg.apid);
  // (issue 17) releasing a permit of a removed segment is a no-op that succeeds
  if (!p && removedSegmentOf(d, msg.apid, from.node) !== undefined) return { t: 'ok' };
  if (!p || p.node !== from.node)
    d.refuse('no_permit', 'E_NO_PERMIT', `no permit ${msg.apid} for ${from.node}`);
  await dropPermit(d, p);
  return { t: 'ok' };
}
