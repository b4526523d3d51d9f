/**
 * The notifier context (srcu.ts): unregister from inside a callback knows EXACTLY which callbacks it
 * runs inside (invocation tokens, not a count and not a stale async context), and the promise hooks
 * of the AsyncLocalStorage are on only while a callback that may sleep is in flight (never for the
 * synchronous-contract callbacks, and off again before the work queued behind the last one runs:
 * a reclaim batch's swap writes).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Pfn, PROT_READ, PROT_WRITE, type RmapInvalidateResult } from '../api.js';
import type { Kernel } from '../index.js';
import type { Kernel as KernelState } from '../kernel.js';
import { notifierContextOn } from '../srcu.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const PAGE = 4096;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const state = (k: Kernel) => (k as unknown as { k: KernelState }).k;

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function twoPages(k: Kernel) {
  const p = await k.spawn();
  const a = await p.mmap(2 * PAGE, RW);
  await p.write32(a, 1);
  await p.write32(a + PAGE, 2);
  return { p, a, pfn0: k.pfnOf(p.pid, a)!, pfn1: k.pfnOf(p.pid, a + PAGE)! };
}

test('unregister from inside a synchronous callback still waits for the OTHER in-flight callbacks', () =>
  withKernel({}, async (k) => {
    const { p, pfn0, pfn1 } = await twoPages(k);
    const gate = deferred();
    let starts = 0;
    let sleeping = 0;
    let u: Promise<void> | undefined;
    const reg = k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: () => {
        if (starts++ > 0) return undefined;
        sleeping++;
        return gate.promise.then(() => {
          sleeping--;
        });
      },
      invalidatePage: () => {
        u ??= reg.unregister();
      },
    });
    const first = k.reclaimPage(pfn0); // its invalidateRangeStart sleeps on the gate
    await sleep(5);
    assert.equal(sleeping, 1);
    // the second page's invalidatePage (synchronous) unregisters from inside itself
    assert.equal(await k.reclaimPage(pfn1), 'reclaimed');
    assert.ok(u, 'unregister was called from inside invalidatePage');
    let done = false;
    void u.then(() => {
      done = true;
    });
    await sleep(15);
    // (a count-based "minus one for the caller" resolves here: the caller's callback has ended)
    assert.equal(done, false, 'unregister waits for the sleeping invalidateRangeStart');
    gate.resolve();
    await u;
    assert.equal(sleeping, 0, 'resolved only after the other callback ended');
    assert.equal(await first, 'reclaimed');
    k.check();
  }));

test('work a callback left running after it ended is not inside it: its unregister waits for the others', () =>
  withKernel({}, async (k) => {
    const { p, pfn0, pfn1 } = await twoPages(k);
    const gate = deferred();
    const go = deferred();
    let starts = 0;
    let sleeping = 0;
    let u: Promise<void> | undefined;
    const reg = k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: () => {
        const n = starts++;
        if (n === 0) {
          // detached work, still pending when this callback has long ended
          void go.promise.then(() => {
            u = reg.unregister();
          });
          return undefined;
        }
        if (n === 1) {
          sleeping++;
          return gate.promise.then(() => {
            sleeping--;
          });
        }
        return undefined;
      },
    });
    assert.equal(await k.reclaimPage(pfn0), 'reclaimed');
    const second = k.reclaimPage(pfn1); // the second invalidateRangeStart sleeps
    await sleep(5);
    assert.equal(sleeping, 1);
    go.resolve();
    await sleep(5);
    assert.ok(u);
    let done = false;
    void u.then(() => {
      done = true;
    });
    await sleep(15);
    // (an async context carried from the first callback would make it count as "inside" one)
    assert.equal(done, false, 'unregister waits for the sleeping callback');
    gate.resolve();
    await u;
    assert.equal(sleeping, 0);
    assert.equal(await second, 'reclaimed');
    k.check();
  }));

test('unregister after awaits inside its own sleeping callback does not wait for itself', () =>
  withKernel({ unregisterTimeoutMs: 2000 }, async (k) => {
    const { p, a } = await twoPages(k);
    let calls = 0;
    let self = false;
    let failed: unknown;
    const reg = k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: async () => {
        calls++;
        await sleep(2);
        await Promise.resolve();
        try {
          await reg.unregister();
          self = true;
        } catch (e) {
          failed = e; // waiting for itself ends in ETIMEDOUT at the 2 s deadline
        }
      },
    });
    await p.munmap(a, PAGE);
    assert.equal(failed, undefined, 'no wait for itself');
    assert.ok(self);
    await p.munmap(a + PAGE, PAGE);
    assert.equal(calls, 1);
    k.check();
  }));

test('promise hooks: never on for synchronous callbacks; off before a reclaim batch writes to swap', () =>
  withKernel({ frames: 512, swapSlots: 512 }, async (k) => {
    const ki = state(k);
    const n = 24;
    const p = await k.spawn();
    const a = await p.mmap(n * PAGE, RW);
    await p.run(PROGRAMS, 'fillPages', { addr: a, pages: n });
    await sleep(1);
    assert.equal(notifierContextOn(), false, 'off to begin with');
    // synchronous-contract callbacks only: the context is never switched on
    const seenSync: boolean[] = [];
    const mmReg = k.api.mmuNotifierRegister(p.mm, {
      invalidatePage: () => void seenSync.push(notifierContextOn()),
      invalidateRangeEnd: () => void seenSync.push(notifierContextOn()),
      clearFlushYoung: () => {
        seenSync.push(notifierContextOn());
        return false;
      },
    });
    assert.equal((await k.shrink(4, { concurrency: 4 })).reclaimed, 4);
    assert.ok(seenSync.length >= 12, `${seenSync.length} synchronous callbacks`);
    assert.ok(
      seenSync.every((on) => !on),
      'no synchronous callback switched the context on',
    );
    // a sleeping rmap notifier (batches): the context is on while it sleeps, and off again when
    // the batch's pages are written to swap
    const exported = new Set<Pfn>();
    const seenInside: boolean[] = [];
    const rmapReg = k.api.rmapNotifierRegister({
      invalidatePage: async () => ({ ok: true, dirty: false }),
      invalidatePages: async (pfns) => {
        await sleep(1);
        seenInside.push(notifierContextOn());
        for (const f of pfns) exported.delete(f);
        return pfns.map((): RmapInvalidateResult => ({ ok: true, dirty: false }));
      },
      isExported: (pfn) => exported.has(pfn),
    });
    for (let i = 4; i < n; i++) {
      const pfn = k.pfnOf(p.pid, a + i * PAGE)!;
      await k.api.lockPage(pfn);
      k.api.exportPage(pfn);
      k.api.unlockPage(pfn);
      exported.add(pfn);
    }
    const swap = ki.swap!;
    const write = swap.write.bind(swap);
    const writeBatch = swap.writeBatch.bind(swap);
    const atWrite: boolean[] = [];
    swap.write = (slot, data) => {
      atWrite.push(notifierContextOn());
      return write(slot, data);
    };
    swap.writeBatch = (slots, datas) => {
      atWrite.push(notifierContextOn());
      return writeBatch(slots, datas);
    };
    try {
      const r = await k.shrink(n - 4, { concurrency: 8 });
      assert.equal(r.reclaimed, n - 4);
      assert.equal(notifierContextOn(), false, 'off as soon as the shrink returns');
    } finally {
      swap.write = write;
      swap.writeBatch = writeBatch;
    }
    assert.ok(seenInside.length >= 3 && seenInside.every((on) => on), 'on while the notifier sleeps');
    assert.ok(atWrite.length >= 3, `${atWrite.length} swap writes`);
    assert.ok(
      atWrite.every((on) => !on),
      'every swap write of the batches was issued with the hooks off',
    );
    await rmapReg.unregister();
    await mmReg.unregister();
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i);
    k.check();
  }));

test('a contextFree rmap notifier sleeps with the context off; unregister from inside it waits for itself until its deadline', () =>
  withKernel({ frames: 512, swapSlots: 512, unregisterTimeoutMs: 150 }, async (k) => {
    const n = 16;
    const p = await k.spawn();
    const a = await p.mmap(n * PAGE, RW);
    await p.run(PROGRAMS, 'fillPages', { addr: a, pages: n });
    const exported = new Set<Pfn>();
    const exportAll = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const pfn = k.pfnOf(p.pid, a + i * PAGE)!;
        await k.api.lockPage(pfn);
        k.api.exportPage(pfn);
        k.api.unlockPage(pfn);
        exported.add(pfn);
      }
    };
    // 1. the context stays off while a contextFree registration's callback sleeps (the same
    //    callback without the flag sees it on: 'promise hooks' test above)
    const seenInside: boolean[] = [];
    let selfUnregister = false;
    let unregisterError: unknown;
    let calls = 0;
    const reg = k.api.rmapNotifierRegister({
      contextFree: true,
      invalidatePage: async () => ({ ok: true, dirty: false }),
      invalidatePages: async (pfns) => {
        calls++;
        await sleep(1);
        seenInside.push(notifierContextOn());
        if (selfUnregister) {
          // 2. breaking the promise: not recognised as its own caller, so it waits for this very
          //    callback, bounded by the deadline; the registration is dead all the same
          try {
            await reg.unregister();
          } catch (e) {
            unregisterError = e;
          }
        }
        for (const f of pfns) exported.delete(f);
        return pfns.map((): RmapInvalidateResult => ({ ok: true, dirty: false }));
      },
      isExported: (pfn) => exported.has(pfn),
    });
    await exportAll(0, 8);
    assert.equal((await k.shrink(8, { concurrency: 4 })).reclaimed, 8);
    assert.ok(seenInside.length >= 2, `${seenInside.length} batches`);
    assert.ok(
      seenInside.every((on) => !on),
      'a contextFree callback runs without the AsyncLocalStorage',
    );
    assert.equal(notifierContextOn(), false);
    selfUnregister = true;
    await exportAll(8, 12);
    const t0 = Date.now();
    const r = await k.shrink(4, { concurrency: 4 });
    assert.equal(r.reclaimed, 4, 'the batch in which it unregistered completes');
    assert.equal((unregisterError as { code?: string } | undefined)?.code, 'ETIMEDOUT');
    assert.ok(Date.now() - t0 >= 140, 'it waited for itself, up to its deadline');
    const before = calls;
    await exportAll(12, 16);
    await k.shrink(4, { concurrency: 4 });
    assert.equal(calls, before, 'no callback of the dead registration starts after its unregister');
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i);
  }));

test('a contextFree per-mm notifier sleeps with the context off (the same callback without the flag: on)', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4 * PAGE, RW);
    for (let i = 0; i < 4; i++) await p.write32(a + i * PAGE, i);
    const seen: Array<[boolean, boolean]> = [];
    const regs = [true, false].map((contextFree) =>
      k.api.mmuNotifierRegister(p.mm, {
        contextFree,
        invalidateRangeStart: async () => {
          await sleep(1);
          seen.push([contextFree, notifierContextOn()]);
        },
      }),
    );
    await p.munmap(a, PAGE);
    await regs[1].unregister();
    await p.munmap(a + PAGE, PAGE);
    assert.deepEqual(seen, [
      [true, true], // the other registration's callback, in flight at the same time, switched it on
      [false, true],
      [true, false], // alone: off
    ]);
    await regs[0].unregister();
    await sleep(1);
    assert.equal(notifierContextOn(), false);
    k.check();
  }));

test('a dispatch calls exactly the registrations live when it began (one added by a callback waits for the next)', () =>
  withKernel({}, async (k) => {
    const { p, a } = await twoPages(k);
    const calls: string[] = [];
    let added = false;
    k.api.mmuNotifierRegister(p.mm, {
      invalidateRangeStart: () => {
        calls.push('first');
        if (!added) {
          added = true;
          k.api.mmuNotifierRegister(p.mm, {
            invalidateRangeStart: () => void calls.push('second'),
          });
        }
        return undefined;
      },
    });
    await p.munmap(a, PAGE);
    assert.deepEqual(calls, ['first'], 'not called in the dispatch that registered it');
    await p.munmap(a + PAGE, PAGE);
    assert.deepEqual(calls, ['first', 'first', 'second']);
    k.check();
  }));
