/**
 * Where the time of one link round trip goes, hop by hop, next to raw ws (a profiling tool, not a
 * benchmark: `npm run bench` does not run it). Both ends live in this process, as in link.bench.ts;
 * timestamps are taken at fixed points by wrapping the link's and the transport's methods at run time
 * (nothing in the library is instrumented), and the median of each hop over N serial round trips is
 * printed. Each wrap costs ~0.05 µs, so the link's total here is a little above link.bench's.
 *
 *   npx tsc -b && node packages/protocol/dist/bench/link-hops.js      (N=20000, BIG=1 for a 4 KiB reply)
 */
import { performance } from 'node:perf_hooks';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeLinkFrame } from '../codec.js';
import { Link } from '../link.js';
import type { MapReq, Message } from '../messages.js';
import { TransportPeerNetwork } from '../network.js';
import { createWsPeerNetwork } from '../ws.js';
import { WsConn } from '../ws-transport.js';

const N = Number(process.env.N ?? 20_000);
const BIG = process.env.BIG === '1';
const KEY = 'bench-cluster-key-0123456789abcdef';
const page = new Uint8Array(4096).fill(7);
const replyTo = (id: number): Message =>
  BIG
    ? { t: 'map-ok', re: id, access: 'r', pages: [{ page: 0, version: 1, data: page }], grants: [1] }
    : { t: 'map-ok', re: id, access: 'r', pages: [], grants: [] };
const req: Omit<MapReq, 'id'> = { t: 'map', apid: 'b:a1', page: 0, count: 1, access: 'r' };

let marks: Record<string, number> = {};
let on = false;
const mark = (k: string) => {
  if (on && marks[k] === undefined) marks[k] = performance.now();
};
type Proto = Record<string, (...a: unknown[]) => unknown>;
function wrap(proto: object, name: string, before: (self: never) => string, after?: (self: never) => string) {
  const p = proto as Proto;
  const f = p[name];
  if (typeof f !== 'function') throw new Error(`no method ${name}`);
  p[name] = function (this: never, ...a: unknown[]) {
    mark(before(this));
    const r = f.apply(this, a);
    if (after) mark(after(this));
    return r;
  };
}
const side = (l: { role: string }) => (l.role === 'client' ? 'client' : 'server');
const connSide = (c: { ws: { _isServer?: boolean } }) => (c.ws._isServer ? 'server' : 'client');
wrap(Link.prototype, 'sendNow', (l: { role: string }) => `${side(l)}: sendNow (encode, send)`);
wrap(
  WsConn.prototype,
  'send',
  (c: { ws: { _isServer?: boolean } }) => `${connSide(c)}: ws.send`,
  (c: { ws: { _isServer?: boolean } }) => `${connSide(c)}: ws.send returned`,
);
wrap(
  Link.prototype,
  'guardedFrame',
  (l: { role: string }) => `${side(l)}: frame in (decode, validate, dispatch)`,
  (l: { role: string }) => `${side(l)}: frame done`,
);
wrap(TransportPeerNetwork.prototype, 'incomingRequest', () => 'server: request handler');
wrap(Link.prototype, 'reply', () => 'server: reply()');

const p50 = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
function report(label: string, rows: Record<string, number>[], order: string[]) {
  console.log(`== ${label}: round trip p50 ${p50(rows.map((r) => (r.end - r.start) * 1000)).toFixed(2)} µs`);
  for (let i = 1; i < order.length; i++) {
    const a = order[i - 1];
    const b = order[i];
    const xs = rows.filter((r) => r[a] !== undefined && r[b] !== undefined).map((r) => (r[b] - r[a]) * 1000);
    if (xs.length > 0) console.log(`  ${p50(xs).toFixed(2).padStart(6)} µs  ${a} → ${b}`);
  }
}
async function measure(rt: () => Promise<unknown>): Promise<Record<string, number>[]> {
  for (let i = 0; i < 2000; i++) await rt();
  const rows: Record<string, number>[] = [];
  for (let i = 0; i < N; i++) {
    marks = { start: performance.now() };
    on = true;
    await rt();
    marks.end = performance.now();
    on = false;
    rows.push(marks);
  }
  return rows;
}

const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
b.onRequest(async (_f, m) => replyTo((m as MapReq).id) as never);
const a = await createWsPeerNetwork({ self: 'a', peers: [{ node: 'b', url: b.address! }], clusterKey: KEY });
await a.waitUp('b', 10_000);
const linkRows = await measure(() => a.request<MapReq>('b', req));
await a.close();
await b.close();
report(`link (${BIG ? '4 KiB' : 'small'} reply)`, linkRows, [
  'start',
  'client: sendNow (encode, send)',
  'client: ws.send',
  'client: ws.send returned',
  'server: frame in (decode, validate, dispatch)',
  'server: request handler',
  'server: frame done',
  'server: reply()',
  'server: sendNow (encode, send)',
  'server: ws.send',
  'server: ws.send returned',
  'client: frame in (decode, validate, dispatch)',
  'client: frame done',
  'end',
]);

const reqFrame = Uint8Array.prototype.slice.call(encodeLinkFrame({ ...req, id: 1000 } as MapReq));
const replyFrame = Uint8Array.prototype.slice.call(encodeLinkFrame(replyTo(1000)));
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
await new Promise((r) => wss.once('listening', r));
wss.on('connection', (s) =>
  s.on('message', () => {
    mark('server: message in');
    s.send(replyFrame, { binary: true });
    mark('server: ws.send returned');
  }),
);
const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`, {
  perMessageDeflate: false,
});
await new Promise((r) => ws.once('open', r));
let waiter: (() => void) | undefined;
ws.on('message', () => {
  mark('client: message in');
  waiter?.();
});
const rawRows = await measure(
  () =>
    new Promise<void>((r) => {
      waiter = r;
      ws.send(reqFrame, { binary: true });
      mark('client: ws.send returned');
    }),
);
ws.close();
await new Promise((r) => wss.close(r));
report('raw ws (same frames)', rawRows, [
  'start',
  'client: ws.send returned',
  'server: message in',
  'server: ws.send returned',
  'client: message in',
  'end',
]);
