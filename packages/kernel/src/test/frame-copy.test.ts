/**
 * Page data copied into frames from any offset of any buffer (PhysMem.writeFrame): a page decoded from
 * a wire frame sits at an arbitrary offset, and an unaligned source is staged through an aligned
 * private buffer (V8 copies into a SharedArrayBuffer byte by byte otherwise). Every byte must land,
 * for every source alignment, through each entry point (allocPages, allocPage, writePageData), and
 * one page's staging must not leak into the next page.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rng, withKernel } from './helpers.js';

const PAGE = 4096;

/** `count` pages of distinct random bytes at byte offset `off` of one plain buffer (a wire frame). */
function pagesAt(off: number, count: number, seed: number): Uint8Array[] {
  const r = rng(seed);
  const buf = new Uint8Array(off + count * (PAGE + 3));
  for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(r() * 256);
  // pages separated by 3 bytes (a msgpack header between `bin` payloads): alignment varies per page
  return Array.from({ length: count }, (_, i) =>
    buf.subarray(off + i * (PAGE + 3), off + i * (PAGE + 3) + PAGE),
  );
}

test('allocPages / allocPage / writePageData copy every byte from any source alignment', () =>
  withKernel({ frames: 1024 }, async (k) => {
    const api = k.api;
    for (let off = 0; off < 16; off++) {
      const datas = pagesAt(off, 8, 100 + off);
      const pfns = api.allocPages(datas);
      assert.equal(pfns.length, 8);
      for (let i = 0; i < 8; i++)
        assert.deepEqual(api.pageBytes(pfns[i]), datas[i], `allocPages off ${off} page ${i}`);
      const [one] = pagesAt(off, 1, 200 + off);
      const pfn = api.allocPage(one);
      assert.deepEqual(api.pageBytes(pfn), one, `allocPage off ${off}`);
      const [again] = pagesAt(off + 5, 1, 300 + off);
      api.writePageData(pfn, again);
      assert.deepEqual(api.pageBytes(pfn), again, `writePageData off ${off + 5}`);
      // the earlier frames were not touched by the later copies
      for (let i = 0; i < 8; i++) assert.deepEqual(api.pageBytes(pfns[i]), datas[i], `page ${i} unchanged`);
      for (const p of [...pfns, pfn]) api.putPage(p);
    }
    // a source on a SharedArrayBuffer at an odd offset works the same
    const sab = new Uint8Array(new SharedArrayBuffer(PAGE + 8));
    for (let i = 0; i < sab.length; i++) sab[i] = (i * 7) & 0xff;
    const src = sab.subarray(3, 3 + PAGE);
    const pfn = api.allocPage(src);
    assert.deepEqual(api.pageBytes(pfn), new Uint8Array(src));
    api.putPage(pfn);
    k.check();
  }));
