/**
 * PeerNetwork over any Transport: one session per pair of instances; reconnect with exponential
 * backoff and full jitter, every new session with a larger epoch; fencing; per-type counters. The
 * WebSocket and in-memory networks are this class with different transports.
 *
 * One session per pair (docs/protocol.md §7): a session that is up is kept against any other
 * connection of the same incarnation of the peer (refused 4009); a newer incarnation (the peer
 * restarted) replaces it; of two connections that cross in the handshake, the one dialed by the
 * lower node id is kept. See `admit`.
 *
 * Admission happens only after authentication: a connection that has not proven the cluster key
 * creates no peer-table entry and touches no epoch, fence or session (docs/protocol.md §7).
 */

import { clusterKeyBytes } from './auth.js';
import { type Clock, type Logger, silentLogger, systemClock } from './base.js';
import { FrameDecoder } from './codec.js';
import { TIMING_DEFAULTS } from './defaults.js';
import { CloseCode, closeCodeName } from './errors.js';
import { type Limits, resolveLimits } from './limits.js';
import { type AdmitStage, Link } from './link.js';
import {
  type OneWayMessage,
  PROTOCOL_VERSIONS,
  type RequestMessage,
  type RequestReplyMap,
} from './messages.js';
import { Metrics, type NetworkMetrics } from './metrics.js';
import {
  type PeerNetwork,
  type PeerNetworkEvents,
  type PeerSession,
  type PeerState,
  type PeerStatus,
  RequestError,
  type RequestHandler,
  type RequestOptions,
} from './peers.js';
import type { Listener, Transport } from './transport.js';

export interface PeerAddress {
  /** The peer's node id, if known. We dial it only if our id is lower (or it is unknown). */
  node?: string;
  /** Where to dial (ws: `ws://host:port` or `wss://...`; memory: the node id). */
  url: string;
}

export interface PeerNetworkOptions {
  self: string;
  transport: Transport;
  peers?: PeerAddress[];
  clusterKey: string | Uint8Array;
  /** First session epoch; every new session uses a larger one (default: Date.now()). */
  epoch?: number;
  heartbeatMs?: number;
  missedBeats?: number;
  requestTimeoutMs?: number;
  limits?: Partial<Limits>;
  /** Protocol versions we speak (default PROTOCOL_VERSIONS). Tests use it for version mismatch. */
  versions?: readonly number[];
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Validate what we send (default true). */
  checkOutgoing?: boolean;
  clock?: Clock;
  /** Randomness for backoff jitter (default Math.random; memory networks pass a seeded one). */
  random?: () => number;
  logger?: Logger;
  /** Tap on every frame (tracing, fuzz tests). */
  onFrame?: (dir: 'in' | 'out', node: string, frame: Uint8Array) => void;
}

/** The network's defaults: from the one table of timing defaults (defaults.ts). */
export const NETWORK_DEFAULTS = Object.freeze({
  heartbeatMs: TIMING_DEFAULTS.heartbeatMs,
  missedBeats: TIMING_DEFAULTS.missedBeats,
  requestTimeoutMs: TIMING_DEFAULTS.requestTimeoutMs,
  reconnectMinMs: TIMING_DEFAULTS.reconnectMinMs,
  reconnectMaxMs: TIMING_DEFAULTS.reconnectMaxMs,
});

interface Peer {
  node: string;
  url?: string;
  /** The current session (up), if any. */
  link?: Link;
  /**
   * Our client link that has sent `auth` and waits for `ready`. We are committed to it: its server
   * may be up already, so no other session of that incarnation may come up here meanwhile.
   */
  committed?: Link;
  /** Links in handshake. */
  pending: Set<Link>;
  state: PeerState;
  /** Sessions of this node with epoch <= fencedEpoch are refused. */
  fencedEpoch: number;
  /** Largest epoch of any session of this node we accepted (a new one must be larger). */
  lastEpoch: number;
  /** Largest incarnation (`boot`) of any session of this node that came up; older ones are refused. */
  boot: number;
  /** When a session of this node last came up or went down (a sequence number, not a time): the
   * eviction order, least recently up first. */
  lastActive: number;
}

/** What the table remembers of an evicted entry: enough to judge a return exactly as if the entry
 * had stayed (admit reads only these three fields of an entry that has no link). */
interface Tombstone {
  fencedEpoch: number;
  lastEpoch: number;
  boot: number;
}

interface DialTarget {
  url: string;
  /**
   * The node at this address. Configured (`pinned`: addPeer with its node id, `--peers node=url`):
   * only that node may answer, another is refused 4010. Otherwise learned: the node that last
   * answered here and authenticated (DNS or `--peers` by address), replaced by whoever answers next
   * (a DNS address handed to a new task answers with a new node id).
   */
  node?: string;
  /** `node` was configured, not learned. */
  pinned: boolean;
  timer?: unknown;
  attempt: number;
  dialing: boolean;
  /** Stopped: the network is closing. */
  stopped: boolean;
}

type Listeners = { [E in keyof PeerNetworkEvents]: Set<PeerNetworkEvents[E]> };

export class TransportPeerNetwork implements PeerNetwork {
  readonly self: string;
  private readonly o: Required<
    Pick<
      PeerNetworkOptions,
      | 'heartbeatMs'
      | 'missedBeats'
      | 'requestTimeoutMs'
      | 'reconnectMinMs'
      | 'reconnectMaxMs'
      | 'checkOutgoing'
      | 'versions'
    >
  >;
  private readonly transport: Transport;
  private readonly key: Buffer;
  private readonly limits: Limits;
  private readonly decoder: FrameDecoder;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly logger: Logger;
  private readonly onFrameTap: PeerNetworkOptions['onFrame'];
  private readonly metricsImpl = new Metrics();
  private epochCounter: number;
  /** Our incarnation: the start value of the epoch counter (every epoch we announce is larger);
   * sent as `boot` in every handshake of this network. */
  private readonly boot: number;
  private readonly peers = new Map<string, Peer>();
  /** Evicted entries that had epochs to remember, bounded by limits.maxPeerTombstones (never
   * forgotten: when full, such entries are no longer evicted). */
  private readonly tombstones = new Map<string, Tombstone>();
  private activity = 0;
  private readonly targets: DialTarget[] = [];
  private readonly links = new Set<Link>();
  private handler: RequestHandler | undefined;
  private readonly listeners: Listeners = {
    up: new Set(),
    down: new Set(),
    message: new Set(),
    lease: new Set(),
  };
  private listener: Listener | undefined;
  private closing = false;

  constructor(opts: PeerNetworkOptions) {
    this.self = opts.self;
    this.transport = opts.transport;
    this.key = clusterKeyBytes(opts.clusterKey);
    this.limits = resolveLimits(opts.limits);
    this.decoder = new FrameDecoder(this.limits);
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.logger = opts.logger ?? silentLogger;
    this.onFrameTap = opts.onFrame;
    this.o = {
      heartbeatMs: opts.heartbeatMs ?? NETWORK_DEFAULTS.heartbeatMs,
      missedBeats: opts.missedBeats ?? NETWORK_DEFAULTS.missedBeats,
      requestTimeoutMs: opts.requestTimeoutMs ?? NETWORK_DEFAULTS.requestTimeoutMs,
      reconnectMinMs: opts.reconnectMinMs ?? NETWORK_DEFAULTS.reconnectMinMs,
      reconnectMaxMs: opts.reconnectMaxMs ?? NETWORK_DEFAULTS.reconnectMaxMs,
      checkOutgoing: opts.checkOutgoing ?? true,
      versions: opts.versions ?? PROTOCOL_VERSIONS,
    };
    this.epochCounter = opts.epoch ?? Date.now();
    this.boot = this.epochCounter;
    for (const p of opts.peers ?? []) this.addPeer(p);
  }

  /** Starts listening (if enabled) and dialing. Resolves once listening; dials continue in background. */
  async start(listen = true): Promise<void> {
    if (listen) await this.listen();
    this.connect();
  }

  /** Starts accepting connections. */
  async listen(): Promise<void> {
    this.listener ??= await this.transport.listen((conn) => this.accept(conn));
  }

  /** Starts dialing the configured peers (and keeps redialing them). */
  connect(): void {
    this.started = true;
    for (const t of this.targets) this.dial(t);
  }

  /** Resolves with the peer's session once it is up; rejects with E_TIMEOUT after `timeoutMs`. */
  waitUp(node: string, timeoutMs: number): Promise<PeerSession> {
    const link = this.peers.get(node)?.link;
    if (link?.state === 'up') return Promise.resolve({ node, epoch: link.peerEpoch });
    return new Promise((resolve, reject) => {
      const on = (p: PeerSession) => {
        if (p.node !== node) return;
        this.clock.clearTimeout(timer);
        this.off('up', on);
        resolve(p);
      };
      const timer = this.clock.setTimeout(() => {
        this.off('up', on);
        reject(new RequestError('E_TIMEOUT', node, `no session within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('up', on);
    });
  }

  /** Where peers can reach us (ws: the URL with the bound port). */
  get address(): string | undefined {
    return this.listener?.address;
  }

  /** Adds a peer to dial (if our node id is lower, or its id is unknown). */
  addPeer(p: PeerAddress): void {
    if (p.node === this.self) return;
    if (p.node) this.peer(p.node).url = p.url;
    if (p.node !== undefined && !(this.self < p.node)) return; // the peer dials us
    const t: DialTarget = {
      url: p.url,
      node: p.node,
      pinned: p.node !== undefined,
      attempt: 0,
      dialing: false,
      stopped: false,
    };
    this.targets.push(t);
    if (this.started) this.dial(t);
  }

  /**
   * Stops dialing `url` (membership from DNS: the address left the name). A session that is up
   * stays: it ends by its own heartbeats or close, like any other. Returns whether a target was
   * removed.
   */
  removePeer(url: string): boolean {
    const i = this.targets.findIndex((t) => t.url === url);
    if (i < 0) return false;
    const t = this.targets[i];
    t.stopped = true;
    if (t.timer !== undefined) this.clock.clearTimeout(t.timer);
    t.timer = undefined;
    this.targets.splice(i, 1);
    return true;
  }

  /** The URLs this network dials (configured and added at run time). */
  dialTargets(): string[] {
    return this.targets.map((t) => t.url);
  }

  private started = false;

  // ---- PeerNetwork --------------------------------------------------------------------------------

  sessions(): PeerSession[] {
    const out: PeerSession[] = [];
    for (const p of this.peers.values())
      if (p.link?.state === 'up') out.push({ node: p.node, epoch: p.link.peerEpoch });
    return out;
  }

  status(): (PeerStatus & { version: number })[] {
    const now = this.clock.now();
    return [...this.peers.values()].map((p) => ({
      version: p.link?.version ?? 0,
      node: p.node,
      epoch: p.link?.peerEpoch ?? p.lastEpoch,
      state: p.state,
      lastSeenMs: p.link ? now - p.link.lastSeen : Number.POSITIVE_INFINITY,
      outstanding: p.link?.outstanding ?? 0,
    }));
  }

  /** Our epoch in the current session with `node` (the one the peer sees), if it is up. */
  localEpoch(node: string): number | undefined {
    const link = this.peers.get(node)?.link;
    return link?.state === 'up' ? link.epoch : undefined;
  }

  leaseAge(node: string): number | undefined {
    const link = this.peers.get(node)?.link;
    return link?.state === 'up' ? this.clock.now() - link.leaseBasis : undefined;
  }

  request<T extends RequestMessage>(
    node: string,
    msg: Omit<T, 'id'>,
    opts?: RequestOptions,
  ): Promise<RequestReplyMap[T['t']]> {
    const link = this.peers.get(node)?.link;
    if (link?.state !== 'up') {
      return Promise.reject(new RequestError('E_STALE_EPOCH', node, 'no session with this peer'));
    }
    return link.request<T>(msg, opts?.timeoutMs);
  }

  send(node: string, msg: OneWayMessage): void {
    const link = this.peers.get(node)?.link;
    if (link?.state !== 'up') {
      this.metricsImpl.c.oneWayDropped++;
      return;
    }
    link.sendOneWay(msg);
  }

  onRequest(handler: RequestHandler): void {
    this.handler = handler;
  }

  on<E extends keyof PeerNetworkEvents>(event: E, listener: PeerNetworkEvents[E]): void {
    (this.listeners[event] as Set<PeerNetworkEvents[E]>).add(listener);
  }

  off<E extends keyof PeerNetworkEvents>(event: E, listener: PeerNetworkEvents[E]): void {
    (this.listeners[event] as Set<PeerNetworkEvents[E]>).delete(listener);
  }

  fence(node: string, why: string): void {
    if (!this.peers.has(node)) {
      // Not in the table: no session, and no connection in its handshake or committed to (admit
      // puts every such link in its node's entry, creating it first). Evicted with epochs to
      // remember: its fence goes to its tombstone. Never admitted (or evicted with nothing to
      // remember: never came up, never fenced): no epoch of it came up, so its fenced epoch would
      // stay -1 and any session of it would be admitted exactly as without the fence; an entry made
      // for it would only grow the table past limits.maxPeers (nothing bounds the callers' node ids).
      const t = this.tombstones.get(node);
      this.metricsImpl.c.fences++;
      if (t) t.fencedEpoch = Math.max(t.fencedEpoch, t.lastEpoch);
      this.logger.warn({ peer: node, epoch: t?.fencedEpoch ?? -1, why }, 'protocol: peer fenced');
      return;
    }
    const p = this.peer(node);
    this.metricsImpl.c.fences++;
    // Only sessions that came up (authenticated) move the fenced epoch. A connection still in its
    // handshake is closed but never read: its epoch is a claim nobody has proven yet.
    p.fencedEpoch = Math.max(p.fencedEpoch, p.lastEpoch, p.link?.peerEpoch ?? -1);
    for (const l of p.pending) l.close(CloseCode.FENCED, why.slice(0, 100));
    if (p.link) p.link.close(CloseCode.FENCED, why.slice(0, 100));
    p.state = 'fenced';
    this.logger.warn({ peer: node, epoch: p.fencedEpoch, why }, 'protocol: peer fenced');
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const t of this.targets) {
      t.stopped = true;
      if (t.timer !== undefined) this.clock.clearTimeout(t.timer);
    }
    for (const l of [...this.links]) l.close(CloseCode.NORMAL, 'shutting down');
    await this.listener?.close();
  }

  /** The transport closed a connection at accept: limits.maxPendingConnections were pending. */
  connectionRefused(): void {
    this.metricsImpl.c.pendingRefused++;
  }

  /** Counters snapshot (plain data). */
  metrics(): NetworkMetrics {
    return this.metricsImpl.snapshot();
  }

  /** The epoch our next session will announce (tests). */
  get currentEpoch(): number {
    return this.epochCounter;
  }

  // ---- sessions ---------------------------------------------------------------------------------

  /** The entry of `node`, created if absent (from its tombstone, if it was evicted: its fenced
   * epoch, last epoch and incarnation come back with it). Callers: configuration (addPeer), fence
   * (of a node already in the table) and admitPeer (after authentication), and linkUp (its entry
   * exists: admit made it). Never an unauthenticated connection. */
  private peer(node: string): Peer {
    let p = this.peers.get(node);
    if (!p) {
      const t = this.tombstones.get(node);
      this.tombstones.delete(node);
      p = {
        node,
        pending: new Set(),
        state: 'down',
        fencedEpoch: t?.fencedEpoch ?? -1,
        lastEpoch: t?.lastEpoch ?? -1,
        boot: t?.boot ?? -1,
        lastActive: ++this.activity,
      };
      if (t && t.fencedEpoch >= 0) p.state = 'fenced';
      this.peers.set(node, p);
    }
    return p;
  }

  /**
   * The entry of an authenticated node: an unknown node id that proved the cluster key is admitted
   * as a member (docs/protocol.md §7, "Membership"), as long as the table has room
   * (limits.maxPeers) or an entry can be evicted to make room (evictOne); undefined means refused
   * (close 4012, counted in peersRefused).
   */
  private admitPeer(node: string): Peer | undefined {
    const p = this.peers.get(node);
    if (p) return p;
    // A loop: configured peers (addPeer) may have put the table over the limit.
    while (this.peers.size >= this.limits.maxPeers) if (!this.evictOne()) return undefined;
    return this.peer(node);
  }

  /**
   * Whether an entry may be evicted: nothing of it is live here and nothing names it but the table.
   * It has no session (up or closing), no committed or pending connection (so no request in flight
   * either way: requests exist only on a session), and it is not configured: no address given with
   * its node id (addPeer with `node`, `--peers node=url`) and no dial target that reached it (a
   * DNS/`--peers` address keeps its node as long as the address is dialed and no other node answered
   * there since: removePeer, or another node answering at the address, ends that).
   */
  private evictable(p: Peer, dialed: ReadonlySet<string | undefined>): boolean {
    if (p.link || p.committed || p.pending.size > 0 || p.state === 'up' || p.url !== undefined) return false;
    return !dialed.has(p.node);
  }

  /**
   * Makes room for an authenticated new node id: evicts the evictable entry least recently up. Its
   * epochs go to a tombstone (so a return is judged exactly as if it had stayed: fenced epoch, 4005
   * for an epoch not larger than the last accepted one or an older incarnation); an entry with no
   * epoch to remember (never came up, never fenced) needs none. Tombstones are bounded
   * (limits.maxPeerTombstones) and never forgotten: when they are full, only entries with nothing to
   * remember are evicted. Returns whether an entry was evicted.
   */
  private evictOne(): boolean {
    const roomForTombstone = this.tombstones.size < this.limits.maxPeerTombstones;
    const dialed = new Set(this.targets.map((t) => t.node));
    let best: Peer | undefined;
    for (const p of this.peers.values()) {
      if (!this.evictable(p, dialed)) continue;
      const remembers = p.fencedEpoch >= 0 || p.lastEpoch >= 0 || p.boot >= 0;
      if (remembers && !roomForTombstone) continue;
      if (!best || p.lastActive < best.lastActive) best = p;
    }
    if (!best) return false;
    this.peers.delete(best.node);
    if (best.fencedEpoch >= 0 || best.lastEpoch >= 0 || best.boot >= 0)
      this.tombstones.set(best.node, {
        fencedEpoch: best.fencedEpoch,
        lastEpoch: best.lastEpoch,
        boot: best.boot,
      });
    this.metricsImpl.c.peersEvicted++;
    this.logger.info(
      { peer: best.node, tombstones: this.tombstones.size },
      'protocol: peer-table entry evicted',
    );
    return true;
  }

  /** Node ids evicted from the peer table whose epochs are remembered (tests, status). */
  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  private nextEpoch(): number {
    this.epochCounter += 1;
    return this.epochCounter;
  }

  private newLink(role: 'client' | 'server', conn: import('./transport.js').Conn, expectNode?: string): Link {
    const link = new Link({
      self: this.self,
      role,
      conn,
      clusterKey: this.key,
      versions: this.o.versions,
      epoch: this.nextEpoch(),
      boot: this.boot,
      expectNode,
      limits: this.limits,
      decoder: this.decoder,
      heartbeatMs: this.o.heartbeatMs,
      missedBeats: this.o.missedBeats,
      requestTimeoutMs: this.o.requestTimeoutMs,
      checkOutgoing: this.o.checkOutgoing,
      clock: this.clock,
      metrics: this.metricsImpl,
      logger: this.logger,
      admit: (l, node, epoch, stage) => this.admit(l, node, epoch, stage),
      onUp: (l) => this.linkUp(l),
      onLease: (l, basis) => {
        if (this.peers.get(l.peerNode)?.link === l)
          this.emit('lease', { node: l.peerNode, epoch: l.peerEpoch }, this.clock.now() - basis);
      },
      onClose: (l, code, reason, byUs) => this.linkClosed(l, code, reason, byUs),
      onRequest: (l, msg) => this.incomingRequest(l, msg),
      onOneWay: (l, msg) => this.emit('message', { node: l.peerNode, epoch: l.peerEpoch }, msg),
      onFrame: this.onFrameTap,
    });
    this.links.add(link);
    return link;
  }

  private accept(conn: import('./transport.js').Conn): void {
    if (this.closing) {
      conn.close(CloseCode.NORMAL, 'shutting down');
      return;
    }
    this.newLink('server', conn);
  }

  /**
   * Decides whether a session of `node` at `epoch` may proceed at a step of its handshake; a close
   * code refuses it. The rule (docs/protocol.md §7), in the order checked:
   *
   * 0. at 'hello' (server, not authenticated yet) nothing is decided and nothing is recorded; an
   *    authenticated node id not in the table gets an entry if limits.maxPeers allows, else 4012;
   * 1. fenced epoch, an incarnation older than one that came up, or an epoch not larger than the
   *    last accepted one: 4005;
   * 2. a session of the same incarnation is up here: 4009 (an up session is never replaced by a
   *    duplicate);
   * 3. we committed to another connection of that incarnation (our client link, auth sent): at
   *    'welcome' (a second client link of ours) 4009; at 'auth' the connection dialed by the lower
   *    node id wins: ours → 4009, theirs → our committed link is closed 4009 and this one goes up.
   *    A committed link of an older incarnation is closed 4008 instead;
   * 4. at 'ready' nothing is checked: we committed when we sent auth and the server is up already.
   *
   * Why it converges: each end commits to at most one connection per incarnation (the server when
   * it sends ready, the client when it sends auth), a client never backs out of its commitment on
   * its own, and of two crossing commitments both ends drop the same one (the one the higher id
   * dialed), which never came up on either end.
   */
  private admit(link: Link, node: string, epoch: number, stage: AdmitStage): number | null {
    if (this.closing) return CloseCode.NORMAL;
    // 'hello' is not authenticated: nothing it claims (node id, epoch, boot) may touch the peer
    // table, epochs or fencing. Every decision waits for the proof ('welcome' at a client, 'auth' at
    // a server), so an attacker without the key cannot lock a node out or grow the table.
    if (stage === 'hello') return null;
    const p = this.admitPeer(node);
    if (!p) {
      this.metricsImpl.c.peersRefused++;
      return CloseCode.TOO_MANY_PEERS;
    }
    p.pending.add(link);
    if (stage === 'ready') return null; // committed at 'welcome'; fence and close end the link themselves
    const boot = link.peerBoot;
    if (epoch <= p.fencedEpoch || boot < p.boot) {
      this.metricsImpl.c.staleRefused++;
      return CloseCode.STALE_EPOCH;
    }
    const cur = p.link;
    if (cur && cur !== link && cur.state === 'up' && boot <= cur.peerBoot) {
      // The same incarnation while its session is up: a duplicate. (An older one was refused above.)
      return CloseCode.DUPLICATE;
    }
    if (epoch <= p.lastEpoch) {
      this.metricsImpl.c.staleRefused++;
      return CloseCode.STALE_EPOCH;
    }
    const k = p.committed;
    if (k && k !== link && k.state !== 'closed') {
      if (k.peerBoot > boot) {
        this.metricsImpl.c.staleRefused++;
        return CloseCode.STALE_EPOCH;
      }
      if (k.peerBoot < boot) k.close(CloseCode.SUPERSEDED, 'the peer restarted: a newer incarnation dialed');
      else if (stage === 'welcome' || this.self < node) return CloseCode.DUPLICATE;
      else k.close(CloseCode.DUPLICATE, 'crossing dials: the one dialed by the lower node id is kept');
    }
    if (stage === 'welcome') p.committed = link;
    return null;
  }

  private linkUp(link: Link): void {
    const p = this.peer(link.peerNode);
    p.pending.delete(link);
    if (p.committed === link) p.committed = undefined;
    // Only an older incarnation can be here (admit refuses duplicates): it is over. Its `down` goes
    // out before this session's `up`.
    const why = 'the peer restarted: a newer incarnation replaced this session';
    if (p.committed && p.committed.state !== 'closed') p.committed.close(CloseCode.SUPERSEDED, why);
    const old = p.link;
    if (old && old !== link && old.state !== 'closed') old.close(CloseCode.SUPERSEDED, why);
    p.link = link;
    p.lastEpoch = link.peerEpoch;
    p.boot = Math.max(p.boot, link.peerBoot);
    p.state = 'up';
    p.lastActive = ++this.activity;
    const t = this.targetOf(link);
    // a learned target follows whoever answered (and authenticated) at its address
    if (t && !t.pinned) t.node = link.peerNode;
    for (const x of this.targets) if (x.node === p.node) x.attempt = 0;
    this.metricsImpl.c.sessionsUp++;
    this.logger.info({ peer: p.node, epoch: link.peerEpoch, version: link.version }, 'protocol: peer up');
    this.emit('up', { node: p.node, epoch: link.peerEpoch });
  }

  private readonly linkTargets = new WeakMap<Link, DialTarget>();
  private targetOf(link: Link): DialTarget | undefined {
    return this.linkTargets.get(link);
  }

  private linkClosed(link: Link, code: number, reason: string, byUs: boolean): void {
    this.links.delete(link);
    const byCode = this.metricsImpl.c.closesByCode;
    byCode[code] = (byCode[code] ?? 0) + 1;
    const node = link.peerNode;
    const p = node ? this.peers.get(node) : undefined;
    if (p) {
      p.pending.delete(link);
      if (p.committed === link) p.committed = undefined;
      if (p.link === link) {
        if (!byUs && code === CloseCode.SUPERSEDED) this.idCollision(node, link);
        p.link = undefined;
        p.lastActive = ++this.activity;
        if (p.state !== 'fenced') p.state = 'down';
        this.metricsImpl.c.sessionsDown++;
        const why = `${byUs ? 'closed by us' : 'closed by peer'}: ${closeCodeName(code)} ${reason}`;
        this.logger.info({ peer: node, epoch: link.peerEpoch, why }, 'protocol: peer down');
        this.emit('down', { node, epoch: link.peerEpoch }, why);
        // Targets that idled while the session was up (whoever dialed it) dial again.
        for (const x of this.targets) if (x.node === node && x !== this.targetOf(link)) this.scheduleDial(x);
      }
    }
    if (!byUs && !link.peerNode)
      this.logger.warn({ code, reason, peerError: link.peerError }, 'protocol: handshake failed');
    const t = this.targetOf(link);
    if (t) {
      t.dialing = false;
      // Refused as a duplicate after the welcome (authenticated): now we know who is at this URL,
      // and dial() idles while that session is up.
      if (code === CloseCode.DUPLICATE && node && !t.pinned) t.node = node;
      this.scheduleDial(t);
    }
  }

  /**
   * The peer closed our live session because "a newer incarnation of us" came up there: another
   * live instance authenticated with our node id (a restart of ours would have ended this process).
   * Never silent: counted (`idCollisions`) and logged as an error; the peer now refuses us as stale.
   */
  private idCollision(node: string, link: Link): void {
    this.metricsImpl.c.idCollisions++;
    this.logger.error(
      { peer: node, ourEpoch: link.epoch, self: this.self },
      'protocol: node id collision: another live instance uses our node id',
    );
  }

  private incomingRequest(link: Link, msg: RequestMessage): void {
    const handler = this.handler;
    if (!handler) {
      link.replyError(msg, 'E_BUSY', 'no request handler installed');
      return;
    }
    const from = link.session;
    let result: ReturnType<RequestHandler>;
    try {
      result = handler(from, msg);
    } catch (e) {
      this.handlerFailed(link, msg, e);
      return;
    }
    Promise.resolve(result).then(
      (reply) => {
        try {
          link.reply(msg, reply as unknown as Record<string, unknown>);
        } catch (e) {
          this.logger.error({ error: String(e) }, 'protocol: reply failed');
        }
      },
      (e) => this.handlerFailed(link, msg, e),
    );
  }

  private handlerFailed(link: Link, msg: RequestMessage, e: unknown): void {
    const err = e as { code?: unknown; message?: unknown };
    const code = typeof err?.code === 'string' ? err.code : 'E_INTERNAL';
    if (code === 'E_INTERNAL') this.logger.error({ error: String(e) }, 'protocol: request handler threw');
    link.replyError(msg, code, typeof err?.message === 'string' ? err.message : String(e));
  }

  private emit<E extends keyof PeerNetworkEvents>(event: E, ...args: Parameters<PeerNetworkEvents[E]>): void {
    for (const l of this.listeners[event]) {
      try {
        (l as (...a: unknown[]) => void)(...args);
      } catch (e) {
        this.logger.error({ error: String(e) }, `protocol: ${event} listener threw`);
      }
    }
  }

  // ---- dialing ------------------------------------------------------------------------------------

  private dial(t: DialTarget): void {
    this.started = true;
    if (t.stopped || t.dialing || this.closing) return;
    if (t.node) {
      const p = this.peers.get(t.node);
      if (p?.link?.state === 'up') return; // idle: linkClosed re-arms it when that session ends
    }
    t.dialing = true;
    t.timer = undefined;
    const timeout = this.limits.handshakeTimeoutMs;
    this.transport.dial(t.url, timeout).then(
      (conn) => {
        if (this.closing) {
          conn.close(CloseCode.NORMAL, 'shutting down');
          return;
        }
        // only a configured node id is checked (4010); a learned one is whoever answers now
        const link = this.newLink('client', conn, t.pinned ? t.node : undefined);
        this.linkTargets.set(link, t);
      },
      (e) => {
        this.metricsImpl.c.dialFailures++;
        this.logger.debug({ url: t.url, error: String(e) }, 'protocol: dial failed');
        t.dialing = false;
        this.scheduleDial(t);
      },
    );
  }

  /** Exponential backoff with full jitter: delay = random(0.5..1) × min(max, min × 2^attempt). */
  private scheduleDial(t: DialTarget): void {
    if (t.stopped || this.closing || t.timer !== undefined) return;
    const cap = Math.min(this.o.reconnectMaxMs, this.o.reconnectMinMs * 2 ** Math.min(t.attempt, 20));
    t.attempt++;
    const delay = cap * (0.5 + 0.5 * this.random());
    t.timer = this.clock.setTimeout(() => {
      t.timer = undefined;
      try {
        this.dial(t);
      } catch (e) {
        this.logger.error({ error: String(e) }, 'protocol: dial threw');
      }
    }, delay);
  }
}
