/**
 * shrink() under limits: the page count, the scan limit, the time budget, and several pages in
 * flight at once (each page's reclaim waits for its notifiers; concurrency overlaps those waits).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_READ, PROT_WRITE } from '../api.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('shrink stops at the count, the budget, the scan limit or an empty LRU; concurrency overlaps slow notifiers', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const n = 32;
    const a = await p.mmap(n * 4096, RW);
    for (let i = 0; i < n; i++) await p.write32(a + i * 4096, 1000 + i);
    // A per-mm notifier that sleeps in every invalidateRangeStart (as a driver waiting for remote
    // acks would), and records how many reclaims overlapped.
    let inFlight = 0;
    let maxInFlight = 0;
    let alwaysYoung = false;
    const reg = k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: (r) => {
        if (r.event !== 'reclaim') return undefined;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        return sleep(15).then(() => {
          inFlight--;
        });
      },
      clearFlushYoung: () => alwaysYoung,
    });

    // count: the first pass gives every (young) page a second chance, then 4 are reclaimed
    const r1 = await k.shrink(4);
    assert.equal(r1.reclaimed, 4);
    assert.equal(r1.stoppedBy, 'done');
    assert.equal(r1.outcomes.referenced, n, 'every page was young once');
    assert.equal(r1.scanned, n + 4);
    assert.equal(maxInFlight, 1, 'one page at a time by default');

    // concurrency: several pages in flight at once, and never more reclaimed than asked for
    const r2 = await k.shrink(8, { concurrency: 8 });
    assert.equal(r2.reclaimed, 8);
    assert.equal(r2.scanned, 8);
    assert.ok(maxInFlight > 1 && maxInFlight <= 8, `pages in flight: ${maxInFlight}`);

    // budget: no page is started after budgetMs (each takes >= 15 ms here)
    const r3 = await k.shrink(100, { budgetMs: 40 });
    assert.equal(r3.stoppedBy, 'deadline');
    assert.ok(r3.reclaimed >= 1 && r3.reclaimed <= 4, `reclaimed ${r3.reclaimed} within a 40 ms budget`);

    // scan limit: pages that are always referenced are looked at no more than 2 x LRU + 8 times
    alwaysYoung = true;
    const lru = k.stats().lruPages;
    const r4 = await k.shrink(100);
    assert.equal(r4.stoppedBy, 'scan-limit');
    assert.equal(r4.reclaimed, 0);
    assert.equal(r4.scanned, 2 * lru + 8);

    // empty: everything else goes, then the LRU is empty
    alwaysYoung = false;
    const r5 = await k.shrink(1000, { concurrency: 4 });
    assert.equal(r5.stoppedBy, 'empty', JSON.stringify(r5));
    assert.equal(r5.reclaimed, lru);
    assert.equal(k.stats().lruPages, 0);
    await reg.unregister();

    k.check();
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * 4096), 1000 + i, `page ${i}`);
    assert.equal(await p.run(PROGRAMS, 'sum32', { addr: a, len: 4 }), 1000);
    k.check();
  }));

test('shrink with many pages in flight keeps the invariants while the process keeps writing', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const n = 48;
    const a = await p.mmap(n * 4096, RW);
    for (let i = 0; i < n; i++) await p.write32(a + i * 4096, i);
    const writer = (async () => {
      for (let round = 1; round <= 3; round++)
        for (let i = 0; i < n; i += 3) await p.write32(a + i * 4096, round * 100 + i);
    })();
    for (let round = 0; round < 4; round++) await k.shrink(16, { concurrency: 16 });
    await writer;
    k.check();
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * 4096), i % 3 === 0 ? 300 + i : i);
    k.check();
  }));
