/**
 * One instance in its own OS process for the ws tests: a real kernel, the xpmem driver and the ws
 * PeerNetwork on 127.0.0.1, driven by its parent over the child_process IPC channel (see
 * ws-harness.ts). Not a test file itself (scenarios-ws.test.ts forks it, through ws-harness.ts).
 *
 * Every command is `{id, op, args}`: `init`, `peers`, `close`, or an operation of the scenario
 * interface (scenario-cluster.ts), run by the same code as in the in-memory cluster
 * (local-instance.ts). The reply is `{id, value}` or `{id, error: {code, message}}` with the
 * driver's / kernel's stable code (SIGBUS, SIGSEGV, E_PERM, ...). If the parent goes away (IPC
 * channel closed) the instance exits, so a crashed test run leaves no process behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createXpmemDriver, type XpmemDriver } from '@xpmesh/driver';
import * as instance from '@xpmesh/kernel';
import { createWsPeerNetwork, type TransportPeerNetwork } from '@xpmesh/protocol';
import { localInstance } from './local-instance.js';
import { isInstanceOp, type ScenarioInstance } from './scenario-cluster.js';
import type { InstanceOptions } from './ws-harness.js';

type Cmd = { id: number; op: string; args?: unknown[] };

const FRAMES = 2048;

let kernel: instance.Kernel | undefined;
let driver: XpmemDriver | undefined;
let net: TransportPeerNetwork | undefined;
let inst: ScenarioInstance | undefined;
// The parent (ws-harness.ts) passes a directory it removes itself, even after a SIGKILL.
const dir = process.env.XPMESH_WS_DIR || mkdtempSync(join(tmpdir(), 'xpmesh-ws-instance-'));
const consoleLogger = {
  debug: () => {},
  info: () => {},
  warn: (o: unknown, m?: string) => console.error('WARN', m, JSON.stringify(o)),
  error: (o: unknown, m?: string) => console.error('ERROR', m, JSON.stringify(o)),
};

const control: Record<string, (...args: never[]) => Promise<unknown>> = {
  async init(o: InstanceOptions & { name: string }) {
    if (inst) throw Object.assign(new Error('already initialised'), { code: 'EINVAL' });
    net = await createWsPeerNetwork({
      self: o.name,
      clusterKey: 'ws-test-cluster-key-0123456789',
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatMs: 100,
      missedBeats: o.missedBeats ?? 5,
    });
    kernel = await instance.createKernel({ name: o.name, frames: FRAMES, swapPath: join(dir, 'swap') });
    driver = createXpmemDriver({
      net,
      ackTimeoutMs: o.ackTimeoutMs ?? 1000,
      leaseMs: o.leaseMs ?? 500,
      prefault: o.prefault,
      logger: process.env.XPMESH_TEST_DEBUG ? consoleLogger : undefined,
    });
    inst = localInstance(o.name, kernel, driver, FRAMES);
    await kernel.loadModule(driver);
    return net.address;
  },
  async peers(peers: Array<{ node: string; url: string }>) {
    for (const p of peers) net?.addPeer(p);
    for (const p of peers) await net?.waitUp(p.node, 10_000);
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

function run(c: Cmd): Promise<unknown> {
  const args = Array.isArray(c.args) ? c.args : [];
  if (Object.hasOwn(control, c.op)) return control[c.op](...(args as never[]));
  if (!isInstanceOp(c.op))
    return Promise.reject(Object.assign(new Error(`unknown op ${c.op}`), { code: 'EINVAL' }));
  if (!inst)
    return Promise.reject(Object.assign(new Error('instance not initialised'), { code: 'E_NOT_LOADED' }));
  return (inst[c.op] as (...a: unknown[]) => Promise<unknown>)(...args);
}

process.on('message', (c: Cmd) => {
  let reply: Promise<unknown>;
  try {
    reply = run(c);
  } catch (e) {
    reply = Promise.reject(e);
  }
  reply.then(
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
