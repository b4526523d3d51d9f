/**
 * Regression tests for coherence bugs the load tester found (docs/load.md workloads), each made
 * deterministic by holding the home's per-page mutex at the right moment.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import type { MessageEvent } from '../index.js';
import type { Segment } from '../state.js';
import {
  attachOn,
  type Cluster,
  checkKernel,
  type Inst,
  makeCluster,
  PROT_RW,
  type Proc,
  quiesce,
} from './cluster.js';

let c: Cluster;
let A: Inst;
let B: Inst;
let C: Inst;
const procs: Proc[] = [];

before(async () => {
  c = await makeCluster({ names: ['a', 'b', 'c'] });
  [A, B, C] = c.nodes;
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

/** Hold a page of a segment at its home (its per-page mutex) until `release()`. */
function holdPage(seg: Segment, page: number): { release(): Promise<void> } {
  let open!: () => void;
  const held = new Promise<void>((r) => {
    open = r;
  });
  const holding = seg.mutex.run(page, () => held);
  return {
    async release() {
      open();
      await holding;
    },
  };
}

test('attach-churn: a grant made after a detach was sent is not dropped by that detach', async () => {
  const p = await spawn(A);
  const va = await p.mmap(2 * PAGE_SIZE, PROT_RW);
  await p.write32(va, 10);
  await p.write32(va + PAGE_SIZE, 20);
  const segid = await A.driver.make(p.pid, va, 2 * PAGE_SIZE, 0o600);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'rw');
  const v1 = await B.driver.attach(q.pid, apid, 0, 2 * PAGE_SIZE);
  assert.equal(await q.read32(v1), 10);
  assert.equal(await q.read32(v1 + PAGE_SIZE), 20);

  // Hold page 0 at the home: the detach (pages 0 and 1) stalls on page 0 ...
  const seg = A.driver.segments.get(segid);
  assert.ok(seg);
  const page0 = holdPage(seg, 0);
  const detached = B.driver.detach(q.pid, v1);
  await tick();
  // ... while the re-attached process faults page 1 (a new map request behind the detach).
  const v2 = await B.driver.attach(q.pid, apid, 0, 2 * PAGE_SIZE);
  const read = q.read32(v2 + PAGE_SIZE);
  await tick(50);
  await page0.release();
  await detached;
  assert.equal(await read, 20);

  // The home must still know B's copy of page 1: a home write invalidates it.
  await p.write32(va + PAGE_SIZE, 21);
  assert.equal(await q.read32(v2 + PAGE_SIZE), 21, 'the re-attached reader sees the latest write');
  await B.driver.detach(q.pid, v2);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(segid);
  assert.equal(A.driver.status().rmap.entries, 0);
  await checkKernel(A.kernel);
  await checkKernel(B.kernel);
});

test('reclaim-storm: an invalidation racing an upgrade of the same page does not lose the writer’s data', async () => {
  // B holds the page for writing (dirty). C's write upgrades: the home invalidates B's copy. While
  // that invalidation is in flight, reclaim of the frame starts and invalidates the page again. B
  // answers the first with its data and the second with "nothing here"; if both were in flight at
  // once, the empty ack (B's second handler has nothing to zap, so it answers first) removed B's
  // entry and the data in the other ack was thrown away: the frame went to swap without B's write.
  const p = await spawn(A);
  const va = await p.mmap(PAGE_SIZE, PROT_RW);
  await p.write32(va, 0xa0);
  const segid = await A.driver.make(p.pid, va, PAGE_SIZE, 0o600);
  const b = await attachOn(B, segid, 1);
  const cc = await attachOn(C, segid, 1);
  procs.push(b.q, cc.q);
  await b.q.write32(b.va, 0xb0); // B: remote-exclusive, dirty
  const pfn = A.kernel.pfnOf(p.pid, va) as number;
  let reclaim: Promise<unknown> | undefined;
  const onMsg = (m: MessageEvent) => {
    if (m.dir === 'out' && m.type === 'invalidate' && m.peer === 'b' && !reclaim) {
      reclaim = A.kernel.reclaimPage(pfn);
    }
  };
  A.driver.events.on('message', onMsg);
  try {
    await cc.q.write32(cc.va + 4, 0xc1); // another word of the same page: B's word must survive
  } finally {
    A.driver.events.off('message', onMsg);
  }
  assert.ok(reclaim, 'the upgrade sent an invalidate to b');
  const outcome = await reclaim;
  assert.equal(await p.read32(va), 0xb0, `B's write survives (reclaim outcome ${String(outcome)})`);
  assert.equal(await p.read32(va + 4), 0xc1);
  assert.equal(await b.q.read32(b.va), 0xb0);
  await quiesce(A);
  await A.driver.remove(segid);
  await checkKernel(A.kernel);
});

test('8-instance livelock: a grant reaches its requester before the next conflicting invalidate', async () => {
  // B and C both fault the same page for writing while the home holds it. B's grant comes first;
  // C's grant then invalidates B's copy. The home must queue B's map-ok before that invalidate: in
  // the other order B drops the copy as overtaken (by its grant id) and faults again, and with more
  // writers no grant is ever used (8 instances ran at 39 ops/s, 316 messages per operation).
  const p = await spawn(A);
  const va = await p.mmap(PAGE_SIZE, PROT_RW);
  await p.write32(va, 1);
  const segid = await A.driver.make(p.pid, va, PAGE_SIZE, 0o600);
  const b = await attachOn(B, segid, 1);
  const cc = await attachOn(C, segid, 1);
  procs.push(b.q, cc.q);
  const seg = A.driver.segments.get(segid);
  assert.ok(seg);
  const before = B.driver.status().counters.overtakenGrants;
  const page0 = holdPage(seg, 0);
  const wb = b.q.write32(b.va, 0xb);
  await tick(30); // B's map request waits on the page
  const wc = cc.q.write32(cc.va + 4, 0xc);
  await tick(30); // so does C's, behind it
  await page0.release();
  await Promise.all([wb, wc]);
  assert.equal(B.driver.status().counters.overtakenGrants - before, 0, 'B used its grant');
  assert.equal(await p.read32(va), 0xb);
  assert.equal(await p.read32(va + 4), 0xc);
  await quiesce(A);
  await A.driver.remove(segid);
  await checkKernel(A.kernel);
});
