/**
 * Issue 17 (what docs/protocol.md promises an outsider): a writer that acks a write-back
 * invalidation without the page's data is counted (writebackWithoutData); releasing a permit after
 * segment-gone sends nothing; a page reclaimed at its home shows as `swapped`; a map of a removed
 * segment answers E_NO_SEGMENT.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { requestHandlers } from '@xpmesh/driver/handlers';
import { PAGE_SIZE as PAGE } from '@xpmesh/kernel';
import {
  type Cluster,
  countSent,
  expectCode,
  type Inst,
  makeCluster,
  PROT_RW,
  type Proc,
} from './cluster.js';

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

async function exported(pages: number) {
  const p = await spawn(A);
  const va = await p.mmap(pages * PAGE, PROT_RW);
  for (let i = 0; i < pages; i++) await p.write32(va + i * PAGE, 100 + i);
  const segid = await A.driver.make(p.pid, va, pages * PAGE, 0o600);
  return { p, va, segid };
}

test('a writer that acks a write-back invalidation without its data is counted', async () => {
  const { p, va, segid } = await exported(1);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'rw');
  const vb = await B.driver.attach(q.pid, apid, 0, PAGE);
  await q.write32(vb, 4242); // B holds page 0 for writing
  const lost: unknown[] = [];
  A.driver.events.on('writeback-without-data', (e) => lost.push(e));
  const before = A.driver.counters.writebackWithoutData;
  const orig = requestHandlers.invalidate;
  // B misbehaves: it answers every invalidation with no data (an outside implementation's bug)
  requestHandlers.invalidate = async (d, from, msg) => {
    const r = await orig(d, from, msg);
    return d === B.driver ? { ...r, dirty: [] } : r;
  };
  try {
    assert.equal(await p.read32(va), 100, 'the home recalls the page and keeps its own (old) data');
  } finally {
    requestHandlers.invalidate = orig;
  }
  assert.equal(A.driver.counters.writebackWithoutData - before, 1, 'the vanished write is counted');
  assert.deepEqual(lost, [{ segid, page: 0, node: 'b' }]);
  await B.driver.detach(q.pid, vb);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(segid);
});

test('a well-behaved writer is not counted: its data comes back', async () => {
  const { p, va, segid } = await exported(1);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'rw');
  const vb = await B.driver.attach(q.pid, apid, 0, PAGE);
  await q.write32(vb, 7);
  const before = A.driver.counters.writebackWithoutData;
  assert.equal(await p.read32(va), 7);
  assert.equal(A.driver.counters.writebackWithoutData, before);
  await B.driver.detach(q.pid, vb);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(segid);
});

test('release after segment-gone is a local no-op: no release message, no error', async () => {
  const { segid } = await exported(1);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'r');
  const from = c.sent.length;
  await A.driver.remove(segid);
  const until = Date.now() + 5000;
  while (B.driver.counters.segmentGone === 0 || !c.sent.slice(from).some((m) => m.type === 'segment-gone')) {
    if (Date.now() > until) throw new Error('segment-gone did not arrive');
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, 20));
  await B.driver.release(q.pid, apid);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(countSent(c, from, 'release'), 0, 'nothing to release at the home');
  assert.equal(countSent(c, from, 'error'), 0);
  assert.equal(B.driver.grants.has(apid), false, 'the permit is gone locally');
});

test('a page reclaimed at its home after invalidating its copies shows as swapped, then comes back', async () => {
  const { p, va, segid } = await exported(2);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'r');
  const vb = await B.driver.attach(q.pid, apid, 0, 2 * PAGE);
  assert.equal(await q.read32(vb + PAGE), 101);
  const states: string[] = [];
  A.driver.events.on('page-state', (e: { segid: string; page: number; to: string }) => {
    if (e.segid === segid && e.page === 1) states.push(e.to);
  });
  const pfn = A.kernel.pfnOf(p.pid, va + PAGE);
  assert.ok(pfn !== undefined && pfn >= 0);
  const outcome = await A.kernel.reclaimPage(pfn);
  assert.equal(outcome, 'reclaimed');
  assert.equal(
    A.driver.pageStates(segid)[1].state,
    'swapped',
    `${JSON.stringify(A.driver.pageStates(segid))} ${states.join(' → ')}`,
  );
  assert.ok(states.includes('swapped'), `page-state events: ${states.join(' → ')}`);
  assert.equal(await q.read32(vb + PAGE), 101, 'the next grant swaps it in');
  assert.equal(A.driver.pageStates(segid)[1].state, 'shared');
  await B.driver.detach(q.pid, vb);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(segid);
});

test('map of a removed segment answers E_NO_SEGMENT', async () => {
  const { segid } = await exported(1);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, segid, 'r');
  await A.driver.remove(segid);
  // B's own driver learns of it by segment-gone; ask the home directly, as an outside client would
  await expectCode(
    B.driver.request('a', { t: 'map', apid, page: 0, count: 1, access: 'r' } as never),
    'E_NO_SEGMENT',
  );
  await expectCode(
    B.driver.request('a', { t: 'detach', apid, ranges: [[0, 1]], dirty: [] } as never),
    'E_NO_SEGMENT',
  );
  // releasing it is a no-op that succeeds (an implementation that sends it anyway is not refused)
  assert.equal(((await B.driver.request('a', { t: 'release', apid } as never)) as { t: string }).t, 'ok');
  // a permit that never existed is still E_NO_PERMIT
  await expectCode(
    B.driver.request('a', { t: 'map', apid: 'a:a999999', page: 0, count: 1, access: 'r' } as never),
    'E_NO_PERMIT',
  );
});
