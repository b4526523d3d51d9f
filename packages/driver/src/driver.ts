/**
 * The XPmem-like driver: a kernel module that exports segments of local address spaces, attaches
 * segments of other instances, keeps the driver-side reverse map and turns kernel invalidations into
 * invalidate/ack rounds with the remote mappers. This file holds the state and the wiring; each user
 * operation lives in its own xpmem-*.ts file, the home side of a fault in home.ts, the invalidation
 * engine in invalidate.ts, the attacher side in attacher.ts, failures in fence.ts.
 */
import { EventEmitter } from 'node:events';
import type { KernelModule, KernelModuleApi, NotifierRegistration } from '@xpmesh/node/kernel';
import {
  type Access,
  DEFAULT_LEASE_MS,
  defaultLeaseMarginMs,
  isWireErrorCode,
  type OneWayMessage,
  type PeerNetwork,
  type PeerSession,
  type RequestMessage,
  TIMING_DEFAULTS,
} from '@xpmesh/protocol';
import { attacherDown, handleSegmentGone } from './attacher.js';
import { DriverError, fail } from './errors.js';
import { fenceNode, peerUp } from './fence.js';
import { requestHandlers } from './handlers.js';
import { handleDeviceFault } from './home.js';
import { homeOf } from './ids.js';
import { rmapNotifierOps } from './notifiers.js';
import { nextState, PAGE_STATES, type PageEvent, stateIndex } from './page-state.js';
import { ReverseMap } from './rmap.js';
import { type Attachment, type Grant, type MmRecord, PageCache, type Permit, type Segment } from './state.js';
import { xpmemAttach } from './xpmem-attach.js';
import { xpmemDetach } from './xpmem-detach.js';
import { xpmemGet } from './xpmem-get.js';
import { xpmemMake } from './xpmem-make.js';
import { xpmemRelease } from './xpmem-release.js';
import { xpmemRemove } from './xpmem-remove.js';

export interface Logger {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface XpmemDriverOptions {
  net: PeerNetwork;
  logger?: Logger;
  clock?: Clock;
  /** Deadline for an invalidate ack; a mapper that misses it is fenced (default: TIMING_DEFAULTS). */
  ackTimeoutMs?: number;
  /** Deadline for get/map/detach requests to a home (default 5000 ms). */
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
}

export interface PageStateView {
  page: number;
  state: string;
  sharers: string[];
  writer: string | null;
  version: number;
}

export interface DriverStatus {
  node: string;
  segments: Array<{ segid: string; pid: number; vaddr: number; size: number; mode: number; permits: number }>;
  grants: Array<{ apid: string; pid: number; segid: string; access: Access }>;
  attachments: Array<{
    pid: number;
    vaddr: number;
    size: number;
    apid: string;
    segid: string;
    local: boolean;
  }>;
  /** Reverse map: entries, frames (exported pages; `pages` is the same number), bytes held. */
  rmap: { entries: number; frames: number; pages: number; bytes: number; bytesPerEntry: number };
  cachedPages: number;
  peers: Array<{ node: string; epoch: number; state: string; fencedBelow: number }>;
  counters: DriverCounters;
}

export type MessageEvent = {
  dir: 'in' | 'out';
  type: string;
  peer: string;
  cid?: string;
  latencyMs?: number;
};

const MAX_PREFAULT = 64;

export class XpmemDriver implements KernelModule {
  readonly name = 'xpmem';
  readonly events = new EventEmitter();
  readonly net: PeerNetwork;
  readonly log: Logger;
  readonly clock: Clock;
  readonly ackTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly prefault: number;
  readonly leaseMs: number;
  readonly leaseMarginMs: number;

  private k: KernelModuleApi | undefined;
  deviceOwner = -1;
  rmapReg: NotifierRegistration | undefined;

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
   * REMOVED_PERMITS_KEPT: a later map or detach with one answers E_NO_SEGMENT (not E_NO_PERMIT) and
   * a release answers ok. Older ones fall back to E_NO_PERMIT.
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
  readonly detaching = new Map<string, import('@xpmesh/protocol').PageData>();
  /**
   * Detach messages not answered yet, by page key: a map request for such a page waits for it, or the
   * home could grant the page first and then drop the new copy when the older detach reaches it.
   */
  readonly detachInFlight = new Map<string, Promise<void>>();
  /** Pages with a map request in flight (invalidations that overtake the reply are noted). */
  readonly inflightMaps = new Map<string, import('./state.js').InflightMap>();
  /** Lease slot in the kernel per home instance whose copies we hold. */
  readonly leaseSlot = new Map<string, number>();
  /** Homes whose copies are being revoked: no lease renewal until that is done. */
  readonly leaseHold = new Set<string>();
  /** Waiters for a lease renewal, by home. */
  readonly leaseWaiters = new Map<string, Array<() => void>>();
  nextAttachment = 1;

  // ---- peers
  readonly nodeIndex = new Map<string, number>();
  readonly nodeNames: string[] = [];
  /** Messages from sessions with an epoch below this are refused (the session was fenced). */
  readonly minEpoch = new Map<string, number>();
  readonly epochs = new Map<string, number>();

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
  };
  private cidSeq = 0;
  private readonly onDown = (peer: PeerSession, why: string) => {
    this.expireLease(peer.node);
    this.leaseHold.add(peer.node);
    void this.guard('down', async () => {
      try {
        await attacherDown(this, peer.node, why);
      } finally {
        this.leaseHold.delete(peer.node);
      }
      await fenceNode(this, peer.node, peer.epoch, `down: ${why}`, false);
    });
  };
  private readonly onUp = (peer: PeerSession) => {
    void this.guard('up', () => peerUp(this, peer));
  };
  private readonly onLease = (peer: PeerSession, ageMs: number) => {
    this.renewLease(peer.node, ageMs);
  };
  private readonly onMessage = (from: PeerSession, msg: OneWayMessage) => {
    this.emitMessage('in', msg.t, from.node, msg.cid);
    if (msg.t === 'segment-gone') void this.guard('segment-gone', () => handleSegmentGone(this, from, msg));
    else this.log.warn({ from: from.node, msg }, 'xpmem: unsolicited error from peer');
  };

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

  // ---- KernelModule --------------------------------------------------------------------------

  load(kernel: KernelModuleApi): void {
    if (this.k) fail('EINVAL', 'already loaded');
    this.k = kernel;
    this.deviceOwner = kernel.registerDevice({ fault: (f) => handleDeviceFault(this, f) });
    this.rmapReg = kernel.rmapNotifierRegister(rmapNotifierOps(this));
    this.net.onRequest((from, msg) => this.dispatch(from, msg));
    this.net.on('down', this.onDown);
    this.net.on('up', this.onUp);
    this.net.on('message', this.onMessage);
    this.net.on('lease', this.onLease);
    for (const s of this.net.sessions()) this.epochs.set(s.node, s.epoch);
  }

  async unload(): Promise<void> {
    if (!this.k) return;
    for (const seg of [...this.segments.values()]) {
      await xpmemRemove(this, seg.segid).catch(() => undefined);
    }
    for (const att of [...this.attachments.values()]) {
      await xpmemDetach(this, att.mm.pid, att.vaddr).catch(() => undefined);
    }
    this.net.off('down', this.onDown);
    this.net.off('up', this.onUp);
    this.net.off('message', this.onMessage);
    this.net.off('lease', this.onLease);
    await this.rmapReg?.unregister();
    for (const rec of this.mms.values()) await rec.reg?.unregister();
    this.mms.clear();
    for (const reg of this.exitHooks.values()) await reg.unregister().catch(() => undefined);
    this.exitHooks.clear();
    this.k = undefined;
  }

  // ---- user API ------------------------------------------------------------------------------

  make(pid: number, vaddr: number, size: number, mode: number): Promise<string> {
    return xpmemMake(this, pid, vaddr, size, mode);
  }
  remove(segid: string): Promise<void> {
    return xpmemRemove(this, segid);
  }
  get(pid: number, segid: string, access: Access): Promise<string> {
    return xpmemGet(this, pid, segid, access);
  }
  release(pid: number, apid: string): Promise<void> {
    return xpmemRelease(this, pid, apid);
  }
  attach(pid: number, apid: string, offset: number, size: number, vaddr?: number): Promise<number> {
    return xpmemAttach(this, pid, apid, offset, size, vaddr);
  }
  detach(pid: number, vaddr: number): Promise<void> {
    return xpmemDetach(this, pid, vaddr);
  }

  status(): DriverStatus {
    const permitsPerSeg = new Map<Segment, number>();
    for (const p of this.permits.values()) permitsPerSeg.set(p.seg, (permitsPerSeg.get(p.seg) ?? 0) + 1);
    const peerStatus = new Map(this.net.status().map((s) => [s.node, s]));
    const peerNames = new Set([...this.nodeNames.slice(1), ...peerStatus.keys()]);
    const exported = this.rmap.frames().length;
    return {
      node: this.self,
      segments: [...this.segments.values()].map((s) => ({
        segid: s.segid,
        pid: s.mm.pid,
        vaddr: s.vaddr,
        size: s.size,
        mode: s.mode,
        permits: permitsPerSeg.get(s) ?? 0,
      })),
      grants: [...this.grants.values()].map((g) => ({
        apid: g.apid,
        pid: g.pid,
        segid: g.segid,
        access: g.access,
      })),
      attachments: [...this.attachments.values()].map((a) => ({
        pid: a.mm.pid,
        vaddr: a.vaddr,
        size: a.size,
        apid: a.grant.apid,
        segid: a.grant.segid,
        local: a.grant.local,
      })),
      rmap: {
        entries: this.rmap.size,
        frames: exported,
        pages: exported,
        bytes: this.rmap.bytes(),
        bytesPerEntry: this.rmap.size ? this.rmap.bytes() / this.rmap.size : 0,
      },
      cachedPages: this.cache.size,
      peers: [...peerNames].map((node) => ({
        node,
        epoch: peerStatus.get(node)?.epoch ?? this.epochs.get(node) ?? 0,
        state: peerStatus.get(node)?.state ?? 'down',
        fencedBelow: this.minEpoch.get(node) ?? 0,
      })),
      counters: { ...this.counters },
    };
  }

  /** Per-page directory view of a segment this instance is home of. */
  pageStates(segid: string): PageStateView[] {
    const seg = this.segments.get(segid);
    if (!seg) fail('E_NO_SEGMENT', `no segment ${segid} at ${this.self}`);
    const out: PageStateView[] = [];
    for (let p = 0; p < seg.npages; p++) {
      const es = this.rmap.entries(seg.pfn[p], seg.slot, p);
      out.push({
        page: p,
        state: seg.pageState(p),
        sharers: es.filter((e) => !e.write).map((e) => this.nodeNames[e.node]),
        writer: es.find((e) => e.write) ? this.nodeNames[es.find((e) => e.write)!.node] : null,
        version: seg.version[p],
      });
    }
    return out;
  }

  // ---- helpers shared by the operation files ---------------------------------------------------

  nodeIdx(node: string): number {
    let i = this.nodeIndex.get(node);
    if (i === undefined) {
      i = this.nodeNames.length;
      this.nodeIndex.set(node, i);
      this.nodeNames.push(node);
    }
    return i;
  }

  /** Apply a page-state event (the only way a page's state changes). */
  transition(seg: Segment, page: number, event: PageEvent): void {
    const from = seg.pageState(page);
    const to = nextState(from, event);
    if (to === from) return;
    seg.state[page] = stateIndex(to);
    // the event object is built only for listeners (a 1024-page invalidation makes 2048 of them)
    if (this.events.listenerCount('page-state') > 0)
      this.events.emit('page-state', { segid: seg.segid, page, from, to, event });
  }

  /** Longest an invalidation can take: ack deadline, then the lease wait of a fence. */
  get invalidationBoundMs(): number {
    return this.ackTimeoutMs + this.leaseMs + this.leaseMarginMs;
  }

  /** Wait (bounded) until no invalidation or notifier bracket of the page is in flight. */
  async waitIdle(seg: Segment, page: number): Promise<void> {
    const deadline = this.invalidationBoundMs * 3 + 1000;
    while (seg.inval[page] > 0 || seg.busy[page] > 0) {
      await new Promise<void>((resolve, reject) => {
        const list = seg.idle.get(page) ?? [];
        seg.idle.set(page, list);
        const t = this.clock.setTimeout(
          () => reject(new DriverError('E_BUSY', 'invalidation did not end')),
          deadline,
        );
        list.push(() => {
          this.clock.clearTimeout(t);
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
  async waitInvalidations(seg: Segment, pages: readonly number[]): Promise<void> {
    const deadline = this.clock.now() + this.invalidationBoundMs * 3 + 1000;
    let waited = false;
    for (;;) {
      const p = pages.find((q) => seg.inval[q] > 0);
      if (p === undefined) break;
      const left = deadline - this.clock.now();
      if (left <= 0) {
        this.log.error({ segid: seg.segid, page: p }, 'xpmem: earlier invalidation did not end in its bound');
        break;
      }
      waited = true;
      await new Promise<void>((resolve) => {
        const list = seg.invalDone.get(p) ?? [];
        seg.invalDone.set(p, list);
        const t = this.clock.setTimeout(resolve, left);
        list.push(() => {
          this.clock.clearTimeout(t);
          resolve();
        });
      });
    }
    if (waited) this.counters.serializedInvalidations++;
  }

  /** Count a refusal (see DriverCounters.refused), then throw its error. */
  refuse(kind: keyof DriverCounters['refused'], code: 'E_NO_PERMIT' | 'E_PERM', message: string): never {
    this.counters.refused[kind]++;
    fail(code, message);
  }

  /** The last invalidation of `page` ended: wake the invalidations waiting for it. */
  wakeInvalidations(seg: Segment, page: number): void {
    if (seg.invalDone.size === 0) return;
    const list = seg.invalDone.get(page);
    if (!list || seg.inval[page] > 0) return;
    seg.invalDone.delete(page);
    for (const w of list) w();
  }

  wakeIdle(seg: Segment, page: number): void {
    if (seg.idle.size === 0) return;
    const list = seg.idle.get(page);
    if (!list || seg.inval[page] > 0 || seg.busy[page] > 0) return;
    seg.idle.delete(page);
    for (const w of list) w();
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
  ): Promise<import('@xpmesh/protocol').RequestReplyMap[T['t']]> {
    const cid = (msg as { cid?: string }).cid ?? this.newCid();
    const m = { ...msg, cid } as Omit<T, 'id'>;
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

  private async dispatch(from: PeerSession, msg: RequestMessage) {
    this.emitMessage('in', msg.t, from.node, msg.cid);
    if (!this.k) throw { code: 'E_STATE', message: 'xpmem driver not loaded' };
    if (this.stale(from)) {
      this.counters.staleMessages++;
      throw { code: 'E_STALE_EPOCH', message: `session ${from.node}@${from.epoch} was fenced` };
    }
    if ((this.epochs.get(from.node) ?? -1) < from.epoch) this.epochs.set(from.node, from.epoch);
    try {
      const reply = await (
        requestHandlers[msg.t] as (
          d: XpmemDriver,
          f: PeerSession,
          m: RequestMessage,
        ) => Promise<{ t: string }>
      )(this, from, msg);
      this.emitMessage('out', reply.t, from.node, msg.cid);
      return reply as never;
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'E_INTERNAL';
      const wire = isWireErrorCode(code) ? code : (KERNEL_TO_WIRE[code] ?? 'E_INTERNAL');
      if (wire === 'E_INTERNAL') this.log.error({ err: e, msg }, 'xpmem: request handler failed');
      this.emitMessage('out', 'error', from.node, msg.cid);
      throw { code: wire, message: String((e as Error).message ?? e).slice(0, 500) };
    }
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

/** Kernel errno codes that can escape a handler (bounded waits, races) and what the peer sees. */
const KERNEL_TO_WIRE: Record<string, string> = {
  ETIMEDOUT: 'E_BUSY',
  EAGAIN: 'E_BUSY',
  EBUSY: 'E_BUSY',
  ENOMEM: 'E_BUSY',
  EFAULT: 'E_FAULT',
  SIGBUS: 'E_FAULT',
  SIGSEGV: 'E_FAULT',
  EACCES: 'E_ACCESS',
  ESRCH: 'E_NO_SEGMENT',
  EINVAL: 'E_MALFORMED',
};

const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export function createXpmemDriver(opts: XpmemDriverOptions): XpmemDriver {
  return new XpmemDriver(opts);
}
