/**
 * Coherence across instances (home as directory, single writer / multiple readers) and the message
 * count of every miss, counted from the drivers' 'message' events (each message counted once, by its
 * sender).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { attachOn, type Cluster, countSent, type Inst, makeCluster, PROT_RW, type Proc } from './cluster.js';

let c: Cluster;
let A: Inst;
let B: Inst;
let C: Inst;
let home: Proc;
let va: number;
let segid: string;
const at: Record<string, { q: Proc; va: number }> = {};

before(async () => {
  c = await makeCluster();
  [A, B, C] = c.nodes;
  home = await A.kernel.spawn({ catchSignals: true });
  va = await home.mmap(8 * PAGE_SIZE, PROT_RW);
  for (let i = 0; i < 8; i++) await home.write32(va + i * PAGE_SIZE, 100 + i);
  segid = await A.driver.make(home.pid, va, 8 * PAGE_SIZE, 0o600);
  for (const n of [B, C]) {
    const q = await n.kernel.spawn({ catchSignals: true });
    const apid = await n.driver.get(q.pid, segid, 'rw');
    at[n.name] = { q, va: await n.driver.attach(q.pid, apid, 0, 8 * PAGE_SIZE) };
  }
});
after(async () => {
  await c?.close();
});

function state(page: number) {
  return A.driver.pageStates(segid)[page];
}

test('read miss: 2 messages (map, map-ok); the page becomes shared', async () => {
  const m = c.sent.length;
  assert.equal(await at.b.q.read32(at.b.va), 100);
  assert.equal(countSent(c, m), 2);
  assert.equal(countSent(c, m, 'map'), 1);
  assert.equal(countSent(c, m, 'map-ok'), 1);
  assert.deepEqual([state(0).state, state(0).sharers], ['shared', ['b']]);
  const m2 = c.sent.length;
  assert.equal(await at.b.q.read32(at.b.va + 4), 0, 'a hit sends nothing');
  assert.equal(countSent(c, m2), 0);
});

test('write miss with k sharers: 2 + 2k messages; single writer afterwards', async () => {
  // page 1: b and c read (k = 2 sharers), then c writes: its own read copy goes too
  await at.b.q.read32(at.b.va + PAGE_SIZE);
  await at.c.q.read32(at.c.va + PAGE_SIZE);
  assert.deepEqual(state(1).sharers.sort(), ['b', 'c']);
  const m = c.sent.length;
  await at.c.q.write32(at.c.va + PAGE_SIZE, 7);
  assert.equal(countSent(c, m), 2 + 2 * 2);
  assert.equal(countSent(c, m, 'invalidate'), 2);
  assert.equal(countSent(c, m, 'invalidate-ack'), 2);
  assert.deepEqual([state(1).state, state(1).writer, state(1).sharers], ['remote-exclusive', 'c', []]);
  // page 2: b reads (k = 1), c write-misses: 2 + 2
  await at.b.q.read32(at.b.va + 2 * PAGE_SIZE);
  const m2 = c.sent.length;
  await at.c.q.write32(at.c.va + 2 * PAGE_SIZE, 8);
  assert.equal(countSent(c, m2), 2 + 2 * 1);
  // page 3: no sharer: a write miss is 2 messages
  const m3 = c.sent.length;
  await at.c.q.write32(at.c.va + 3 * PAGE_SIZE, 9);
  assert.equal(countSent(c, m3), 2);
});

test('a read after a remote write sees it: the writer is recalled with downgrade and write-back', async () => {
  await at.c.q.write32(at.c.va + 4 * PAGE_SIZE, 0xabc);
  const v0 = state(4).version;
  const m = c.sent.length;
  assert.equal(await at.b.q.read32(at.b.va + 4 * PAGE_SIZE), 0xabc);
  assert.equal(countSent(c, m), 4, 'map, invalidate(recall), ack with data, map-ok');
  assert.deepEqual([state(4).state, state(4).sharers.sort()], ['shared', ['b', 'c']]);
  assert.equal(state(4).version, v0 + 1, 'the write-back moved the version');
  assert.equal(await at.c.q.read32(at.c.va + 4 * PAGE_SIZE), 0xabc, 'the former writer kept a read copy');
});

test('home accesses fault into the driver: a read recalls a remote writer, a write invalidates readers', async () => {
  await at.b.q.write32(at.b.va + 5 * PAGE_SIZE, 55);
  assert.equal(state(5).state, 'remote-exclusive');
  const m = c.sent.length;
  assert.equal(await home.read32(va + 5 * PAGE_SIZE), 55, 'home read sees the remote write');
  assert.equal(countSent(c, m), 2);
  assert.deepEqual([state(5).state, state(5).sharers], ['shared', ['b']]);
  const m2 = c.sent.length;
  await home.write32(va + 5 * PAGE_SIZE, 56);
  assert.equal(countSent(c, m2), 2, 'invalidate + ack to the one reader');
  assert.equal(state(5).state, 'home');
  assert.equal(await at.b.q.read32(at.b.va + 5 * PAGE_SIZE), 56);
});

test('write ping-pong between two instances: every read returns the latest completed write', async () => {
  const addr = 6 * PAGE_SIZE + 12;
  let last = 0;
  for (let i = 1; i <= 20; i++) {
    const w = i % 2 ? at.b : at.c;
    const r = i % 3 ? at.c : at.b;
    await w.q.write32(w.va + addr, i);
    last = i;
    assert.equal(await r.q.read32(r.va + addr), last);
    if (i % 5 === 0) assert.equal(await home.read32(va + addr), last);
  }
  const st = A.driver.status().counters;
  assert.ok(st.upgrades > 0 && st.recalls > 0);
  // single writer invariant over every page
  for (const ps of A.driver.pageStates(segid)) {
    if (ps.writer) assert.deepEqual(ps.sharers, [], `page ${ps.page}: a writer excludes readers`);
  }
});

test('concurrent faults on one page at one instance coalesce into one map request', async () => {
  const q2 = await B.kernel.spawn({ catchSignals: true });
  const apid2 = await B.driver.get(q2.pid, segid, 'rw');
  const va2 = await B.driver.attach(q2.pid, apid2, 0, 8 * PAGE_SIZE);
  const before = B.driver.status().counters.coalescedFaults;
  c.sw.setFaults('b', 'a', { delayMs: 30 }); // keep the first request in flight while the others fault
  const m = c.sent.length;
  const [x, y, z] = await Promise.all([
    at.b.q.read32(at.b.va + 7 * PAGE_SIZE),
    q2.read32(va2 + 7 * PAGE_SIZE),
    q2.read32(va2 + 7 * PAGE_SIZE + 4),
  ]);
  c.sw.setFaults('b', 'a', {});
  assert.deepEqual([x, y, z], [107, 107, 0]);
  assert.equal(countSent(c, m, 'map'), 1, 'one map for three faults');
  assert.ok(B.driver.status().counters.coalescedFaults > before);
  await B.driver.detach(q2.pid, va2);
  await B.driver.release(q2.pid, apid2);
  await q2.exit(0);
});

test('detach returns dirty data and empties the map; PG_external_rmap follows the map', async () => {
  await at.b.q.write32(at.b.va + 7 * PAGE_SIZE, 0x777);
  const pfn = A.kernel.pfnOf(home.pid, va + 7 * PAGE_SIZE) as number;
  assert.ok(A.kernel.api.pageExported(pfn));
  await B.driver.detach(at.b.q.pid, at.b.va);
  await C.driver.detach(at.c.q.pid, at.c.va);
  assert.equal(A.driver.status().rmap.entries, 0);
  assert.equal(A.kernel.api.pageExported(pfn), false);
  assert.equal(await home.read32(va + 7 * PAGE_SIZE), 0x777, 'dirty data came back with the detach');
  assert.ok(A.driver.pageStates(segid).every((p) => p.state === 'home'));
  await A.driver.remove(segid);
});

test('invalidation fan-out: every mapper is sent its invalidate before any ack is awaited', async () => {
  // a fresh segment both remotes read, then the home writes its page: 2 invalidates, 2 acks
  const p = await A.kernel.spawn({ catchSignals: true });
  const a = await p.mmap(PAGE_SIZE, PROT_RW);
  await p.write32(a, 106);
  const sid = await A.driver.make(p.pid, a, PAGE_SIZE, 0o600);
  const b = await attachOn(B, sid, 1);
  const cc = await attachOn(C, sid, 1);
  assert.equal(await b.q.read32(b.va), 106);
  assert.equal(await cc.q.read32(cc.va), 106);
  const seen: string[] = [];
  const onMsg = (m: { dir: string; type: string }) => {
    if (m.type === 'invalidate' || m.type === 'invalidate-ack') seen.push(`${m.dir} ${m.type}`);
  };
  A.driver.events.on('message', onMsg);
  try {
    await p.write32(a, 66);
  } finally {
    A.driver.events.off('message', onMsg);
  }
  // a per-mapper serial step (send, await the ack, send the next) would interleave out/in
  assert.deepEqual(seen, ['out invalidate', 'out invalidate', 'in invalidate-ack', 'in invalidate-ack']);
  assert.equal(await b.q.read32(b.va), 66);
  assert.equal(await cc.q.read32(cc.va), 66);
  await A.driver.remove(sid);
  await p.exit(0);
  await b.q.exit(0);
  await cc.q.exit(0);
});
