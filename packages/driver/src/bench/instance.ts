/**
 * One benchmark instance (a kernel, the xpmem driver, a ws PeerNetwork on 127.0.0.1), either in this
 * process (LocalInstance) or in a child process (RemoteInstance, driven over the IPC channel by
 * peer-process.ts). Both have the same async interface, so every driver path is measured with the
 * instances in one process and in separate processes by the same code.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as instance from '@xpmesh/kernel';
import { createWsPeerNetwork, type TransportPeerNetwork } from '@xpmesh/protocol';
import { createXpmemDriver, type XpmemDriver } from '../index.js';

export const PROGRAMS = fileURLToPath(new URL('./programs.js', import.meta.url));

export const PAGE = 4096;
const KEY = 'bench-cluster-key-0123456789abcdef';

export interface InstanceOptions {
  name: string;
  frames: number;
  /** Pages one remote fault maps (1..64). */
  prefault: number;
  swapSlots?: number;
}

export interface Inst {
  readonly name: string;
  readonly address: string;
  /** Add peers and wait until every session is up. */
  connect(peers: Array<{ node: string; url: string }>): Promise<void>;
  /** A new process with `pages` written pages, exported (mode 0600). Returns the segid. */
  exportSeg(pages: number): Promise<string>;
  /** A new process attaching `pages` of `segid`; reads them all first if `prefault`. Returns a key. */
  attach(segid: string, pages: number, access: 'r' | 'rw', prefault: boolean): Promise<number>;
  /** Reads one word of every `stride`-th page of an attachment (re-faults what was invalidated). */
  readAll(key: number, stride?: number): Promise<void>;
  /** Process CPU time so far (user + system, µs, every thread of the process). */
  cpu(): Promise<number>;
  close(): Promise<void>;
}

export const cpuNow = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

export class LocalInstance implements Inst {
  readonly segs = new Map<string, { p: instance.Process; va: number; pages: number }>();
  readonly atts = new Map<number, { q: instance.Process; va: number; pages: number }>();
  private nextKey = 1;
  private constructor(
    readonly name: string,
    readonly kernel: instance.Kernel,
    readonly driver: XpmemDriver,
    readonly net: TransportPeerNetwork,
  ) {}

  static async create(o: InstanceOptions): Promise<LocalInstance> {
    const net = await createWsPeerNetwork({
      self: o.name,
      clusterKey: KEY,
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatMs: 1000,
    });
    const kernel = await instance.createKernel({ name: o.name, frames: o.frames, swapSlots: o.swapSlots });
    const driver = createXpmemDriver({ net, ackTimeoutMs: 10_000, prefault: o.prefault });
    await kernel.loadModule(driver);
    return new LocalInstance(o.name, kernel, driver, net);
  }

  get address(): string {
    return this.net.address as string;
  }

  async connect(peers: Array<{ node: string; url: string }>): Promise<void> {
    for (const p of peers) this.net.addPeer(p);
    for (const p of peers) await this.net.waitUp(p.node, 20_000);
  }

  async exportSeg(pages: number): Promise<string> {
    const p = await this.kernel.spawn({ catchSignals: true });
    const va = await p.mmap(pages * PAGE, 3);
    await p.run(PROGRAMS, 'fill', { addr: va, count: pages });
    const segid = await this.driver.make(p.pid, va, pages * PAGE, 0o600);
    this.segs.set(segid, { p, va, pages });
    return segid;
  }

  async attach(segid: string, pages: number, access: 'r' | 'rw', prefault: boolean): Promise<number> {
    const q = await this.kernel.spawn({ catchSignals: true });
    const apid = await this.driver.get(q.pid, segid, access);
    const va = await this.driver.attach(q.pid, apid, 0, pages * PAGE);
    const key = this.nextKey++;
    this.atts.set(key, { q, va, pages });
    if (prefault) await this.readAll(key);
    return key;
  }

  async readAll(key: number, stride = 1): Promise<void> {
    const a = this.atts.get(key)!;
    await a.q.run(PROGRAMS, 'touch', { addr: a.va, count: a.pages, stride });
  }

  async cpu(): Promise<number> {
    return cpuNow();
  }

  async close(): Promise<void> {
    await this.driver.unload().catch(() => undefined);
    await this.kernel.close().catch(() => undefined);
    await this.net.close().catch(() => undefined);
  }
}

/** An instance in a child process (peer-process.ts), or that child's raw echo server. */
export class RemoteInstance implements Inst {
  private nextId = 1;
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  address = '';
  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    child.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: string }) => {
      const c = this.calls.get(m.id);
      if (!c) return;
      this.calls.delete(m.id);
      if (m.ok) c.resolve(m.value);
      else c.reject(new Error(`${name}: ${m.error}`));
    });
    child.on('exit', (code) => {
      for (const c of this.calls.values()) c.reject(new Error(`${name}: child exited ${code}`));
      this.calls.clear();
    });
  }

  /** Starts a child process; `create` makes it an instance (else it only serves raw baselines). */
  static async spawn(name: string, create?: InstanceOptions): Promise<RemoteInstance> {
    const child = fork(new URL('./peer-process.js', import.meta.url), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const r = new RemoteInstance(name, child);
    if (create) r.address = (await r.call('create', create)) as string;
    return r;
  }

  call(op: string, args?: unknown): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.child.send({ id, op, args });
    });
  }

  /** Starts the child's raw echo server (raw.ts); returns its port. */
  async rawServer(): Promise<number> {
    return (await this.call('raw')) as number;
  }

  async connect(peers: Array<{ node: string; url: string }>): Promise<void> {
    await this.call('connect', peers);
  }
  async exportSeg(pages: number): Promise<string> {
    return (await this.call('exportSeg', pages)) as string;
  }
  async attach(segid: string, pages: number, access: 'r' | 'rw', prefault: boolean): Promise<number> {
    return (await this.call('attach', { segid, pages, access, prefault })) as number;
  }
  async readAll(key: number, stride = 1): Promise<void> {
    await this.call('readAll', { key, stride });
  }
  async cpu(): Promise<number> {
    return (await this.call('cpu')) as number;
  }
  async close(): Promise<void> {
    await this.call('close').catch(() => undefined);
    if (this.child.exitCode === null) {
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          this.child.kill('SIGKILL');
          r();
        }, 10_000);
        this.child.once('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}
