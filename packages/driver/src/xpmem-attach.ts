/** xpmem_attach: map [offset, offset+size) of a segment into a local process as a driver VMA. Pages
 * are mapped lazily on fault (optionally prefaulted). */
import { PROT_READ, PROT_WRITE } from '@xpmesh/kernel';
import { attachmentFault, prefaultAttachment, releaseAttachmentPages } from './attacher.js';
import { fail } from './errors.js';
import type { Attachment, DriverState } from './state.js';

export async function xpmemAttach(
  d: DriverState,
  pid: number,
  apid: string,
  offset: number,
  size: number,
  vaddr?: number,
): Promise<number> {
  const k = d.kernel;
  const ps = k.pageSize;
  const g = d.grants.get(apid);
  if (!g || g.pid !== pid) d.refuse('no_permit', 'E_NO_PERMIT', `no permit ${apid} for pid ${pid}`);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % ps !== 0)
    fail('EINVAL', `offset ${offset} not page-aligned`);
  if (!Number.isSafeInteger(size) || size <= 0 || size % ps !== 0)
    fail('EINVAL', `size ${size} not a positive page multiple`);
  if (vaddr !== undefined && (!Number.isSafeInteger(vaddr) || vaddr < 0 || vaddr % ps !== 0))
    fail('EINVAL', `vaddr ${vaddr} not page-aligned`);
  if (offset + size > g.size)
    fail('E_RANGE', `[${offset}, ${offset + size}) outside segment of ${g.size} bytes`);
  const mm = k.mmOfPid(pid);
  if (!mm || mm.exiting) fail('ESRCH', `no process ${pid}`);
  if (g.local) {
    const seg = d.segments.get(g.segid);
    if (!seg || seg.removed) fail('E_NO_SEGMENT', `segment ${g.segid} removed`);
  } else {
    const s = d.net.sessions().find((x) => x.node === g.home);
    if (!s || s.epoch !== g.homeEpoch)
      d.refuse('no_permit', 'E_NO_PERMIT', `permit ${apid} revoked: home ${g.home} session ended`);
  }
  const npages = size / ps;
  let att: Attachment | undefined;
  const start = k.mmapDriver(
    mm,
    size,
    g.access === 'rw' ? PROT_READ | PROT_WRITE : PROT_READ,
    {
      fault: (f) => attachmentFault(d, att!, f),
      close: async (_mm, s, e) => {
        // after xpmem_detach (which released the pages itself) munmapDriver only frees the range
        if (!att || att.released) return;
        const from = Math.max(0, Math.floor((s - att.vaddr) / ps));
        const to = Math.min(att.npages, Math.ceil((e - att.vaddr) / ps));
        if (from <= 0 && to >= att.npages) {
          att.detached = true;
          d.attachments.delete(att.id);
        }
        if (from < to) await releaseAttachmentPages(d, att, from, to, true);
      },
    },
    vaddr,
  );
  att = {
    id: d.nextAttachment++,
    grant: g,
    mm,
    vaddr: start,
    size,
    firstPage: offset / ps,
    npages,
    mapped: new Uint8Array(npages),
    gone: false,
    detached: false,
  };
  d.attachments.set(att.id, att);
  await prefaultAttachment(d, att);
  return start;
}
