/** xpmem_detach: unmap an attachment. Remote pages go back to the home (detach, with dirty data). */

import { releaseAttachmentPages } from './attacher.js';
import { fail } from './errors.js';
import type { DriverState } from './state.js';

export async function xpmemDetach(d: DriverState, pid: number, vaddr: number): Promise<void> {
  const att = [...d.attachments.values()].find((a) => a.mm.pid === pid && a.vaddr === vaddr && !a.detached);
  if (!att) fail('EINVAL', `no attachment at ${vaddr} in pid ${pid}`);
  att.detached = true;
  d.attachments.delete(att.id);
  await releaseAttachmentPages(d, att, 0, att.npages, false);
  att.released = true;
  // the range is free again: a later touch is SIGSEGV, a later attach may reuse the address
  if (!att.mm.exiting) await d.kernel.munmapDriver(att.mm, att.vaddr, att.vaddr + att.size);
}
