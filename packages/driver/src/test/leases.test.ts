/**
 * Leases and the home's view of its own device entries:
 * - a reader cut off from the home never returns its old copy after the home's conflicting write
 *   completed (the home waits out the reader's lease before it drops the reader's entry; the reader's
 *   accesses check the lease in the page-table walk);
 * - a reclaim refused because a mapper was fenced restores the source's device entry behind the
 *   driver's back; the home process can still write (the driver reads the real entry).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import {
  attachOn,
  type Cluster,
  checkDriver,
  expectCode,
  type Inst,
  makeCluster,
  PROT_RW,
  until,
} from './cluster.js';

let c: Cluster;
let A: Inst;
let B: Inst;

before(async () => {
  // the reader's session dies only after 1 s of silence, its lease runs out after 300 ms
  c = await makeCluster({ ackTimeoutMs: 300, heartbeatMs: 100, missedBeats: 10, leaseMs: 300 });
  [A, B] = c.nodes;
});
after(async () => {
  await c?.close();
});

async function exported(value: number) {
  const p = await A.kernel.spawn({ catchSignals: true });
  const va = await p.mmap(PAGE_SIZE, PROT_RW);
  await p.write32(va, value);
  const segid = await A.driver.make(p.pid, va, PAGE_SIZE, 0o600);
  return { p, va, segid };
}

async function allUp() {
  await until(
    () => c.nodes.every((n) => n.net.sessions().length === c.nodes.length - 1),
    'all sessions up',
    15_000,
  );
}

test('a partitioned reader never reads its old copy after the home write completed', async (t) => {
  await allUp();
  const s = await exported(0x1000);
  const b = await attachOn(B, s.segid, 1);
  assert.equal(await b.q.read32(b.va), 0x1000, 'b holds a read copy');
  c.sw.partition('a', 'b');
  t.after(() => c.sw.heal('a', 'b'));
  const t0 = performance.now();
  let written = Number.POSITIVE_INFINITY;
  const write = s.p.write32(s.va, 0x2000).then(() => {
    written = performance.now();
  });
  const reads: Array<{ start: number; end: number; value: number | string }> = [];
  const deadline = t0 + 4000;
  while (performance.now() < deadline) {
    const start = performance.now();
    try {
      reads.push({ start, end: performance.now(), value: await b.q.read32(b.va) });
      reads[reads.length - 1].end = performance.now();
    } catch (e) {
      reads.push({ start, end: performance.now(), value: (e as { code?: string }).code ?? String(e) });
    }
    if (written < Number.POSITIVE_INFINITY && reads.some((r) => r.start > written)) break;
  }
  await write;
  assert.ok(Number.isFinite(written), 'the home write completed');
  const after = reads.filter((r) => r.start > written);
  assert.ok(after.length > 0, 'the reader tried at least once after the write completed');
  for (const r of after) assert.notEqual(r.value, 0x1000, `stale read after the write: ${JSON.stringify(r)}`);
  assert.ok(
    written - t0 >= 300 + 300,
    `the write waited for the ack deadline and the lease (${(written - t0).toFixed(0)} ms)`,
  );
  assert.ok(B.driver.status().counters.leaseWaits > 0 || after.every((r) => r.value === 'SIGBUS'));
  c.sw.heal('a', 'b');
  await allUp();
  const b2 = await attachOn(B, s.segid, 1);
  assert.equal(await b2.q.read32(b2.va), 0x2000, 'the new session reads the new value');
  await A.driver.remove(s.segid);
});

test('a reclaim refused because a mapper was fenced leaves a device entry the driver still handles', async (t) => {
  await allUp();
  const s = await exported(0x3000);
  const b = await attachOn(B, s.segid, 1);
  assert.equal(await b.q.read32(b.va), 0x3000);
  const pfn = A.kernel.pfnOf(s.p.pid, s.va) as number;
  assert.deepEqual(A.kernel.api.deviceEntryAt(s.p.mm, s.va)?.mode, 'readonly', 'home PTE: readonly device');
  c.sw.partition('a', 'b');
  t.after(() => c.sw.heal('a', 'b'));
  const fencesBefore = A.driver.status().counters.fences;
  const outcome = await A.kernel.reclaimPage(pfn);
  // the per-mm notifier (at tryToUnmap's range start) or the rmap notifier invalidates b's copy: b
  // misses the ack deadline, is fenced, and its entry is dropped after its lease; a failed rmap
  // notifier makes the kernel restore the device entry behind the driver's back
  assert.ok(outcome === 'reclaimed' || outcome === 'external_failed', `outcome ${String(outcome)}`);
  t.diagnostic(`reclaim outcome: ${String(outcome)}`);
  assert.ok(A.driver.status().counters.fences > fencesBefore, 'b was fenced');
  assert.equal(A.driver.status().rmap.entries, 0, "b's entry is gone after its lease");
  const wrote = s.p.write32(s.va, 0x3001).then(() => 'done');
  const bound = new Promise((resolve) => setTimeout(() => resolve('stuck'), 10_000));
  assert.equal(await Promise.race([wrote, bound]), 'done', 'the home write completes');
  assert.equal(await s.p.read32(s.va), 0x3001);
  assert.equal(A.kernel.api.deviceEntryAt(s.p.mm, s.va), null, 'no copy left: a normal PTE again');
  c.sw.heal('a', 'b');
  await allUp();
  await expectCode(B.driver.attach(b.q.pid, b.apid, 0, PAGE_SIZE), 'E_NO_PERMIT');
  const b2 = await attachOn(B, s.segid, 1);
  assert.equal(await b2.q.read32(b2.va), 0x3001);
  checkDriver(A, new Set(['a', 'b']));
  await A.driver.remove(s.segid);
});
