/**
 * Ranged kernel operations: getUserPages, setDeviceEntries with ONE TLB shootdown per batch, and
 * reclaim calling the rmap notifiers once per batch (invalidatePages). Each test would fail if the
 * batch skipped what the per-page operation does (the shootdown wait, the per-page outcome).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { C_SEQ } from '../access.js';
import { type Pfn, PROT_READ, PROT_WRITE, type RmapInvalidateResult } from '../api.js';
import { type Kernel, RECLAIM_BATCH } from '../index.js';
import type { Kernel as KernelState } from '../kernel.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const PAGE = 4096;

/** The kernel's internal state (tests only): to open an "access window" of a process by hand. */
const state = (k: Kernel) => (k as unknown as { k: KernelState }).k;

test('getUserPages pins a range in one call (faulting in what is missing); a hole after the first page shortens it', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(8 * PAGE, RW);
    for (let i = 0; i < 4; i++) await p.write32(a + i * PAGE, 100 + i); // pages 4..7 never touched
    const pfns = await k.api.getUserPages(p.mm, a, 8, { write: false });
    assert.equal(pfns.length, 8);
    for (let i = 0; i < 8; i++) {
      assert.equal(pfns[i], k.pfnOf(p.pid, a + i * PAGE));
      assert.equal(k.api.pageInfo(pfns[i]).refcount, 2, 'mapped once + pinned once');
    }
    for (const pfn of pfns) k.api.putPage(pfn);
    k.check();
    // a hole after page 2: the run up to it; a hole at the first page: the error
    await p.munmap(a + 2 * PAGE, PAGE);
    const short = await k.api.getUserPages(p.mm, a, 8, { write: true });
    assert.equal(short.length, 2);
    for (const pfn of short) k.api.putPage(pfn);
    await assert.rejects(k.api.getUserPages(p.mm, a + 2 * PAGE, 2, { write: false }), { code: 'EFAULT' });
    await assert.rejects(k.api.getUserPages(p.mm, a, 0, { write: false }), { code: 'EINVAL' });
    k.check();
  }));

test('setDeviceEntries: one TLB shootdown for the whole range, and it waits for an access in flight', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const n = 64;
    const a = await p.mmap((n + 1) * PAGE, RW);
    for (let i = 0; i < n; i++) await p.write32(a + i * PAGE, i);
    const dev = k.api.registerDevice({
      fault: async (f) => {
        k.api.clearDeviceEntry(f.mm, f.address);
      },
    });
    const st = state(k);
    const shoot0 = st.stats.shootdowns;
    // page n was never touched: nothing mapped there, so null for it
    const pfns = await k.api.setDeviceEntries(p.mm, a, n + 1, dev, 'readonly');
    assert.equal(st.stats.shootdowns - shoot0, 1, 'one shootdown for 64 pages');
    assert.equal(pfns.length, n + 1);
    assert.equal(pfns[n], null);
    for (let i = 0; i < n; i++) {
      assert.equal(pfns[i], k.pfnOf(p.pid, a + i * PAGE));
      assert.deepEqual(k.api.deviceEntryAt(p.mm, a + i * PAGE), {
        pfn: pfns[i],
        mode: 'readonly',
        owner: dev,
      });
    }
    k.check();

    // An access in flight (the process's window open, as a read through the old PTE would be):
    // the ranged update must not complete until it closes, and it waits once, not once per page.
    const ctl = st.mms.get(p.mm.id)!.ctl!;
    Atomics.add(ctl, C_SEQ, 1); // odd: inside an access
    const waits0 = st.stats.shootdownWaits;
    let done = false;
    const pending = k.api.setDeviceEntries(p.mm, a, n, dev, 'none').then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(done, false, 'returned while an access could still use an old entry');
    Atomics.add(ctl, C_SEQ, 1); // the access ends
    Atomics.notify(ctl, C_SEQ);
    await pending;
    assert.equal(st.stats.shootdownWaits - waits0, 1, 'the process was waited for once');
    for (let i = 0; i < n; i++) assert.equal(k.api.deviceEntryAt(p.mm, a + i * PAGE)?.mode, 'none');
    // the process still reads its data through the device (the fault clears the entry)
    assert.equal(await p.read32(a + 5 * PAGE), 5);
    k.check();
  }));

test('deviceEntryModes: per page what deviceEntryAt says for that owner, across a leaf table (the notifier asks per range)', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const n = 1024; // a1 below is not leaf-aligned: the range crosses a leaf table
    const a = await p.mmap((n + 100) * PAGE, RW);
    const a1 = a + 100 * PAGE;
    const touched = [0, 1, 2, 3, 510, 511, 512, 513, 923, 924, 1023];
    for (const i of touched) await p.write32(a1 + i * PAGE, i);
    const fault = async (f: { mm: typeof p.mm; address: number }) => k.api.clearDeviceEntry(f.mm, f.address);
    const dev = k.api.registerDevice({ fault });
    const other = k.api.registerDevice({ fault });
    await k.api.setDeviceEntries(p.mm, a1 + 1 * PAGE, 1, dev, 'readonly');
    await k.api.setDeviceEntries(p.mm, a1 + 2 * PAGE, 1, dev, 'none');
    await k.api.setDeviceEntries(p.mm, a1 + 3 * PAGE, 1, other, 'readonly');
    await k.api.setDeviceEntries(p.mm, a1 + 511 * PAGE, 3, dev, 'readonly');
    await k.api.setDeviceEntries(p.mm, a1 + 1023 * PAGE, 1, dev, 'none');
    const out = new Uint8Array(n + 5).fill(9); // stale contents are overwritten
    k.api.deviceEntryModes(p.mm, a1, n, dev, out);
    let count = 0;
    for (let i = 0; i < n; i++) {
      const e = k.api.deviceEntryAt(p.mm, a1 + i * PAGE);
      const want = e && e.owner === dev ? (e.mode === 'readonly' ? 1 : 2) : 0;
      if (want) count++;
      assert.equal(out[i], want, `page ${i}`);
    }
    assert.equal(count, 6);
    assert.equal(out[n], 9, 'nothing written past the range');
    assert.deepEqual([...k.api.deviceEntryModes(p.mm, a1, 8, other)], [0, 0, 0, 1, 0, 0, 0, 0]);
    assert.throws(() => k.api.deviceEntryModes(p.mm, a1, 4, dev, new Uint8Array(3)), { code: 'EINVAL' });
    k.check();
  }));

/** A driver whose rmap notifier takes batches, recording what each call saw. */
function batchDriver(k: Kernel, decide: (pfn: Pfn, i: number) => RmapInvalidateResult | 'wrong-length') {
  const exported = new Set<Pfn>();
  const calls: Array<{ pfns: Pfn[]; allLocked: boolean; noneMapped: boolean }> = [];
  let mapped: () => Set<Pfn> = () => new Set();
  const reg = k.api.rmapNotifierRegister({
    invalidatePage: async () => {
      throw new Error('the batch path must be used');
    },
    invalidatePages: async (pfns) => {
      const m = mapped();
      calls.push({
        pfns: [...pfns],
        allLocked: pfns.every((f) => k.api.pageInfo(f).flags.includes('locked')),
        noneMapped: pfns.every((f) => !m.has(f)),
      });
      const out: RmapInvalidateResult[] = [];
      for (let i = 0; i < pfns.length; i++) {
        const r = decide(pfns[i], i);
        if (r === 'wrong-length') return out;
        if (r.ok) exported.delete(pfns[i]);
        out.push(r);
      }
      return out;
    },
    isExported: (pfn) => exported.has(pfn),
  });
  return {
    exported,
    calls,
    reg,
    watch: (fn: () => Set<Pfn>) => {
      mapped = fn;
    },
  };
}

async function exportedPages(k: Kernel, n: number, d: ReturnType<typeof batchDriver>) {
  const p = await k.spawn();
  const a = await p.mmap(n * PAGE, RW);
  await p.run(PROGRAMS, 'fillPages', { addr: a, pages: n });
  const pfns: Pfn[] = [];
  for (let i = 0; i < n; i++) {
    const pfn = k.pfnOf(p.pid, a + i * PAGE)!;
    await k.api.lockPage(pfn);
    k.api.exportPage(pfn);
    k.api.unlockPage(pfn);
    d.exported.add(pfn);
    pfns.push(pfn);
  }
  d.watch(() => {
    const s = new Set<Pfn>();
    for (let i = 0; i < n; i++) {
      const f = k.pfnOf(p.pid, a + i * PAGE);
      if (f !== undefined) s.add(f);
    }
    return s;
  });
  return { p, a, pfns };
}

test('reclaim calls the rmap notifier once per batch, every page locked and already unmapped', () =>
  withKernel({ frames: 512, swapSlots: 512 }, async (k) => {
    const d = batchDriver(k, () => ({ ok: true, dirty: false }));
    const n = 40;
    const { p, a } = await exportedPages(k, n, d);
    const r = await k.shrink(n, { concurrency: 16 });
    assert.equal(r.reclaimed, n);
    assert.ok(d.calls.length >= 3 && d.calls.length <= 6, `${d.calls.length} calls for ${n} pages`);
    assert.equal(
      d.calls.reduce((s, c) => s + c.pfns.length, 0),
      n,
    );
    for (const c of d.calls) {
      assert.ok(c.pfns.length <= 16);
      assert.ok(c.allLocked, 'page lock held across the notifier');
      assert.ok(c.noneMapped, 'local mappings replaced before the notifier');
    }
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, 'swapped in intact');
    k.check();
  }));

test("the kernel's own reclaim (kswapd, direct) calls the rmap notifier per batch of RECLAIM_BATCH, not per page", () =>
  withKernel({ frames: 256, swapSlots: 1024, watermarks: { min: 8, low: 40, high: 72 } }, async (k) => {
    const d = batchDriver(k, () => ({ ok: true, dirty: false }));
    const n = 120;
    const { p, a } = await exportedPages(k, n, d);
    // a second process fills more than the rest of memory: background and direct reclaim run, and
    // the exported pages are the oldest on the LRU
    const q = await k.spawn();
    const m = 200;
    const b = await q.mmap(m * PAGE, RW);
    for (let i = 0; i < m; i++) await q.write32(b + i * PAGE, 0x7000 + i);
    await k.idle();
    const s = k.stats();
    assert.ok(s.counters.kswapdRuns + s.counters.directReclaims > 0, 'memory pressure reclaimed');
    assert.ok(d.calls.length > 0, 'exported pages went through the rmap notifier');
    const sizes = d.calls.map((c) => c.pfns.length);
    assert.ok(Math.max(...sizes) > 1, `one notifier call per page: ${JSON.stringify(sizes)}`);
    for (const c of d.calls) {
      assert.ok(c.pfns.length <= RECLAIM_BATCH);
      assert.ok(c.allLocked && c.noneMapped);
    }
    for (let i = 0; i < n; i++)
      assert.equal(await p.read32(a + i * PAGE), 0x5000 + i, 'exported page intact');
    for (let i = 0; i < m; i++) assert.equal(await q.read32(b + i * PAGE), 0x7000 + i);
    k.check();
  }));

test('a page whose notifier outcome failed is kept (flag, mapping, data); the rest of its batch is reclaimed', () =>
  withKernel({ frames: 512, swapSlots: 512 }, async (k) => {
    const bad = new Set<Pfn>();
    const d = batchDriver(k, (pfn) =>
      bad.has(pfn) ? { ok: false, reason: 'no ack' } : { ok: true, dirty: false },
    );
    const n = 8;
    const { p, a, pfns } = await exportedPages(k, n, d);
    bad.add(pfns[3]);
    const r = await k.shrink(n, { concurrency: 8 });
    // the failed page fails again every time the scan comes back to it; every other page goes
    assert.ok((r.outcomes.external_failed ?? 0) >= 1);
    assert.equal(r.reclaimed, n - 1);
    assert.ok(
      d.calls.some((c) => c.pfns.length > 1 && c.pfns.includes(pfns[3])),
      'failed inside a batch',
    );
    assert.equal(k.pfnOf(p.pid, a + 3 * PAGE), pfns[3], 'the failed page is mapped again');
    assert.ok(k.api.pageExported(pfns[3]), 'and keeps PG_external_rmap');
    for (let i = 0; i < n; i++) {
      if (i !== 3) assert.equal(k.pfnOf(p.pid, a + i * PAGE), undefined, `page ${i} was reclaimed`);
    }
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * PAGE), 0x5000 + i);
    k.check();
  }));

test('a batch answer of the wrong length fails every page of the batch (all kept)', () =>
  withKernel({ frames: 512, swapSlots: 512 }, async (k) => {
    // every answer is one result short
    const d = batchDriver(k, (_pfn, i) => (i === 0 ? 'wrong-length' : { ok: true, dirty: false }));
    const n = 6;
    const { p, a, pfns } = await exportedPages(k, n, d);
    const r = await k.shrink(n, { concurrency: 6 });
    assert.equal(r.reclaimed, 0);
    assert.ok((r.outcomes.external_failed ?? 0) >= n);
    for (let i = 0; i < n; i++) {
      assert.equal(k.pfnOf(p.pid, a + i * PAGE), pfns[i]);
      assert.equal(await p.read32(a + i * PAGE), 0x5000 + i);
    }
    k.check();
  }));

test('migratePages: one notifier call for the batch; a failed page stays on its frame, the rest move', () =>
  withKernel({ frames: 512, swapSlots: 0 }, async (k) => {
    const bad = new Set<Pfn>();
    const d = batchDriver(k, (pfn) =>
      bad.has(pfn) ? { ok: false, reason: 'no ack' } : { ok: true, dirty: false },
    );
    const n = 8;
    const { p, a, pfns } = await exportedPages(k, n, d);
    bad.add(pfns[5]);
    const out = await k.migratePages(pfns);
    assert.equal(d.calls.length, 1, 'one dispatch for the batch');
    assert.deepEqual(d.calls[0].pfns, pfns);
    assert.ok(d.calls[0].allLocked && d.calls[0].noneMapped);
    for (let i = 0; i < n; i++) {
      if (i === 5) {
        assert.equal(out[i], 'external_failed');
        assert.equal(k.pfnOf(p.pid, a + i * PAGE), pfns[i], 'kept on its frame');
        assert.ok(k.api.pageExported(pfns[i]));
      } else {
        assert.equal(typeof out[i], 'number');
        assert.equal(k.pfnOf(p.pid, a + i * PAGE), out[i], 'mapped to the new frame');
      }
      assert.equal(await p.read32(a + i * PAGE), 0x5000 + i);
    }
    k.check();
  }));

test('tryUnexportPages: clears PG_external_rmap of frames whose lock is free; a locked frame is returned and kept', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(3 * PAGE, RW);
    for (let i = 0; i < 3; i++) await p.write32(a + i * PAGE, i + 1);
    const pfns = await k.api.getUserPages(p.mm, a, 3, { write: false });
    for (const pfn of pfns) {
      assert.ok(k.api.trylockPage(pfn));
      k.api.exportPage(pfn);
      k.api.unlockPage(pfn);
    }
    assert.ok(k.api.trylockPage(pfns[1])); // someone (reclaim, say) holds page 1
    assert.deepEqual(k.api.tryUnexportPages(pfns), [pfns[1]]);
    assert.equal(k.api.pageExported(pfns[0]), false);
    assert.equal(k.api.pageExported(pfns[1]), true, 'the flag only changes under the page lock');
    assert.equal(k.api.pageExported(pfns[2]), false);
    assert.ok(k.api.pageInfo(pfns[1]).flags.includes('locked'), 'the holder keeps its lock');
    assert.ok(!k.api.pageInfo(pfns[0]).flags.includes('locked'), 'no lock left behind');
    k.api.unlockPage(pfns[1]);
    assert.deepEqual(k.api.tryUnexportPages(pfns), []);
    assert.equal(k.api.pageExported(pfns[1]), false);
    for (const pfn of pfns) k.api.putPage(pfn);
    k.check();
  }));
