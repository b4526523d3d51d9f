/** xpmem_make: export [vaddr, vaddr+size) of a local process as a segment. */

import { fail } from './errors.js';
import { segidFor } from './ids.js';
import { mmNotifierOps } from './notifiers.js';
import type { DriverState } from './state.js';
import { Segment } from './state.js';

export async function xpmemMake(
  d: DriverState,
  pid: number,
  vaddr: number,
  size: number,
  mode: number,
): Promise<string> {
  const k = d.kernel;
  const ps = k.pageSize;
  if (!Number.isSafeInteger(vaddr) || vaddr < 0 || vaddr % ps !== 0)
    fail('EINVAL', `vaddr ${vaddr} not page-aligned`);
  if (!Number.isSafeInteger(size) || size <= 0 || size % ps !== 0)
    fail('EINVAL', `size ${size} not a positive page multiple`);
  if (!Number.isSafeInteger(vaddr + size)) fail('EINVAL', 'range overflows');
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) fail('EINVAL', `mode ${mode} not in 0..0o777`);
  const mm = k.mmOfPid(pid);
  if (!mm || mm.exiting) fail('ESRCH', `no process ${pid}`);
  let rec = d.mms.get(mm.id);
  if (!rec) {
    rec = { mm, segs: new Set() };
    rec.reg = k.mmuNotifierRegister(mm, mmNotifierOps(d, mm));
    d.mms.set(mm.id, rec);
  }
  const n = d.nextSeg++;
  const seg = new Segment(segidFor(d.self, n), n, mm, vaddr, size, mode, ps);
  d.segments.set(seg.segid, seg);
  d.segBySlot.set(seg.slot, seg);
  rec.segs.add(seg);
  d.log.debug({ segid: seg.segid, pid, vaddr, size, mode }, 'xpmem: make');
  return seg.segid;
}
