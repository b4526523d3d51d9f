/**
 * Reclaim batches and the swap: a batch's pages are written with one vectored write per run of
 * consecutive slots, straight from their frames (no copy), which is safe only while each frame is
 * locked and unmapped for the whole write; a failed write keeps exactly its pages; and several
 * batches in flight (shrink `batches`) overlap their notifier waits without sharing a page.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Pfn, PROT_READ, PROT_WRITE, type RmapInvalidateResult } from '../api.js';
import type { Kernel } from '../index.js';
import type { Kernel as KernelState } from '../kernel.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const PAGE = 4096;
const state = (k: Kernel) => (k as unknown as { k: KernelState }).k;

async function filled(k: Kernel, n: number) {
  const p = await k.spawn();
  const a = await p.mmap(n * PAGE, RW);
  await p.run(PROGRAMS, 'fillPages', { addr: a, pages: n }); // page i holds 0x5000 + i
  return { p, a };
}

test('a batch goes to swap in one write per run of slots; every frame stays locked and unmapped until its write completed', () =>
  withKernel({ frames: 256, swapSlots: 256 }, async (k) => {
    const ki = state(k);
    const n = 32;
    const { p, a } = await filled(k, n);
    const swap = ki.swap!;
    const real = swap.writeBatch.bind(swap);
    const problems: string[] = [];
    let batches = 0;
    let pages = 0;
    const check = (when: string, slots: readonly number[]) => {
      for (const slot of slots) {
        const pfn = ki.swapCache.get(slot);
        if (pfn === undefined) {
          problems.push(`${when}: slot ${slot} left the swap cache`);
          continue;
        }
        const info = k.api.pageInfo(pfn);
        if (!info.flags.includes('locked')) problems.push(`${when}: pfn ${pfn} not locked`);
        if (info.mapcount !== 0) problems.push(`${when}: pfn ${pfn} mapped ${info.mapcount} times`);
      }
    };
    swap.writeBatch = async (slots, datas) => {
      batches++;
      pages += slots.length;
      check('before the write', slots);
      const r = await real(slots, datas);
      check('after the write', slots);
      return r;
    };
    const calls0 = swap.writeCalls;
    try {
      const r = await k.shrink(n, { concurrency: 16 });
      assert.equal(r.reclaimed, n);
    } finally {
      swap.writeBatch = real;
    }
    assert.deepEqual(problems, []);
    assert.equal(pages, n);
    assert.ok(batches >= 2, `${batches} batches`);
    // slots are allocated in order within a batch: one run each (a wrap-around could split one)
    assert.ok(
      swap.writeCalls - calls0 <= batches + 1,
      `${swap.writeCalls - calls0} write calls for ${n} pages`,
    );
    for (let i = 0; i < n; i++)
      assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, `page ${i} back intact`);
    k.check();
  }));

test('a failed swap write keeps exactly its pages (mapped again, data intact); the rest of the batch is reclaimed', () =>
  withKernel({ frames: 256, swapSlots: 256 }, async (k) => {
    const ki = state(k);
    const n = 16;
    const { p, a } = await filled(k, n);
    const swap = ki.swap!;
    const real = swap.writeBatch.bind(swap);
    const failedPfns = new Set<Pfn>();
    swap.writeBatch = async (slots, datas) => {
      const r = await real(slots, datas);
      // the first half of every batch "fails" (the data reached the file, but the caller is told not)
      return r.map((e, i) => {
        if (i >= slots.length / 2) return e;
        failedPfns.add(ki.swapCache.get(slots[i])!);
        return new Error('EIO (test)');
      });
    };
    let r: Awaited<ReturnType<Kernel['shrink']>>;
    try {
      r = await k.shrink(n, { concurrency: 8 });
    } finally {
      swap.writeBatch = real;
    }
    assert.ok((r.outcomes.io_error ?? 0) >= n / 2, JSON.stringify(r.outcomes));
    let mapped = 0;
    for (let i = 0; i < n; i++) {
      const pfn = k.pfnOf(p.pid, a + i * PAGE);
      if (pfn !== undefined) {
        mapped++;
        assert.ok(failedPfns.has(pfn), `page ${i} is mapped only if its write failed`);
      }
    }
    assert.ok(mapped > 0 && mapped < n, `${mapped} of ${n} pages kept`);
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, `page ${i}`);
    k.check();
  }));

test('shrink with two batches in flight overlaps their notifier waits, never shares a page, reclaims everything', () =>
  withKernel({ frames: 512, swapSlots: 512 }, async (k) => {
    const n = 64;
    const { p, a } = await filled(k, n);
    const exported = new Set<Pfn>();
    let open = 0;
    let maxOpen = 0;
    const seen = new Set<Pfn>();
    const dup: Pfn[] = [];
    const inFlight = new Set<Pfn>();
    k.api.rmapNotifierRegister({
      invalidatePage: async () => {
        throw new Error('the batch path must be used');
      },
      invalidatePages: async (pfns) => {
        open++;
        maxOpen = Math.max(maxOpen, open);
        for (const f of pfns) {
          if (inFlight.has(f)) dup.push(f);
          inFlight.add(f);
          seen.add(f);
        }
        await new Promise((r) => setTimeout(r, 5));
        for (const f of pfns) {
          inFlight.delete(f);
          exported.delete(f);
        }
        open--;
        return pfns.map((): RmapInvalidateResult => ({ ok: true, dirty: false }));
      },
      isExported: (pfn) => exported.has(pfn),
    });
    for (let i = 0; i < n; i++) {
      const pfn = k.pfnOf(p.pid, a + i * PAGE)!;
      await k.api.lockPage(pfn);
      k.api.exportPage(pfn);
      k.api.unlockPage(pfn);
      exported.add(pfn);
    }
    const one = await k.shrink(8, { concurrency: 8 });
    assert.equal(one.reclaimed, 8);
    assert.equal(maxOpen, 1, 'one batch at a time by default');
    const r = await k.shrink(n - 8, { concurrency: 8, batches: 2 });
    assert.equal(r.reclaimed, n - 8);
    assert.equal(maxOpen, 2, 'two batches waited for their notifiers at once');
    assert.deepEqual(dup, [], 'no page in two batches at once');
    assert.equal(seen.size, n);
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, `page ${i}`);
    k.check();
  }));

test('a batch whose rmap-notifier dispatch throws keeps its exported pages (unlocked, mapped, intact) and reclaims the rest', () =>
  withKernel({ frames: 256, swapSlots: 256 }, async (k) => {
    const ki = state(k);
    const n = 8;
    const { p, a } = await filled(k, n);
    const exported = new Set<Pfn>();
    k.api.rmapNotifierRegister({
      invalidatePage: async () => ({ ok: true, dirty: false }),
      isExported: (pfn) => exported.has(pfn),
    });
    const pfns: Pfn[] = [];
    for (let i = 0; i < n; i++) pfns.push(k.pfnOf(p.pid, a + i * PAGE)!);
    for (const pfn of pfns.slice(0, n / 2)) {
      await k.api.lockPage(pfn);
      k.api.exportPage(pfn);
      k.api.unlockPage(pfn);
      exported.add(pfn);
    }
    const real = ki.rmapNotifiers.invalidatePages.bind(ki.rmapNotifiers);
    ki.rmapNotifiers.invalidatePages = async () => {
      throw new Error('dispatch failed (test)');
    };
    try {
      await assert.rejects(k.shrink(n, { concurrency: n }), /dispatch failed/);
    } finally {
      ki.rmapNotifiers.invalidatePages = real;
    }
    for (let i = 0; i < n; i++) {
      const pfn = pfns[i];
      assert.ok(!k.api.pageInfo(pfn).flags.includes('locked') || i >= n / 2, `page ${i} unlocked`);
      if (i < n / 2) {
        assert.equal(k.pfnOf(p.pid, a + i * PAGE), pfn, `exported page ${i} kept and mapped`);
        assert.ok(k.api.pageExported(pfn), `exported page ${i} keeps PG_external_rmap`);
      } else assert.equal(k.pfnOf(p.pid, a + i * PAGE), undefined, `plain page ${i} reclaimed`);
    }
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, `page ${i}`);
    for (const pfn of exported) {
      await k.api.lockPage(pfn);
      k.api.unexportPage(pfn);
      k.api.unlockPage(pfn);
    }
    exported.clear();
    k.check();
  }));

test('with several batches in flight, shrink still reclaims every page it can and says why it stopped', () =>
  withKernel({ frames: 256, swapSlots: 256 }, async (k) => {
    // A small LRU scanned by 2..4 batches in flight: the scan comes round to pages of batches still
    // in flight before the LRU is empty. It must wait for them and go on, not end with 'done' and
    // fewer pages reclaimed than asked while the LRU still holds pages (fails on the old code).
    for (const batches of [2, 3, 4]) {
      const n = 24;
      const { p, a } = await filled(k, n);
      const lru0 = k.stats().lruPages;
      const r = await k.shrink(1 << 20, { concurrency: 4, batches });
      assert.equal(r.stoppedBy, 'empty', `batches ${batches}: ${JSON.stringify(r)}`);
      assert.equal(r.reclaimed, lru0, `batches ${batches}`);
      assert.equal(k.stats().lruPages, 0);
      assert.ok(r.scanned <= 2 * lru0 + 8);
      for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, `page ${i}`);
      await p.exit(0);
      k.check();
    }
  }));
