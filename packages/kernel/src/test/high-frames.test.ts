/**
 * The top of physical memory: MAX_FRAMES (2^20 frames, 4 GiB) boots, its last frame is reached by
 * read32/write32/cas32 (a byte offset just under 2^32, the edge of the access path's `>>> 2` word
 * index), and one frame more is refused with EINVAL, not a bare RangeError from the typed array. The
 * kernel's SharedArrayBuffer is only reserved: the low frames are taken without zeroing them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createKernel, type Kernel, PAGE_SIZE } from '../index.js';
import type { Kernel as KernelState } from '../kernel.js';
import { MAX_FRAMES } from '../page.js';
import { withKernel } from './helpers.js';

const phys = (k: Kernel) => (k as unknown as { k: KernelState }).k.phys;

test('one frame over MAX_FRAMES is EINVAL', async () => {
  await assert.rejects(createKernel({ name: 'too-big', frames: MAX_FRAMES + 1 }), { code: 'EINVAL' });
});

test(
  'the last frames of a MAX_FRAMES kernel are reached by read32, write32 and cas32',
  { timeout: 120_000 },
  () =>
    withKernel({ frames: MAX_FRAMES, swapSlots: 0 }, async (k) => {
      const TOP = MAX_FRAMES - 64;
      const low: number[] = [];
      for (;;) {
        const pfn = phys(k).allocFrame(false);
        assert.ok(pfn >= 0, 'frames left');
        if (pfn >= TOP) {
          phys(k).freeFrame(pfn);
          break;
        }
        low.push(pfn);
      }
      const p = await k.spawn();
      const va = await p.mmap(4 * PAGE_SIZE, 3);
      for (let i = 0; i < 4; i++) await p.write32(va + i * PAGE_SIZE + 4092, 0x5a5a0000 + i);
      for (let i = 0; i < 4; i++) assert.equal(await p.read32(va + i * PAGE_SIZE + 4092), 0x5a5a0000 + i);
      assert.equal(await p.cas32(va + 4092, 0x5a5a0000, 7), 0x5a5a0000);
      assert.equal(await p.read32(va + 4092), 7);
      const words = phys(k).words;
      const hits: number[] = [];
      for (let pfn = TOP; pfn < MAX_FRAMES; pfn++) {
        const w = words[(pfn * PAGE_SIZE + 4092) / 4];
        if (w === 7 || (w & 0xffff0000) === 0x5a5a0000) hits.push(pfn);
      }
      assert.equal(hits.length, 4, 'the words are in the high frames');
      for (const pfn of low) phys(k).freeFrame(pfn);
    }),
);
