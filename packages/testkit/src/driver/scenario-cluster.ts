/**
 * The cluster interface of the driver scenario suite (scenarios.ts): an instance as a test sees it,
 * whatever carries it. Two implementations: `openMemoryCluster` (cluster.ts: real kernels in this
 * process on the protocol's in-memory network) and `openWsCluster` (ws-harness.ts: each instance its
 * own OS process over ws on 127.0.0.1, driven over IPC). Both run the same code for an operation
 * (local-instance.ts) and hand back the same things: results are structured-cloned (what crosses the
 * IPC channel), errors carry only their stable `code` (SIGBUS, SIGSEGV, E_PERM, ...), every call is
 * bounded. Like the protocol's compliance suite (packages/protocol/src/test/compliance.ts).
 */
import assert from 'node:assert/strict';
import type { DriverStatus, PageStateView } from '@xpmesh/driver';

/** What `status()` answers: the driver's status, the events the instance recorded, kernel figures. */
export interface InstanceStatus extends DriverStatus {
  /** `lost-dirty` events (a dirty copy died with its instance). */
  lost: unknown[];
  /** `fence` events (a peer was fenced). */
  fences: unknown[];
  kernel: {
    frames: number;
    freeFrames: number;
    processes: number;
    pins: number;
    driverFrames: number;
    /** Rmap notifiers registered with the kernel (the driver's, while loaded). */
    rmapNotifiers: number;
  };
}

/** One reverse-map entry, with the mapper's node name and the segment id. */
export interface RmapEntryView {
  pfn: number;
  segid: string;
  page: number;
  node: string;
  write: boolean;
}

/**
 * One instance (kernel + xpmem driver + peer network). Processes are named by pid; an access that
 * faults rejects with the signal as code (SIGBUS, SIGSEGV); a driver call rejects with its code.
 */
export interface ScenarioInstance {
  readonly name: string;

  // ---- processes and their accesses
  /** A new process (default uid 1000, gid 1000); its pid. */
  spawn(ids?: { uid?: number; gid?: number }): Promise<number>;
  /** fork(2) of `pid`; the child's pid. */
  fork(pid: number): Promise<number>;
  exit(pid: number): Promise<void>;
  /** Exit every live process; their pids. */
  exitAll(): Promise<number[]>;
  processes(): Promise<number[]>;
  /** An anonymous read-write mapping of `len` bytes; its address. */
  mmap(pid: number, len: number): Promise<number>;
  munmap(pid: number, addr: number, len: number): Promise<void>;
  read32(pid: number, addr: number): Promise<number>;
  write32(pid: number, addr: number, value: number): Promise<void>;
  /** `count` words at addr, addr + stride, ... (default stride: a page), one access after the other. */
  readWords(pid: number, addr: number, count: number, stride?: number): Promise<number[]>;
  /** values[i] at addr + i * stride (default stride: a page), one access after the other. */
  writeWords(pid: number, addr: number, values: number[], stride?: number): Promise<void>;
  read(pid: number, addr: number, len: number): Promise<Uint8Array>;
  write(pid: number, addr: number, bytes: Uint8Array): Promise<void>;
  /** Increment the word at addr `times` times, each by a read + compare-and-swap loop. */
  incr(pid: number, addr: number, times: number): Promise<void>;
  /** The frame mapped at addr in pid, or null. */
  pfnOf(pid: number, addr: number): Promise<number | null>;

  // ---- the driver's user operations (xpmem_make, _get, _attach, _detach, _release, _remove)
  make(pid: number, va: number, size: number, mode: number): Promise<string>;
  get(pid: number, segid: string, access: 'r' | 'rw'): Promise<string>;
  attach(pid: number, apid: string, offset: number, size: number): Promise<number>;
  detach(pid: number, va: number): Promise<void>;
  release(pid: number, apid: string): Promise<void>;
  remove(segid: string): Promise<void>;
  /** Unload the driver module (segments withdrawn, notifiers unregistered). */
  unload(): Promise<void>;
  /** Load the same driver module again. */
  load(): Promise<void>;

  // ---- introspection
  status(): Promise<InstanceStatus>;
  pageStates(segid: string): Promise<PageStateView[]>;
  rmapEntries(): Promise<RmapEntryView[]>;
  /** Frames flagged PG_external_rmap (a scan of every frame). */
  exportedFrames(): Promise<number[]>;
  /** Wait (bounded) until no fence, invalidation or notifier bracket is in flight. */
  quiesce(timeoutMs?: number): Promise<void>;
  /**
   * The driver's invariant violations at quiescence: PG_external_rmap iff in the reverse map, no
   * entry for an instance outside `live`, pins == unpins, nothing in flight, no fence running.
   */
  driverCheck(live: string[]): Promise<string[]>;
  /** The kernel's invariant violations (kernel.violations()). */
  kernelCheck(): Promise<string[]>;
}

/**
 * Every operation of ScenarioInstance, as a total record: the compiler proves that the ws proxy
 * (ws-harness.ts) forwards, and the instance process (ws-instance.ts) accepts, each one — and nothing
 * else.
 */
const OPS: Record<Exclude<keyof ScenarioInstance, 'name'>, true> = {
  spawn: true,
  fork: true,
  exit: true,
  exitAll: true,
  processes: true,
  mmap: true,
  munmap: true,
  read32: true,
  write32: true,
  readWords: true,
  writeWords: true,
  read: true,
  write: true,
  incr: true,
  pfnOf: true,
  make: true,
  get: true,
  attach: true,
  detach: true,
  release: true,
  remove: true,
  unload: true,
  load: true,
  status: true,
  pageStates: true,
  rmapEntries: true,
  exportedFrames: true,
  quiesce: true,
  driverCheck: true,
  kernelCheck: true,
};
export type InstanceOp = keyof typeof OPS;
export const INSTANCE_OPS = Object.keys(OPS) as InstanceOp[];
export const isInstanceOp = (op: string): op is InstanceOp => Object.hasOwn(OPS, op);

export interface ScenarioCluster {
  /** The instances, named 'a', 'b', 'c'. */
  readonly nodes: readonly ScenarioInstance[];
  /**
   * The instance dies without a goodbye and is never heard from again: over ws its process gets
   * SIGKILL (the OS closes its sockets, the peers see them close); in memory its links are cut both
   * ways (the peers see its heartbeats stop). Either way its peers must notice, fence it and revert
   * what only it held. Call nothing on a killed instance.
   */
  kill(name: string): Promise<void>;
  /** End everything (instance processes included), also after a failed test; bounded. */
  close(): Promise<void>;
}

/**
 * The instances of a scenario cluster. Both implementations use generous failure detection (about
 * 3 s without heartbeats, ack deadline 3 s, lease 2 s): a loaded 2-core CI machine may stall a
 * process for seconds, and a fenced live instance would fail the leak check, which asserts that
 * nobody was fenced. Only the last scenario kills an instance, and waits for it to be noticed.
 */
export const SCENARIO_NODES = ['a', 'b', 'c'];

/** Default bound of one call; generous (fences wait out a lease), but a hang fails with a message. */
export const CALL_TIMEOUT_MS = 30_000;

export function codeError(code: string, message: string): Error & { code: string } {
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

export async function expectCode(p: Promise<unknown>, code: string, what?: string): Promise<void> {
  await assert.rejects(p, (e: { code?: string }) => {
    assert.equal(e.code, code, `${what ? `${what}: ` : ''}${String(e)}`);
    return true;
  });
}
