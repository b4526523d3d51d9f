/**
 * Bulk page touching for the scale runs (scripts/scale.mjs): runs INSIDE a process (admin `run`,
 * module "load/scale-program.js"), so every first touch is a real page fault through the page
 * table: an anonymous fault at the home, a remote read fault at an attacher.
 *
 * `stampPages` writes one word per page (the page's index + 1 at word 0); `readPages` reads that
 * word back and counts pages whose stamp is wrong. Both are bounded by `count` (≤ 2^20 pages) and
 * `durationMs` (≤ 600 s) and stop after 20 consecutive refused accesses.
 */
import type { ProcessContext } from '@xpmesh/kernel';
import { PAGE_SIZE } from '@xpmesh/protocol/base';

export interface TouchArgs {
  /** Virtual address of page `first` of the range in THIS process. */
  base: number;
  /** Index of the first page (the stamp of page i is i + 1). */
  first: number;
  count: number;
  durationMs: number;
}

export interface TouchResult {
  /** Pages accessed. */
  touched: number;
  /** Pages whose stamp was not index + 1 (readPages only). */
  wrong: number;
  /** The first few wrong stamps: [page, value]. */
  samples: Array<[number, number]>;
  errors: Record<string, number>;
  ms: number;
}

export const MAX_TOUCH_PAGES = 1 << 20;

function touch(ctx: ProcessContext, a: TouchArgs, write: boolean): TouchResult {
  const t0 = performance.now();
  const end = t0 + Math.max(0, Math.min(a.durationMs, 600_000));
  const count = Math.max(0, Math.min(a.count, MAX_TOUCH_PAGES));
  const out: TouchResult = { touched: 0, wrong: 0, samples: [], errors: {}, ms: 0 };
  let consecutive = 0;
  for (let i = 0; i < count; i++) {
    if ((i & 63) === 0 && performance.now() >= end) break;
    const page = a.first + i;
    const va = a.base + i * PAGE_SIZE;
    try {
      if (write) ctx.write32(va, page + 1);
      else {
        const v = ctx.read32(va);
        if (v !== page + 1) {
          out.wrong++;
          if (out.samples.length < 5) out.samples.push([page, v]);
        }
      }
      out.touched++;
      consecutive = 0;
    } catch (err) {
      if ((err as Error)?.name === 'ProcessKilled') throw err;
      const code = String((err as { code?: unknown }).code ?? 'EFAULT');
      out.errors[code] = (out.errors[code] ?? 0) + 1;
      if (++consecutive >= 20) break;
    }
  }
  out.ms = performance.now() - t0;
  return out;
}

export function stampPages(ctx: ProcessContext, a: TouchArgs): TouchResult {
  return touch(ctx, a, true);
}

export function readPages(ctx: ProcessContext, a: TouchArgs): TouchResult {
  return touch(ctx, a, false);
}
