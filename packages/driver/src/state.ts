/**
 * The driver's private state (XPMEM's xpmem_private.h): the records (segments and permits at the
 * home; grants, attachments and the page cache at the attacher), the counters, the peers, and
 * {@link DriverState}, which holds them all together with the helpers that touch nothing but this
 * state (node indices, page-state transitions and their waits, leases, message accounting).
 *
 * Everything else of the driver imports this file and nothing imports back up: driver.ts
 * (xpmem_main.c: load, dispatch, status) builds on it; the home side (home.ts, invalidate.ts,
 * fence.ts, notifiers.ts) and the remote side (attacher.ts) each see only it, and the remote side
 * reaches the home only through {@link HomeSide}.
 */
import { EventEmitter } from 'node:events';
import type { DriverFault, KernelModuleApi, MmHandle, NotifierRegistration } from '@xpmesh/kernel';
import type {
  Access,
  Clock,
  Logger,
  OneWayMessage,
  PageData,
  PeerNetwork,
  PeerSession,
  RequestMessage,
  RequestReplyMap,
} from '@xpmesh/protocol';
import { DEFAULT_LEASE_MS, defaultLeaseMarginMs, silentLogger, TIMING_DEFAULTS } from '@xpmesh/protocol';
import { DriverError, fail } from './errors.js';
import { homeOf } from './ids.js';
import { KeyedMutex } from './mutex.js';
import {
  GRANTABLE,
  IllegalTransition,
  NEXT_INDEX,
  PAGE_STATES,
  type PageEvent,
  type PageState,
} from './page-state.js';
import { ReverseMap } from './rmap.js';

/*
 * Lock ordering in the driver (as mm/rmap.c states the kernel's):
 *
 *   seg.mutex[page]                 (KeyedMutex: one per segment page; grants, local and device
 *                                    faults, detach; held across the awaits of the grant protocol)
 *     -> kernel mmap lock           (taken inside getUserPage, setDeviceEntry, zapDriverRange,
 *                                    installPte ...; never held by the driver across an await)
 *       -> page lock                (lockPage in the grant, around exportPage + the reverse-map entry)
 *
 * - A kernel notifier arrives with the kernel's locks held (invalidateRangeStart under the mmap
 *   lock, the rmap notifier's invalidatePage under the page lock). It never takes seg.mutex: it
 *   marks its pages busy (Segment.enterBracket) and bumps their sequence. A grant holding seg.mutex
 *   waits for brackets (Segment.waitIdle) BEFORE it takes the page lock, and re-checks the sequence
 *   under the page lock (Segment.readRetry); it never waits for a bracket while holding the page lock.
 * - Invalidations of one page are serialised by Segment.waitInvalidations, not by a lock; every such
 *   wait, and every lock wait, is bounded (ack deadline + lease: DriverState.invalidationBoundMs).
 * - seg.mutex of several pages: only a ranged grant (home.ts grantRange) holds more than one, and it
 *   takes them in ascending page order (all at once when none is held: KeyedMutex.runAll); every
 *   other path holds one page's mutex at a time, so no cycle can form.
 * - Page locks of frames the driver holds no reference to are only ever tried (trylockPage, see
 *   unexport.ts), never slept on: the frame may be freed and reused meanwhile.
 */

/** Home device-entry mode of a page: none set, 'readonly', 'none'. */
export const DEV_CLEAR = 0;
export const DEV_READONLY = 1;
export const DEV_NONE = 2;

/**
 * What a segment's per-page synchronisation needs from its driver: time, the bound of an
 * invalidation, a log and two counters' home, and the events to report page-state changes on.
 */
export interface SegmentEnv {
  readonly clock: Clock;
  readonly log: Logger;
  readonly events: EventEmitter;
  readonly counters: { serializedInvalidations: number };
  /** Longest an invalidation can take (ack deadline, then the lease wait of a fence). */
  readonly invalidationBoundMs: number;
}

/**
 * A segment exported by this instance (xpmem_make), with the per-page state of the home's
 * directory and the page's own synchronisation: its coherence state (page-state.ts: the one
 * transition table), the invalidations and notifier brackets in flight on it, its sequence number
 * and the waits on them. Grants ask {@link Segment.mayGrant}, which asks the table.
 */
export class Segment {
  readonly npages: number;
  /** PageState index per page. */
  readonly state: Uint8Array;
  /** Version of the page's data at the home: bumped on every completed write-back. */
  readonly version: Float64Array;
  /** Frame the directory last resolved for the page, -1 if unknown. */
  readonly pfn: Int32Array;
  /** Bumped by every invalidation that touches the page (our page-granular mmu_interval seq). */
  readonly gen: Uint32Array;
  /** Invalidations of the page in flight (> 0 exactly while the page is 'invalidating'). */
  readonly inval: Uint16Array;
  /**
   * Kernel notifier brackets (per-mm range or rmap invalidatePage) working on the page; no grant
   * while > 0. Wider than `inval`: it also covers the bookkeeping after the acks (source PTE, frame
   * number), so a grant can never interleave with it.
   */
  readonly busy: Uint16Array;
  /** Device-entry mode currently installed in the source PTE (DEV_*). */
  readonly dev: Uint8Array;
  readonly mutex = new KeyedMutex<number>();
  /** Grants and local maps waiting for the page to become grantable (see waitIdle). */
  readonly idle = new Map<number, Array<() => void>>();
  /** Invalidations waiting for the one in flight on the page to end (see waitInvalidations). */
  readonly invalDone = new Map<number, Array<() => void>>();
  /** Instances (node index) that hold or held a permit: they get segment-gone. */
  readonly permitNodes = new Set<string>();
  removed = false;

  constructor(
    readonly segid: string,
    readonly slot: number,
    readonly mm: MmHandle,
    readonly vaddr: number,
    readonly size: number,
    readonly mode: number,
    pageSize: number,
    private readonly env: SegmentEnv,
  ) {
    this.npages = size / pageSize;
    this.state = new Uint8Array(this.npages);
    this.version = new Float64Array(this.npages);
    this.pfn = new Int32Array(this.npages).fill(-1);
    this.gen = new Uint32Array(this.npages);
    this.inval = new Uint16Array(this.npages);
    this.busy = new Uint16Array(this.npages);
    this.dev = new Uint8Array(this.npages);
  }

  pageState(p: number): PageState {
    return PAGE_STATES[this.state[p]];
  }

  /** Apply a page-state event (the only way a page's state changes). */
  transition(p: number, event: PageEvent): void {
    this.step(p, event, this.env.events.listenerCount('page-state') > 0);
  }

  /**
   * transition(p, event), with the listener check made by the caller (`emit`: some 'page-state'
   * listener is registered): a run of pages asks once, not once per page (issue 15: EventEmitter
   * listenerCount was a call per page, twice per page of an invalidation). Nothing a run calls
   * between its check and its last step adds a listener (no listener runs when there is none; the
   * wake-ups only resolve promises), so the answer holds for the whole run.
   */
  private step(p: number, event: PageEvent, emit: boolean): void {
    const fromI = this.state[p];
    const toI = NEXT_INDEX[event][fromI];
    if (toI < 0) throw new IllegalTransition(PAGE_STATES[fromI], event);
    if (toI === fromI) return;
    this.state[p] = toI;
    // the event object is built only for listeners (a 1024-page invalidation makes 2048 of them)
    if (emit) {
      const from = PAGE_STATES[fromI];
      const to = PAGE_STATES[toI];
      this.env.events.emit('page-state', {
        segid: this.segid,
        page: p,
        from,
        to,
        event,
      } satisfies PageStateEvent);
    }
  }

  // ---- grants: mainline's mmu_interval_read_begin / read_retry, per page -------------------------

  /**
   * A copy of page `p` may be granted now: its state has a grant edge in the table (it is not
   * 'invalidating') and no notifier bracket holds it.
   */
  mayGrant(p: number): boolean {
    return GRANTABLE[this.state[p]] === 1 && this.busy[p] === 0;
  }

  /** The page's sequence number, read before a grant resolves the page (mmu_interval_read_begin). */
  readBegin(p: number): number {
    return this.gen[p];
  }

  /** True if an invalidation touched the page since `readBegin`, or it cannot be granted now. */
  readRetry(p: number, seq: number): boolean {
    return this.gen[p] !== seq || !this.mayGrant(p);
  }

  /** An invalidation (or teardown) touches the page: a grant in progress retries. */
  bumpSeq(p: number): void {
    this.gen[p]++;
  }

  // ---- invalidations and notifier brackets --------------------------------------------------------

  /** An invalidation of the page is in flight. */
  invalidating(p: number): boolean {
    return this.inval[p] > 0;
  }

  /** invalidate messages for the page are about to be sent. */
  beginInvalidation(p: number): void {
    this.inval[p]++;
    this.transition(p, 'invalidate-begin');
  }

  /** beginInvalidation of every page of `pages`, in order (one listener check: see step). */
  beginInvalidations(pages: readonly number[]): void {
    const emit = this.env.events.listenerCount('page-state') > 0;
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i];
      this.inval[p]++;
      this.step(p, 'invalidate-begin', emit);
    }
  }

  /**
   * An invalidation of the page completed (every ack in, or the mapper fenced); `copiesLeft`: a
   * former writer kept a read copy. The last one to end wakes the page's waiters.
   */
  endInvalidation(p: number, copiesLeft: boolean): void {
    this.endOne(p, copiesLeft, this.env.events.listenerCount('page-state') > 0);
  }

  /**
   * endInvalidation of every page of `pages`, in order; `copiesLeft[i]` non-zero: a copy of
   * pages[i] is left (one listener check for the run: see step).
   */
  endInvalidations(pages: readonly number[], copiesLeft: Uint8Array): void {
    const emit = this.env.events.listenerCount('page-state') > 0;
    for (let i = 0; i < pages.length; i++) this.endOne(pages[i], copiesLeft[i] !== 0, emit);
  }

  private endOne(p: number, copiesLeft: boolean, emit: boolean): void {
    this.inval[p]--;
    if (this.inval[p] === 0) {
      this.step(p, copiesLeft ? 'downgrade-end' : 'invalidate-end', emit);
      this.wakeInvalidations(p);
      this.wakeIdle(p);
    }
  }

  /** A kernel notifier starts working on the page: no grant until it leaves. */
  enterBracket(p: number): void {
    this.busy[p]++;
  }

  leaveBracket(p: number): void {
    this.busy[p]--;
    this.wakeIdle(p);
  }

  /** Wait (bounded) until the page may be granted (no invalidation, no notifier bracket). */
  async waitIdle(p: number): Promise<void> {
    const deadline = this.env.invalidationBoundMs * 3 + 1000;
    const clock = this.env.clock;
    while (!this.mayGrant(p)) {
      await new Promise<void>((resolve, reject) => {
        const list = this.idle.get(p) ?? [];
        this.idle.set(p, list);
        const t = clock.setTimeout(
          () => reject(new DriverError('E_BUSY', 'invalidation did not end')),
          deadline,
        );
        list.push(() => {
          clock.clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /**
   * Wait (bounded) until no invalidation of any of `pages` is in flight. Invalidations of one page
   * are serialised: two in flight to the same mapper would race their acks (the mapper answers the
   * second one "nothing here" once the first took the copy, and that empty ack may be processed
   * first, removing the entry the dirty data of the other ack still needs). The in-flight one is
   * itself bounded (ack deadline, then fence and lease), so this wait is too; past the bound it
   * logs and goes on rather than hang a notifier.
   */
  async waitInvalidations(pages: readonly number[]): Promise<void> {
    const clock = this.env.clock;
    const deadline = clock.now() + this.env.invalidationBoundMs * 3 + 1000;
    let waited = false;
    for (;;) {
      const p = pages.find((q) => this.inval[q] > 0);
      if (p === undefined) break;
      const left = deadline - clock.now();
      if (left <= 0) {
        this.env.log.error(
          { segid: this.segid, page: p },
          'xpmem: earlier invalidation did not end in its bound',
        );
        break;
      }
      waited = true;
      await new Promise<void>((resolve) => {
        const list = this.invalDone.get(p) ?? [];
        this.invalDone.set(p, list);
        const t = clock.setTimeout(resolve, left);
        list.push(() => {
          clock.clearTimeout(t);
          resolve();
        });
      });
    }
    if (waited) this.env.counters.serializedInvalidations++;
  }

  /** The last invalidation of the page ended: wake the invalidations waiting for it. */
  private wakeInvalidations(p: number): void {
    if (this.invalDone.size === 0) return;
    const list = this.invalDone.get(p);
    if (!list || this.inval[p] > 0) return;
    this.invalDone.delete(p);
    for (const w of list) w();
  }

  private wakeIdle(p: number): void {
    if (this.idle.size === 0) return;
    const list = this.idle.get(p);
    if (!list || !this.mayGrant(p)) return;
    this.idle.delete(p);
    for (const w of list) w();
  }
}

/** A permit granted by this instance (the home) to some instance. */
export interface Permit {
  readonly apid: string;
  readonly slot: number;
  readonly seg: Segment;
  readonly node: string;
  readonly epoch: number;
  readonly access: Access;
}

/** A permit held by a local process (xpmem_get's result), for a local or a remote segment. */
export interface Grant {
  readonly apid: string;
  readonly pid: number;
  readonly segid: string;
  readonly home: string;
  readonly access: Access;
  readonly size: number;
  readonly local: boolean;
  /** The home's session epoch when granted (remote grants). */
  readonly homeEpoch: number;
  /**
   * (issue 17) The home said segment-gone (or its session ended): the home has dropped the permit
   * itself, so releasing it is a local no-op and sends no `release` (docs/protocol.md, release).
   */
  gone?: boolean;
}

/** An attachment: a driver VMA in a local process mapping [offset, offset+size) of a segment. */
export interface Attachment {
  readonly id: number;
  readonly grant: Grant;
  readonly mm: MmHandle;
  readonly vaddr: number;
  readonly size: number;
  /** First segment page mapped by the attachment. */
  readonly firstPage: number;
  readonly npages: number;
  /** What this attachment's PTE holds per page: 0 nothing, 1 read, 2 write. */
  readonly mapped: Uint8Array;
  /** The segment is gone or the home fenced us: next touch is SIGBUS. */
  gone: boolean;
  detached: boolean;
  /** xpmem_detach gave the pages back already (the VMA's close has nothing left to do). */
  released?: boolean;
}

/** A remote segment page cached at this instance (one frame per instance per page). */
export interface CachedPage {
  readonly segid: string;
  readonly home: string;
  readonly page: number;
  pfn: number;
  access: 'r' | 'w';
  version: number;
  /** Grant id of the home's latest grant of this copy (an invalidate with upTo ≥ it covers it). */
  grant: number;
}

/**
 * The attacher's page cache: one copy per (segment, page), indexed by segment id, then page number
 * (an invalidation of n pages looks them up by number, without building n string keys).
 */
export class PageCache {
  private readonly bySeg = new Map<string, Map<number, CachedPage>>();
  private n = 0;

  get size(): number {
    return this.n;
  }

  /** The pages cached for `segid` (a live view: do not change it directly). */
  segment(segid: string): ReadonlyMap<number, CachedPage> | undefined {
    return this.bySeg.get(segid);
  }

  get(segid: string, page: number): CachedPage | undefined {
    return this.bySeg.get(segid)?.get(page);
  }

  has(segid: string, page: number): boolean {
    return this.bySeg.get(segid)?.has(page) ?? false;
  }

  set(c: CachedPage): void {
    let m = this.bySeg.get(c.segid);
    if (!m) {
      m = new Map();
      this.bySeg.set(c.segid, m);
    }
    if (!m.has(c.page)) this.n++;
    m.set(c.page, c);
  }

  delete(segid: string, page: number): boolean {
    const m = this.bySeg.get(segid);
    if (!m?.delete(page)) return false;
    this.n--;
    if (m.size === 0) this.bySeg.delete(segid);
    return true;
  }

  /**
   * delete(segid, p) for every page of `pages` (distinct pages, each cached: the caller just read
   * them). When they are every page the segment has cached (an invalidation of all of it, the usual
   * large one), its map is dropped whole: one operation, not one Map delete per page (issue 15).
   */
  deletePages(segid: string, pages: readonly number[]): void {
    const m = this.bySeg.get(segid);
    if (!m || pages.length === 0) return;
    if (pages.length === m.size) {
      this.n -= m.size;
      this.bySeg.delete(segid);
      return;
    }
    for (let i = 0; i < pages.length; i++) if (m.delete(pages[i])) this.n--;
    if (m.size === 0) this.bySeg.delete(segid);
  }

  /** The segments with cached pages. */
  segids(): IterableIterator<string> {
    return this.bySeg.keys();
  }

  /** Every cached page (a snapshot: the caller may delete while iterating). */
  all(): CachedPage[] {
    const out: CachedPage[] = [];
    for (const m of this.bySeg.values()) for (const c of m.values()) out.push(c);
    return out;
  }
}

/** A map request in flight for a page: invalidations that overtake its reply are recorded here. */
export interface InflightMap {
  /** Highest `upTo` of an invalidate (drop) of the page seen while the request was in flight. */
  dropUpTo: number;
  /** Highest `upTo` of a downgrade of the page seen meanwhile (a write grant arrives as read). */
  downgradeUpTo: number;
}

export interface MmRecord {
  readonly mm: MmHandle;
  readonly segs: Set<Segment>;
  reg?: NotifierRegistration;
}

export interface XpmemDriverOptions {
  net: PeerNetwork;
  logger?: Logger;
  clock?: Clock;
  /** Deadline for an invalidate ack; a mapper that misses it is fenced (default: TIMING_DEFAULTS). */
  ackTimeoutMs?: number;
  /** Deadline for get/map/detach requests to a home (default: TIMING_DEFAULTS). */
  requestTimeoutMs?: number;
  /** Pages fetched by one remote fault (1 = no prefault; default TIMING_DEFAULTS.prefault + 1, max 64). */
  prefault?: number;
  /**
   * Lease on remote copies (default DEFAULT_LEASE_MS; must exceed the heartbeat interval, normally
   * heartbeat × missed beats). An attacher uses a copy only while its lease from the home is valid:
   * renewed by every ping the home's session answers (a lease runs basis + leaseMs). A home that
   * ends a session (fence) waits leaseMs + leaseMarginMs before it treats that instance's copies as
   * gone, so a live but cut-off, slow or paused instance can no longer read or write them by then.
   */
  leaseMs?: number;
  /** Extra wait for clock-rate drift and scheduling (default max(50, leaseMs / 10)). */
  leaseMarginMs?: number;
}

export interface DriverCounters {
  faults: number;
  localFaults: number;
  remoteFaults: number;
  coalescedFaults: number;
  upgrades: number;
  recalls: number;
  homeFaults: number;
  mapsGranted: number;
  invalidationsSent: number;
  invalidationsAcked: number;
  fences: number;
  /** Copies revoked because an invalidation overtook the map-ok that granted them. */
  overtakenGrants: number;
  /** Invalidations that waited for an earlier invalidation of the same page to end first. */
  serializedInvalidations: number;
  /**
   * Requests refused by a security check, by kind (exported as xpmesh_refusals_total{kind}):
   * no_permit (an apid the caller does not hold, or a revoked one), access_denied (a get refused by
   * the mode bits). Counted where the decision is made, so a refusal counts once, at the instance
   * that refused. (A write to a read-only attachment never reaches the driver: the attachment's VMA
   * has no PROT_WRITE and the kernel sends SIGSEGV, counted as kernel driverWriteDenied.)
   */
  refused: { no_permit: number; access_denied: number };
  /** Accesses that found their lease expired and waited for renewal. */
  leaseWaits: number;
  lostDirtyPages: number;
  /**
   * (issue 17) Pages a mapper held for writing but did not return in a write-back ack: the home
   * kept its own data. Normal when the invalidate overtook the grant (the mapper never had the
   * page: see overtakenGrants at the mapper); otherwise the mapper broke its duty and its writes
   * are lost (docs/protocol.md, "A mapper's duties on invalidate").
   */
  writebackWithoutData: number;
  reclaimRefusals: number;
  staleMessages: number;
  pins: number;
  unpins: number;
  segmentGone: number;
  /** Node ids whose per-node state (index, epochs, fencing memory, lease slot) was forgotten. */
  nodesPruned: number;
}

export type MessageEvent = {
  dir: 'in' | 'out';
  type: string;
  peer: string;
  cid?: string;
  latencyMs?: number;
};

/** `events` 'fence': an instance was fenced (its sessions below `epoch + 1` are refused). */
export interface FenceEvent {
  node: string;
  epoch: number;
  why: string;
}

/** `events` 'lost-dirty': a page written by a fenced instance reverted to its last written-back data. */
export interface LostDirtyEvent {
  segid: string;
  page: number;
  node: string;
}

/** `events` 'page-state': one page changed state (emitted only while somebody listens). */
export interface PageStateEvent {
  segid: string;
  page: number;
  from: PageState;
  to: PageState;
  event: PageEvent;
}

/**
 * The home side's entry points that the remote side may call: a same-instance attacher is one more
 * mapper of the home, so its faults are resolved by the home's grant protocol. Nothing else of the
 * home is reachable from attacher.ts (imports.test.ts checks it).
 */
export interface HomeSide {
  /**
   * A same-instance attachment `att` faulted at `address` on page `p` of `seg` (attachment index
   * `index`): map the source frame directly, after resolving remote copies. Returns what was mapped
   * (0 nothing: the access faults again, 1 read, 2 write).
   */
  localFault(
    seg: Segment,
    p: number,
    att: Attachment,
    index: number,
    address: number,
    write: boolean,
  ): Promise<number>;
  /** A home process touched one of our device entries (HMM migrate_to_ram analogue). */
  deviceFault(f: DriverFault): Promise<void>;
}

const MAX_PREFAULT = 64;

/** Node indexes fit the reverse map's Uint16 node field (rmap.ts): 0 .. MAX_NODE_INDEX. */
export const MAX_NODE_INDEX = 0xffff;
/** The per-node tables are swept when they hold more nodes than max(this, 2 × after the last sweep). */
export const NODE_SWEEP_FLOOR = 64;
/** Fencing levels of pruned nodes kept for status (DriverState.forgottenFences). */
export const FORGOTTEN_FENCES_KEPT = 1024;

/** All the driver's state, with the helpers that touch nothing else (see the file comment). */
export class DriverState {
  readonly events = new EventEmitter();
  readonly net: PeerNetwork;
  readonly log: Logger;
  readonly clock: Clock;
  readonly ackTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly prefault: number;
  readonly leaseMs: number;
  readonly leaseMarginMs: number;

  protected k: KernelModuleApi | undefined;
  /** Our device owner id in the kernel (device entries on source PTEs name it). */
  deviceOwner = -1;

  // ---- home side
  readonly segments = new Map<string, Segment>();
  readonly segBySlot = new Map<number, Segment>();
  readonly mms = new Map<number, MmRecord>();
  /** Per-mm notifiers on processes holding permits: their exit releases them (see xpmem-get.ts). */
  readonly exitHooks = new Map<number, NotifierRegistration>();
  readonly permits = new Map<string, Permit>();
  readonly permitBySlot = new Map<number, Permit>();
  /**
   * (issue 17) Permits dropped with their segment (remove, source exit), newest last, at most
   * REMOVED_PERMITS_KEPT (home.ts): a later map or detach with one answers E_NO_SEGMENT (not
   * E_NO_PERMIT) and a release answers ok. Older ones fall back to E_NO_PERMIT.
   */
  readonly removedPermits = new Map<string, { node: string; segid: string }>();
  readonly rmap = new ReverseMap();
  nextSeg = 1;
  nextPermit = 1;
  /** Latest grant id (MapOk.grants, Invalidate.upTo). */
  grantSeq = 0;
  /** Fences whose lease wait is running, by node: callers for the same node share it. */
  readonly fencing = new Map<string, { epoch: number; done: Promise<void> }>();

  // ---- attacher side
  readonly grants = new Map<string, Grant>();
  readonly attachments = new Map<number, Attachment>();
  readonly cache = new PageCache();
  readonly pendingFaults = new Map<string, { access: Access; promise: Promise<void> }>();
  /** Dirty pages given back in a detach the home has not acknowledged yet. */
  readonly detaching = new Map<string, PageData>();
  /**
   * Detach messages not answered yet, by page key: a map request for such a page waits for it, or the
   * home could grant the page first and then drop the new copy when the older detach reaches it.
   */
  readonly detachInFlight = new Map<string, Promise<void>>();
  /** Pages with a map request in flight (invalidations that overtake the reply are noted). */
  readonly inflightMaps = new Map<string, InflightMap>();
  /** Lease slot in the kernel per home instance whose copies we hold. */
  readonly leaseSlot = new Map<string, number>();
  /** Homes whose copies are being revoked: no lease renewal until that is done. */
  readonly leaseHold = new Set<string>();
  /** Waiters for a lease renewal, by home. */
  readonly leaseWaiters = new Map<string, Array<() => void>>();
  nextAttachment = 1;

  // ---- peers (every per-node table below is pruned: see pruneNodes)
  readonly nodeIndex = new Map<string, number>();
  /** Node id by index ('' for a free index: see pruneNodes). */
  readonly nodeNames: string[] = [];
  /** Freed node indexes, freed longest ago first: reused first in, first out. */
  readonly freeNodeIndexes: number[] = [];
  /** Messages from sessions with an epoch below this are refused (the session was fenced). */
  readonly minEpoch = new Map<string, number>();
  readonly epochs = new Map<string, number>();
  /**
   * Requests from a node being handled (dispatch), by node: a grant or detach in flight for the
   * node holds its index across awaits. The counter object lives as long as the node's other
   * per-node state (pruneNodes deletes it at 0).
   */
  readonly nodeDispatches = new Map<string, { n: number }>();
  /** Nodes a prune found busy: tried again when their last request in flight ends. */
  readonly pruneDeferred = new Set<string>();
  /** The per-node tables are swept (pruneNodes of every known node) when they grow past this. */
  nodeSweepAt = NODE_SWEEP_FLOOR;
  /**
   * For status only (`fencedBelow` of a node whose state was pruned: tools read fences from it):
   * the fencing level of the most recently pruned nodes, at most FORGOTTEN_FENCES_KEPT, oldest
   * forgotten first. Never consulted to judge a message (stale() reads minEpoch only).
   */
  readonly forgottenFences = new Map<string, number>();

  readonly counters: DriverCounters = {
    faults: 0,
    localFaults: 0,
    remoteFaults: 0,
    coalescedFaults: 0,
    upgrades: 0,
    recalls: 0,
    homeFaults: 0,
    mapsGranted: 0,
    invalidationsSent: 0,
    invalidationsAcked: 0,
    fences: 0,
    overtakenGrants: 0,
    serializedInvalidations: 0,
    refused: { no_permit: 0, access_denied: 0 },
    leaseWaits: 0,
    lostDirtyPages: 0,
    writebackWithoutData: 0,
    reclaimRefusals: 0,
    staleMessages: 0,
    pins: 0,
    unpins: 0,
    segmentGone: 0,
    nodesPruned: 0,
  };
  private cidSeq = 0;

  /** The home side's entry points for the remote side (wired by driver.ts). */
  homeSide!: HomeSide;

  constructor(opts: XpmemDriverOptions) {
    this.net = opts.net;
    this.log = opts.logger ?? silentLogger;
    this.clock = opts.clock ?? {
      now: () => performance.now(),
      setTimeout,
      clearTimeout: (h) => clearTimeout(h as never),
    };
    // defaults: the one table of timing defaults (@xpmesh/protocol defaults.ts)
    this.ackTimeoutMs = opts.ackTimeoutMs ?? TIMING_DEFAULTS.ackTimeoutMs;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? TIMING_DEFAULTS.requestTimeoutMs;
    this.prefault = Math.max(
      1,
      Math.min(MAX_PREFAULT, Math.floor(opts.prefault ?? TIMING_DEFAULTS.prefault + 1)),
    );
    this.leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
    this.leaseMarginMs = opts.leaseMarginMs ?? defaultLeaseMarginMs(this.leaseMs);
    if (!(this.leaseMs > 0) || !(this.leaseMarginMs >= 0)) fail('EINVAL', 'leaseMs must be > 0');
    this.nodeIdx(this.net.self);
  }

  get self(): string {
    return this.net.self;
  }

  get kernel(): KernelModuleApi {
    if (!this.k) fail('E_NOT_LOADED', 'the xpmem driver is not loaded');
    return this.k;
  }

  get loaded(): boolean {
    return this.k !== undefined;
  }

  // ---- helpers shared by the operation files ---------------------------------------------------

  nodeIdx(node: string): number {
    let i = this.nodeIndex.get(node);
    if (i === undefined) {
      // a freed index first (pruneNodes proves nothing refers to it any more); a new one only while
      // it fits the reverse map's node field: never wrap onto another node's entries
      i = this.freeNodeIndexes.shift();
      if (i === undefined) {
        if (this.nodeNames.length > MAX_NODE_INDEX)
          fail('E_BUSY', `more than ${MAX_NODE_INDEX + 1} instances hold state here`);
        i = this.nodeNames.length;
        this.nodeNames.push(node);
      } else this.nodeNames[i] = node;
      this.nodeIndex.set(node, i);
    }
    return i;
  }

  /** Node ids the driver holds per-node state for (other than itself). */
  knownNodes(): Set<string> {
    const out = new Set<string>();
    for (const m of [this.nodeIndex, this.epochs, this.minEpoch, this.nodeDispatches, this.leaseSlot])
      for (const n of m.keys()) out.add(n);
    out.delete(this.self);
    return out;
  }

  /** How many node ids the per-node tables hold (the largest of them: status, sweep trigger). */
  get nodeTableSize(): number {
    return Math.max(this.nodeIndex.size - 1, this.epochs.size, this.minEpoch.size);
  }

  /**
   * Forgets each of `nodes` whose state here can no longer matter, and frees its node index for
   * reuse: its epochs, fencing memory (minEpoch), index, request counter, lease slot and its name
   * in the segments' permitNodes. Returns how many were forgotten. A node is kept while
   *   - a session of it is up (its messages are judged by epochs and minEpoch);
   *   - a request of it is being handled (nodeDispatches: a grant or a detach holds its index
   *     across awaits: home.ts grantPageLocked/grantRangeLocked/handleDetach run only inside
   *     dispatch of a request from that node);
   *   - it has a fence waiting out its lease (fencing), a lease hold or lease waiters;
   *   - it holds a permit (home side) or a reverse-map entry (rmap: its index);
   *   - this instance holds anything of it as a home (attacher side): a grant or attachment of its
   *     segments, a cached page, a fault, map or detach in flight (they name its segments).
   *
   * Why no freed index can be used for the wrong node (every place that stores an index):
   *   - the reverse map: no entry of the index exists (checked), and entries are only added by a
   *     grant (inside dispatch of the node: checked) for that node's permit;
   *   - grants and detaches hold the index across awaits only inside dispatch (counted);
   *   - invalidatePages (invalidate.ts) takes indexes from reverse-map entries and uses one after an
   *     await only in applyAck, after the node acked: until then the entries it asked about are
   *     still in the reverse map (only applyAck itself, a detach of the node, i.e. a dispatch, or a
   *     fence of that session removes them, and a fence removes them only after its lease wait, a
   *     timer later, while the ack's continuation runs in the turn the ack arrived), so the node is
   *     not prunable while such an invalidation waits; the stale-session fences it starts, and its
   *     error path, name the node (a string), not the index;
   *   - fenceNode reads the index after its lease wait and uses it without awaiting;
   *   - the local instance's own index (0) is never freed.
   *
   * Why forgetting minEpoch readmits nothing (PeerNetwork's contract, docs/protocol.md §7): every
   * epoch the driver fences is one of a session the network accepted, so minEpoch - 1 is at most the
   * node's last accepted epoch; the network admits a new session only with an epoch larger than
   * that (remembered across peer-table eviction in its tombstone, never forgotten), so minEpoch
   * refuses nothing of a session that comes up later; and every session it did refuse is closed
   * (the node is not up) and a closed session delivers nothing more. The network's own 4005 refuses
   * the old session's epoch at the handshake.
   */
  pruneNodes(nodes: Iterable<string>): number {
    const cand = [...nodes].filter((n) => n !== this.self);
    if (cand.length === 0) return 0;
    const held = new Set<string>();
    for (const s of this.net.sessions()) held.add(s.node);
    for (const p of this.permits.values()) held.add(p.node);
    for (const n of this.fencing.keys()) held.add(n);
    for (const n of this.leaseHold) held.add(n);
    for (const n of this.leaseWaiters.keys()) held.add(n);
    for (const [n, c] of this.nodeDispatches) if (c.n > 0) held.add(n);
    const homeOfKey = (k: string) => homeOf(k.slice(0, k.lastIndexOf('#')));
    for (const g of this.grants.values()) if (!g.local) held.add(g.home);
    for (const a of this.attachments.values()) held.add(a.grant.home);
    for (const segid of this.cache.segids()) {
      const h = homeOf(segid);
      if (h !== undefined) held.add(h);
    }
    for (const m of [this.pendingFaults, this.detaching, this.detachInFlight, this.inflightMaps])
      for (const k of m.keys()) {
        const h = homeOfKey(k);
        if (h !== undefined) held.add(h);
      }
    // one scan of the reverse map, and only if a candidate has an index
    const mapped = cand.some((n) => this.nodeIndex.has(n)) ? this.rmap.nodes() : new Set<number>();
    let pruned = 0;
    for (const node of cand) {
      const idx = this.nodeIndex.get(node);
      if (held.has(node) || (idx !== undefined && mapped.has(idx))) {
        // busy with a request: tried again when the last one ends (driver.ts dispatch)
        if (this.nodeDispatches.get(node)?.n) this.pruneDeferred.add(node);
        continue;
      }
      if (
        idx === undefined &&
        !this.epochs.has(node) &&
        !this.minEpoch.has(node) &&
        !this.nodeDispatches.has(node) &&
        !this.leaseSlot.has(node)
      )
        continue; // nothing to forget
      const fencedBelow = this.minEpoch.get(node);
      if (fencedBelow !== undefined) {
        this.forgottenFences.delete(node);
        this.forgottenFences.set(node, fencedBelow);
        if (this.forgottenFences.size > FORGOTTEN_FENCES_KEPT) {
          const oldest = this.forgottenFences.keys().next().value;
          if (oldest !== undefined) this.forgottenFences.delete(oldest);
        }
      }
      this.epochs.delete(node);
      this.minEpoch.delete(node);
      this.nodeDispatches.delete(node);
      this.pruneDeferred.delete(node);
      const slot = this.leaseSlot.get(node);
      if (slot !== undefined) {
        // no attachment of its segments is left, so no PTE carries the slot; the next home to take
        // it sets its lease (leaseSlotOf)
        this.leaseSlot.delete(node);
        if (this.k) this.k.setLease(slot, 0);
      }
      for (const seg of this.segments.values()) seg.permitNodes.delete(node);
      if (idx !== undefined && idx !== 0) {
        this.nodeIndex.delete(node);
        this.nodeNames[idx] = '';
        this.freeNodeIndexes.push(idx);
      }
      this.counters.nodesPruned++;
      pruned++;
    }
    if (pruned > 0) this.log.debug({ pruned, known: this.nodeTableSize }, 'xpmem: per-node state pruned');
    return pruned;
  }

  /**
   * Keeps the per-node tables bounded: once they hold more than max(NODE_SWEEP_FLOOR, 2 × the
   * count after the last sweep) node ids, every known node is tried (pruneNodes). Amortised: a
   * sweep costs O(state) and the next one waits until the tables doubled.
   */
  sweepNodes(): void {
    if (this.nodeTableSize <= this.nodeSweepAt) return;
    this.pruneNodes(this.knownNodes());
    this.nodeSweepAt = Math.max(NODE_SWEEP_FLOOR, 2 * this.nodeTableSize);
  }

  /** Longest an invalidation can take: ack deadline, then the lease wait of a fence. */
  get invalidationBoundMs(): number {
    return this.ackTimeoutMs + this.leaseMs + this.leaseMarginMs;
  }

  /** Count a refusal (see DriverCounters.refused), then throw its error. */
  refuse(kind: keyof DriverCounters['refused'], code: 'E_NO_PERMIT' | 'E_PERM', message: string): never {
    this.counters.refused[kind]++;
    fail(code, message);
  }

  // ---- leases (attacher side) --------------------------------------------------------------------

  /** The kernel lease slot for copies from `home` (allocated on first use), or 0 if none is free. */
  leaseSlotOf(home: string): number {
    let slot = this.leaseSlot.get(home);
    if (slot !== undefined) return slot;
    const k = this.kernel;
    const used = new Set(this.leaseSlot.values());
    slot = 0;
    for (let i = 1; i < k.leaseSlots; i++) {
      if (!used.has(i)) {
        slot = i;
        break;
      }
    }
    if (slot === 0) fail('E_BUSY', 'no free lease slot');
    this.leaseSlot.set(home, slot);
    const age = this.net.leaseAge(home);
    k.setLease(slot, age === undefined ? 0 : this.leaseMs - age);
    return slot;
  }

  /** A ping sent `ageMs` ago was answered by `home`: our copies from it are good for L - ageMs. */
  renewLease(home: string, ageMs: number): void {
    const slot = this.leaseSlot.get(home);
    if (slot === undefined || !this.k || this.leaseHold.has(home)) return;
    this.k.setLease(slot, this.leaseMs - ageMs);
    const ws = this.leaseWaiters.get(home);
    if (ws && this.k.leaseValid(slot)) {
      this.leaseWaiters.delete(home);
      for (const w of ws) w();
    }
  }

  /** The session with `home` ended: its copies are unusable from now on. */
  expireLease(home: string): void {
    const slot = this.leaseSlot.get(home);
    if (slot !== undefined && this.k) this.k.setLease(slot, 0);
    const ws = this.leaseWaiters.get(home);
    this.leaseWaiters.delete(home);
    for (const w of ws ?? []) w();
  }

  /** Resolve when the lease from `home` is valid again, or after `timeoutMs` (the caller re-checks). */
  waitLease(home: string, timeoutMs: number): Promise<void> {
    const slot = this.leaseSlot.get(home);
    if (slot === undefined || this.kernel.leaseValid(slot)) return Promise.resolve();
    this.counters.leaseWaits++;
    return new Promise<void>((resolve) => {
      const list = this.leaseWaiters.get(home) ?? [];
      this.leaseWaiters.set(home, list);
      const t = this.clock.setTimeout(done, timeoutMs);
      const self = this;
      function done() {
        self.clock.clearTimeout(t);
        const l = self.leaseWaiters.get(home);
        const i = l?.indexOf(done) ?? -1;
        if (l && i >= 0) l.splice(i, 1);
        resolve();
      }
      list.push(done);
    });
  }

  newCid(): string {
    return `${this.self}-${++this.cidSeq}`;
  }

  emitMessage(dir: 'in' | 'out', type: string, peer: string, cid?: string, latencyMs?: number): void {
    if (this.events.listenerCount('message') === 0) return; // four per round trip: skip the object
    const ev: MessageEvent = { dir, type, peer, cid };
    if (latencyMs !== undefined) ev.latencyMs = latencyMs;
    this.events.emit('message', ev);
  }

  /** Send a request and account for it (message events both ways). */
  async request<T extends RequestMessage>(
    node: string,
    msg: Omit<T, 'id'>,
    timeoutMs = this.requestTimeoutMs,
  ): Promise<RequestReplyMap[T['t']]> {
    // `msg` is always a fresh literal of the caller's, never reused: completed in place (no copy,
    // as Process.request does). A caller that puts `cid` in its literal gives the message a shape V8
    // keeps alive (the literal's boilerplate map); one added here is a transition map, which a full
    // GC collects whenever no message of that shape is alive, and with it the optimised code of
    // every function on the send path that saw it (recompiled at the next requests).
    const m = msg as Omit<T, 'id'> & { cid: string };
    const cid = m.cid ?? this.newCid();
    if (m.cid === undefined) m.cid = cid;
    const t0 = this.clock.now();
    this.emitMessage('out', msg.t, node, cid);
    const reply = await this.net.request<T>(node, m, { timeoutMs });
    this.emitMessage('in', reply.t, node, cid, this.clock.now() - t0);
    return reply;
  }

  sendOneWay(node: string, msg: OneWayMessage): void {
    this.emitMessage('out', msg.t, node, msg.cid);
    this.net.send(node, msg);
  }

  /** True if a message from this session must be refused (it was fenced). */
  stale(from: PeerSession): boolean {
    return from.epoch < (this.minEpoch.get(from.node) ?? 0);
  }

  homeOf(id: string): string {
    const h = homeOf(id);
    if (h === undefined) fail('EINVAL', `malformed id ${JSON.stringify(id)}`);
    return h;
  }

  /** Run a background task; log (never throw) its failure. */
  async guard(what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.log.warn({ err: e }, `xpmem: ${what} failed`);
    }
  }

  pageSize(): number {
    return this.kernel.pageSize;
  }

  stateNames(): readonly string[] {
    return PAGE_STATES;
  }
}
