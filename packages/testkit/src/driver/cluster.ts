/**
 * Test harness: real kernels (each its own SharedArrayBuffer and worker processes) in one Node
 * process, connected by the protocol's in-memory network, each with the xpmem driver loaded.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createXpmemDriver, type MessageEvent, type XpmemDriver } from '@xpmesh/driver';
import * as instance from '@xpmesh/kernel';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { createMemoryNetwork, type LinkFaults, type PeerNetwork } from '@xpmesh/protocol';
import { driverIdle, localInstance } from './local-instance.js';
import {
  bounded,
  CALL_TIMEOUT_MS,
  codeError,
  INSTANCE_OPS,
  SCENARIO_NODES,
  type ScenarioCluster,
  type ScenarioInstance,
} from './scenario-cluster.js';

export const PROT_RW = 3;
export const PROT_R = 1;

export type Proc = instance.Process;
export type TestKernel = instance.Kernel;

export interface Inst {
  readonly name: string;
  readonly kernel: TestKernel;
  readonly driver: XpmemDriver;
  readonly net: PeerNetwork;
}

export interface Cluster {
  readonly nodes: Inst[];
  readonly sw: Awaited<ReturnType<typeof createMemoryNetwork>>['switch'];
  /** Messages sent by any driver (dir 'out'), in order. */
  readonly sent: MessageEvent[];
  close(): Promise<void>;
}

export interface ClusterOptions {
  names?: string[];
  frames?: number;
  ackTimeoutMs?: number;
  requestTimeoutMs?: number;
  prefault?: number;
  faults?: LinkFaults;
  heartbeatMs?: number;
  missedBeats?: number;
  /** Lease on remote copies (default heartbeat × missed beats). */
  leaseMs?: number;
  seed?: number;
}

export async function makeCluster(o: ClusterOptions = {}): Promise<Cluster> {
  const names = o.names ?? ['a', 'b', 'c'];
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-driver-'));
  const mem = await createMemoryNetwork({
    nodes: names,
    clusterKey: 'driver-test-cluster-key-0123456789',
    seed: o.seed ?? 1,
    defaults: o.faults,
    heartbeatMs: o.heartbeatMs ?? 200,
    missedBeats: o.missedBeats ?? 5,
    requestTimeoutMs: o.requestTimeoutMs ?? 5000,
  });
  await until(
    () => names.every((n) => mem.networks[n].sessions().length === names.length - 1),
    'sessions up',
  );
  const sent: MessageEvent[] = [];
  const nodes: Inst[] = [];
  for (const name of names) {
    const kernel = await instance.createKernel({
      name,
      frames: o.frames ?? 2048,
      swapPath: join(dir, `${name}.swap`),
    });
    const net = mem.networks[name];
    const driver = createXpmemDriver({
      net,
      ackTimeoutMs: o.ackTimeoutMs ?? 1500,
      leaseMs: o.leaseMs ?? (o.heartbeatMs ?? 200) * (o.missedBeats ?? 5),
      requestTimeoutMs: o.requestTimeoutMs ?? 5000,
      prefault: o.prefault,
    });
    driver.events.on('message', (m: MessageEvent) => {
      if (m.dir === 'out') sent.push(m);
    });
    await kernel.loadModule(driver);
    nodes.push({ name, kernel, driver, net });
  }
  return {
    nodes,
    sw: mem.switch,
    sent,
    async close() {
      for (const n of nodes) await n.driver.unload().catch(() => undefined);
      for (const n of nodes) await n.kernel.close().catch(() => undefined);
      await mem.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** kernel.check() in whatever form it reports: a list of violations, {ok, violations}, or a throw. */
export async function checkKernel(k: TestKernel): Promise<void> {
  const r = (await k.check()) as unknown;
  if (Array.isArray(r)) assert.deepEqual(r, [], 'kernel.check()');
  else if (r && typeof r === 'object') {
    const o = r as { ok?: boolean; violations?: unknown[]; errors?: unknown[] };
    if (o.violations) assert.deepEqual(o.violations, [], 'kernel.check() violations');
    if (o.errors) assert.deepEqual(o.errors, [], 'kernel.check() errors');
    if (o.ok !== undefined) assert.equal(o.ok, true, `kernel.check(): ${JSON.stringify(r)}`);
  }
}

/** A new process on `n` that gets `segid` read-write and attaches its first `pages` pages. */
export async function attachOn(n: Inst, segid: string, pages: number) {
  const q = await n.kernel.spawn({ catchSignals: true });
  const apid = await n.driver.get(q.pid, segid, 'rw');
  return { q, apid, va: await n.driver.attach(q.pid, apid, 0, pages * PAGE_SIZE) };
}

/**
 * Wait (bounded) until the driver is quiescent: no fence waiting out a lease, no invalidation or
 * notifier bracket in flight. Fences finish in the background (lease wait), so checks of "no entry
 * for a dead instance" need this first.
 */
export async function quiesce(n: Inst, timeoutMs = 15_000): Promise<void> {
  await until(() => driverIdle(n.driver), `${n.name} quiescent`, timeoutMs);
}

/**
 * Driver-level BRIEF §5 checks at quiescence on one instance: PG_external_rmap iff the reverse map
 * is non-empty, no entry points at a fenced/dead session, pins == unpins, no invalidation in flight.
 */
export function checkDriver(n: Inst, live: Set<string>): void {
  const d = n.driver;
  const k = n.kernel.api;
  for (const pfn of d.rmap.frames())
    assert.ok(
      k.pageExported(pfn),
      `${n.name}: pfn ${pfn} in rmap but not exported: ${JSON.stringify(d.rmap.entries(pfn))} ${JSON.stringify(k.pageInfo(pfn))}`,
    );
  for (const e of d.rmap.filter(() => true)) {
    assert.ok(live.has(d.nodeNames[e.node]), `${n.name}: rmap entry for dead ${d.nodeNames[e.node]}`);
  }
  const s = d.status();
  assert.equal(s.counters.pins, s.counters.unpins, `${n.name}: driver pins == unpins`);
  for (const seg of d.segments.values()) for (let p = 0; p < seg.npages; p++) assert.equal(seg.inval[p], 0);
}

/** Every frame flagged PG_external_rmap must be in the driver's map (scan of all frames). */
export function checkExportedFrames(n: Inst, frames: number): void {
  const k = n.kernel.api;
  const inMap = new Set(n.driver.rmap.frames());
  for (let pfn = 0; pfn < frames; pfn++) {
    let flagged = false;
    try {
      flagged = k.pageExported(pfn);
    } catch {
      continue;
    }
    if (flagged)
      assert.ok(inMap.has(pfn), `${n.name}: pfn ${pfn} flagged external_rmap with an empty driver map`);
  }
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal((e as { code?: string }).code, code, String(e));
    return true;
  });
}

/** Messages of one kind sent since `from` (an index into cluster.sent). */
export function countSent(c: Cluster, from: number, type?: string): number {
  return c.sent.slice(from).filter((m) => !type || m.type === type).length;
}

/**
 * The scenario suite's cluster (scenario-cluster.ts) on the in-memory network: three kernels with the
 * driver in this process. Every call goes through the same gate as over IPC: bounded, the answer
 * structured-cloned, an error reduced to its code and message. Failure detection is as generous as on
 * ws (3 s without heartbeats, ack deadline 3 s, lease 2 s): nothing in the scenarios needs a death
 * noticed fast, and a loaded CI machine must not fence a live instance.
 */
export async function openMemoryCluster(): Promise<ScenarioCluster> {
  const frames = 2048;
  const c = await makeCluster({
    names: SCENARIO_NODES,
    frames,
    heartbeatMs: 200,
    missedBeats: 15,
    ackTimeoutMs: 3000,
    leaseMs: 2000,
  });
  const nodes = c.nodes.map((n) => gated(localInstance(n.name, n.kernel, n.driver, frames)));
  return {
    nodes,
    async kill(name) {
      for (const other of SCENARIO_NODES) if (other !== name) c.sw.partition(name, other);
    },
    close: () => c.close(),
  };
}

function gated(inst: ScenarioInstance): ScenarioInstance {
  const out: Record<string, unknown> = { name: inst.name };
  for (const op of INSTANCE_OPS) {
    const f = inst[op] as (...args: unknown[]) => Promise<unknown>;
    out[op] = async (...args: unknown[]) => {
      const what = `${inst.name}.${op}`;
      try {
        return structuredClone(await bounded(f(...structuredClone(args)), CALL_TIMEOUT_MS, what));
      } catch (e) {
        const { code, message } = e as { code?: string; message?: string };
        throw codeError(code ?? 'E_INTERNAL', `${what}: ${message ?? String(e)}`);
      }
    };
  }
  return out as unknown as ScenarioInstance;
}
