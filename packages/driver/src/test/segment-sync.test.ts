/**
 * Per-page synchronisation on Segment: grants ask the table (no grant while 'invalidating' or while
 * a notifier bracket holds the page), waiters wake when the page becomes grantable, invalidations
 * of one page are serialised, and every wait has its deadline. Time is a fake clock.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import type { MmHandle } from '@xpmesh/kernel';
import { silentLogger } from '@xpmesh/protocol';
import { GRANTABLE, PAGE_STATES, TRANSITIONS } from '../page-state.js';
import { PageCache, Segment, type SegmentEnv } from '../state.js';

function segment(pages = 4) {
  const clock = FakeTimers.createClock(0);
  const events = new EventEmitter();
  const env: SegmentEnv = {
    clock: {
      now: () => clock.now,
      setTimeout: (fn, ms) => clock.setTimeout(fn, ms),
      clearTimeout: (h) => clock.clearTimeout(h as never),
    },
    log: silentLogger,
    events,
    counters: { serializedInvalidations: 0 },
    invalidationBoundMs: 100,
  };
  const mm = { id: 1, pid: 1, uid: 0, gid: 0, exiting: false } as unknown as MmHandle;
  return { seg: new Segment('A:1', 1, mm, 0x1000_0000, pages * 4096, 0o600, 4096, env), clock, env, events };
}

test('GRANTABLE is read off the table: every state with a grant edge, and only those', () => {
  for (const [i, s] of PAGE_STATES.entries()) {
    const row = TRANSITIONS[s];
    assert.equal(GRANTABLE[i] === 1, row['grant-read'] !== undefined || row['grant-write'] !== undefined, s);
  }
  assert.equal(GRANTABLE[PAGE_STATES.indexOf('invalidating')], 0);
});

test('a grant asks the table: no grant while invalidating or bracketed; the sequence moves', () => {
  const { seg, events } = segment();
  const seen: string[] = [];
  events.on('page-state', (e) => seen.push(`${e.page}:${e.from}->${e.to}`));
  assert.ok(seg.mayGrant(0));
  seg.transition(0, 'grant-read');
  const seq = seg.readBegin(0);
  assert.ok(!seg.readRetry(0, seq));
  seg.beginInvalidation(0);
  assert.equal(seg.pageState(0), 'invalidating');
  assert.ok(!seg.mayGrant(0) && seg.invalidating(0) && seg.readRetry(0, seq));
  seg.endInvalidation(0, false);
  assert.equal(seg.pageState(0), 'home');
  assert.ok(seg.mayGrant(0) && !seg.readRetry(0, seq));
  seg.enterBracket(0);
  assert.ok(!seg.mayGrant(0) && seg.readRetry(0, seq));
  seg.leaveBracket(0);
  seg.bumpSeq(0);
  assert.ok(seg.mayGrant(0) && seg.readRetry(0, seq));
  assert.deepEqual(seen, ['0:home->shared', '0:shared->invalidating', '0:invalidating->home']);
});

test('waitIdle wakes when the last bracket leaves and the invalidation ends', async () => {
  const { seg } = segment();
  seg.transition(1, 'grant-write');
  seg.beginInvalidation(1);
  seg.enterBracket(1);
  let woke = false;
  const w = seg.waitIdle(1).then(() => {
    woke = true;
  });
  seg.endInvalidation(1, false);
  await Promise.resolve();
  assert.equal(woke, false, 'still bracketed');
  seg.leaveBracket(1);
  await w;
  assert.equal(woke, true);
});

test('waitIdle has a deadline: E_BUSY when the page never becomes grantable', async () => {
  const { seg, clock } = segment();
  seg.enterBracket(2);
  const w = seg.waitIdle(2);
  clock.tick(100 * 3 + 1000);
  await assert.rejects(w, (e: { code?: string }) => e.code === 'E_BUSY');
});

test('invalidations of a page are serialised, and the wait is counted and bounded', async () => {
  const { seg, clock, env } = segment();
  seg.transition(3, 'grant-read');
  seg.beginInvalidation(3);
  let second = false;
  const w = seg.waitInvalidations([2, 3]).then(() => {
    second = true;
  });
  await Promise.resolve();
  assert.equal(second, false);
  seg.endInvalidation(3, true);
  await w;
  assert.equal(seg.pageState(3), 'shared');
  assert.equal(env.counters.serializedInvalidations, 1);
  // past its bound the wait gives up (logs) rather than hang a notifier
  seg.beginInvalidation(3);
  const stuck = seg.waitInvalidations([3]);
  clock.tick(100 * 3 + 1000);
  await stuck;
  assert.equal(env.counters.serializedInvalidations, 2);
});

test('a run of pages begins and ends its invalidation as page by page: same states, events and wake-ups', async () => {
  const run = (batched: boolean, listen: boolean) => {
    const { seg, events } = segment(6);
    const seen: string[] = [];
    if (listen) events.on('page-state', (e) => seen.push(`${e.page}:${e.from}->${e.to}:${e.event}`));
    for (const p of [0, 1, 2, 4]) seg.transition(p, p === 4 ? 'grant-write' : 'grant-read');
    seg.beginInvalidation(2); // page 2 already has one in flight: the run's end leaves it invalidating
    const pages = [0, 1, 2, 4];
    if (batched) seg.beginInvalidations(pages);
    else for (const p of pages) seg.beginInvalidation(p);
    const states1 = pages.map((p) => seg.pageState(p));
    const left = Uint8Array.from([0, 1, 0, 1]); // pages 1 and 4: a read copy is left
    if (batched) seg.endInvalidations(pages, left);
    else for (const [i, p] of pages.entries()) seg.endInvalidation(p, left[i] !== 0);
    const states2 = [0, 1, 2, 3, 4, 5].map((p) => seg.pageState(p));
    return { seg, seen, states1, states2 };
  };
  for (const listen of [true, false]) {
    const a = run(true, listen);
    const b = run(false, listen);
    assert.deepEqual(a.states1, ['invalidating', 'invalidating', 'invalidating', 'invalidating']);
    assert.deepEqual(a.states1, b.states1);
    assert.deepEqual(a.states2, b.states2);
    assert.equal(a.states2[2], 'invalidating', 'the earlier invalidation of page 2 is still in flight');
    assert.deepEqual(a.seen, b.seen);
    if (listen) assert.ok(a.seen.length >= 8, a.seen.join(' '));
    else assert.deepEqual(a.seen, []);
  }
  // a waiter on a page of the run wakes when the run ends it
  const { seg } = segment(4);
  seg.transition(1, 'grant-read');
  seg.beginInvalidations([1]);
  let woke = false;
  const w = seg.waitIdle(1).then(() => {
    woke = true;
  });
  await Promise.resolve();
  assert.equal(woke, false);
  seg.endInvalidations([1], Uint8Array.of(0));
  await w;
  assert.equal(woke, true);
});

test('PageCache.deletePages: all of a segment drops its map whole; some pages delete one by one', () => {
  const c = new PageCache();
  const put = (segid: string, page: number) =>
    c.set({ segid, home: 'H', page, pfn: 100 + page, access: 'r', version: 1, grant: 1 });
  for (let p = 0; p < 5; p++) put('A:1', p);
  put('B:1', 0);
  assert.equal(c.size, 6);
  c.deletePages('A:1', [1, 3]);
  assert.equal(c.size, 4);
  assert.deepEqual([...(c.segment('A:1')?.keys() ?? [])], [0, 2, 4]);
  c.deletePages('A:1', [0, 2, 4]);
  assert.equal(c.size, 1);
  assert.equal(c.segment('A:1'), undefined);
  assert.deepEqual([...c.segids()], ['B:1']);
  c.deletePages('A:1', [0]); // nothing cached: no change
  c.deletePages('B:1', []);
  assert.equal(c.size, 1);
  c.deletePages('B:1', [0]);
  assert.equal(c.size, 0);
  assert.deepEqual([...c.segids()], []);
});
