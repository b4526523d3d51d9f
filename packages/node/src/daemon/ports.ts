/**
 * What the daemon needs from the layers below, stated structurally. The real kernel, peer network
 * and driver satisfy these (boot.ts wires them); keeping the daemon's view this small means the
 * admin API and its tests depend on behaviour, not on the layers' internals.
 * Every method may be sync or async: the daemon awaits all of them.
 */
import type { EventEmitter } from 'node:events';
import type { DriverStatus, PageStateView } from '@xpmesh/driver';
import type { KernelStats, PageInfo } from '@xpmesh/kernel';

type MaybePromise<T> = T | Promise<T>;

export interface ProcessPort {
  readonly pid: number;
  /** Optional descriptive parts (the real kernel's Process has them): /status shows them. */
  readonly name?: string;
  readonly kmm?: { readonly uid: number; readonly gid: number; readonly exiting?: boolean };
  readonly exited?: Promise<{ code: number; signal?: string }>;
  mmap(len: number, prot: number, addr?: number): MaybePromise<number>;
  munmap(addr: number, len: number): MaybePromise<unknown>;
  fork(): MaybePromise<ProcessPort>;
  exit(code?: number): MaybePromise<unknown>;
  read(addr: number, len: number): MaybePromise<Uint8Array>;
  write(addr: number, bytes: Uint8Array): MaybePromise<unknown>;
}

export interface KernelPort {
  spawn(opts: { uid: number; gid: number; name: string; catchSignals: boolean }): MaybePromise<ProcessPort>;
  process(pid: number): ProcessPort | undefined;
  processes(): Iterable<ProcessPort> | ProcessPort[];
  reclaimPage(pfn: number): MaybePromise<unknown>;
  /** LRU reclaim of up to nrPages pages, bounded (the admin `pressure` operation). */
  shrink?(
    nrPages: number,
    limits: { budgetMs?: number; concurrency?: number; batches?: number },
  ): MaybePromise<{
    scanned: number;
    reclaimed: number;
    outcomes: Record<string, number>;
    stoppedBy: string;
  }>;
  migratePage(pfn: number): MaybePromise<unknown>;
  pfnOf(pid: number, vaddr: number): number | undefined;
  pageInfo(pfn: number): PageInfo;
  /** Every invariant violation the checker finds (empty when all hold). */
  violations(): string[];
  stats(): KernelStats;
  close(): MaybePromise<unknown>;
}

export interface DriverPort {
  make(pid: number, vaddr: number, size: number, mode: number): MaybePromise<string>;
  remove(segid: string): MaybePromise<unknown>;
  get(pid: number, segid: string, access: 'r' | 'rw'): MaybePromise<string>;
  release(pid: number, apid: string): MaybePromise<unknown>;
  attach(pid: number, apid: string, offset: number, size: number, vaddr?: number): MaybePromise<number>;
  detach(pid: number, vaddr: number): MaybePromise<unknown>;
  status(): DriverStatus;
  pageStates(segid: string): PageStateView[];
  /** 'message' (MessageEvent), 'page-state', 'fence', 'lost-dirty': the driver's exported event types. */
  readonly events: EventEmitter;
  unload?(): Promise<void>;
}

export interface PeerStatusPort {
  readonly node: string;
  readonly epoch: number;
  readonly state: string;
  readonly lastSeenMs: number;
  readonly outstanding: number;
}

export interface NetPort {
  status(): PeerStatusPort[];
  /** Cumulative counters of the network (per message type; refusals of peers and frames). */
  metrics?(): {
    byType: Record<string, { msgsIn: number; bytesIn: number; msgsOut: number; bytesOut: number }>;
    authFailures?: number;
    handshakeFailures?: number;
    versionFailures?: number;
    staleRefused?: number;
    peersRefused?: number;
    peersEvicted?: number;
    pendingRefused?: number;
    abuseCloses?: number;
    idCollisions?: number;
    rejected?: Record<string, number>;
  };
  on(event: 'up' | 'down', listener: (...args: never[]) => void): void;
  close(): Promise<void>;
}
