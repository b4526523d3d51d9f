/**
 * What the workload harness costs per access against the plain load program it replaced, on the
 * hit path (no page faults: a stand-in process context over an Int32Array), in one process, in
 * turns. Prints us per access for both and their ratio; no pass/fail.
 *   node packages/node/dist/load/harness-bench.js [accesses=500000] [rounds=5]
 */
import type { ProcessContext } from '@xpmesh/kernel';
import { workloadProgram } from './harness.js';
import { loadProgram } from './program.js';
import readMostly from './workloads/read-mostly.js';

const n = Number(process.argv[2] ?? 500_000);
const rounds = Number(process.argv[3] ?? 5);
const mem = new Int32Array(1024);
const ctx = {
  pid: 1,
  read32: (a: number) => mem[a >> 2],
  write32: (a: number, v: number) => {
    mem[a >> 2] = v;
  },
} as unknown as ProcessContext;
const vaddrs = Array.from({ length: 16 }, (_, i) => i * 4);
const keys = vaddrs.map((_, i) => i);
const rows: Array<{ before: number; harness: number }> = [];
for (let r = 0; r < rounds; r++) {
  let t = performance.now();
  const a = loadProgram(ctx, {
    proc: 0,
    seed: r + 1,
    vaddrs,
    keys,
    readable: keys,
    writable: [],
    writeFraction: 0,
    maxOps: n,
    durationMs: 60_000,
    seqBase: 0,
  });
  const before = ((performance.now() - t) * 1000) / a.kinds.length;
  t = performance.now();
  const b = workloadProgram(ctx, {
    proc: 0,
    procs: 2,
    seed: r + 1,
    vaddrs,
    workload: { name: readMostly.name, op: readMostly.op.toString(), params: undefined },
    state: '',
    maxOps: n,
    durationMs: 60_000,
    seqBase: 0,
  });
  const harness = ((performance.now() - t) * 1000) / b.kinds.length;
  rows.push({ before, harness });
  console.log(
    `round ${r + 1}: before ${before.toFixed(3)} us/access, harness ${harness.toFixed(3)} us/access`,
  );
}
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const b = med(rows.map((r) => r.before));
const h = med(rows.map((r) => r.harness));
console.log(
  JSON.stringify({
    accesses: n,
    rounds,
    beforeUs: +b.toFixed(3),
    harnessUs: +h.toFixed(3),
    ratio: +(h / b).toFixed(2),
  }),
);
