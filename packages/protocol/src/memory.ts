/**
 * In-memory transport: a "switch" that connects instances of one process, with injected delay,
 * jitter, drop, reorder, partitions and stalled readers, all driven by a seeded PRNG and an
 * injectable clock, so that a test run is deterministic (same seed, same schedule). With
 * @sinonjs/fake-timers installed, time only moves when the test ticks it.
 *
 * Semantics mirror ws over TCP where it matters: frames on one connection arrive in order unless
 * `reorder` is set; a ping is answered by the receiving transport (not the link) unless the reader is
 * stalled or the path is partitioned; a close reaches the peer after the frames sent before it (and
 * is lost in a partition, so only heartbeats detect it); frames arriving at a closed end are dropped.
 */

import { type Clock, systemClock } from './base.js';
import { CloseCode } from './errors.js';
import { type PeerNetworkOptions, TransportPeerNetwork } from './network.js';
import type { Conn, ConnHandlers, Listener, Transport } from './transport.js';
import { seededRandom } from './transport.js';

/** Faults of one direction of a path (from → to). */
export interface LinkFaults {
  /** Base one-way delay per frame, ms (default 0: next timer turn). */
  delayMs?: number;
  /** Extra uniform random delay in [0, jitterMs), ms. */
  jitterMs?: number;
  /** Probability (0..1) that a data frame is lost. */
  drop?: number;
  /** Allow a frame to overtake earlier ones (with jitter). Default false: FIFO. */
  reorder?: boolean;
  /** Everything (frames, pings, pongs, closes) is lost. */
  partitioned?: boolean;
}

export interface MemorySwitchOptions {
  /** Seed of the PRNG used for jitter, drops and backoff jitter (default 1). */
  seed?: number;
  clock?: Clock;
  /** Faults applied to every path without its own. */
  defaults?: LinkFaults;
}

export interface MemorySwitchStats {
  framesSent: number;
  framesDelivered: number;
  framesDropped: number;
  /** Frames that arrived at an end already closed (stale session traffic). */
  framesStale: number;
}

type Event =
  | { k: 'frame'; f: Uint8Array }
  | { k: 'ping' }
  | { k: 'pong' }
  | { k: 'close'; code: number; reason: string };

class MemoryEnd implements Conn {
  readonly remote: string;
  peer!: MemoryEnd;
  handlers: ConnHandlers | undefined;
  private backlog: Event[] = [];
  closed = false;
  /** Bytes sent by this end not yet delivered to the peer's handlers. */
  inFlight = 0;
  /** Last scheduled arrival time at the peer (for FIFO). */
  lastArrival = 0;
  constructor(
    private readonly sw: MemorySwitch,
    readonly local: string,
    remote: string,
  ) {
    this.remote = remote;
  }

  setHandlers(h: ConnHandlers): void {
    this.handlers = h;
    const b = this.backlog;
    this.backlog = [];
    for (const e of b) this.deliver(e);
  }

  send(frame: Uint8Array, done?: () => void): void {
    if (this.closed) {
      done?.();
      return;
    }
    // The receiver gets a copy (it owns what it receives: its decoder may keep views of it), so
    // nothing here reads `frame` once this returns: its lease ends now.
    const f = Uint8Array.prototype.slice.call(frame);
    done?.();
    this.sw.transmit(this, { k: 'frame', f });
  }

  bufferedAmount(): number {
    return this.inFlight;
  }

  ping(): void {
    if (!this.closed) this.sw.transmit(this, { k: 'ping' });
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.sw.transmit(this, { k: 'close', code, reason });
    this.sw.forget(this);
    this.fireClose(code, reason);
  }

  /** An event arrives at this end. */
  deliver(e: Event): void {
    if (e.k === 'close') {
      if (this.closed) return;
      this.closed = true;
      this.sw.forget(this);
      this.fireClose(e.code, e.reason);
      return;
    }
    if (this.closed) {
      if (e.k === 'frame') this.sw.stats.framesStale++;
      return;
    }
    if (!this.handlers) {
      this.backlog.push(e);
      return;
    }
    if (e.k === 'frame') {
      this.sw.stats.framesDelivered++;
      this.handlers.onFrame(e.f);
    } else if (e.k === 'ping') this.sw.transmit(this, { k: 'pong' });
    else if (e.k === 'pong') this.handlers.onPong();
  }

  private fireClose(code: number, reason: string): void {
    const h = this.handlers;
    if (h) h.onClose(code, reason);
    else this.backlog.push({ k: 'close', code, reason });
  }
}

/** Connects instances of one process. `transport(node)` is the Transport of instance `node`. */
export class MemorySwitch {
  readonly clock: Clock;
  readonly random: () => number;
  readonly stats: MemorySwitchStats = { framesSent: 0, framesDelivered: 0, framesDropped: 0, framesStale: 0 };
  private readonly listeners = new Map<string, (conn: Conn) => void>();
  private readonly faults = new Map<string, LinkFaults>();
  private readonly stalled = new Map<string, { end: MemoryEnd; e: Event; bytes: number }[]>();
  private readonly ends = new Set<MemoryEnd>();
  private defaults: LinkFaults;
  private readonly lastEpochs = new Map<string, number>();
  private readonly networks = new Map<string, TransportPeerNetwork>();

  constructor(opts: MemorySwitchOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.random = seededRandom(opts.seed ?? 1);
    this.defaults = { ...opts.defaults };
  }

  /** The transport of one instance. */
  transport(node: string): Transport {
    return {
      listen: async (onConn) => {
        if (this.listeners.has(node)) throw new Error(`memory: ${node} already listening`);
        this.listeners.set(node, onConn);
        const l: Listener = {
          address: node,
          close: async () => {
            if (this.listeners.get(node) === onConn) this.listeners.delete(node);
          },
        };
        return l;
      },
      dial: async (address) => {
        const onConn = this.listeners.get(address);
        if (!onConn) throw new Error(`memory: nobody listens at ${address}`);
        const a = new MemoryEnd(this, node, address);
        const b = new MemoryEnd(this, address, node);
        a.peer = b;
        b.peer = a;
        this.ends.add(a);
        this.ends.add(b);
        onConn(b);
        return a;
      },
    };
  }

  /** Sets the faults of the path from → to ('*' matches any node). */
  setFaults(from: string, to: string, f: LinkFaults): void {
    this.faults.set(`${from}>${to}`, { ...f });
  }

  setDefaultFaults(f: LinkFaults): void {
    this.defaults = { ...f };
  }

  /** Cuts both directions between a and b (frames, heartbeats and closes are lost). */
  partition(a: string, b: string): void {
    this.setFaults(a, b, { ...this.faultsOf(a, b), partitioned: true });
    this.setFaults(b, a, { ...this.faultsOf(b, a), partitioned: true });
  }

  heal(a: string, b: string): void {
    this.setFaults(a, b, { ...this.faultsOf(a, b), partitioned: false });
    this.setFaults(b, a, { ...this.faultsOf(b, a), partitioned: false });
  }

  /** Stops `node` reading: everything sent to it queues (senders' bufferedAmount grows), pings go
   * unanswered. `resume(node)` delivers the queue in order. Models a paused or overloaded process. */
  stall(node: string): void {
    if (!this.stalled.has(node)) this.stalled.set(node, []);
  }

  resume(node: string): void {
    const q = this.stalled.get(node);
    this.stalled.delete(node);
    for (const x of q ?? []) {
      x.end.inFlight -= x.bytes;
      x.end.peer.deliver(x.e);
    }
  }

  private faultsOf(from: string, to: string): LinkFaults {
    return (
      this.faults.get(`${from}>${to}`) ??
      this.faults.get(`${from}>*`) ??
      this.faults.get(`*>${to}`) ??
      this.defaults
    );
  }

  /** @internal */
  forget(end: MemoryEnd): void {
    this.ends.delete(end);
  }

  /** @internal Carries one event from `end` to its peer through the path's faults. */
  transmit(end: MemoryEnd, e: Event): void {
    const f = this.faultsOf(end.local, end.remote);
    if (e.k === 'frame') this.stats.framesSent++;
    if (f.partitioned) {
      if (e.k === 'frame') this.stats.framesDropped++;
      return;
    }
    if (e.k === 'frame' && f.drop && this.random() < f.drop) {
      this.stats.framesDropped++;
      return;
    }
    const now = this.clock.now();
    let at = now + (f.delayMs ?? 0) + (f.jitterMs ? this.random() * f.jitterMs : 0);
    if (!f.reorder) {
      at = Math.max(at, end.lastArrival);
      end.lastArrival = at;
    }
    const bytes = e.k === 'frame' ? e.f.byteLength : 0;
    end.inFlight += bytes;
    this.clock.setTimeout(() => {
      try {
        const q = this.stalled.get(end.remote);
        if (q && e.k !== 'close') {
          q.push({ end, e, bytes });
          return;
        }
        end.inFlight -= bytes;
        end.peer.deliver(e);
      } catch (err) {
        // A handler bug must not break the switch; links guard their own callbacks.
        console.error('memory transport: delivery failed', err);
      }
    }, at - now);
  }

  /** Next session epoch for `node`: larger than any it used on this switch (restarts included). */
  nextEpoch(node: string, wanted?: number): number {
    const last = this.lastEpochs.get(node) ?? 0;
    const e = Math.max(wanted ?? 0, last + 1_000_000);
    this.lastEpochs.set(node, e);
    return e;
  }

  /** Creates (and starts) the PeerNetwork of instance `node`; peers default to every other member. */
  async join(node: string, opts: MemoryJoinOptions, connect = true): Promise<TransportPeerNetwork> {
    const prev = this.networks.get(node);
    if (prev) await prev.close();
    const peers =
      opts.peers ?? (opts.members ?? []).filter((m) => m !== node).map((m) => ({ node: m, url: m }));
    const net = new TransportPeerNetwork({
      ...opts,
      self: node,
      transport: this.transport(node),
      peers,
      clock: opts.clock ?? this.clock,
      random: opts.random ?? this.random,
      epoch: this.nextEpoch(node, opts.epoch),
    });
    this.networks.set(node, net);
    await net.listen();
    if (connect) net.connect();
    const close = net.close.bind(net);
    net.close = async () => {
      if (this.networks.get(node) === net) this.networks.delete(node);
      await close();
    };
    return net;
  }

  /** Closes every network created by join(). */
  async close(): Promise<void> {
    for (const n of [...this.networks.values()]) await n.close();
    for (const e of [...this.ends]) e.close(CloseCode.NORMAL, 'switch closed');
  }
}

export type MemoryJoinOptions = Omit<PeerNetworkOptions, 'self' | 'transport' | 'peers'> & {
  /** Peers to dial; default: every other node of `members`. */
  peers?: { node?: string; url: string }[];
  /** Node ids of the cluster (used for the default peers). */
  members?: string[];
};

export interface MemoryNetworkOptions extends Omit<MemoryJoinOptions, 'members' | 'peers'> {
  /** Node ids of the instances. */
  nodes: string[];
  seed?: number;
  defaults?: LinkFaults;
}

/**
 * N instances in one process, each with its own PeerNetwork, all connected through one switch.
 * Resolves when every network is listening; sessions come up asynchronously (await `whenAllUp`).
 */
export async function createMemoryNetwork(
  opts: MemoryNetworkOptions,
): Promise<{ switch: MemorySwitch; networks: Record<string, TransportPeerNetwork>; close(): Promise<void> }> {
  const { nodes, seed, defaults, ...rest } = opts;
  const sw = new MemorySwitch({ seed, clock: rest.clock, defaults });
  const networks: Record<string, TransportPeerNetwork> = {};
  // Listen first everywhere, so the first dials find their targets.
  for (const n of nodes) networks[n] = await sw.join(n, { ...rest, members: nodes }, false);
  for (const n of nodes) networks[n].connect();
  return { switch: sw, networks, close: () => sw.close() };
}
