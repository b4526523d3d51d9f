/** xpmem_remove: withdraw a segment. Every copy is invalidated, attachers get segment-gone and their
 * next touch is SIGBUS. Removing an unknown, foreign or already removed segment is E_NO_SEGMENT. */

import { fail } from './errors.js';
import { teardownSegment } from './home.js';
import type { DriverState } from './state.js';

export async function xpmemRemove(d: DriverState, segid: string): Promise<void> {
  const seg = d.segments.get(segid);
  if (!seg || seg.removed) fail('E_NO_SEGMENT', `no segment ${segid} at ${d.self}`);
  await teardownSegment(d, seg, 'remove');
}
