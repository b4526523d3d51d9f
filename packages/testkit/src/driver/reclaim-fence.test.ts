/**
 * Reclaim and migration of exported pages (the 2008 rmap notifier: invalidate every remote mapper,
 * collect the acks, then the kernel may swap or move the page), and fencing of a partitioned peer.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import {
  attachOn,
  type Cluster,
  checkDriver,
  countSent,
  expectCode,
  type Inst,
  makeCluster,
  PROT_RW,
  until,
} from './cluster.js';

let c: Cluster;
let A: Inst;
let B: Inst;
let C: Inst;

before(async () => {
  c = await makeCluster({ ackTimeoutMs: 400, heartbeatMs: 100, missedBeats: 5 });
  [A, B, C] = c.nodes;
});
after(async () => {
  await c?.close();
});

async function setup(pages: number, value: number) {
  const p = await A.kernel.spawn({ catchSignals: true });
  const va = await p.mmap(pages * PAGE_SIZE, PROT_RW);
  for (let i = 0; i < pages; i++) await p.write32(va + i * PAGE_SIZE, value + i);
  const segid = await A.driver.make(p.pid, va, pages * PAGE_SIZE, 0o600);
  return { p, va, segid };
}

/**
 * Reclaim an exported page. The kernel refuses to reclaim or migrate a frame that carries a device
 * entry ('unevictable'), and a page with remote copies always carries one at its home (that is how a
 * home write faults into the driver). So when the direct attempt says 'unevictable', the page is
 * first cleaned (pageMkclean → the same rmap notifier: invalidate every copy, collect every ack with
 * its dirty data, source PTE back to normal) and then reclaimed. Both paths assert the notifier ran.
 */
async function reclaimExported(pfn: number, t: { diagnostic(s: string): void }): Promise<string> {
  const first = await A.kernel.reclaimPage(pfn);
  if (first !== 'unevictable') return String(first);
  t.diagnostic('kernel: a frame with a device entry is unevictable; cleaning first (see docs/driver.md)');
  await A.kernel.pageMkclean(pfn);
  return String(await A.kernel.reclaimPage(pfn));
}

test('reclaim of an exported page: invalidate, ack (with dirty data), swap out; re-fault from swap', async (t) => {
  const s = await setup(2, 0x300);
  const b = await attachOn(B, s.segid, 2);
  const cc = await attachOn(C, s.segid, 2);
  assert.equal(await cc.q.read32(cc.va), 0x300);
  await b.q.write32(b.va + PAGE_SIZE, 0x3ff); // b holds page 1 dirty
  const pfn0 = A.kernel.pfnOf(s.p.pid, s.va) as number;
  const pfn1 = A.kernel.pfnOf(s.p.pid, s.va + PAGE_SIZE) as number;
  const m = c.sent.length;
  assert.equal(await reclaimExported(pfn0, t), 'reclaimed');
  assert.equal(countSent(c, m, 'invalidate'), 1, 'one invalidate to the one reader');
  assert.equal(countSent(c, m, 'invalidate-ack'), 1);
  assert.equal(await reclaimExported(pfn1, t), 'reclaimed');
  assert.equal(A.driver.status().rmap.entries, 0);
  assert.equal(A.kernel.api.pageExported(pfn1), false);
  assert.equal(B.driver.status().cachedPages + C.driver.status().cachedPages, 0);
  assert.equal(A.kernel.pfnOf(s.p.pid, s.va + PAGE_SIZE), undefined, 'page 1 is in swap');
  // re-fault from swap, data intact (the dirty page came back in the ack before the swap-out)
  assert.equal(await cc.q.read32(cc.va + PAGE_SIZE), 0x3ff);
  assert.equal(await b.q.read32(b.va), 0x300);
  assert.equal(await s.p.read32(s.va + PAGE_SIZE), 0x3ff);
  await A.driver.remove(s.segid);
});

test('migration of an exported page: copies are invalidated first, then re-fault the moved page', async () => {
  const s = await setup(1, 0x400);
  const b = await attachOn(B, s.segid, 1);
  await b.q.write32(b.va + 8, 0x4ff);
  const pfn = A.kernel.pfnOf(s.p.pid, s.va) as number;
  let out = await A.kernel.migratePage(pfn);
  if (out === 'unevictable') {
    await A.kernel.pageMkclean(pfn);
    out = await A.kernel.migratePage(pfn);
  }
  assert.equal(typeof out, 'number', `migrated: ${String(out)}`);
  assert.equal(A.driver.status().rmap.entries, 0);
  assert.equal(await s.p.read32(s.va + 8), 0x4ff, 'the dirty remote data moved with the page');
  await s.p.write32(s.va, 0x401);
  assert.equal(await b.q.read32(b.va), 0x401);
  await A.driver.remove(s.segid);
});

test('reclaim in batches: one invalidate per mapper per batch, dirty data of a writer comes home, pages re-fault intact', async () => {
  const n = 24;
  const s = await setup(n, 0x900);
  const b = await attachOn(B, s.segid, n);
  const cc = await attachOn(C, s.segid, n);
  for (let i = 0; i < n; i++) {
    assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), 0x900 + i);
    assert.equal(await cc.q.read32(cc.va + i * PAGE_SIZE), 0x900 + i);
  }
  // C writes page 5 (every other copy of it goes; C holds it for writing, its data newer than home's)
  await cc.q.write32(cc.va + 5 * PAGE_SIZE, 0xbeef);
  const sent0 = c.sent.length;
  const calls0 = A.kernel.stats().rmapNotifiers.calls;
  const r = await A.kernel.shrink(n, { concurrency: 12 });
  const batches = A.kernel.stats().rmapNotifiers.calls - calls0;
  const inv = c.sent.slice(sent0).filter((m) => m.type === 'invalidate');
  const perPeer = new Map<string, number>();
  for (const m of inv) perPeer.set(m.peer, (perPeer.get(m.peer) ?? 0) + 1);
  assert.ok(r.reclaimed >= n - 2, `reclaimed ${r.reclaimed} of ${n}: ${JSON.stringify(r.outcomes)}`);
  assert.ok(batches >= 2 && batches <= 6, `${batches} notifier calls`);
  for (const [peer, count] of perPeer)
    assert.ok(
      count <= batches,
      `${peer} got ${count} invalidates in ${batches} batches (one per page would be ${n})`,
    );
  // the writer's data came home before the frame went to swap; everybody reads it back
  assert.equal(await s.p.read32(s.va + 5 * PAGE_SIZE), 0xbeef);
  assert.equal(await b.q.read32(b.va + 5 * PAGE_SIZE), 0xbeef);
  for (let i = 0; i < n; i++) {
    if (i === 5) continue;
    assert.equal(await s.p.read32(s.va + i * PAGE_SIZE), 0x900 + i);
    assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), 0x900 + i);
    assert.equal(await cc.q.read32(cc.va + i * PAGE_SIZE), 0x900 + i);
  }
  checkDriver(A, new Set([A.name, B.name, C.name]));
  await A.driver.remove(s.segid);
  await s.p.exit(0);
  await b.q.exit(0);
  await cc.q.exit(0);
});

test('reclaim in batches: frames exported by two segment pages share the batch with frames of one, every copy goes, data intact', async () => {
  const n = 8;
  const s = await setup(n, 0xa00);
  // a second segment over the first half of the same pages: those frames carry entries of two
  // segment pages (the rmap notifier's general path), the others of one (its per-frame fast path)
  const segid2 = await A.driver.make(s.p.pid, s.va, (n / 2) * PAGE_SIZE, 0o600);
  const b = await attachOn(B, s.segid, n);
  const b2 = await attachOn(B, segid2, n / 2);
  const cc = await attachOn(C, s.segid, n);
  for (let i = 0; i < n; i++) {
    assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), 0xa00 + i);
    assert.equal(await cc.q.read32(cc.va + i * PAGE_SIZE), 0xa00 + i);
    if (i < n / 2) assert.equal(await b2.q.read32(b2.va + i * PAGE_SIZE), 0xa00 + i);
  }
  await cc.q.write32(cc.va + 6 * PAGE_SIZE, 0xcafe); // a writer on a frame of one segment page
  const pfns: number[] = [];
  for (let i = 0; i < n; i++) pfns.push(A.kernel.pfnOf(s.p.pid, s.va + i * PAGE_SIZE) as number);
  // the LRU also holds other tests' pages: shrink (batches of n) until every page of ours is out
  const inMemory = () => pfns.filter((_, i) => A.kernel.pfnOf(s.p.pid, s.va + i * PAGE_SIZE) !== undefined);
  for (let round = 0; round < 12 && inMemory().length > 0; round++) {
    const r = await A.kernel.shrink(n, { concurrency: n });
    assert.equal(r.outcomes.external_failed ?? 0, 0, JSON.stringify(r.outcomes));
  }
  assert.equal(inMemory().length, 0, 'every page of ours went to swap');
  // each frame lost every entry, of both segments, before it was written out and freed
  for (const pfn of pfns) assert.equal(A.kernel.api.pageExported(pfn), false);
  assert.equal(B.driver.status().cachedPages + C.driver.status().cachedPages, 0);
  assert.equal(await s.p.read32(s.va + 6 * PAGE_SIZE), 0xcafe);
  for (let i = 0; i < n; i++) {
    const want = i === 6 ? 0xcafe : 0xa00 + i;
    assert.equal(await s.p.read32(s.va + i * PAGE_SIZE), want);
    assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), want);
    if (i < n / 2) assert.equal(await b2.q.read32(b2.va + i * PAGE_SIZE), want);
  }
  checkDriver(A, new Set([A.name, B.name, C.name]));
  await A.driver.remove(segid2);
  await A.driver.remove(s.segid);
  await s.p.exit(0);
  await b.q.exit(0);
  await b2.q.exit(0);
  await cc.q.exit(0);
});

test('a partitioned writer misses the ack deadline: fenced, its dirty page reverts and is counted', async () => {
  const s = await setup(2, 0x500);
  const b = await attachOn(B, s.segid, 2);
  const cc = await attachOn(C, s.segid, 2);
  await b.q.write32(b.va, 0x5ff); // only dirty copy on b
  assert.equal(await cc.q.read32(cc.va + PAGE_SIZE), 0x501);
  const lost: unknown[] = [];
  const fences: unknown[] = [];
  A.driver.events.on('lost-dirty', (e) => lost.push(e));
  A.driver.events.on('fence', (e) => fences.push(e));
  c.sw.partition('a', 'b');
  // the home reads the page b holds for writing: recall → no ack → fence b → last written-back data
  assert.equal(await s.p.read32(s.va), 0x500);
  assert.equal(lost.length, 1, 'one lost dirty page');
  assert.deepEqual(lost[0], { segid: s.segid, page: 0, node: 'b' });
  assert.ok(fences.some((f) => (f as { node: string }).node === 'b'));
  assert.ok(A.driver.pageStates(s.segid).every((ps) => !ps.sharers.includes('b') && ps.writer !== 'b'));
  checkDriver(A, new Set(['a', 'c']));
  // c is unaffected
  assert.equal(await cc.q.read32(cc.va + PAGE_SIZE), 0x501);
  // b notices the home is gone: its attachment is revoked (SIGBUS), then it comes back as a new session
  await until(() => !B.net.sessions().some((x) => x.node === 'a'), 'b sees a down', 10_000);
  await expectCode(b.q.read32(b.va), 'SIGBUS');
  c.sw.heal('a', 'b');
  await until(
    () => B.net.sessions().some((x) => x.node === 'a') && A.net.sessions().some((x) => x.node === 'b'),
    'b back',
    15_000,
  );
  await expectCode(B.driver.attach(b.q.pid, b.apid, 0, PAGE_SIZE), 'E_NO_PERMIT');
  const b2 = await attachOn(B, s.segid, 2);
  assert.equal(await b2.q.read32(b2.va), 0x500, 'the new session sees the reverted page');
  await b2.q.write32(b2.va, 0x600);
  assert.equal(await s.p.read32(s.va), 0x600);
  await A.driver.remove(s.segid);
});

test('rmap notifier with a partitioned mapper: the callback fails and fences it, then the clean succeeds', async () => {
  await until(() => A.net.sessions().length === 2, 'all up', 15_000);
  const s = await setup(1, 0x700);
  const cc = await attachOn(C, s.segid, 1);
  await cc.q.write32(cc.va, 0x7ff);
  const pfn = A.kernel.pfnOf(s.p.pid, s.va) as number;
  const before = A.driver.status().counters;
  c.sw.partition('a', 'c');
  await A.kernel.pageMkclean(pfn);
  const after = A.driver.status().counters;
  assert.equal(after.reclaimRefusals, before.reclaimRefusals + 1, 'the callback reported failure once');
  assert.equal(after.fences, before.fences + 1);
  assert.equal(after.lostDirtyPages, before.lostDirtyPages + 1);
  assert.equal(A.driver.status().rmap.entries, 0, "the fenced peer's entries are gone");
  assert.equal(A.kernel.api.pageExported(pfn), false, 'flag cleared with the map empty');
  assert.equal(await s.p.read32(s.va), 0x700, 'reverted to the last written-back data');
  c.sw.heal('a', 'c');
  await A.driver.remove(s.segid);
  await until(
    () => A.net.sessions().length === 2 && C.net.sessions().some((x) => x.node === 'a'),
    'all up again',
    15_000,
  );
});
