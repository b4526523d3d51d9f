/**
 * The op most built-in workloads share: every process reads or writes a random key, writing with
 * probability `writeFraction` (`homeWriteFraction` for process 0, the home).
 */
import type { OpContext } from '../workload-api.js';

export interface MixParams {
  writeFraction: number;
  homeWriteFraction: number;
}

export function mixOp(t: OpContext<MixParams>): void {
  const key = Math.floor(t.random() * t.keys);
  const wf = t.proc === 0 ? t.params.homeWriteFraction : t.params.writeFraction;
  if (t.random() < wf) t.write(key);
  else t.read(key);
}

/** One key per touched page (word 0). */
export const onePerPage = (pages: number[]) => pages.map((page) => ({ page, word: 0 }));
