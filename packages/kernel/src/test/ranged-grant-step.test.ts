/**
 * Ranged calls of the grant and install paths (issue 15): deviceEntryModes reports per page exactly
 * what deviceEntryAt does; allocPages is allocPage(data) per page, validating everything before it
 * allocates anything.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_READ, PROT_WRITE } from '../api.js';
import type { Kernel } from '../index.js';
import type { Kernel as KernelState } from '../kernel.js';
import { withKernel } from './helpers.js';

/** The kernel's internal state (tests only). */
const state = (k: Kernel) => (k as unknown as { k: KernelState }).k;

const RW = PROT_READ | PROT_WRITE;
const PAGE = 4096;

test('deviceEntryModes: one call, per page what deviceEntryAt says (owner, mode), 0 elsewhere', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const n = 10;
    const a = await p.mmap(n * PAGE, RW);
    for (let i = 0; i < 8; i++) await p.write32(a + i * PAGE, i); // pages 8, 9 never touched
    const noop = { fault: async () => undefined };
    const dev = k.api.registerDevice(noop);
    const other = k.api.registerDevice(noop);
    await k.api.setDeviceEntries(p.mm, a, 4, dev, 'readonly');
    await k.api.setDeviceEntries(p.mm, a + 4 * PAGE, 2, dev, 'none');
    await k.api.setDeviceEntry(p.mm, a + 6 * PAGE, other, 'none');
    const m = k.api.deviceEntryModes(p.mm, a, n, dev);
    assert.deepEqual([...m], [1, 1, 1, 1, 2, 2, 0, 0, 0, 0]);
    for (let i = 0; i < n; i++) {
      const e = k.api.deviceEntryAt(p.mm, a + i * PAGE);
      const want = !e || e.owner !== dev ? 0 : e.mode === 'readonly' ? 1 : 2;
      assert.equal(m[i], want, `page ${i}`);
    }
    // into a caller's array; a range reaching past the VMA (a hole) reads as 0 there
    const out = new Uint8Array(12).fill(9);
    k.api.deviceEntryModes(p.mm, a + 4 * PAGE, 8, dev, out);
    assert.deepEqual([...out], [2, 2, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9]);
    assert.throws(() => k.api.deviceEntryModes(p.mm, a, 0, dev), { code: 'EINVAL' });
    assert.throws(() => k.api.deviceEntryModes(p.mm, a, 2000, dev), { code: 'EINVAL' });
    k.check();
  }));

test('allocPages: one frame per page holding its copy, in order; bad input allocates nothing; short on ENOMEM', () =>
  withKernel({ frames: 64 }, async (k) => {
    const datas = Array.from({ length: 5 }, (_, i) => new Uint8Array(PAGE).fill(i + 1));
    const free0 = state(k).phys.nrFree;
    const pfns = k.api.allocPages(datas);
    assert.equal(pfns.length, 5);
    assert.equal(new Set(pfns).size, 5);
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(k.api.pageBytes(pfns[i]), datas[i], `page ${i} holds its data`);
      assert.ok(k.api.pageInfo(pfns[i]).flags.includes('driver'));
    }
    assert.equal(state(k).phys.nrFree, free0 - 5);
    // a short or foreign buffer anywhere: EINVAL and nothing allocated
    assert.throws(() => k.api.allocPages([datas[0], new Uint8Array(100)]), { code: 'EINVAL' });
    assert.throws(() => k.api.allocPages([]), { code: 'EINVAL' });
    assert.equal(state(k).phys.nrFree, free0 - 5);
    for (const pfn of pfns) k.api.putPage(pfn);
    // more pages than free frames: the run that fits
    const left = state(k).phys.nrFree;
    const many = Array.from({ length: left + 3 }, () => datas[0]);
    const got = k.api.allocPages(many);
    assert.equal(got.length, left);
    assert.throws(() => k.api.allocPages([datas[0]]), { code: 'ENOMEM' });
    for (const pfn of got) k.api.putPage(pfn);
    k.check();
  }));
