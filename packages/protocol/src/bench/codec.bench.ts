/** Codec encode+decode(+validate) ops/s, small message and one 4 KiB page. Encoding is what a link
 * sends with (encodeLinkFrame: the hand-written writer, msgpackr for what it declines). */
import { performance } from 'node:perf_hooks';
import { decodeFrame, encodeLinkFrame } from '../codec.js';
import type { Message } from '../messages.js';

const QUICK = process.env.BENCH_QUICK === '1';
const MS = QUICK ? 300 : 2000;

function ops(fn: () => void): number {
  for (let i = 0; i < 5000; i++) fn();
  let n = 0;
  const end = performance.now() + MS;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (let i = 0; i < 1000; i++) fn();
    n += 1000;
  }
  return n / ((performance.now() - t0) / 1000);
}

const small: Message = {
  t: 'get',
  id: 12345,
  segid: 'node1:17',
  access: 'rw',
  uid: 1000,
  gid: 1000,
  cid: 'op-1',
};
const page: Message = {
  t: 'map-ok',
  re: 9,
  access: 'r',
  pages: [{ page: 3, version: 5, data: new Uint8Array(4096) }],
  grants: [11],
};
const smallF = encodeLinkFrame(small);
const pageF = Uint8Array.prototype.slice.call(encodeLinkFrame(page));
for (const [name, fn] of [
  ['codec_small_encode_decode_validate', () => decodeFrame(encodeLinkFrame(small))],
  ['codec_4k_encode_decode_validate', () => decodeFrame(encodeLinkFrame(page))],
  ['codec_small_decode_validate', () => decodeFrame(smallF)],
  ['codec_4k_decode_validate', () => decodeFrame(pageF)],
] as const) {
  const v = ops(fn as () => void);
  console.log(
    `BENCH ${JSON.stringify({ suite: 'protocol', name, value: Math.round(v), unit: 'ops/s', baseline: null, ratio: null })}`,
  );
}
