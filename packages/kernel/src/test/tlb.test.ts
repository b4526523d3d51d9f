import assert from 'node:assert/strict';
import { test } from 'node:test';
import { C_SEQ, C_SHOOT_WAITERS, CTL_WORDS } from '../access.js';
import { Mm } from '../mm.js';
import { flushTlb } from '../tlb.js';

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
