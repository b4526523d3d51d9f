/**
 * The ranged grant step (issue 15): deviceEntryModes reports per page exactly what deviceEntryAt
 * does, and lockExportDeviceRange does per page what a one-page grant does under the page lock
 * (trylock, re-check the device entry and the mm's invalidation sequence, exportPage) — and nothing
 * on a page whose re-check fails or whose lock is busy. Each assertion would fail if the ranged call
 * skipped a re-check, exported a page it did not keep locked, or left a page locked.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_READ, PROT_WRITE } from '../api.js';
import { withKernel } from './helpers.js';

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

test('lockExportDeviceRange: locks and exports only the pages whose re-checks pass; busy and failed pages are left alone', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const n = 8;
    const a = await p.mmap((n + 1) * PAGE, RW);
    for (let i = 0; i <= n; i++) await p.write32(a + i * PAGE, i);
    const dev = k.api.registerDevice({ fault: async () => undefined });
    const pfns = await k.api.getUserPages(p.mm, a, n, { write: false });
    await k.api.setDeviceEntries(p.mm, a, n, dev, 'readonly');
    await k.api.setDeviceEntry(p.mm, a + 3 * PAGE, dev, 'none'); // page 3: the other mode
    k.api.clearDeviceEntry(p.mm, a + 4 * PAGE); // page 4: no device entry any more
    const seq = await k.api.mmuIntervalReadBegin(p.mm);
    assert.equal(k.api.trylockPage(pfns[5]), true); // page 5: someone holds its lock
    const want = Uint8Array.from([1, 1, 0, 1, 1, 1, 1, 1]); // page 2: not asked for
    const wrongPfn = [...pfns];
    wrongPfn[6] = pfns[7]; // page 6: the entry maps another frame than the one given
    const res = new Uint8Array(n);
    k.api.lockExportDeviceRange(p.mm, a, wrongPfn, want, dev, 'readonly', seq, res);
    assert.deepEqual([...res], [1, 1, 0, 2, 2, 3, 2, 1]);
    for (let i = 0; i < n; i++) {
      const info = k.api.pageInfo(pfns[i]);
      const locked = info.flags.includes('locked');
      const exported = info.flags.includes('external_rmap');
      assert.equal(exported, res[i] === 1, `page ${i}: exported iff kept`);
      assert.equal(locked, res[i] === 1 || i === 5, `page ${i}: locked iff kept (page 5: its holder)`);
    }
    k.api.unlockPages(wrongPfn, res);
    k.api.unlockPage(pfns[5]);
    for (let i = 0; i < n; i++) assert.equal(k.api.pageInfo(pfns[i]).flags.includes('locked'), false);

    // an invalidation of the mm since `seq` (a munmap elsewhere): every page fails its re-check
    const seq2 = await k.api.mmuIntervalReadBegin(p.mm);
    await p.munmap(a + n * PAGE, PAGE);
    const all = new Uint8Array(n).fill(1);
    k.api.lockExportDeviceRange(p.mm, a, pfns, all, dev, 'readonly', seq2, res);
    assert.deepEqual([...res], [2, 2, 2, 2, 2, 2, 2, 2]);
    for (let i = 0; i < n; i++) assert.equal(k.api.pageInfo(pfns[i]).flags.includes('locked'), false);

    // bad input changes nothing: a free frame anywhere in the asked pages, before any lock is taken
    assert.throws(
      () =>
        k.api.lockExportDeviceRange(
          p.mm,
          a,
          [pfns[0], 0x7fff],
          all.subarray(0, 2),
          dev,
          'readonly',
          seq,
          res,
        ),
      { code: 'EINVAL' },
    );
    assert.equal(k.api.pageInfo(pfns[0]).flags.includes('locked'), false);
    for (const pfn of pfns) k.api.putPage(pfn);
    k.check();
  }));
