import assert from 'node:assert/strict';
import { test } from 'node:test';
import { C_SEQ, C_SHOOT_WAITERS, C_TLB_ACK, C_TLB_GEN, CTL_WORDS } from '../access.js';
import { Mm } from '../mm.js';
import { flushTlb, tlbInvalidate } from '../tlb.js';

function env(kills: Mm[] = []) {
  return {
    shootdownTimeoutMs: 200,
    stats: { shootdowns: 0, shootdownWaits: 0, shootdownKills: 0 },
    killStuck: async (mm: Mm) => {
      kills.push(mm);
      mm.ctl = null;
    },
  };
}

test('flushTlb returns at once when no access is in flight', async () => {
  const mm = new Mm(1, 0, 0, 1);
  mm.ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  const e = env();
  await flushTlb(e, [mm]);
  assert.equal(e.stats.shootdownWaits, 0);
});

test('flushTlb waits until the in-flight access window closes, and registers as a waiter meanwhile', async () => {
  const mm = new Mm(1, 0, 0, 1);
  const ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  mm.ctl = ctl;
  Atomics.store(ctl, C_SEQ, 7); // odd: inside an access
  const e = env();
  let done = false;
  const f = flushTlb(e, [mm]).then(() => {
    done = true;
  });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(done, false);
  assert.equal(Atomics.load(ctl, C_SHOOT_WAITERS), 1, 'the process would notify on leaving');
  Atomics.add(ctl, C_SEQ, 1);
  Atomics.notify(ctl, C_SEQ);
  await f;
  assert.equal(done, true);
  assert.equal(Atomics.load(ctl, C_SHOOT_WAITERS), 0);
  assert.equal(e.stats.shootdownWaits, 1);
});

test('a later window (seq moved on, odd again) does not hold the flush', async () => {
  const mm = new Mm(1, 0, 0, 1);
  const ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  mm.ctl = ctl;
  Atomics.store(ctl, C_SEQ, 3);
  const f = flushTlb(env(), [mm]);
  Atomics.store(ctl, C_SEQ, 5); // left and re-entered: the new access read the new PTE
  Atomics.notify(ctl, C_SEQ);
  await f;
});

test('a process stuck inside one access past the deadline is killed (bounded)', async () => {
  const mm = new Mm(1, 0, 0, 1);
  mm.ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  Atomics.store(mm.ctl, C_SEQ, 1);
  const kills: Mm[] = [];
  const e = env(kills);
  await flushTlb(e, [mm]);
  assert.deepEqual(kills, [mm]);
  assert.equal(e.stats.shootdownKills, 1);
});

test('a flush moves the TLB generation of every mm first, also when nothing waits', async () => {
  const mms = [new Mm(1, 0, 0, 1), new Mm(2, 0, 0, 2)];
  for (const mm of mms) mm.ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  Atomics.store(mms[1].ctl!, C_SEQ, 1); // the second is inside a window: the first moved all the same
  const f = flushTlb(env(), mms);
  assert.deepEqual(
    mms.map((mm) => Atomics.load(mm.ctl!, C_TLB_GEN)),
    [1, 1],
    'moved before any wait',
  );
  Atomics.store(mms[1].ctl!, C_SEQ, 2);
  Atomics.notify(mms[1].ctl!, C_SEQ);
  await f;
});

test('tlbInvalidate never moves the generation onto the tag the process published (no ABA)', () => {
  const ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  Atomics.store(ctl, C_TLB_GEN, 41);
  Atomics.store(ctl, C_TLB_ACK, 42);
  tlbInvalidate(ctl);
  assert.equal(Atomics.load(ctl, C_TLB_GEN), 43, 'skips the tag');
  // around the int32 wrap: -1 → 0 is the tag, so → 1
  Atomics.store(ctl, C_TLB_GEN, -1);
  Atomics.store(ctl, C_TLB_ACK, 0);
  tlbInvalidate(ctl);
  assert.equal(Atomics.load(ctl, C_TLB_GEN), 1);
  // 2^31 - 1 → -2^31 (int32 wrap) when that is not the tag
  Atomics.store(ctl, C_TLB_GEN, 2 ** 31 - 1);
  tlbInvalidate(ctl);
  assert.equal(Atomics.load(ctl, C_TLB_GEN), -(2 ** 31));
  // a full cycle of moves never lands on the tag
  Atomics.store(ctl, C_TLB_ACK, 7);
  Atomics.store(ctl, C_TLB_GEN, 3);
  for (let i = 0; i < 10; i++) {
    tlbInvalidate(ctl);
    assert.notEqual(Atomics.load(ctl, C_TLB_GEN), 7);
  }
});
