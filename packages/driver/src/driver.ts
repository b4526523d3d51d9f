/**
 * The XPmem-like driver (XPMEM's xpmem_main.c): a kernel module that exports segments of local
 * address spaces and attaches segments of other instances. This file loads and unloads the module,
 * dispatches peer requests (handlers.ts) and session events to the two sides, and reports status.
 * The state lives in state.ts (xpmem_private.h); each user operation in its own xpmem-*.ts file;
 * the home side in home.ts (grants, local and device faults, detach, teardown), invalidate.ts,
 * fence.ts and notifiers.ts; the remote (attacher) side in attacher.ts.
 */
import type { KernelModule, KernelModuleApi, NotifierRegistration } from '@xpmesh/kernel';
import {
  type Access,
  type OneWayMessage,
  type PeerSession,
  type RequestMessage,
  WireError,
  wireCodeOf,
} from '@xpmesh/protocol';
import { attacherDown, handleSegmentGone } from './attacher.js';
import { fail } from './errors.js';
import { fenceNode } from './fence.js';
import { requestHandlers } from './handlers.js';
import { handleDeviceFault, localAttachFault } from './home.js';
import { rmapNotifierOps } from './notifiers.js';
import { type DriverCounters, DriverState, type Segment, type XpmemDriverOptions } from './state.js';
import { xpmemAttach } from './xpmem-attach.js';
import { xpmemDetach } from './xpmem-detach.js';
import { xpmemGet } from './xpmem-get.js';
import { xpmemMake } from './xpmem-make.js';
import { xpmemRelease } from './xpmem-release.js';
import { xpmemRemove } from './xpmem-remove.js';

export type {
  DriverCounters,
  FenceEvent,
  LostDirtyEvent,
  MessageEvent,
  PageStateEvent,
  XpmemDriverOptions,
} from './state.js';

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
  /** Reverse map: entries, frames (exported pages), bytes held. */
  rmap: { entries: number; frames: number; bytes: number; bytesPerEntry: number };
  cachedPages: number;
  /**
   * The per-node tables (node index, epochs, fencing memory): node ids held (other than this
   * instance), indexes allocated (this instance's included) and free for reuse (docs/driver.md,
   * "Per-node state").
   */
  nodes: { known: number; indexes: number; freeIndexes: number };
  peers: Array<{ node: string; epoch: number; state: string; fencedBelow: number }>;
  counters: DriverCounters;
}

export class XpmemDriver extends DriverState implements KernelModule {
  readonly name = 'xpmem';
  rmapReg: NotifierRegistration | undefined;

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
      // its lease has run out and its entries are gone: forget it unless something still holds it
      // (then a later sweep, or the end of its last request in flight, does)
      this.pruneNodes([peer.node]);
      this.sweepNodes();
    });
  };
  private readonly onUp = (peer: PeerSession) => {
    void this.guard('up', async () => {
      await this.peerUp(peer);
      this.sweepNodes();
    });
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
    super(opts);
    this.homeSide = {
      localFault: (seg, p, att, index, address, write) =>
        localAttachFault(this, seg, p, att, index, address, write),
      deviceFault: (f) => handleDeviceFault(this, f),
    };
  }

  // ---- KernelModule --------------------------------------------------------------------------

  load(kernel: KernelModuleApi): void {
    if (this.k) fail('EINVAL', 'already loaded');
    this.k = kernel;
    this.deviceOwner = kernel.registerDevice({ fault: (f) => this.homeSide.deviceFault(f) });
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
    const peerNames = new Set([...this.nodeNames.slice(1).filter((n) => n !== ''), ...peerStatus.keys()]);
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
        bytes: this.rmap.bytes(),
        bytesPerEntry: this.rmap.size ? this.rmap.bytes() / this.rmap.size : 0,
      },
      cachedPages: this.cache.size,
      nodes: {
        known: this.knownNodes().size,
        indexes: this.nodeNames.length,
        freeIndexes: this.freeNodeIndexes.length,
      },
      peers: [...peerNames].map((node) => ({
        node,
        epoch: peerStatus.get(node)?.epoch ?? this.epochs.get(node) ?? 0,
        state: peerStatus.get(node)?.state ?? 'down',
        // a pruned node's level stays visible for a while (forgottenFences; status only)
        fencedBelow: this.minEpoch.get(node) ?? this.forgottenFences.get(node) ?? 0,
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

  /**
   * A peer's (new) session is up. A larger epoch than we knew means the old session is over: as a
   * home of ours its copies are revoked (remote side), as a mapper of ours it is fenced (home side).
   */
  private async peerUp(peer: PeerSession): Promise<void> {
    const prev = this.epochs.get(peer.node);
    this.epochs.set(peer.node, peer.epoch);
    if (prev !== undefined && prev < peer.epoch) {
      this.leaseHold.add(peer.node);
      try {
        await attacherDown(this, peer.node, 'new session');
      } finally {
        this.leaseHold.delete(peer.node);
      }
      const age = this.net.leaseAge(peer.node);
      if (age !== undefined) this.renewLease(peer.node, age);
      await fenceNode(this, peer.node, prev, 'new session', false);
    }
  }

  private async dispatch(from: PeerSession, msg: RequestMessage) {
    this.emitMessage('in', msg.t, from.node, msg.cid);
    if (!this.k) throw new WireError('E_STATE', 'xpmem driver not loaded');
    if (this.stale(from)) {
      this.counters.staleMessages++;
      throw new WireError('E_STALE_EPOCH', `session ${from.node}@${from.epoch} was fenced`);
    }
    if ((this.epochs.get(from.node) ?? -1) < from.epoch) this.epochs.set(from.node, from.epoch);
    // counted while handled: a grant or detach holds the node's index across awaits (pruneNodes)
    let busy = this.nodeDispatches.get(from.node);
    if (busy === undefined) {
      busy = { n: 0 };
      this.nodeDispatches.set(from.node, busy);
    }
    busy.n++;
    try {
      const reply = await (
        requestHandlers[msg.t] as (
          d: DriverState,
          f: PeerSession,
          m: RequestMessage,
        ) => Promise<{ t: string }>
      )(this, from, msg);
      this.emitMessage('out', reply.t, from.node, msg.cid);
      return reply as never;
    } catch (e) {
      // the error table says what each code travels as (kernel errno codes, driver codes)
      const wire = wireCodeOf((e as { code?: string }).code ?? 'E_INTERNAL');
      if (wire === 'E_INTERNAL') this.log.error({ err: e, msg }, 'xpmem: request handler failed');
      this.emitMessage('out', 'error', from.node, msg.cid);
      throw new WireError(wire, String((e as Error).message ?? e).slice(0, 500));
    } finally {
      if (--busy.n === 0 && this.pruneDeferred.has(from.node)) this.pruneNodes([from.node]);
    }
  }
}

export function createXpmemDriver(opts: XpmemDriverOptions): XpmemDriver {
  return new XpmemDriver(opts);
}
