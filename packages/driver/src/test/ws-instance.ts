/**
 * One instance in its own OS process for the ws tests: a real kernel, the xpmem driver and the ws
 * PeerNetwork on 127.0.0.1, driven by its parent over the child_process IPC channel (see
 * ws-harness.ts). Not a test file itself (ws.test.ts and ws-scenarios.test.ts fork it).
 *
 * Every command is `{id, op, ...args}`; the reply is `{id, value}` or `{id, error: {code, message}}`
 * with the driver's / kernel's stable code (SIGBUS, SIGSEGV, E_PERM, ...). If the parent goes away
 * (IPC channel closed) the instance exits, so a crashed test run leaves no process behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as instance from '@xpmesh/kernel';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { createWsPeerNetwork, type TransportPeerNetwork } from '@xpmesh/protocol';
import { createXpmemDriver, type XpmemDriver } from '../index.js';

type Cmd = { id: number; op: string; [k: string]: unknown };

const FRAMES = 2048;

let kernel: instance.Kernel | undefined;
let driver: XpmemDriver;
let net: TransportPeerNetwork | undefined;
// The parent (ws-harness.ts) passes a directory it removes itself, even after a SIGKILL.
const dir = process.env.XPMESH_WS_DIR || mkdtempSync(join(tmpdir(), 'xpmesh-ws-instance-'));
const lost: unknown[] = [];
const consoleLogger = {
  debug: () => {},
  info: () => {},
  warn: (o: unknown, m?: string) => console.error('WARN', m, JSON.stringify(o)),
  error: (o: unknown, m?: string) => console.error('ERROR', m, JSON.stringify(o)),
};
const fences: unknown[] = [];

function k(): instance.Kernel {
  if (!kernel) throw Object.assign(new Error('instance not initialised'), { code: 'E_NOT_LOADED' });
  return kernel;
}

const ops: Record<string, (c: Cmd) => Promise<unknown>> = {
  async init(c) {
    net = await createWsPeerNetwork({
      self: c.name as string,
      clusterKey: 'ws-test-cluster-key-0123456789',
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatMs: 100,
      missedBeats: (c.missedBeats as number | undefined) ?? 5,
    });
    kernel = await instance.createKernel({
      name: c.name as string,
      frames: FRAMES,
      swapPath: join(dir, 'swap'),
    });
    driver = createXpmemDriver({
      net,
      ackTimeoutMs: (c.ackTimeoutMs as number | undefined) ?? 1000,
      leaseMs: (c.leaseMs as number | undefined) ?? 500,
      prefault: c.prefault as number | undefined,
      logger: process.env.XPMESH_TEST_DEBUG ? consoleLogger : undefined,
    });
    driver.events.on('lost-dirty', (e) => lost.push(e));
    driver.events.on('fence', (e) => fences.push(e));
    await kernel.loadModule(driver);
    return net.address;
  },
  async peers(c) {
    const peers = c.peers as Array<{ node: string; url: string }>;
    for (const p of peers) net?.addPeer(p);
    for (const p of peers) await net?.waitUp(p.node, 10_000);
    return null;
  },

  // ---- processes and their accesses
  async spawn(c) {
    const p = await k().spawn({
      uid: (c.uid as number) ?? 1000,
      gid: (c.gid as number) ?? 1000,
      catchSignals: true,
    });
    return p.pid;
  },
  async fork(c) {
    return (await proc(c).fork()).pid;
  },
  async mmap(c) {
    return proc(c).mmap(c.len as number, 3);
  },
  async munmap(c) {
    return proc(c).munmap(c.addr as number, c.len as number);
  },
  async read32(c) {
    return proc(c).read32(c.addr as number);
  },
  async write32(c) {
    return proc(c).write32(c.addr as number, c.value as number);
  },
  /** `count` words at addr, addr + stride, ...: one access after the other, in order. */
  async readWords(c) {
    const p = proc(c);
    const out: number[] = [];
    for (let i = 0; i < (c.count as number); i++)
      out.push(await p.read32((c.addr as number) + i * ((c.stride as number) ?? PAGE_SIZE)));
    return out;
  },
  /** values[i] at addr + i * stride, one access after the other, in order. */
  async writeWords(c) {
    const p = proc(c);
    const values = c.values as number[];
    for (let i = 0; i < values.length; i++)
      await p.write32((c.addr as number) + i * ((c.stride as number) ?? PAGE_SIZE), values[i]);
    return null;
  },
  /** A byte range, as hex. */
  async read(c) {
    return Buffer.from(await proc(c).read(c.addr as number, c.len as number)).toString('hex');
  },
  async write(c) {
    return proc(c).write(c.addr as number, new Uint8Array(Buffer.from(c.hex as string, 'hex')));
  },
  async incr(c) {
    const p = proc(c);
    for (let i = 0; i < (c.times as number); i++) {
      for (;;) {
        const v = await p.read32(c.addr as number);
        if ((await p.cas32(c.addr as number, v, v + 1)) === v) break;
      }
    }
    return null;
  },
  async exit(c) {
    await proc(c).exit(0);
    return null;
  },
  /** Exit every live process of the instance; their pids. */
  async exitAll() {
    const ps = k().processes();
    await Promise.all(ps.map((p) => p.exit(0)));
    return ps.map((p) => p.pid);
  },
  async processes() {
    return k()
      .processes()
      .map((p) => p.pid);
  },

  // ---- the driver's user operations
  async make(c) {
    return driver.make(c.pid as number, c.va as number, c.size as number, c.mode as number);
  },
  async get(c) {
    return driver.get(c.pid as number, c.segid as string, c.access as 'r' | 'rw');
  },
  async attach(c) {
    return driver.attach(c.pid as number, c.apid as string, (c.offset as number) ?? 0, c.size as number);
  },
  async detach(c) {
    return driver.detach(c.pid as number, c.va as number);
  },
  async release(c) {
    return driver.release(c.pid as number, c.apid as string);
  },
  async remove(c) {
    return driver.remove(c.segid as string);
  },

  // ---- introspection
  async status() {
    const ks = k().stats();
    return {
      ...driver.status(),
      lost,
      fences,
      sessions: net?.sessions(),
      kernel: {
        frames: ks.frames,
        freeFrames: ks.freeFrames,
        processes: ks.processes,
        pins: ks.pins,
        driverFrames: ks.driverFrames,
      },
    };
  },
  async pageStates(c) {
    return driver.pageStates(c.segid as string);
  },
  /** Every reverse-map entry, with the mapper's node name and the segment id. */
  async rmapEntries() {
    return driver.rmap
      .filter(() => true)
      .map((e) => ({
        pfn: e.pfn,
        segid: driver.segBySlot.get(e.seg)?.segid ?? `slot ${e.seg}`,
        page: e.page,
        node: driver.nodeNames[e.node],
        write: e.write,
      }));
  },
  /** Frames flagged PG_external_rmap (a scan of every frame). */
  async exportedFrames() {
    const out: number[] = [];
    for (let pfn = 0; pfn < FRAMES; pfn++) {
      try {
        if (k().api.pageExported(pfn)) out.push(pfn);
      } catch {
        // not a valid frame number for the module API
      }
    }
    return out;
  },
  /** The kernel's invariant violations (empty when all hold). */
  async check() {
    return k().violations();
  },
  /**
   * Driver-level invariants at quiescence (as cluster.ts checkDriver + checkExportedFrames): every
   * frame in the reverse map is flagged PG_external_rmap and every flagged frame is in the map, no
   * entry belongs to an instance outside `live`, pins == unpins, no invalidation or notifier bracket
   * in flight, no fence waiting out a lease. The violations, as strings.
   */
  async driverCheck(c) {
    const live = new Set(c.live as string[]);
    const errs: string[] = [];
    const api = k().api;
    const inMap = new Set(driver.rmap.frames());
    for (const pfn of inMap) if (!api.pageExported(pfn)) errs.push(`pfn ${pfn} in rmap but not exported`);
    for (const pfn of (await ops.exportedFrames(c)) as number[])
      if (!inMap.has(pfn)) errs.push(`pfn ${pfn} flagged external_rmap with no rmap entry`);
    for (const e of driver.rmap.filter(() => true))
      if (!live.has(driver.nodeNames[e.node])) errs.push(`rmap entry for dead ${driver.nodeNames[e.node]}`);
    const s = driver.status();
    if (s.counters.pins !== s.counters.unpins)
      errs.push(`driver pins ${s.counters.pins} != unpins ${s.counters.unpins}`);
    for (const seg of driver.segments.values())
      for (let p = 0; p < seg.npages; p++)
        if (seg.inval[p] !== 0 || seg.busy[p] !== 0)
          errs.push(`${seg.segid} page ${p}: inval ${seg.inval[p]} busy ${seg.busy[p]}`);
    if (driver.fencing.size > 0) errs.push(`fencing in progress: ${[...driver.fencing.keys()].join(',')}`);
    return errs;
  },
  /** Wait (bounded) until no fence, invalidation or notifier bracket is in flight. */
  async quiesce(c) {
    const timeoutMs = (c.timeoutMs as number) ?? 10_000;
    const idle = () =>
      driver.fencing.size === 0 &&
      [...driver.segments.values()].every(
        (seg) => seg.inval.every((x) => x === 0) && seg.busy.every((x) => x === 0),
      );
    const t0 = Date.now();
    while (!idle()) {
      if (Date.now() - t0 > timeoutMs)
        throw Object.assign(new Error(`not quiescent after ${timeoutMs} ms`), { code: 'E_TIMEOUT' });
      await new Promise((r) => setTimeout(r, 5));
    }
    return null;
  },
  async close() {
    await shutdown();
    setTimeout(() => process.exit(0), 10);
    return null;
  },
};

let closing: Promise<void> | undefined;
function shutdown(): Promise<void> {
  closing ??= (async () => {
    await driver?.unload().catch(() => undefined);
    await kernel?.close().catch(() => undefined);
    await net?.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  })();
  return closing;
}

function proc(c: Cmd) {
  const p = k().process(c.pid as number);
  if (!p) throw Object.assign(new Error(`no pid ${c.pid}`), { code: 'ESRCH' });
  return p;
}

process.on('message', (c: Cmd) => {
  const op = ops[c.op];
  if (!op) {
    process.send?.({ id: c.id, error: { code: 'EINVAL', message: `unknown op ${c.op}` } });
    return;
  }
  op(c).then(
    (value) => process.connected && process.send?.({ id: c.id, value: value ?? null }),
    (e: { code?: string; message?: string }) =>
      process.connected &&
      process.send?.({
        id: c.id,
        error: { code: e?.code ?? 'E_INTERNAL', message: String(e?.message ?? e) },
      }),
  );
});
// The parent is gone (test runner crashed or was killed): do not outlive it.
process.on('disconnect', () => {
  const bye = setTimeout(() => process.exit(1), 2000);
  shutdown().finally(() => {
    clearTimeout(bye);
    process.exit(1);
  });
});
process.send?.({ id: 0, value: 'ready' });
