/**
 * xpmem_get: obtain an access permit (apid) for a segment. The permission check happens at the home,
 * System V IPC style: the owner bits apply if the caller's uid is the segment owner's, else the group
 * bits if the gids match, else the other bits; 'r' needs read, 'rw' needs read and write. There is
 * no root override (documented).
 */
import type { MmHandle } from '@xpmesh/kernel';
import type { Access, Get, GetOk, PeerSession } from '@xpmesh/protocol';
import { codeOf, DriverError, fail } from './errors.js';
import { apidFor } from './ids.js';
import type { DriverState, Permit, Segment } from './state.js';
import { xpmemRelease } from './xpmem-release.js';

export function permitted(seg: Segment, uid: number, gid: number, access: Access): boolean {
  const bits = uid === seg.mm.uid ? seg.mode >> 6 : gid === seg.mm.gid ? seg.mode >> 3 : seg.mode;
  const need = access === 'rw' ? 6 : 4;
  return (bits & need) === need;
}

/** Home side: check and record a permit for `node`. */
export function grantPermit(
  d: DriverState,
  node: string,
  epoch: number,
  segid: string,
  access: Access,
  uid: number,
  gid: number,
): Permit {
  const seg = d.segments.get(segid);
  if (!seg || seg.removed) fail('E_NO_SEGMENT', `no segment ${segid}`);
  if (access !== 'r' && access !== 'rw') fail('EINVAL', `bad access ${String(access)}`);
  if (!permitted(seg, uid, gid, access)) {
    d.refuse(
      'access_denied',
      'E_PERM',
      `mode 0${seg.mode.toString(8)} refuses uid ${uid} gid ${gid} ${access === 'rw' ? 'RDWR' : 'RDONLY'}`,
    );
  }
  const slot = d.nextPermit++;
  const permit: Permit = { apid: apidFor(d.self, slot), slot, seg, node, epoch, access };
  d.permits.set(permit.apid, permit);
  d.permitBySlot.set(slot, permit);
  seg.permitNodes.add(node);
  return permit;
}

export async function xpmemGet(d: DriverState, pid: number, segid: string, access: Access): Promise<string> {
  const k = d.kernel;
  if (access !== 'r' && access !== 'rw') fail('EINVAL', `bad access ${String(access)}`);
  const home = d.homeOf(segid);
  const mm = k.mmOfPid(pid);
  if (!mm || mm.exiting) fail('ESRCH', `no process ${pid}`);
  if (home === d.self) {
    const p = grantPermit(d, d.self, 0, segid, access, mm.uid, mm.gid);
    d.grants.set(p.apid, {
      apid: p.apid,
      pid,
      segid,
      home,
      access,
      size: p.seg.size,
      local: true,
      homeEpoch: 0,
    });
    releaseOnExit(d, mm);
    return p.apid;
  }
  const homeEpoch = d.net.sessions().find((s) => s.node === home)?.epoch;
  if (homeEpoch === undefined) fail('E_PEER', `home ${home} of ${segid} is not connected`);
  let ok: GetOk;
  try {
    ok = await d.request<Get>(home, { t: 'get', segid, access, uid: mm.uid, gid: mm.gid });
  } catch (e) {
    throw remoteError(e, home);
  }
  d.grants.set(ok.apid, {
    apid: ok.apid,
    pid,
    segid,
    home,
    access: ok.access,
    size: ok.size,
    local: false,
    homeEpoch,
  });
  releaseOnExit(d, mm);
  return ok.apid;
}

/**
 * A process's permits die with it, as XPMEM's do: a per-mm notifier on every process that holds one
 * releases them from `release` (exit, before its pages are freed): attachments are detached first
 * (their dirty pages go home), then the permit is released at its home. Without it every exited
 * attacher left its grant here, and its permit at the home, for good.
 */
function releaseOnExit(d: DriverState, mm: MmHandle): void {
  if (d.exitHooks.has(mm.id)) return;
  const reg = d.kernel.mmuNotifierRegister(mm, {
    release(m) {
      if (m.id !== mm.id) return undefined;
      d.exitHooks.delete(mm.id);
      return (async () => {
        for (const g of [...d.grants.values()]) {
          if (g.pid !== mm.pid) continue;
          await xpmemRelease(d, g.pid, g.apid).catch((e) =>
            d.log.debug({ err: e, apid: g.apid }, 'xpmem: release at exit failed'),
          );
        }
      })();
    },
  });
  d.exitHooks.set(mm.id, reg);
}

/** Map a failed request to a driver error with a stable code. */
export function remoteError(e: unknown, home: string): DriverError {
  const code = codeOf(e);
  const known = [
    'E_NO_SEGMENT',
    'E_NO_PERMIT',
    'E_PERM',
    'E_RANGE',
    'E_ACCESS',
    'E_FAULT',
    'E_BUSY',
    'EINVAL',
  ];
  if (known.includes(code)) return new DriverError(code as never, (e as Error).message);
  if (code === 'E_TIMEOUT') return new DriverError('E_TIMEOUT', `home ${home} did not answer`);
  return new DriverError('E_PEER', `home ${home}: ${(e as Error)?.message ?? code}`);
}

export async function handleGet(d: DriverState, from: PeerSession, msg: Get): Promise<Omit<GetOk, 're'>> {
  const p = grantPermit(d, from.node, from.epoch, msg.segid, msg.access, msg.uid, msg.gid);
  return { t: 'get-ok', apid: p.apid, size: p.seg.size, access: p.access };
}
