/**
 * A map of N pages (prefault) is one ranged operation at the home: one getUserPages, one
 * setDeviceEntries (one TLB shootdown) for the run, per-page re-checks under each page lock. The
 * guarantees are the single-page grant's: every page granted has PG_external_rmap and a reverse-map
 * entry, the source PTE is in device mode, a home write invalidates every copy, and a page whose
 * re-check fails (an invalidation racing with the range) is not granted from a stale state.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { stagesKept } from '@xpmesh/driver';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { attachOn, type Cluster, checkDriver, type Inst, makeCluster, PROT_RW } from './cluster.js';

let c: Cluster;
let A: Inst;
let B: Inst;

before(async () => {
  c = await makeCluster({ names: ['a', 'b'], prefault: 64, frames: 4096 });
  [A, B] = c.nodes;
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

/** The kernel's shootdown counter (internal state, tests only). */
const shootdowns = (n: Inst) =>
  (n.kernel as unknown as { k: { stats: { shootdowns: number } } }).k.stats.shootdowns;

test('a 64-page map is one ranged grant: one shootdown at the home, every page exported and in device mode', async () => {
  const n = 64;
  const s = await setup(n, 0x1000);
  const shoot0 = shootdowns(A);
  const maps0 = A.driver.counters.mapsGranted;
  const sent0 = c.sent.length;
  // attach prefaults the first `prefault` pages: one map request for the 64
  const b = await attachOn(B, s.segid, n);
  assert.equal(await b.q.read32(b.va), 0x1000);
  assert.equal(c.sent.slice(sent0).filter((m) => m.type === 'map').length, 1);
  assert.equal(A.driver.counters.mapsGranted - maps0, n);
  assert.ok(shootdowns(A) - shoot0 <= 2, `${shootdowns(A) - shoot0} shootdowns for ${n} pages`);
  const k = A.kernel.api;
  const mm = k.mmOfPid(s.p.pid)!;
  for (let i = 0; i < n; i++) {
    const pfn = A.kernel.pfnOf(s.p.pid, s.va + i * PAGE_SIZE)!;
    assert.ok(k.pageExported(pfn), `page ${i} exported`);
    assert.equal(A.driver.rmap.entries(pfn).length, 1);
    assert.equal(k.deviceEntryAt(mm, s.va + i * PAGE_SIZE)?.mode, 'readonly');
  }
  for (let i = 0; i < n; i++) assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), 0x1000 + i);
  // a home write invalidates the copy (the device entry faults into the driver)
  await s.p.write32(s.va + 7 * PAGE_SIZE, 0xabc);
  assert.equal(await b.q.read32(b.va + 7 * PAGE_SIZE), 0xabc);
  checkDriver(A, new Set([A.name, B.name]));
  await A.driver.remove(s.segid);
  await s.p.exit(0);
  await b.q.exit(0);
});

test('a writable 64-page map (rw): the home reads recall the data; pins == unpins', async () => {
  const n = 64;
  const s = await setup(n, 0x2000);
  const b = await attachOn(B, s.segid, n);
  await b.q.write32(b.va + 3 * PAGE_SIZE, 0x77);
  await b.q.write32(b.va + 60 * PAGE_SIZE, 0x78);
  assert.equal(await s.p.read32(s.va + 3 * PAGE_SIZE), 0x77, 'a remote writer’s data recalled');
  assert.equal(await s.p.read32(s.va + 60 * PAGE_SIZE), 0x78);
  assert.equal(await s.p.read32(s.va + 4 * PAGE_SIZE), 0x2004);
  checkDriver(A, new Set([A.name, B.name]));
  await A.driver.remove(s.segid);
  await s.p.exit(0);
  await b.q.exit(0);
});

test('an invalidation racing with a ranged grant: no page is granted from before it (re-check under the page lock)', async () => {
  const n = 64;
  const s = await setup(n, 0x3000);
  const b = await attachOn(B, s.segid, n);
  // the fault (a 64-page map) and home writes to pages of that range, concurrently
  const read = b.q.read32(b.va);
  const writes = [5, 20, 63].map((i) => s.p.write32(s.va + i * PAGE_SIZE, 0x9000 + i));
  assert.equal(await read, 0x3000);
  await Promise.all(writes);
  // whatever the interleaving, the attacher reads the latest completed write of every page
  for (let i = 0; i < n; i++) {
    const want = [5, 20, 63].includes(i) ? 0x9000 + i : 0x3000 + i;
    assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), want, `page ${i}`);
  }
  checkDriver(A, new Set([A.name, B.name]));
  await A.driver.remove(s.segid);
  await s.p.exit(0);
  await b.q.exit(0);
});

test('map-ok carries the data as of the grant: copied under the page locks, no pin outlives the grant, the staging buffer stays out of the pool until the reply is encoded', async () => {
  const n = 64;
  const s = await setup(n, 0x4000);
  const k = A.kernel.api;
  const pfns = Array.from({ length: n }, (_, i) => A.kernel.pfnOf(s.p.pid, s.va + i * PAGE_SIZE)!);
  const refs = () => pfns.map((pfn) => k.pageInfo(pfn).refcount);
  const before = refs();
  // a stage left in the pool by an earlier ranged grant: this grant takes it
  await new Promise((r) => setImmediate(r));
  const kept0 = stagesKept();
  // the home's driver emits its outgoing map-ok just before handing it to the link (which encodes
  // it in the same turn's microtasks): the staging buffer whose views the reply carries must not be
  // back in the pool yet (another grant could write into it), while the frames are no longer pinned
  // (the data is a copy)
  let atReply: { refs: number[]; kept: number } | undefined;
  const onMsg = (m: { dir: string; type: string }) => {
    if (m.dir === 'out' && m.type === 'map-ok' && atReply === undefined)
      atReply = { refs: refs(), kept: stagesKept() };
  };
  A.driver.events.on('message', onMsg);
  try {
    const b = await attachOn(B, s.segid, n);
    assert.ok(atReply, 'a map-ok was sent');
    await new Promise((r) => setImmediate(r));
    assert.equal(stagesKept(), Math.max(kept0, 1), 'the stage is back in the pool once the reply is out');
    // the home overwrites every page right after the grant: the attacher reads either the granted
    // data or, after the invalidation, the new data; never anything else
    const writes = Array.from({ length: n }, (_, i) => s.p.write32(s.va + i * PAGE_SIZE, 0x5000 + i));
    for (let i = 0; i < n; i++) {
      const v = await b.q.read32(b.va + i * PAGE_SIZE);
      assert.ok(v === 0x4000 + i || v === 0x5000 + i, `page ${i}: ${v.toString(16)}`);
    }
    await Promise.all(writes);
    for (let i = 0; i < n; i++) assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), 0x5000 + i);
    assert.deepEqual(atReply.refs, before, 'no frame pinned once granted (the reply carries copies)');
    assert.equal(
      atReply.kept,
      Math.max(kept0 - 1, 0),
      'the stage is out of the pool while the reply is sent',
    );
    assert.deepEqual(refs(), before);
    assert.equal(A.driver.counters.pins, A.driver.counters.unpins);
    checkDriver(A, new Set([A.name, B.name]));
    await A.driver.remove(s.segid);
    await b.q.exit(0);
  } finally {
    A.driver.events.off('message', onMsg);
    await s.p.exit(0);
  }
});

test('concurrent ranged grants of different data share the staging pool: every attacher reads its own segment', async () => {
  const n = 64;
  for (let round = 0; round < 4; round++) {
    const segs = await Promise.all([0, 1, 2].map((x) => setup(n, 0x10000 * (x + 1) + round * 0x100)));
    // three prefaults in flight at once: three ranged grants at the home, each with a stage
    const atts = await Promise.all(segs.map((s) => attachOn(B, s.segid, n)));
    for (let x = 0; x < segs.length; x++) {
      for (let i = 0; i < n; i++) {
        const want = 0x10000 * (x + 1) + round * 0x100 + i;
        assert.equal(await atts[x].q.read32(atts[x].va + i * PAGE_SIZE), want, `segment ${x} page ${i}`);
      }
    }
    assert.ok(stagesKept() <= 4, 'the pool is bounded');
    checkDriver(A, new Set([A.name, B.name]));
    for (const s of segs) await A.driver.remove(s.segid);
    for (const a of atts) await a.q.exit(0);
    for (const s of segs) await s.p.exit(0);
  }
});

test('a write-back invalidation of a range with more than 64 written pages: split per 64 writes, every write back, read copies skipped', async () => {
  const n = 160;
  const s = await setup(n, 0x6000);
  const b = await attachOn(B, s.segid, n);
  // pages 0..99 written (write copies at B), 100..159 only read (read copies)
  for (let i = 0; i < 100; i++) await b.q.write32(b.va + i * PAGE_SIZE, 0x7000 + i);
  for (let i = 100; i < n; i++) assert.equal(await b.q.read32(b.va + i * PAGE_SIZE), 0x6000 + i);
  const sent0 = c.sent.length;
  const wbw0 = A.driver.counters.writebackWithoutData;
  // one mprotect of the whole range: a 'protection' invalidation with write-back
  await s.p.mprotect(s.va, n * PAGE_SIZE, 1);
  const inv = c.sent.slice(sent0).filter((m) => m.type === 'invalidate' && m.peer === B.name).length;
  assert.ok(inv >= 2, `${inv} invalidate messages: 100 written pages need two (≤ 64 dirty pages per ack)`);
  assert.equal(A.driver.counters.writebackWithoutData, wbw0, 'every written page came back');
  await s.p.mprotect(s.va, n * PAGE_SIZE, PROT_RW);
  for (let i = 0; i < n; i++)
    assert.equal(await s.p.read32(s.va + i * PAGE_SIZE), i < 100 ? 0x7000 + i : 0x6000 + i, `page ${i}`);
  checkDriver(A, new Set([A.name, B.name]));
  await A.driver.remove(s.segid);
  await s.p.exit(0);
  await b.q.exit(0);
});
