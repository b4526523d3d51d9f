import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  FrameCounts,
  lockPageSync,
  PG_dirty,
  PG_external_rmap,
  PG_free,
  PG_locked,
  PhysMem,
  PRETOUCH_AHEAD,
  trylockPage,
  unlockPage,
} from '../page.js';

test('frames: allocation zeroes, free returns, frame 0 is reserved', () => {
  const m = new PhysMem(32);
  assert.equal(m.nrFree, 31);
  const a = m.allocFrame();
  assert.equal(a, 1);
  assert.equal(m.refcount(a), 1);
  m.frameBytes(a).fill(7);
  m.dropRef(a);
  m.freeFrame(a);
  assert.ok(m.isFree(a));
  const b = m.allocFrame();
  assert.equal(b, a);
  assert.equal(m.frameBytes(b)[100], 0, 'reallocated frame is zeroed');
  const all: number[] = [];
  for (;;) {
    const p = m.allocFrame();
    if (p < 0) break;
    all.push(p);
  }
  assert.equal(all.length, 30);
  assert.ok(!all.includes(0));
});

test('pre-touching frames ahead of allocation changes no frame contents (in use or never used)', async () => {
  const m = new PhysMem(PRETOUCH_AHEAD * 4);
  const held: number[] = [];
  // several windows' worth, a turn between allocations so the background top-ups run in between
  for (let i = 0; i < PRETOUCH_AHEAD * 3; i++) {
    const p = m.allocFrame(false);
    assert.equal(
      m.frameBytes(p).some((b) => b !== 0),
      false,
      `never-used frame ${p} reads zero`,
    );
    m.frameBytes(p).fill((p % 250) + 1);
    held.push(p);
    if (i % 16 === 0) await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setImmediate(r));
  for (const p of held) {
    const f = m.frameBytes(p);
    assert.ok(
      f.every((b) => b === (p % 250) + 1),
      `frame ${p} in use kept its contents`,
    );
  }
});

test('flags are atomic bits; testClearFlag reports the old state', () => {
  const m = new PhysMem(16);
  const p = m.allocFrame();
  m.setFlag(p, PG_dirty);
  assert.ok(m.testFlag(p, PG_dirty));
  assert.ok(m.testClearFlag(p, PG_dirty));
  assert.ok(!m.testClearFlag(p, PG_dirty));
  assert.ok(!m.testFlag(p, PG_free));
});

test('page lock: trylock fails while held; a sleeping waiter wakes on unlock', async () => {
  const m = new PhysMem(16);
  const p = m.allocFrame();
  assert.ok(m.trylockPage(p));
  assert.ok(!m.trylockPage(p));
  let got = false;
  const waiter = m.lockPage(p, 5000).then(() => {
    got = true;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(got, false, 'waiter sleeps while the lock is held');
  m.unlockPage(p);
  await waiter;
  assert.equal(got, true);
  assert.ok(m.testFlag(p, PG_locked));
  m.unlockPage(p);
  assert.throws(() => m.unlockPage(p), { code: 'EPERM' });
});

test('page lock: waiting is bounded (ETIMEDOUT)', async () => {
  const m = new PhysMem(16);
  const p = m.allocFrame();
  assert.ok(trylockPage(m.desc, p));
  await assert.rejects(m.lockPage(p, 30), { code: 'ETIMEDOUT' });
  assert.throws(() => lockPageSync(m.desc, p, 10), { code: 'ETIMEDOUT' });
  unlockPage(m.desc, p);
  lockPageSync(m.desc, p, 10);
  assert.ok(m.testFlag(p, PG_locked));
});

test('page lock: a worker thread sleeping in Atomics.wait is woken by the kernel thread', async () => {
  const { Worker } = await import('node:worker_threads');
  const m = new PhysMem(16);
  const p = m.allocFrame();
  assert.ok(m.trylockPage(p));
  const url = new URL('../page.js', import.meta.url).href;
  const w = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.url).then(({ lockPageSync, unlockPage }) => {
       const desc = new Int32Array(workerData.desc);
       parentPort.postMessage('waiting');
       lockPageSync(desc, workerData.pfn, 5000);
       parentPort.postMessage('locked');
       unlockPage(desc, workerData.pfn);
       parentPort.postMessage('unlocked');
     });`,
    { eval: true, workerData: { url, desc: m.descSab, pfn: p } },
  );
  const msgs: string[] = [];
  const done = new Promise<void>((resolve) => {
    w.on('message', (msg: string) => {
      msgs.push(msg);
      if (msg === 'waiting') setTimeout(() => m.unlockPage(p), 20);
      if (msg === 'unlocked') resolve();
    });
  });
  await done;
  await w.terminate();
  assert.deepEqual(msgs, ['waiting', 'locked', 'unlocked']);
  assert.ok(!m.testFlag(p, PG_locked));
});

test('262,144 frames (1 GiB) boot', () => {
  const m = new PhysMem(262_144);
  assert.equal(m.nrFree, 262_143);
  const p = m.allocFrame();
  assert.equal(m.frameBytes(p).length, 4096);
});

test('clearFlagIfUnlocked: clears the bit only while nobody holds the page lock, atomically, lock untouched', () => {
  const m = new PhysMem(32);
  const a = m.allocFrame();
  m.setFlag(a, PG_external_rmap | PG_dirty);
  assert.ok(m.trylockPage(a));
  // held by someone else: refused, nothing changed (the flag only changes under the page lock)
  assert.equal(m.clearFlagIfUnlocked(a, PG_external_rmap), false);
  assert.ok(m.testFlag(a, PG_external_rmap));
  assert.ok(m.testFlag(a, PG_locked));
  m.unlockPage(a);
  assert.equal(m.clearFlagIfUnlocked(a, PG_external_rmap), true);
  assert.ok(!m.testFlag(a, PG_external_rmap));
  assert.ok(m.testFlag(a, PG_dirty), 'other bits kept');
  assert.ok(!m.testFlag(a, PG_locked), 'the lock is left free');
  // a clear bit: nothing to do, also when locked
  assert.ok(m.trylockPage(a));
  assert.equal(m.clearFlagIfUnlocked(a, PG_external_rmap), true);
  m.unlockPage(a);
});

test('FrameCounts: Map-like counts per frame (undefined for none), grows on demand', () => {
  const c = new FrameCounts();
  assert.equal(c.get(5), undefined);
  c.set(5, 2);
  c.set(100_000, 1);
  assert.equal(c.get(5), 2);
  assert.equal(c.get(100_000), 1);
  assert.equal(c.size, 2);
  assert.equal(c.delete(5), true);
  assert.equal(c.delete(5), false);
  assert.equal(c.get(5), undefined);
  assert.equal(c.total, 1);
  c.add(7);
  assert.ok(c.has(7) && !c.has(8) && !c.has(1 << 30));
  assert.equal(c.total, 2);
  c.set(100_000, 0);
  c.delete(7);
  assert.equal(c.size, 0);
  assert.equal(c.total, 0);
});
