/**
 * Request/response through a link vs raw `ws` in the same run. Placement: both ends of both the link
 * and the baseline live in this one process (one thread, so a round trip is the sum of both sides'
 * CPU work). Same frames on the wire: the baseline sends the link's request frame and answers with
 * the exact frame the link's handler reply encodes to (same message, same bytes), prebuilt, so the
 * baseline does the wire work without encoding, decoding or validating anything.
 * Prints BENCH lines (scripts/bench.mjs). BENCH_QUICK=1 for a short run.
 */
import { performance } from 'node:perf_hooks';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeLinkFrame } from '../codec.js';
import type { MapReq, Message } from '../messages.js';
import { createWsPeerNetwork } from '../ws.js';

const QUICK = process.env.BENCH_QUICK === '1';
const N = QUICK ? 2000 : 20_000;
const PIPE_MS = QUICK ? 500 : 3000;
const DEPTH = 64;
const KEY = 'bench-cluster-key-0123456789abcdef';

function bench(
  name: string,
  value: number,
  unit: string,
  baseline: number | null = null,
  lowerIsBetter = true,
) {
  const ratio = baseline ? Number((lowerIsBetter ? value / baseline : value / baseline).toFixed(3)) : null;
  console.log(
    `BENCH ${JSON.stringify({ suite: 'protocol', name, value: Number(value.toFixed(2)), unit, baseline: baseline === null ? null : Number(baseline.toFixed(2)), ratio })}`,
  );
}

const p50 = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function rawWs(replyFrame: Uint8Array, reqFrame: Uint8Array) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (s) => s.on('message', () => s.send(replyFrame, { binary: true })));
  const port = (wss.address() as { port: number }).port;
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  let waiter: (() => void) | undefined;
  ws.on('message', () => waiter?.());
  const rt = () =>
    new Promise<void>((r) => {
      waiter = r;
      ws.send(reqFrame, { binary: true });
    });
  for (let i = 0; i < 500; i++) await rt();
  const lat: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await rt();
    lat.push((performance.now() - t) * 1000);
  }
  // pipelined: DEPTH outstanding
  let done = 0;
  let inflight = 0;
  const end = performance.now() + PIPE_MS;
  await new Promise<void>((resolve) => {
    ws.removeAllListeners('message');
    ws.on('message', () => {
      done++;
      inflight--;
      if (performance.now() < end) {
        inflight++;
        ws.send(reqFrame, { binary: true });
      } else if (inflight === 0) resolve();
    });
    for (; inflight < DEPTH; inflight++) ws.send(reqFrame, { binary: true });
  });
  ws.close();
  await new Promise((r) => wss.close(r));
  return { rtt: p50(lat), perSec: done / (PIPE_MS / 1000) };
}

async function link(reply: (m: MapReq) => Message) {
  const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
  b.onRequest(async (_f, m) => reply(m as MapReq) as never);
  const a = await createWsPeerNetwork({
    self: 'a',
    peers: [{ node: 'b', url: b.address! }],
    clusterKey: KEY,
  });
  await a.waitUp('b', 10_000);
  const req: Omit<MapReq, 'id'> = { t: 'map', apid: 'b:a1', page: 0, count: 1, access: 'r' };
  for (let i = 0; i < 500; i++) await a.request<MapReq>('b', req);
  const lat: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await a.request<MapReq>('b', req);
    lat.push((performance.now() - t) * 1000);
  }
  let done = 0;
  const end = performance.now() + PIPE_MS;
  const worker = async () => {
    while (performance.now() < end) {
      await a.request<MapReq>('b', req);
      done++;
    }
  };
  await Promise.all(Array.from({ length: DEPTH }, worker));
  await a.close();
  await b.close();
  return { rtt: p50(lat), perSec: done / (PIPE_MS / 1000) };
}

const page = new Uint8Array(4096).fill(7);
const small = (m: MapReq): Message => ({ t: 'map-ok', re: m.id, access: 'r', pages: [], grants: [] });
const big = (m: MapReq): Message => ({
  t: 'map-ok',
  re: m.id,
  access: 'r',
  pages: [{ page: 0, version: 1, data: page }],
  grants: [1],
});
// A mid-range id, so the baseline's frames are as long as the link's (ids are msgpack uint16 there).
// Encoded by the link's own writer (encodeLinkFrame): the same bytes the link puts on the wire.
const reqFrame = Uint8Array.prototype.slice.call(
  encodeLinkFrame({ t: 'map', id: 1000, apid: 'b:a1', page: 0, count: 1, access: 'r' }),
);
console.log('placement: link and raw-ws baseline each run with both ends in this one process');

for (const [label, fn] of [
  ['small', small],
  ['4k', big],
] as const) {
  const rawReply = Uint8Array.prototype.slice.call(encodeLinkFrame(fn({ id: 1000 } as MapReq)));
  const raw = await rawWs(rawReply, reqFrame);
  const l = await link(fn);
  bench(`rtt_p50_${label}_link`, l.rtt, 'us', raw.rtt);
  bench(`rtt_p50_${label}_raw_ws`, raw.rtt, 'us');
  bench(`pipelined_${label}_link`, l.perSec, 'req/s', raw.perSec, false);
  bench(`pipelined_${label}_raw_ws`, raw.perSec, 'req/s');
}
