/**
 * Harness of the ws tests: instances (kernel + driver + ws PeerNetwork) as separate OS processes
 * (ws-instance.js), one per instance, connected to each other over ws on 127.0.0.1 and driven by the
 * test over the child_process IPC channel. Every call is bounded (a clear error names the instance
 * and the operation), and `close()` ends every child — politely, then with SIGKILL — even when a
 * test failed half-way; a child whose parent goes away exits by itself (ws-instance.ts).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bounded,
  CALL_TIMEOUT_MS,
  codeError,
  INSTANCE_OPS,
  type InstanceOp,
  SCENARIO_NODES,
  type ScenarioCluster,
  type ScenarioInstance,
} from './scenario-cluster.js';

const script = new URL('./ws-instance.js', import.meta.url).pathname;
const START_TIMEOUT_MS = 20_000;
const CLOSE_TIMEOUT_MS = 5_000;

type Reply = { id: number; value?: unknown; error?: { code: string; message: string } };
type Waiter = {
  op: string;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout;
};

/** One instance process, driven over IPC. */
export class Remote {
  private seq = 1;
  private readonly waiting = new Map<number, Waiter>();
  readonly ready: Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly child: ChildProcess;

  constructor(
    readonly name: string,
    readonly dir: string,
  ) {
    this.child = fork(script, [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // structured clone, as the in-memory cluster's gate does (Uint8Array, undefined survive)
      serialization: 'advanced',
      env: { ...process.env, XPMESH_WS_DIR: dir },
    });
    let ready!: () => void;
    let notReady!: (e: Error) => void;
    this.ready = new Promise<void>((res, rej) => {
      ready = res;
      notReady = rej;
    });
    this.ready.catch(() => undefined); // observed by start(); never an unhandled rejection
    this.exited = new Promise((res) => {
      this.child.on('exit', (code, signal) => {
        const e = codeError('EXITED', `instance ${name} exited (code ${code}, signal ${signal})`);
        notReady(e);
        for (const w of this.waiting.values()) {
          clearTimeout(w.timer);
          w.reject(codeError('EXITED', `${name}.${w.op}: instance exited (code ${code}, signal ${signal})`));
        }
        this.waiting.clear();
        res({ code, signal });
      });
    });
    this.child.on('error', () => undefined); // a send to a dead child; the exit handler reports it
    this.child.on('message', (m: Reply) => {
      if (m.id === 0) return ready();
      const w = this.waiting.get(m.id);
      if (!w) return; // answered after its deadline
      this.waiting.delete(m.id);
      clearTimeout(w.timer);
      if (m.error) w.reject(codeError(m.error.code, `${name}.${w.op}: ${m.error.message}`));
      else w.resolve(m.value);
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Run `op(...args)` in the instance (an InstanceOp, or init / peers / close); rejects with the
   * instance's error code, or E_TIMEOUT / EXITED.
   */
  call<T = unknown>(op: string, args: unknown[] = [], timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
    if (!this.alive || !this.child.connected)
      return Promise.reject(codeError('EXITED', `${this.name}.${op}: instance not running`));
    const id = this.seq++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(
          codeError('E_TIMEOUT', `${this.name}.${op}(${JSON.stringify(args)}): no answer in ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.waiting.set(id, { op, resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.send({ id, op, args });
    });
  }

  /** SIGKILL (or `signal`) and wait for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.alive) this.child.kill(signal);
    await bounded(this.exited, CLOSE_TIMEOUT_MS, `${this.name}: exit after ${signal}`);
  }

  /** Close the instance (driver unload, kernel close), else SIGKILL it; bounded either way. */
  async close(): Promise<void> {
    let closed = false;
    if (this.alive && this.child.connected)
      closed = await this.call('close', [], CLOSE_TIMEOUT_MS).then(
        () => true,
        () => false,
      );
    if (closed && this.alive)
      await bounded(this.exited, CLOSE_TIMEOUT_MS, `${this.name}: exit`).catch(() => undefined);
    if (this.alive) await this.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const everyRemote = new Set<Remote>();
// Last resort if a run ends without `close()` (the children also exit when the IPC channel closes).
process.on('exit', () => {
  for (const r of everyRemote) if (r.alive) r.child.kill('SIGKILL');
});

/**
 * Instance settings (ws-instance.ts `init`); defaults: heartbeat 100 ms × 5 missed beats, ack deadline
 * 1000 ms, lease 500 ms (a dead instance is noticed fast), prefault 1.
 */
export interface InstanceOptions {
  missedBeats?: number;
  ackTimeoutMs?: number;
  leaseMs?: number;
  prefault?: number;
}

export interface WsCluster {
  readonly nodes: Remote[];
  /** Fork the processes, init every instance, connect each to every other one, wait for the links. */
  start(opts?: InstanceOptions): Promise<void>;
  /** End every instance process (also those a test killed or that never started). */
  close(): Promise<void>;
}

/**
 * Fork one instance process per name, synchronously: assign the result before awaiting `start()`,
 * so that `after(() => cluster.close())` ends the processes even when the start fails.
 */
export function wsCluster(names: string[]): WsCluster {
  const nodes = names.map((n) => new Remote(n, mkdtempSync(join(tmpdir(), `xpmesh-ws-${n}-`))));
  for (const r of nodes) everyRemote.add(r);
  return {
    nodes,
    async start(opts = {}) {
      await bounded(
        Promise.all(nodes.map((r) => r.ready)),
        START_TIMEOUT_MS,
        `instance processes ${names.join(', ')} ready`,
      );
      const urls = await Promise.all(nodes.map((r) => r.call<string>('init', [{ name: r.name, ...opts }])));
      await Promise.all(
        nodes.map((r, i) =>
          r.call('peers', [nodes.flatMap((o, j) => (j === i ? [] : [{ node: o.name, url: urls[j] }]))]),
        ),
      );
    },
    async close() {
      await Promise.all(nodes.map((r) => r.close()));
      for (const r of nodes) everyRemote.delete(r);
    },
  };
}

/** The ScenarioInstance of an instance process: each operation one bounded IPC call. */
export function remoteInstance(r: Remote): ScenarioInstance {
  const out: Record<string, unknown> = { name: r.name };
  for (const op of INSTANCE_OPS) out[op] = (...args: unknown[]) => r.call(op satisfies InstanceOp, args);
  return out as unknown as ScenarioInstance;
}

/**
 * The scenario suite's cluster (scenario-cluster.ts) over ws: three instance processes. Failure
 * detection is generous (heartbeat 100 ms × 30 missed beats, ack deadline 3 s, lease 2 s): nothing in
 * the scenarios needs a death noticed fast, and a loaded CI machine must not fence a live instance.
 * Every child is ended if the start fails.
 */
export async function openWsCluster(): Promise<ScenarioCluster> {
  const cluster = wsCluster(SCENARIO_NODES);
  try {
    await cluster.start({ missedBeats: 30, ackTimeoutMs: 3000, leaseMs: 2000 });
  } catch (e) {
    await cluster.close();
    throw e;
  }
  return {
    nodes: cluster.nodes.map(remoteInstance),
    async kill(name) {
      const r = cluster.nodes.find((n) => n.name === name);
      if (!r) throw new Error(`no instance ${name}`);
      await r.kill('SIGKILL');
    },
    close: () => cluster.close(),
  };
}
