import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedMutex } from '../mutex.js';

const tick = () => new Promise<void>((r) => setImmediate(r));

test('runAll takes every free key in the caller’s turn and releases them all', async () => {
  const m = new KeyedMutex<number>();
  let inside = false;
  const p = m.runAll([1, 2, 3], async () => {
    inside = true;
    await tick();
  });
  assert.equal(inside, true, 'fn started synchronously');
  assert.equal(m.busy, 3);
  // a single-key waiter queues behind the range holder
  const order: string[] = [];
  const w = m.run(2, async () => {
    order.push('w');
  });
  await p;
  await w;
  assert.deepEqual(order, ['w']);
  assert.equal(m.busy, 0);
});

test('runAll waits for a held key (ascending order) and excludes the holder of any key', async () => {
  const m = new KeyedMutex<number>();
  const log: string[] = [];
  let release!: () => void;
  const held = m.run(2, () => new Promise<void>((r) => (release = r)));
  const range = m.runAll([1, 2, 3], async () => {
    log.push('range');
  });
  await tick();
  assert.equal(log.length, 0, 'the range waits for key 2');
  // key 3 is not taken before key 2 (ascending order): another holder of 3 alone may run meanwhile
  await m.run(3, async () => {
    log.push('3');
  });
  release();
  await held;
  await range;
  assert.deepEqual(log, ['3', 'range']);
  assert.equal(m.busy, 0);
});

test('runAll releases every key when fn throws', async () => {
  const m = new KeyedMutex<number>();
  await assert.rejects(
    m.runAll([4, 5], async () => {
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(m.busy, 0);
});
