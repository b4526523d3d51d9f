/** Page ranges as they travel in messages: [first, count] runs, sorted and disjoint. */
import type { PageRange } from '@xpmesh/protocol';

/** Pages of data in one message (protocol limit maxPagesPerMessage). */
export const MAX_PAGES = 64;

export function toRanges(pages: number[]): PageRange[] {
  let ascending = true;
  for (let i = 1; i < pages.length && ascending; i++) ascending = pages[i] > pages[i - 1];
  // the usual input (pages collected in order) is already strictly ascending: no set, no sort
  const sorted = ascending ? pages : [...new Set(pages)].sort((a, b) => a - b);
  const out: PageRange[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === p) last[1]++;
    else out.push([p, 1]);
  }
  return out;
}

/**
 * Sorted, disjoint, merged copy of `ranges` (returned as is when it already is: the home sends
 * toRanges output). Pages are then visited once each, in order, with no per-page set.
 */
export function normalRanges(ranges: readonly PageRange[]): readonly PageRange[] {
  let ok = true;
  for (let j = 1; j < ranges.length && ok; j++) ok = ranges[j][0] > ranges[j - 1][0] + ranges[j - 1][1];
  if (ok) return ranges;
  const sorted = ranges.map((r): PageRange => [r[0], r[1]]).sort((a, b) => a[0] - b[0]);
  const out: PageRange[] = [];
  for (const [first, count] of sorted) {
    const last = out[out.length - 1];
    if (last && first <= last[0] + last[1]) last[1] = Math.max(last[1], first + count - last[0]);
    else out.push([first, count]);
  }
  return out;
}
