import assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyFromShared, copyToShared } from '../access.js';
import { PAGE_SIZE, PROT_READ, PROT_WRITE } from '../api.js';
import { createKernel } from '../index.js';
import { PROGRAMS } from './helpers.js';

test('copyFromShared/copyToShared: every alignment of both sides, short and long copies', () => {
  const shared = new Uint8Array(new SharedArrayBuffer(18 * PAGE_SIZE));
  const priv = new Uint8Array(18 * PAGE_SIZE);
  for (const n of [0, 1, 7, 255, 256, 257, 4095, 4096, 3 * PAGE_SIZE + 5, 16 * PAGE_SIZE - 8]) {
    for (let so = 0; so < 8; so++) {
      for (let po = 0; po < 8; po++) {
        const seed = (n + so * 8 + po) & 255;
        // user buffer: a view at byte offset po (its own byteOffset) and index 3 within it
        const user = new Uint8Array(priv.buffer, po, priv.length - 8);
        for (let i = 0; i < n; i++) user[3 + i] = (i * 7 + seed) & 255;
        shared.fill(0xee);
        copyToShared(shared, PAGE_SIZE + so, user, 3, n);
        assert.equal(shared[PAGE_SIZE + so - 1], 0xee, 'nothing before');
        assert.equal(shared[PAGE_SIZE + so + n], 0xee, 'nothing after');
        for (let i = 0; i < n; i++)
          if (shared[PAGE_SIZE + so + i] !== ((i * 7 + seed) & 255))
            assert.fail(`to shared n=${n} so=${so} po=${po} at ${i}`);
        user.fill(0x11);
        copyFromShared(shared, PAGE_SIZE + so, n, user, 3);
        assert.equal(user[2], 0x11);
        assert.equal(user[3 + n], 0x11);
        for (let i = 0; i < n; i++)
          if (user[3 + i] !== ((i * 7 + seed) & 255))
            assert.fail(`from shared n=${n} so=${so} po=${po} at ${i}`);
      }
    }
  }
});

test('process read/write at every alignment of the user address and the user buffer', async () => {
  const k = await createKernel({ name: 'user-copy', frames: 2048, swapSlots: 0 });
  try {
    const p = await k.spawn();
    const base = await p.mmap(40 * PAGE_SIZE, PROT_READ | PROT_WRITE);
    for (const len of [5, 300, PAGE_SIZE + 3, 20 * PAGE_SIZE + 9]) {
      for (let ao = 0; ao < 8; ao++) {
        for (const [srcOff, dstOff] of [
          [0, 0],
          [1, 0],
          [0, 3],
          [ao, ao],
          [5, 7],
        ]) {
          const at = await p.run<number>(PROGRAMS, 'copyRoundTrip', {
            addr: base + 1000 + ao,
            len,
            srcOff,
            dstOff,
            seed: ao + len,
          });
          assert.equal(at, -1, `len ${len} addr+${ao} src+${srcOff} dst+${dstOff}: first difference`);
        }
      }
    }
  } finally {
    await k.close();
  }
});
