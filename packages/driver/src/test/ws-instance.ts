/**
 * One instance in its own OS process for the ws tests: a real kernel, the xpmem driver and the ws
 * PeerNetwork on 127.0.0.1, driven by its parent over the child_process IPC channel. Not a test
 * file itself (ws.test.ts forks it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as instance from '@xpmesh/node/instance';
import { createWsPeerNetwork, type TransportPeerNetwork } from '@xpmesh/protocol';
import { createXpmemDriver, type XpmemDriver } from '../index.js';

type Cmd = { id: number; op: string; [k: string]: unknown };

let kernel: instance.Kernel;
let driver: XpmemDriver;
let net: TransportPeerNetwork;
const dir = mkdtempSync(join(tmpdir(), 'xpmesh-ws-instance-'));
const lost: unknown[] = [];
const consoleLogger = {
  debug: () => {},
  info: () => {},
  warn: (o: unknown, m?: string) => console.error('WARN', m, JSON.stringify(o)),
  error: (o: unknown, m?: string) => console.error('ERROR', m, JSON.stringify(o)),
};
const fences: unknown[] = [];

const ops: Record<string, (c: Cmd) => Promise<unknown>> = {
  async init(c) {
    net = await createWsPeerNetwork({
      self: c.name as string,
      clusterKey: 'ws-test-cluster-key-0123456789',
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatMs: 100,
      missedBeats: 5,
    });
    kernel = await instance.createKernel({
      name: c.name as string,
      frames: 2048,
      swapPath: join(dir, 'swap'),
    });
    driver = createXpmemDriver({
      net,
      ackTimeoutMs: 1000,
      leaseMs: 500,
      logger: process.env.XPMESH_TEST_DEBUG ? consoleLogger : undefined,
    });
    driver.events.on('lost-dirty', (e) => lost.push(e));
    driver.events.on('fence', (e) => fences.push(e));
    await kernel.loadModule(driver);
    return net.address;
  },
  async peers(c) {
    for (const p of c.peers as Array<{ node: string; url: string }>) net.addPeer(p);
    for (const p of c.peers as Array<{ node: string; url: string }>) await net.waitUp(p.node, 10_000);
    return null;
  },
  async spawn(c) {
    const p = await kernel.spawn({
      uid: (c.uid as number) ?? 1000,
      gid: (c.gid as number) ?? 1000,
      catchSignals: true,
    });
    return p.pid;
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
  async make(c) {
    return driver.make(c.pid as number, c.va as number, c.size as number, c.mode as number);
  },
  async get(c) {
    return driver.get(c.pid as number, c.segid as string, c.access as 'r' | 'rw');
  },
  async attach(c) {
    return driver.attach(c.pid as number, c.apid as string, c.offset as number, c.size as number);
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
  async status() {
    return { ...driver.status(), lost, fences, sessions: net.sessions() };
  },
  async check() {
    return kernel.violations();
  },
  async close() {
    await driver.unload();
    await kernel.close();
    await net.close();
    rmSync(dir, { recursive: true, force: true });
    setTimeout(() => process.exit(0), 10);
    return null;
  },
};

function proc(c: Cmd) {
  const p = kernel.process(c.pid as number);
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
    (value) => process.send?.({ id: c.id, value }),
    (e: { code?: string; message?: string }) =>
      process.send?.({
        id: c.id,
        error: { code: e?.code ?? 'E_INTERNAL', message: String(e?.message ?? e) },
      }),
  );
});
process.send?.({ id: 0, value: 'ready' });
