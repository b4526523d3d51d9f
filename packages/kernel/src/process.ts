/**
 * Processes: one worker thread each, with an mm. This is the kernel-side handle: system calls,
 * main-thread-driven accesses (executed inside the worker, through the page table), programs, exit.
 */
import { Worker } from 'node:worker_threads';
import {
  C_FAULT_RESULT,
  C_FAULT_STATE,
  C_KILLED,
  C_SEQ,
  CTL_WORDS,
  FAULT_KILLED,
  FAULT_SIGBUS,
} from './access.js';
import { KernelError, type KernelErrorCode, type MmHandle } from './api.js';
import { handleMmFault } from './fault.js';
import { copyMm } from './fork.js';
import type { Kernel } from './kernel.js';
import { Mm } from './mm.js';
import { bindHandle } from './mmu-notifier.js';
import { PG_pagetable } from './page.js';
import type { ToKernel, ToProcess } from './process-messages.js';
import { doMmap, doMprotect, doMunmap, exitMmap } from './syscalls.js';

export interface SpawnOptions {
  uid?: number;
  gid?: number;
  name?: string;
  /** Deliver SIGSEGV/SIGBUS of main-driven accesses as rejections only (the process survives). */
  catchSignals?: boolean;
}

export interface ExitStatus {
  code: number;
  signal?: 'SIGSEGV' | 'SIGBUS' | 'SIGKILL';
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
type OpRequest = DistributiveOmit<Extract<ToProcess, { t: 'op' }>, 'id' | 't'>;

const SIGNO = { SIGSEGV: 11, SIGBUS: 7, SIGKILL: 9 } as const;

export class Process {
  readonly pid: number;
  readonly name: string;
  readonly exited: Promise<ExitStatus>;
  /** Resolves once the worker is gone (no access of this process can be in flight any more). */
  readonly terminated: Promise<void>;
  private resolveTerminated!: () => void;
  exitStatus: ExitStatus | null = null;
  private resolveExit!: (s: ExitStatus) => void;
  private readonly ops = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private nextOp = 1;
  private exiting: Promise<ExitStatus> | null = null;
  readonly catchSignals: boolean;

  private constructor(
    private readonly k: Kernel,
    readonly kmm: Mm,
    private readonly worker: Worker,
    readonly ctl: Int32Array,
    opts: SpawnOptions,
  ) {
    this.pid = kmm.pid;
    this.name = opts.name ?? `proc${this.pid}`;
    this.catchSignals = opts.catchSignals ?? false;
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
    this.terminated = new Promise((r) => {
      this.resolveTerminated = r;
    });
  }

  get mm(): MmHandle {
    return this.kmm.handle;
  }

  /** Create a process: an empty mm and a worker running process-worker.js. */
  static async spawn(
    k: Kernel,
    opts: SpawnOptions = {},
    setup?: (mm: Mm) => Promise<void>,
  ): Promise<Process> {
    if (k.closed) throw new KernelError('ESRCH', 'kernel closed');
    const root = k.phys.allocFrame();
    if (root < 0) throw new KernelError('ENOMEM', 'no frame for a page table');
    k.phys.setFlag(root, PG_pagetable);
    const pid = k.nextPid++;
    const mm = new Mm(pid, opts.uid ?? 1000, opts.gid ?? 1000, root);
    bindHandle(mm);
    k.mms.set(mm.id, mm);
    if (setup) {
      try {
        await setup(mm);
      } catch (e) {
        mm.exiting = true;
        await exitMmap(k, mm);
        throw e;
      }
    }
    const ctlSab = new SharedArrayBuffer(CTL_WORDS * 4);
    const ctl = new Int32Array(ctlSab);
    const worker = new Worker(new URL('./process-worker.js', import.meta.url), {
      workerData: {
        mem: k.phys.mem,
        ctl: ctlSab,
        root,
        pid,
        faultTimeoutMs: k.timeouts.faultTimeoutMs,
        desc: k.phys.descSab,
        leases: k.leases.sab,
      },
      name: opts.name ?? `xpmesh-${k.name}-pid${pid}`,
    });
    const p = new Process(k, mm, worker, ctl, opts);
    mm.ctl = ctl;
    k.procs.set(pid, p);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new KernelError('ETIMEDOUT', 'process worker did not start')),
        10_000,
      );
      worker.once('message', (m: ToKernel) => {
        clearTimeout(t);
        if (m.t === 'ready') resolve();
        else reject(new Error(`unexpected first message ${m.t}`));
      });
      worker.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    }).catch(async (e) => {
      await p.exit(1);
      throw e;
    });
    worker.on('message', (m: ToKernel) => p.onMessage(m));
    worker.on('error', (e) => {
      k.logger.warn({ pid, err: String(e) }, 'process worker crashed');
      void p.exit(1);
    });
    worker.on('exit', () => {
      if (!p.exiting) void p.exit(1);
    });
    return p;
  }

  private onMessage(m: ToKernel): void {
    switch (m.t) {
      case 'fault':
        handleMmFault(this.k, this.kmm, m.address, m.write).then(
          (res) => this.resolveFault(res),
          (e) => {
            this.k.logger.error({ pid: this.pid, err: String(e) }, 'fault handler threw');
            this.resolveFault(FAULT_SIGBUS);
          },
        );
        return;
      case 'done': {
        const op = this.ops.get(m.id);
        this.ops.delete(m.id);
        op?.resolve(m.value);
        return;
      }
      case 'err': {
        const op = this.ops.get(m.id);
        this.ops.delete(m.id);
        op?.reject(new KernelError(m.code as KernelErrorCode, m.message));
        if (m.signal && !this.catchSignals)
          void this.exit(128 + SIGNO[m.code as 'SIGSEGV'], m.code as 'SIGSEGV');
        return;
      }
      case 'exit':
        void this.exit(m.code);
        return;
      case 'ready':
        return;
    }
  }

  private resolveFault(res: number): void {
    Atomics.store(this.ctl, C_FAULT_RESULT, res);
    Atomics.store(this.ctl, C_FAULT_STATE, 0);
    Atomics.notify(this.ctl, C_FAULT_STATE);
  }

  private request(op: OpRequest, transfer?: ArrayBuffer[]): Promise<unknown> {
    if (this.exiting) return Promise.reject(new KernelError('ESRCH', `process ${this.pid} has exited`));
    const id = this.nextOp++;
    return new Promise((resolve, reject) => {
      this.ops.set(id, { resolve, reject });
      // `op` is always a fresh literal of the accessors below: complete it in place. Not
      // `{ ...op, t, id }`: on Node 20 an object spread costs ~1 us per call (V8's clone path).
      const m = op as OpRequest & { t: 'op'; id: number };
      m.t = 'op';
      m.id = id;
      this.worker.postMessage(m as ToProcess, transfer ?? []);
    });
  }

  // ---- accesses, executed inside the process through its page table ----------------------------

  read(addr: number, len: number): Promise<Uint8Array> {
    return this.request({ op: 'read', addr, len }) as Promise<Uint8Array>;
  }
  write(addr: number, bytes: Uint8Array): Promise<void> {
    return this.request({ op: 'write', addr, bytes }) as Promise<void>;
  }
  read32(addr: number): Promise<number> {
    return this.request({ op: 'read32', addr }) as Promise<number>;
  }
  write32(addr: number, value: number): Promise<void> {
    return this.request({ op: 'write32', addr, value }) as Promise<void>;
  }
  cas32(addr: number, expect: number, value: number): Promise<number> {
    return this.request({ op: 'cas32', addr, expect, value }) as Promise<number>;
  }
  /** Run `exportName` of the module at `modulePath` (an absolute path to JS) inside the process. */
  run<R = unknown>(modulePath: string, exportName: string, args?: unknown): Promise<R> {
    return this.request({ op: 'run', modulePath, exportName, args }) as Promise<R>;
  }

  // ---- system calls -----------------------------------------------------------------------------

  async mmap(length: number, prot: number, addr?: number): Promise<number> {
    this.alive();
    return doMmap(this.kmm, length, prot, addr);
  }
  async munmap(addr: number, length: number): Promise<void> {
    this.alive();
    await doMunmap(this.k, this.kmm, addr, length);
  }
  async mprotect(addr: number, length: number, prot: number): Promise<void> {
    this.alive();
    await doMprotect(this.k, this.kmm, addr, length, prot);
  }
  async fork(opts: SpawnOptions = {}): Promise<Process> {
    this.alive();
    return Process.spawn(
      this.k,
      { uid: this.kmm.uid, gid: this.kmm.gid, catchSignals: this.catchSignals, ...opts },
      (child) => copyMm(this.k, this.kmm, child),
    );
  }

  private alive(): void {
    if (this.exiting || this.kmm.exiting) throw new KernelError('ESRCH', `process ${this.pid} has exited`);
  }

  /**
   * End the process: stop its worker (pending faults answered "killed"), then exit_mmap (release
   * notifiers, zap, free). Idempotent; resolves with the exit status.
   */
  exit(code = 0, signal?: ExitStatus['signal']): Promise<ExitStatus> {
    if (this.exiting) return this.exiting;
    this.kmm.exiting = true;
    this.exiting = (async () => {
      const ctl = this.ctl;
      Atomics.store(ctl, C_KILLED, 1);
      Atomics.store(ctl, C_FAULT_RESULT, FAULT_KILLED);
      Atomics.store(ctl, C_FAULT_STATE, 0);
      Atomics.notify(ctl, C_FAULT_STATE);
      await this.worker.terminate().catch(() => undefined);
      this.kmm.ctl = null;
      Atomics.notify(ctl, C_SEQ);
      this.resolveTerminated();
      for (const op of this.ops.values()) op.reject(new KernelError('ESRCH', `process ${this.pid} exited`));
      this.ops.clear();
      try {
        await exitMmap(this.k, this.kmm);
      } catch (e) {
        this.k.logger.error({ pid: this.pid, err: String(e) }, 'exit_mmap failed');
        this.k.violations.push(`exit of pid ${this.pid} failed: ${String(e)}`);
      }
      this.k.procs.delete(this.pid);
      this.k.stats.exits++;
      const status: ExitStatus = signal ? { code, signal } : { code };
      this.exitStatus = status;
      this.resolveExit(status);
      return status;
    })();
    return this.exiting;
  }

  /** Killed because it was stuck inside an access past the shootdown deadline. */
  kill(): Promise<ExitStatus> {
    return this.exit(128 + SIGNO.SIGKILL, 'SIGKILL');
  }
}
