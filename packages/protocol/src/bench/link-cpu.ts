/**
 * The link's own CPU per round trip, without sockets (a profiling tool, not a benchmark: `npm run
 * bench` does not run it). Two PeerNetworks over an in-process transport that hands each frame to
 * the other end in a microtask (a copy, as a socket would; the sender's lease given back at once,
 * as ws does when the write completed), so what is measured is the link, codec, validation and
 * network code of both ends and nothing of ws or the kernel: the part of link.bench's ratio that
 * is ours. Prints the median and p25 over blocks of process CPU µs per round trip.
 *
 *   npx tsc -b && node packages/protocol/dist/bench/link-cpu.js      (BIG=1: 4 KiB reply; BLOCKS=60)
 *   node --cpu-prof --cpu-prof-interval 50 packages/protocol/dist/bench/link-cpu.js   (a clean profile)
 */
import type { MapReq, Message } from '../messages.js';
import { TransportPeerNetwork } from '../network.js';
import type { Conn, ConnHandlers, Transport } from '../transport.js';

const BIG = process.env.BIG === '1';
const BLOCKS = Number(process.env.BLOCKS ?? 60);
const BLOCK = 2000;
const KEY = 'bench-cluster-key-0123456789abcdef';

class End implements Conn {
  readonly remote = 'in-process';
  peer!: End;
  private h: ConnHandlers | undefined;
  private backlog: Uint8Array[] = [];
  private closed = false;
  setHandlers(h: ConnHandlers): void {
    this.h = h;
    for (const f of this.backlog) h.onFrame(f);
    this.backlog = [];
  }
  send(frame: Uint8Array, done?: () => void): void {
    if (this.closed) {
      done?.();
      return;
    }
    const copy = Uint8Array.prototype.slice.call(frame);
    done?.();
    const p = this.peer;
    queueMicrotask(() => p.deliver(copy));
  }
  private deliver(f: Uint8Array): void {
    if (this.closed) return;
    if (this.h) this.h.onFrame(f);
    else this.backlog.push(f);
  }
  bufferedAmount(): number {
    return 0;
  }
  ping(): void {}
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.h?.onClose(code, reason);
    const p = this.peer;
    queueMicrotask(() => p.closedByPeer(code, reason));
  }
  private closedByPeer(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.h?.onClose(code, reason);
  }
}

const listeners = new Map<string, (c: Conn) => void>();
const transport = (name: string): Transport => ({
  listen: async (onConn) => {
    listeners.set(name, onConn);
    return { address: name, close: async () => undefined };
  },
  dial: async (address) => {
    const a = new End();
    const b = new End();
    a.peer = b;
    b.peer = a;
    listeners.get(address)!(b);
    return a;
  },
});

const page = new Uint8Array(4096).fill(7);
const reply = (m: MapReq): Message =>
  BIG
    ? { t: 'map-ok', re: m.id, access: 'r', pages: [{ page: 0, version: 1, data: page }], grants: [1] }
    : { t: 'map-ok', re: m.id, access: 'r', pages: [], grants: [] };

const b = new TransportPeerNetwork({ self: 'b', clusterKey: KEY, transport: transport('b') });
await b.start(true);
const a = new TransportPeerNetwork({
  self: 'a',
  clusterKey: KEY,
  transport: transport('a'),
  peers: [{ node: 'b', url: 'b' }],
});
await a.start(false);
b.onRequest(async (_f, m) => reply(m as MapReq) as never);
await a.waitUp('b', 10_000);
const req: Omit<MapReq, 'id'> = { t: 'map', apid: 'b:a1', page: 0, count: 1, access: 'r' };
for (let i = 0; i < 20_000; i++) await a.request<MapReq>('b', req);
const xs: number[] = [];
for (let k = 0; k < BLOCKS; k++) {
  const c0 = process.cpuUsage();
  for (let i = 0; i < BLOCK; i++) await a.request<MapReq>('b', req);
  const c = process.cpuUsage(c0);
  xs.push((c.user + c.system) / BLOCK);
}
xs.sort((x, y) => x - y);
const q = (f: number) => xs[Math.floor(xs.length * f)].toFixed(3);
console.log(
  `${BIG ? '4 KiB' : 'small'} reply: link-only CPU per round trip p50 ${q(0.5)} µs, p25 ${q(0.25)} µs`,
);
await a.close();
await b.close();
