import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type MmuNotifierRange, PROT_READ, PROT_WRITE } from '../api.js';
import type { Kernel as KernelState } from '../kernel.js';
import { Mm } from '../mm.js';
import {
  bindHandle,
  mmuNotifierInvalidateRangeEnd,
  mmuNotifierInvalidateRangeStart,
} from '../mmu-notifier.js';
import { reclaimPage } from '../reclaim.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const internals = (k: unknown) => (k as { k: KernelState }).k;

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

test('dispatch evaluates its argument once, whatever the number of notifiers', async () => {
  const mm = new Mm(1, 0, 0, 1);
  bindHandle(mm);
  const seen: MmuNotifierRange[] = [];
  for (let i = 0; i < 5; i++) mm.notifiers.add({ invalidateRangeStart: (r) => void seen.push(r) });
  let evaluations = 0;
  const arg = () => {
    evaluations++;
    return { mm: mm.handle, start: 0x1000_0000, end: 0x1000_1000, event: 'unmap' as const, blockable: true };
  };
  const env = {
    notifierTimeoutMs: 1000,
    stats: {
      notifierDeadlines: 0,
      notifierSleptNonBlockable: 0,
      notifierInvalidatePagePromise: 0,
      notifierAgain: 0,
    },
    logger: { warn() {} },
  };
  const range = arg();
  assert.equal(await mmuNotifierInvalidateRangeStart(env, range), 'ok');
  mmuNotifierInvalidateRangeEnd(range);
  assert.equal(evaluations, 1);
  assert.equal(seen.length, 5);
  assert.ok(
    seen.every((r) => r === seen[0]),
    'every notifier got the same range object',
  );
});

test('rmap notifier dispatch: a side-effecting pfn argument is evaluated once for N notifiers', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = k.pfnOf(p.pid, a)!;
    const got: number[] = [];
    for (let i = 0; i < 4; i++) {
      k.api.rmapNotifierRegister({
        invalidatePage: async (x) => {
          got.push(x);
          return { ok: true, dirty: false };
        },
      });
    }
    let evaluations = 0;
    const nextPfn = () => {
      evaluations++;
      return pfn;
    };
    const ki = internals(k);
    await ki.phys.lockPage(pfn);
    await ki.rmapNotifiers.invalidatePage(nextPfn(), 'clean');
    ki.phys.unlockPage(pfn);
    assert.equal(evaluations, 1);
    assert.deepEqual(got, [pfn, pfn, pfn, pfn]);
  }));

test('per-mm notifiers fire on munmap, mprotect, COW break, fork, reclaim, migration and exit', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const events: string[] = [];
    const pages: number[] = [];
    k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: (r) => void events.push(`start:${r.event}`),
      invalidateRangeEnd: (r) => void events.push(`end:${r.event}`),
      invalidatePage: () => void events.push('page'),
      release: async (mm) => {
        events.push('release');
        // Release runs before any page is freed: the page is still mapped now.
        const pfn = k.pfnOf(mm.pid, a);
        pages.push(pfn === undefined ? -1 : k.pageInfo(pfn).mapcount);
      },
    });
    const a = await p.mmap(4 * 4096, RW);
    for (let i = 0; i < 4; i++) await p.write32(a + i * 4096, i);
    await p.mprotect(a + 3 * 4096, 4096, PROT_READ);
    await p.munmap(a + 3 * 4096, 4096);
    const c = await p.fork();
    await p.write32(a, 9); // COW break in the parent
    await k.reclaimPage(k.pfnOf(p.pid, a + 4096)!);
    await k.migratePage(k.pfnOf(p.pid, a + 8192)!);
    await p.exit();
    for (const e of ['protection', 'unmap', 'cow', 'reclaim', 'migrate']) {
      assert.ok(events.includes(`start:${e}`), `start:${e} fired`);
      assert.ok(events.includes(`end:${e}`), `end:${e} fired`);
    }
    assert.ok(events.includes('page'), 'synchronous invalidatePage fired');
    assert.equal(events.at(-1), 'release');
    assert.deepEqual(pages, [1]);
    const starts = events.filter((e) => e.startsWith('start')).length;
    assert.equal(starts, events.filter((e) => e.startsWith('end')).length, 'every start has its end');
    await c.exit();
    k.check();
  }));

test('unregister waits for in-flight callbacks; no callback runs after it resolves', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(2 * 4096, RW);
    await p.write32(a, 1);
    await p.write32(a + 4096, 1);
    const gate = deferred();
    let calls = 0;
    let running = 0;
    const reg = k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: async () => {
        calls++;
        running++;
        await gate.promise;
        running--;
      },
    });
    const munmap = p.munmap(a, 4096);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(running, 1);
    let unregistered = false;
    const u = reg.unregister().then(() => {
      unregistered = true;
    });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(unregistered, false, 'unregister waits for the running callback');
    gate.resolve();
    await u;
    assert.equal(running, 0);
    await munmap;
    await p.munmap(a + 4096, 4096);
    assert.equal(calls, 1, 'no callback after unregister');
    k.check();
  }));

test('unregister from inside its own callback does not deadlock; unregister inside release is refused', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(2 * 4096, RW);
    await p.write32(a, 1);
    let calls = 0;
    let selfUnregistered = false;
    const reg = k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: async () => {
        calls++;
        await reg.unregister();
        selfUnregistered = true;
      },
    });
    await p.munmap(a, 4096);
    assert.ok(selfUnregistered);
    await p.munmap(a + 4096, 4096);
    assert.equal(calls, 1);
    let releaseErr: unknown;
    const reg2 = k.api.mmuNotifierRegister(p.mm, {
      release: async () => {
        try {
          await reg2.unregister();
        } catch (e) {
          releaseErr = e;
        }
      },
    });
    await p.exit();
    assert.equal((releaseErr as { code?: string }).code, 'EBUSY');
    k.check();
  }));

test('mmuIntervalReadBegin waits while an invalidation runs; a stale sequence makes installPte refuse', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const seq = await k.api.mmuIntervalReadBegin(p.mm);
    assert.equal(k.api.mmuIntervalReadBeginNow(p.mm), seq, 'nothing to wait for: the same sequence');
    assert.equal(k.api.mmuIntervalReadRetry(p.mm, seq), false);
    const gate = deferred();
    k.api.mmuNotifierRegister(p.mm, { invalidateRangeStart: () => gate.promise });
    const drv = k.api.mmapDriver(p.mm, 4096, RW, { fault: async () => {}, close: () => {} });
    const reclaim = k.reclaimPage(k.pfnOf(p.pid, a)!);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(k.api.mmuIntervalReadRetry(p.mm, seq), true, 'invalidation in progress');
    assert.equal(k.api.mmuIntervalReadBeginNow(p.mm), -1, 'invalidation in progress: it would wait');
    let begun = false;
    const rb = k.api.mmuIntervalReadBegin(p.mm).then((s) => {
      begun = true;
      return s;
    });
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(begun, false);
    const other = k.api.allocPage();
    assert.equal(k.api.installPte(p.mm, drv, other, { write: false, seq }), false);
    gate.resolve();
    assert.equal(await reclaim, 'reclaimed');
    const seq2 = await rb;
    assert.equal(k.api.mmuIntervalReadBeginNow(p.mm), seq2);
    assert.equal(k.api.installPte(p.mm, drv, other, { write: false, seq: seq2 }), true);
    k.api.putPage(other);
    k.check();
  }));

test('non-blockable invalidation: a notifier may refuse with "again" and the kernel backs off', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 4);
    let sawNonBlockable = 0;
    k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: (r) => {
        if (!r.blockable) {
          sawNonBlockable++;
          return 'again';
        }
        return undefined;
      },
    });
    const pfn = k.pfnOf(p.pid, a)!;
    assert.equal(await reclaimPage(internals(k), pfn, { force: true, blockable: false }), 'again');
    assert.equal(sawNonBlockable, 1);
    assert.equal(k.pfnOf(p.pid, a), pfn, 'page still mapped');
    k.check();
    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.equal(await p.read32(a), 4);
    k.check();
  }));

test('young callbacks: a secondary mapping that referenced the page keeps it on the LRU', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 4);
    let young = true;
    k.api.mmuNotifierRegister(p.mm, {
      clearFlushYoung: () => {
        const y = young;
        young = false;
        return y;
      },
    });
    // Clear the local young bit first with one pass.
    const r = await k.shrink(1);
    assert.equal(r.reclaimed, 1, 'second pass reclaims once the secondary young bit is consumed');
    assert.ok((r.outcomes.referenced ?? 0) >= 1);
    assert.equal(await p.run(PROGRAMS, 'sum32', { addr: a, len: 4 }), 4);
    k.check();
  }));

test('a synchronous invalidatePage that returns a promise is counted as a driver bug, not awaited', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    let settled = false;
    k.api.mmuNotifierRegister(p.mm, {
      invalidatePage: (() =>
        new Promise<void>((r) =>
          setTimeout(() => {
            settled = true;
            r();
          }, 50),
        )) as unknown as (mm: unknown, address: number) => void,
    });
    assert.equal(await k.reclaimPage(k.pfnOf(p.pid, a)!), 'reclaimed');
    assert.equal(settled, false, 'reclaim did not wait for it');
    assert.equal(k.stats().counters.notifierInvalidatePagePromise, 1);
    assert.equal(await p.read32(a), 1);
  }));
