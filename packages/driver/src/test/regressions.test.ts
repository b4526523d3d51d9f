/**
 * Regression tests for coherence bugs the load tester found (docs/load.md workloads), each made
 * deterministic by holding the home's per-page mutex at the right moment.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type Cluster, checkKernel, type Inst, makeCluster, PAGE, PROT_RW, type Proc } from './cluster.js';

let c: Cluster;
let A: Inst;
let B: Inst;
const procs: Proc[] = [];

before(async () => {
  c = await makeCluster({ names: ['a', 'b'] });
  [A, B] = c.nodes;
});
after(async () => {
  for (const p of procs) await p.exit(0).catch(() => undefined);
  await c?.close();
});

async function spawn(n: Inst): Promise<Proc> {
  const p = await n.kernel.spawn({ uid: 1000, gid: 1000, catchSignals: true });
  procs.push(p);
  return p;
}

const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));

test('attach-churn: a grant made after a detach was sent is not dropped by that detach', async () => {
  const p = await spawn(A);
  const va = await p.mmap(2 * PAGE, PROT_RW);
  await p.write32(va, 10);
  await p.write32(va + PAGE, 20);
  const segid = await A.driver.make(p.pid, va, 2 * PAGE, 0o600);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'rw');
  const v1 = await B.driver.attach(q.pid, apid, 0, 2 * PAGE);
  assert.equal(await q.read32(v1), 10);
  assert.equal(await q.read32(v1 + PAGE), 20);

  // Hold page 0 at the home: the detach (pages 0 and 1) stalls on page 0 ...
  const seg = A.driver.segments.get(segid);
  assert.ok(seg);
  let release!: () => void;
  const held = new Promise<void>((r) => {
    release = r;
  });
  const holding = seg.mutex.run(0, () => held);
  const detached = B.driver.detach(q.pid, v1);
  await tick();
  // ... while the re-attached process faults page 1 (a new map request behind the detach).
  const v2 = await B.driver.attach(q.pid, apid, 0, 2 * PAGE);
  const read = q.read32(v2 + PAGE);
  await tick(50);
  release();
  await holding;
  await detached;
  assert.equal(await read, 20);

  // The home must still know B's copy of page 1: a home write invalidates it.
  await p.write32(va + PAGE, 21);
  assert.equal(await q.read32(v2 + PAGE), 21, 'the re-attached reader sees the latest write');
  await B.driver.detach(q.pid, v2);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(segid);
  assert.equal(A.driver.status().rmap.entries, 0);
  await checkKernel(A.kernel);
  await checkKernel(B.kernel);
});
