/**
 * Harness of the ws tests: instances (kernel + driver + ws PeerNetwork) as separate OS processes
 * (ws-instance.js), one per instance, connected to each other over ws on 127.0.0.1 and driven by the
 * test over the child_process IPC channel. Every call is bounded (a clear error names the instance
 * and the operation), and `close()` ends every child — politely, then with SIGKILL — even when a
 * test failed half-way; a child whose parent goes away exits by itself (ws-instance.ts).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PAGE_SIZE } from '@xpmesh/kernel';

const script = new URL('./ws-instance.js', import.meta.url).pathname;
/** Default bound of one call; generous (fences wait out a lease), but a hang fails with a message. */
export const CALL_TIMEOUT_MS = 30_000;
const START_TIMEOUT_MS = 20_000;
const CLOSE_TIMEOUT_MS = 5_000;

type Reply = { id: number; value?: unknown; error?: { code: string; message: string } };
type Waiter = {
  op: string;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout;
};

function codeError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** Rejects with a message naming `what` when `p` does not settle within `ms`. */
export function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(codeError('E_TIMEOUT', `${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

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

  /** Run `op` in the instance; rejects with the instance's error code, or E_TIMEOUT / EXITED. */
  call<T = unknown>(op: string, args: Record<string, unknown> = {}, timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
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
      this.child.send({ id, op, ...args });
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
      closed = await this.call('close', {}, CLOSE_TIMEOUT_MS).then(
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
      const urls = await Promise.all(nodes.map((r) => r.call<string>('init', { name: r.name, ...opts })));
      await Promise.all(
        nodes.map((r, i) =>
          r.call('peers', {
            peers: nodes.flatMap((o, j) => (j === i ? [] : [{ node: o.name, url: urls[j] }])),
          }),
        ),
      );
    },
    async close() {
      await Promise.all(nodes.map((r) => r.close()));
      for (const r of nodes) everyRemote.delete(r);
    },
  };
}

export async function expectCode(p: Promise<unknown>, code: string, what?: string): Promise<void> {
  await assert.rejects(p, (e: { code?: string }) => {
    assert.equal(e.code, code, `${what ? `${what}: ` : ''}${String(e)}`);
    return true;
  });
}

/** A process on `r` with `pages` pages, word 0 of page i = base + i, exported with `mode`. */
export async function source(r: Remote, pages: number, opts: { mode?: number; base?: number } = {}) {
  const pid = await r.call<number>('spawn');
  const va = await r.call<number>('mmap', { pid, len: pages * PAGE_SIZE });
  const base = opts.base ?? 0x100;
  await r.call('writeWords', { pid, addr: va, values: Array.from({ length: pages }, (_, i) => base + i) });
  const segid = await r.call<string>('make', { pid, va, size: pages * PAGE_SIZE, mode: opts.mode ?? 0o600 });
  return { pid, va, segid };
}

/** get + attach of the first `pages` pages of `segid` on `r`, by `pid` or a new process. */
export async function attach(r: Remote, segid: string, access: 'r' | 'rw', pages: number, pid?: number) {
  const p = pid ?? (await r.call<number>('spawn'));
  const apid = await r.call<string>('get', { pid: p, segid, access });
  const va = await r.call<number>('attach', { pid: p, apid, offset: 0, size: pages * PAGE_SIZE });
  return { pid: p, apid, va };
}

/** The `status` op's answer (driver status + kernel figures + what the instance recorded). */
export interface Status {
  segments: Array<{ segid: string; pid: number; permits: number }>;
  grants: Array<{ apid: string; pid: number; segid: string; access: string }>;
  attachments: Array<{ pid: number; vaddr: number; apid: string; segid: string; local: boolean }>;
  rmap: { entries: number; frames: number };
  cachedPages: number;
  counters: { pins: number; unpins: number; lostDirtyPages: number; fences: number; [k: string]: unknown };
  lost: unknown[];
  fences: unknown[];
  kernel: { frames: number; freeFrames: number; processes: number; pins: number; driverFrames: number };
}

export interface RmapEntryView {
  pfn: number;
  segid: string;
  page: number;
  node: string;
  write: boolean;
}
