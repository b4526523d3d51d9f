/**
 * Request/response through a link vs raw `ws` in the same run. Placement: both ends of both the link
 * and the baseline live in this one process (one thread, so a round trip is the sum of both sides'
 * CPU work). Same frames on the wire: the baseline sends the link's request frame and answers with
 * the exact frame the link's handler reply encodes to (same message, same bytes), prebuilt, so the
 * baseline does the wire work without encoding, decoding or validating anything. The serial round
 * trips of the two run in alternating blocks (both open at once), so a change of load during the
 * run moves both figures alike.
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

/** Serial round trips run in blocks of BLOCK, the baseline's and the link's alternating, so that a
 * change of load on the machine during the run hits both alike (the ratio is what is read). */
const BLOCK = 500;

interface Subject {
  rt(): Promise<unknown>;
  /** Round trips per second with DEPTH outstanding, for PIPE_MS. */
  pipelined(): Promise<number>;
  close(): Promise<void>;
}

async function rawWs(replyFrame: Uint8Array, reqFrame: Uint8Array): Promise<Subject> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (s) => s.on('message', () => s.send(replyFrame, { binary: true })));
  const port = (wss.address() as { port: number }).port;
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  let waiter: (() => void) | undefined;
  ws.on('message', () => waiter?.());
  return {
    rt: () =>
      new Promise<void>((r) => {
        waiter = r;
        ws.send(reqFrame, { binary: true });
      }),
    pipelined: async () => {
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
      return done / (PIPE_MS / 1000);
    },
    close: async () => {
      ws.close();
      await new Promise((r) => wss.close(r));
    },
  };
}

async function link(reply: (m: MapReq) => Message): Promise<Subject> {
  const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
  b.onRequest(async (_f, m) => reply(m as MapReq) as never);
  const a = await createWsPeerNetwork({
    self: 'a',
    peers: [{ node: 'b', url: b.address! }],
    clusterKey: KEY,
  });
  await a.waitUp('b', 10_000);
  const req: Omit<MapReq, 'id'> = { t: 'map', apid: 'b:a1', page: 0, count: 1, access: 'r' };
  return {
    rt: () => a.request<MapReq>('b', req),
    pipelined: async () => {
      let done = 0;
      const end = performance.now() + PIPE_MS;
      const worker = async () => {
        while (performance.now() < end) {
          await a.request<MapReq>('b', req);
          done++;
        }
      };
      await Promise.all(Array.from({ length: DEPTH }, worker));
      return done / (PIPE_MS / 1000);
    },
    close: async () => {
      await a.close();
      await b.close();
    },
  };
}

/** p50 of N serial round trips of each subject, measured in alternating blocks, and the median over
 * blocks of the process CPU time (user + system, both ends: they share this process) per round trip. */
async function serial(subjects: Subject[]): Promise<{ rtt: number[]; cpu: number[] }> {
  for (const s of subjects) for (let i = 0; i < 500; i++) await s.rt();
  const lat: number[][] = subjects.map(() => []);
  const cpu: number[][] = subjects.map(() => []);
  for (let done = 0; done < N; done += BLOCK) {
    for (let k = 0; k < subjects.length; k++) {
      const s = subjects[k];
      const c0 = process.cpuUsage();
      for (let i = 0; i < BLOCK; i++) {
        const t = performance.now();
        await s.rt();
        lat[k].push((performance.now() - t) * 1000);
      }
      const c = process.cpuUsage(c0);
      cpu[k].push((c.user + c.system) / BLOCK);
    }
  }
  return { rtt: lat.map(p50), cpu: cpu.map(p50) };
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
console.log(
  `placement: link and raw-ws baseline each run with both ends in this one process; serial round trips in alternating blocks of ${BLOCK}`,
);

for (const [label, fn] of [
  ['small', small],
  ['4k', big],
] as const) {
  const rawReply = Uint8Array.prototype.slice.call(encodeLinkFrame(fn({ id: 1000 } as MapReq)));
  const raw = await rawWs(rawReply, reqFrame);
  const l = await link(fn);
  const {
    rtt: [rawRtt, linkRtt],
    cpu: [rawCpu, linkCpu],
  } = await serial([raw, l]);
  const rawPerSec = await raw.pipelined();
  const linkPerSec = await l.pipelined();
  await l.close();
  await raw.close();
  bench(`rtt_p50_${label}_link`, linkRtt, 'us', rawRtt);
  bench(`rtt_p50_${label}_raw_ws`, rawRtt, 'us');
  bench(`rtt_cpu_${label}_link`, linkCpu, 'us', rawCpu);
  bench(`rtt_cpu_${label}_raw_ws`, rawCpu, 'us');
  bench(`pipelined_${label}_link`, linkPerSec, 'req/s', rawPerSec, false);
  bench(`pipelined_${label}_raw_ws`, rawPerSec, 'req/s');
}
