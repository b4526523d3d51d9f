/**
 * Driver benchmarks (figures, not pass/fail), each against raw `ws` measured in the same run and the
 * same process placement. Real kernels, the xpmem driver, the ws PeerNetwork on 127.0.0.1.
 * Prints BENCH lines (scripts/bench.mjs). BENCH_QUICK=1 for a short run.
 *
 *   remote-read-fault p50/p99   read32 of an unmapped remote page, prefault 1 (fault → map → map-ok →
 *                               install → retry), vs a raw ws round trip with a 4 KiB reply
 *   map-round-trip p50/p99      the map request/reply alone (driver 'message' latency)
 *   protocol-map-4k-rtt         the same request/reply through the protocol with a canned handler
 *                               (no kernel, no driver): what the link itself costs
 *   remote-read-fault-prefault64 one fault that brings 64 pages (map of 64 pages)
 *   invalidate-ack p50          home write to a page one remote reads: invalidate → ack (driver
 *                               'invalidated' event) vs a raw ws 32 B round trip
 *   invalidate-fanout-8 p50     the same with 8 remote readers vs 1
 *   invalidate-1024-pages p50   mprotect of a 1024-page range one remote holds vs 1 page
 *   rmap-bytes-per-entry        bytes of the reverse map / entries at 131,072 entries
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as instance from '@xpmesh/kernel';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { createWsPeerNetwork, type TransportPeerNetwork } from '@xpmesh/protocol';
import WebSocket, { WebSocketServer } from 'ws';
import { createXpmemDriver, type MessageEvent, ReverseMap, type XpmemDriver } from '../index.js';

const QUICK = process.env.BENCH_QUICK === '1';
const KEY = 'bench-cluster-key-0123456789abcdef';

function bench(name: string, value: number, unit: string, baseline: number | null = null) {
  const ratio = baseline ? Number((value / baseline).toFixed(3)) : null;
  console.log(
    `BENCH ${JSON.stringify({ suite: 'driver', name, value: Number(value.toFixed(2)), unit, baseline: baseline === null ? null : Number(baseline.toFixed(2)), ratio })}`,
  );
}
const pct = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];

async function rawWs(replyBytes: number, n: number): Promise<number[]> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const reply = new Uint8Array(replyBytes);
  wss.on('connection', (s) => s.on('message', () => s.send(reply, { binary: true })));
  const port = (wss.address() as { port: number }).port;
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  let waiter: (() => void) | undefined;
  ws.on('message', () => waiter?.());
  const req = new Uint8Array(32);
  const rt = () =>
    new Promise<void>((r) => {
      waiter = r;
      ws.send(req, { binary: true });
    });
  for (let i = 0; i < 200; i++) await rt();
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await rt();
    lat.push((performance.now() - t) * 1000);
  }
  ws.close();
  await new Promise((r) => wss.close(r));
  return lat;
}

interface Node {
  name: string;
  kernel: instance.Kernel;
  driver: XpmemDriver;
  net: TransportPeerNetwork;
}

async function cluster(count: number, frames: number, dir: string, prefault = 64): Promise<Node[]> {
  const names = Array.from({ length: count }, (_, i) => `n${i}`);
  const nets: TransportPeerNetwork[] = [];
  for (const self of names) {
    nets.push(
      await createWsPeerNetwork({
        self,
        clusterKey: KEY,
        listen: { host: '127.0.0.1', port: 0 },
        heartbeatMs: 1000,
      }),
    );
  }
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < count; j++)
      if (i !== j) nets[i].addPeer({ node: names[j], url: nets[j].address as string });
  }
  for (let i = 0; i < count; i++)
    for (let j = 0; j < count; j++) if (i !== j) await nets[i].waitUp(names[j], 10_000);
  const nodes: Node[] = [];
  for (let i = 0; i < count; i++) {
    const kernel = await instance.createKernel({
      name: names[i],
      frames,
      swapPath: join(dir, `${names[i]}.swap`),
    });
    const driver = createXpmemDriver({ net: nets[i], ackTimeoutMs: 5000, prefault });
    await kernel.loadModule(driver);
    nodes.push({ name: names[i], kernel, driver, net: nets[i] });
  }
  return nodes;
}

async function close(nodes: Node[]) {
  for (const n of nodes) await n.driver.unload().catch(() => undefined);
  for (const n of nodes) await n.kernel.close().catch(() => undefined);
  for (const n of nodes) await n.net.close().catch(() => undefined);
}

async function attachAll(home: Node, others: Node[], pages: number, prefault = true) {
  const p = await home.kernel.spawn({ catchSignals: true });
  const va = await p.mmap(pages * PAGE_SIZE, 3);
  for (let i = 0; i < pages; i++) await p.write32(va + i * PAGE_SIZE, i);
  const segid = await home.driver.make(p.pid, va, pages * PAGE_SIZE, 0o600);
  const atts = [];
  for (const n of others) {
    const q = await n.kernel.spawn({ catchSignals: true });
    const apid = await n.driver.get(q.pid, segid, 'rw');
    const ava = await n.driver.attach(q.pid, apid, 0, pages * PAGE_SIZE);
    if (prefault) for (let i = 0; i < pages; i++) await q.read32(ava + i * PAGE_SIZE);
    atts.push({ n, q, va: ava });
  }
  return { p, va, segid, atts };
}

function invalidations(d: XpmemDriver) {
  const out: Array<{ pages: number; peers: number; ms: number; reason: string }> = [];
  d.events.on('invalidated', (e) => out.push(e));
  return out;
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-driver-bench-'));
  const N = QUICK ? 200 : 2000;
  try {
    // ---- baselines, same process, same run
    const raw4k = await rawWs(PAGE_SIZE, N);
    const raw32 = await rawWs(32, N);
    bench('raw-ws-4k-rtt-p50', pct(raw4k, 0.5), 'us');
    bench('raw-ws-32b-rtt-p50', pct(raw32, 0.5), 'us');

    // ---- the protocol alone: a map request answered at once with a canned 4 KiB map-ok (no kernel)
    {
      const a = await createWsPeerNetwork({
        self: 'pa',
        clusterKey: KEY,
        listen: { host: '127.0.0.1', port: 0 },
      });
      const b = await createWsPeerNetwork({
        self: 'pb',
        clusterKey: KEY,
        listen: { host: '127.0.0.1', port: 0 },
      });
      a.addPeer({ node: 'pb', url: b.address as string });
      b.addPeer({ node: 'pa', url: a.address as string });
      await a.waitUp('pb', 10_000);
      await b.waitUp('pa', 10_000);
      const data = new Uint8Array(PAGE_SIZE);
      b.onRequest(
        async () =>
          ({ t: 'map-ok', access: 'r', pages: [{ page: 0, version: 0, data }], grants: [1] }) as never,
      );
      const lat: number[] = [];
      for (let i = 0; i < N + 200; i++) {
        const t = performance.now();
        await a.request('pb', { t: 'map', apid: 'pb:a1', page: 0, count: 1, access: 'r' } as never);
        if (i >= 200) lat.push((performance.now() - t) * 1000);
      }
      bench('protocol-map-4k-rtt-p50', pct(lat, 0.5), 'us', pct(raw4k, 0.5));
      bench('protocol-map-4k-rtt-p99', pct(lat, 0.99), 'us', pct(raw4k, 0.99));
      await a.close();
      await b.close();
    }

    // ---- remote read fault, two instances
    {
      const nodes = await cluster(2, 8192, dir);
      const [home, att] = nodes;
      const pages = QUICK ? 256 : 2048;
      const p = await home.kernel.spawn({ catchSignals: true });
      const va = await p.mmap(pages * PAGE_SIZE, 3);
      for (let i = 0; i < pages; i++) await p.write32(va + i * PAGE_SIZE, i);
      const segid = await home.driver.make(p.pid, va, pages * PAGE_SIZE, 0o600);
      const q = await att.kernel.spawn({ catchSignals: true });
      const apid = await att.driver.get(q.pid, segid, 'r');
      const ava = await att.driver.attach(q.pid, apid, 0, pages * PAGE_SIZE);
      const mapLat: number[] = [];
      att.driver.events.on('message', (m: MessageEvent) => {
        if (m.dir === 'in' && m.type === 'map-ok' && m.latencyMs !== undefined)
          mapLat.push(m.latencyMs * 1000);
      });
      // (prefault is 64 in this cluster: walk pages 64 apart so every read is one fault, one page map)
      const fault: number[] = [];
      const hit: number[] = [];
      for (let i = 64; i < pages; i += 64) {
        let t = performance.now();
        await q.read32(ava + i * PAGE_SIZE + 4);
        fault.push((performance.now() - t) * 1000);
        t = performance.now();
        await q.read32(ava + i * PAGE_SIZE + 8);
        hit.push((performance.now() - t) * 1000);
      }
      bench('remote-read-fault-prefault64-p50', pct(fault, 0.5), 'us', pct(raw4k, 0.5));
      bench('remote-read-fault-prefault64-p99', pct(fault, 0.99), 'us', pct(raw4k, 0.99));
      bench('local-hit-read-p50', pct(hit, 0.5), 'us');
      bench(
        'remote-read-fault-prefault64-minus-hit-p50',
        pct(fault, 0.5) - pct(hit, 0.5),
        'us',
        pct(raw4k, 0.5),
      );
      bench('map-64-pages-round-trip-p50', pct(mapLat, 0.5), 'us', pct(raw4k, 0.5));
      await close(nodes);
    }

    // ---- single-page map round trip with prefault 1 (a read fault's network part)
    {
      const nodes = await cluster(2, 4096, dir, 1);
      const [home, att] = nodes;
      const pages = QUICK ? 200 : 1000;
      const p = await home.kernel.spawn({ catchSignals: true });
      const va = await p.mmap(pages * PAGE_SIZE, 3);
      for (let i = 0; i < pages; i++) await p.write32(va + i * PAGE_SIZE, i);
      const segid = await home.driver.make(p.pid, va, pages * PAGE_SIZE, 0o600);
      const q = await att.kernel.spawn({ catchSignals: true });
      const apid = await att.driver.get(q.pid, segid, 'r');
      const ava = await att.driver.attach(q.pid, apid, 0, pages * PAGE_SIZE);
      const mapLat: number[] = [];
      att.driver.events.on('message', (m: MessageEvent) => {
        if (m.dir === 'in' && m.type === 'map-ok' && m.latencyMs !== undefined)
          mapLat.push(m.latencyMs * 1000);
      });
      const fault: number[] = [];
      for (let i = 1; i < pages; i++) {
        const t = performance.now();
        await q.read32(ava + i * PAGE_SIZE);
        fault.push((performance.now() - t) * 1000);
      }
      bench('remote-read-fault-p50', pct(fault, 0.5), 'us', pct(raw4k, 0.5));
      bench('remote-read-fault-p99', pct(fault, 0.99), 'us', pct(raw4k, 0.99));
      bench('map-round-trip-p50', pct(mapLat, 0.5), 'us', pct(raw4k, 0.5));
      bench('map-round-trip-p99', pct(mapLat, 0.99), 'us', pct(raw4k, 0.99));
      await close(nodes);
    }

    // ---- invalidate → ack: 1 remote and 8 remotes (home write to a page every remote reads)
    {
      const nodes = await cluster(9, 2048, dir);
      const [home, ...rest] = nodes;
      const rounds = QUICK ? 30 : 200;
      for (const fan of [1, 8]) {
        const s = await attachAll(home, rest.slice(0, fan), 1);
        const inv = invalidations(home.driver);
        for (let r = 0; r < rounds; r++) {
          await s.p.write32(s.va, r); // invalidate every reader
          for (const a of s.atts) await a.q.read32(a.va); // they read again
        }
        const ms = inv.filter((e) => e.reason === 'recall' && e.peers === fan).map((e) => e.ms * 1000);
        if (fan === 1) bench('invalidate-ack-1-remote-p50', pct(ms, 0.5), 'us', pct(raw32, 0.5));
        else {
          bench('invalidate-ack-8-remotes-p50', pct(ms, 0.5), 'us', null);
          const one = (globalThis as { __one?: number }).__one ?? null;
          if (one) bench('invalidate-fanout-8-vs-1-p50', pct(ms, 0.5), 'us', one);
        }
        if (fan === 1) (globalThis as { __one?: number }).__one = pct(ms, 0.5);
        await home.driver.remove(s.segid);
        await s.p.exit(0);
        for (const a of s.atts) await a.q.exit(0);
      }
      await close(nodes);
    }

    // ---- a 1024-page range vs one page (mprotect of the source range one remote holds)
    {
      const nodes = await cluster(2, 8192, dir);
      const [home, att] = nodes;
      const rounds = QUICK ? 3 : 10;
      const result: Record<number, number[]> = {};
      for (const pages of [1, 1024]) {
        const s = await attachAll(home, [att], pages);
        const inv = invalidations(home.driver);
        for (let r = 0; r < rounds; r++) {
          await s.p.mprotect(s.va, pages * PAGE_SIZE, 1);
          await s.p.mprotect(s.va, pages * PAGE_SIZE, 3);
          for (let i = 0; i < pages; i += 1) await s.atts[0].q.read32(s.atts[0].va + i * PAGE_SIZE);
        }
        result[pages] = inv.filter((e) => e.reason === 'protection').map((e) => e.ms * 1000);
        await home.driver.remove(s.segid);
        await s.p.exit(0);
        await s.atts[0].q.exit(0);
      }
      bench('invalidate-1-page-range-p50', pct(result[1], 0.5), 'us', pct(raw32, 0.5));
      bench('invalidate-1024-page-range-p50', pct(result[1024], 0.5), 'us', pct(result[1], 0.5));
      await close(nodes);
    }

    // ---- reverse-map bytes per entry
    {
      const r = new ReverseMap();
      const frames = 65536;
      for (let i = 0; i < 2 * frames; i++) r.add(i % frames, 1 + (i & 1), 1, i % frames, 1, 1, false);
      bench('rmap-bytes-per-entry', r.bytes() / r.size, 'B', 48);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
