/**
 * Programs the driver benchmark runs inside a process (Process.run): the remote read fault timed in
 * the faulting thread itself, the same place the hop chain (raw.ts) is timed.
 */
import type { ProcessContext } from '@xpmesh/kernel';

/** First-touch read32 of `count` pages `stride` pages apart from `addr`: µs per access. */
export function firstTouch(
  ctx: ProcessContext,
  a: { addr: number; count: number; stride: number },
): number[] {
  const lat: number[] = [];
  for (let i = 0; i < a.count; i++) {
    const t = performance.now();
    ctx.read32(a.addr + i * a.stride * 4096 + 4);
    lat.push((performance.now() - t) * 1000);
  }
  return lat;
}

/** Writes word i at the start of page i, for `count` pages from `addr` (fills a segment fast). */
export function fill(ctx: ProcessContext, a: { addr: number; count: number }): void {
  for (let i = 0; i < a.count; i++) ctx.write32(a.addr + i * 4096, i);
}

/** Reads one word of every `stride`-th page of `count` pages from `addr` (faults in what is missing). */
export function touch(ctx: ProcessContext, a: { addr: number; count: number; stride: number }): number {
  let s = 0;
  for (let i = 0; i < a.count; i += a.stride) s ^= ctx.read32(a.addr + i * 4096);
  return s;
}
