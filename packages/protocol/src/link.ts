/**
 * One session between two instances over one transport connection:
 *
 *   handshake (hello → welcome → auth → ready, version negotiation, mutual HMAC authentication)
 *   → up (requests with ids and deadlines, replies by `re`, one-way messages, heartbeats,
 *         bounded send queue, malformed-frame budget)
 *   → closed (every outstanding request rejected; frames that still arrive are ignored).
 *
 * A link never reconnects: a new connection is a new Link with a new epoch (network.ts).
 * Every callback from the transport is wrapped so that an exception closes the link, never the process.
 */
import { clientProof, newNonce, proofsEqual, serverProof } from './auth.js';
import type { Clock, Logger } from './base.js';
import { encodeLinkFrameLeased, type FrameDecoder } from './codec.js';
import { isWireErrorCode, type WireErrorCode } from './error-table.js';
import { CloseCode, closeCodeName, WireError } from './errors.js';
import { type IdEntry, IdTable } from './id-table.js';
import type { Limits } from './limits.js';
import { LINK_INITIAL, type LinkState, nextLinkState } from './link-state.js';
import type {
  ErrorMsg,
  Message,
  OneWayMessage,
  ReplyMessage,
  RequestMessage,
  RequestReplyMap,
} from './messages.js';
import type { Metrics } from './metrics.js';
import { type PeerSession, RequestError } from './peers.js';
import type { Conn } from './transport.js';

/** The handshake step at which a link asks the network whether the session may proceed. */
export type AdmitStage = 'hello' | 'welcome' | 'auth' | 'ready';

/** Which reply type answers which request. */
export const REPLY_TYPE: Readonly<Record<RequestMessage['t'], ReplyMessage['t']>> = Object.freeze({
  get: 'get-ok',
  release: 'ok',
  map: 'map-ok',
  invalidate: 'invalidate-ack',
  detach: 'ok',
});

const REQUEST_TYPES = new Set<string>(Object.keys(REPLY_TYPE));
const RESOLVED = Promise.resolve();
const REPLY_TYPES = new Set<string>(['get-ok', 'ok', 'map-ok', 'invalidate-ack']);
const HANDSHAKE_TYPES = new Set<string>(['hello', 'welcome', 'auth', 'ready']);

export interface LinkOptions {
  self: string;
  role: 'client' | 'server';
  conn: Conn;
  clusterKey: Buffer;
  /** Versions we speak, ascending. */
  versions: readonly number[];
  /** Our epoch for this session. */
  epoch: number;
  /** Our incarnation (the same in every session of this process), sent as `boot` in hello/welcome. */
  boot: number;
  /** Client: the node id we expect at this address (if known). */
  expectNode?: string;
  limits: Limits;
  decoder: FrameDecoder;
  heartbeatMs: number;
  missedBeats: number;
  requestTimeoutMs: number;
  /** Validate outgoing messages too (catches a local bug before the peer sees it). */
  checkOutgoing: boolean;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
  /**
   * Peer admission, at each step of the handshake where this end decides (see network.ts admit):
   * 'hello' (server, before welcome), 'welcome' (client, before auth: accepting commits the client
   * to this session), 'auth' (server, before ready: accepting brings the session up), 'ready'
   * (client, before going up). A close code refuses, null accepts.
   */
  admit(link: Link, node: string, epoch: number, stage: AdmitStage): number | null;
  onUp(link: Link): void;
  /** The lease basis moved forward (see Link.leaseBasis). */
  onLease?(link: Link, basis: number): void;
  onClose(link: Link, code: number, reason: string, byUs: boolean): void;
  onRequest(link: Link, msg: RequestMessage): void;
  onOneWay(link: Link, msg: OneWayMessage): void;
  onFrame?: (dir: 'in' | 'out', node: string, frame: Uint8Array) => void;
}

interface Pending extends IdEntry {
  expect: ReplyMessage['t'];
  resolve: (m: Message) => void;
  reject: (e: RequestError) => void;
  /** Absolute deadline (clock.now() ms); enforced by the link's one sweep timer. */
  deadline: number;
  t: RequestMessage['t'];
  ms: number;
}

/** Soft cap (estimated bytes) of one batch frame: page-carrying messages travel a few per frame,
 * so the receiver can start on the first ones while the rest are still on the wire. */
const BATCH_SOFT_BYTES = 16 * 1024;

/** Rough size of a message on the wire, for the high-water mark before it is encoded. By type: only
 * the fields that type carries are read (one property read per message, not three megamorphic ones).
 * A field of the wrong shape (a local bug, refused by outgoing validation) counts as empty. */
function estimateBytes(m: Message): number {
  switch (m.t) {
    case 'map-ok':
      return 96 + count(m.pages) * 4120;
    case 'invalidate-ack':
      return 96 + count(m.dirty) * 4120;
    case 'invalidate':
      return 96 + count(m.ranges) * 12;
    case 'detach':
      return 96 + count(m.dirty) * 4120 + count(m.ranges) * 12;
    default:
      return 96;
  }
}
/** Outgoing check, the common case: the ingress checker's fast path accepts it (what it accepts, the
 * schemas accept). Only a refusal runs the full validator, for its verdict and message. */
function outgoingOk(decoder: FrameDecoder, m: unknown): boolean {
  return decoder.validator.acceptable(m);
}

/**
 * The message a link sends for a request (`withId`) or a reply (`withRe`): a copy of what the caller
 * gave (which it may reuse) with our id / the request's id. For the types a serial round trip sends
 * most, an object literal of the type's own fields (~15 ns; Object.assign is ~100 ns on Node 20, an
 * object spread ~1 µs); Object.assign for the rest. A field the type does not have is not copied:
 * the fast encoder writes only the type's fields anyway (fast-encode.ts), and outgoing validation
 * ignores unknown keys as the receiver does (docs/protocol.md "Encoding"), so what is checked and
 * what is sent are the same as with a full copy. An absent optional `cid` becomes an undefined
 * one, which both treat as absent.
 */
function withId(msg: Record<string, unknown>, id: number): RequestMessage {
  switch (msg.t) {
    case 'map':
      return {
        t: 'map',
        id,
        cid: msg.cid,
        apid: msg.apid,
        page: msg.page,
        count: msg.count,
        access: msg.access,
      } as RequestMessage;
    case 'invalidate':
      return {
        t: 'invalidate',
        id,
        cid: msg.cid,
        segid: msg.segid,
        ranges: msg.ranges,
        reason: msg.reason,
        writeback: msg.writeback,
        downgrade: msg.downgrade,
        upTo: msg.upTo,
      } as RequestMessage;
    default: {
      // Not `{ ...msg, id }`: on Node 20 that object spread costs ~1 µs per call here.
      const full = Object.assign({}, msg) as unknown as RequestMessage;
      full.id = id;
      return full;
    }
  }
}

/** See withId. `cid`: the reply's own, else the request's. */
function withRe(reply: Record<string, unknown>, req: RequestMessage): Record<string, unknown> {
  const cid = reply.cid !== undefined ? reply.cid : req.cid;
  switch (reply.t) {
    case 'map-ok':
      return { t: 'map-ok', re: req.id, cid, access: reply.access, pages: reply.pages, grants: reply.grants };
    case 'invalidate-ack':
      return { t: 'invalidate-ack', re: req.id, cid, dirty: reply.dirty };
    case 'ok':
      return { t: 'ok', re: req.id, cid };
    default: {
      const msg = Object.assign({}, reply);
      msg.re = req.id;
      if (msg.cid === undefined && req.cid !== undefined) msg.cid = req.cid;
      return msg;
    }
  }
}

function count(a: unknown): number {
  return Array.isArray(a) ? a.length : 0;
}

export class Link {
  state: LinkState;
  /** Peer node id and epoch, known after hello (server) / welcome (client). */
  peerNode = '';
  peerEpoch = -1;
  /** `{ node: peerNode, epoch: peerEpoch }`, frozen, set when the session comes up (neither changes
   * after that): what request handlers get as `from`, one object per session instead of per request. */
  session: PeerSession = Object.freeze({ node: '', epoch: -1 });
  /** The peer's incarnation (`boot` of its hello/welcome; its epoch if it sent none). */
  peerBoot = -1;
  version = 0;
  readonly epoch: number;
  readonly role: 'client' | 'server';
  /**
   * Clock ms of a frame or pong from the peer: the first one since our latest heartbeat (or since the
   * session came up), so the age `now - lastSeen` is at most one heartbeat interval (heartbeatMs)
   * over the exact age of the last one, never under it. Not the exact time: that would be a clock
   * read per frame (Date.now() is 0.1-0.16 µs on this VM, two per round trip), for a figure only
   * shown (PeerStatus.lastSeenMs); the heartbeat itself counts frames by `seenSinceBeat`.
   */
  lastSeen: number;
  /**
   * Lease basis (clock ms): the send time of our latest ping that the peer answered, or the link's
   * creation before any pong. The peer's end of this session was open (not closed, not fenced by
   * it) at some moment after this time. A party that leases something to us over this session and
   * then closes it knows our basis is older than its close, so our lease (basis + L) ends at most L
   * after its close.
   */
  leaseBasis: number;
  closeCode = 0;
  closeReason = '';
  /** Last error message the peer sent during the handshake (explains the close that follows). */
  peerError: ErrorMsg | undefined;

  private readonly o: LinkOptions;
  /** Outstanding requests by id (id-table.ts: it also hands out the ids). */
  private readonly pending = new IdTable<Pending>();
  private incoming = 0;
  /** Messages queued in this turn: the first `queueLen` entries of `queue` (and their estimates). */
  private queue: Message[] = [];
  private queueEst: number[] = [];
  private queueLen = 0;
  /** The arrays of the previous flush, cleared, for the next one: no new arrays per flush (a
   * flush that runs inside a flush finds none and takes new ones). */
  private spareQueue: Message[] | undefined;
  private spareEst: number[] | undefined;
  private queuedBytes = 0;
  /** One timer for every request deadline of this link, armed for the earliest one. */
  private sweepTimer: unknown;
  private sweepAt = Number.POSITIVE_INFINITY;
  private flushScheduled = false;
  private seenSinceBeat = true;
  /** lastSeen was stamped since our latest heartbeat (see lastSeen). */
  private stampedSinceBeat = false;
  /** Send times of pings not answered yet, oldest first (pongs come back in order). */
  private pingTimes: number[] = [];
  private missed = 0;
  private beatTimer: unknown;
  private handshakeTimer: unknown;
  private myNonce: Uint8Array = newNonce();
  private peerNonce: Uint8Array | undefined;
  private early: Uint8Array[] = [];
  private budget: number;
  private budgetAt: number;

  constructor(o: LinkOptions) {
    this.o = o;
    this.role = o.role;
    this.epoch = o.epoch;
    this.state = LINK_INITIAL[o.role].state;
    this.lastSeen = o.clock.now();
    this.leaseBasis = this.lastSeen;
    this.budget = o.limits.malformedBurst;
    this.budgetAt = this.lastSeen;
    this.handshakeTimer = o.clock.setTimeout(
      () =>
        this.guard(() => this.close(CloseCode.HANDSHAKE_TIMEOUT, 'handshake timeout', 'handshakeFailures')),
      o.limits.handshakeTimeoutMs,
    );
    o.conn.setHandlers({
      onFrame: (f) => this.guardedFrame(f),
      onPong: () => this.guard(() => this.pong()),
      onClose: (code, reason) => this.guard(() => this.closed(code, reason, false)),
    });
    if (o.role === 'client') {
      this.sendNow({
        t: 'hello',
        versions: [...o.versions],
        node: o.self,
        epoch: o.epoch,
        boot: o.boot,
        nonce: this.myNonce,
      });
    }
  }

  get outstanding(): number {
    return this.pending.size;
  }

  get peer(): { node: string; epoch: number } {
    return { node: this.peerNode, epoch: this.peerEpoch };
  }

  /** Bytes waiting: our unsent batch plus the transport's buffer. */
  bufferedBytes(): number {
    return this.queuedBytes + this.o.conn.bufferedAmount();
  }

  // ---- sending ----------------------------------------------------------------------------------

  /** Sends a request and resolves with the reply (or rejects with a RequestError). */
  request<T extends RequestMessage>(
    msg: Omit<T, 'id'>,
    timeoutMs?: number,
  ): Promise<RequestReplyMap[T['t']]> {
    const o = this.o;
    const m = o.metrics.c;
    if (this.state !== 'up') {
      return Promise.reject(new RequestError('E_STALE_EPOCH', this.peerNode, 'session is not up'));
    }
    if (this.pending.size >= o.limits.maxOutstandingRequests) {
      m.tooManyRejections++;
      return Promise.reject(new RequestError('E_TOO_MANY', this.peerNode, 'too many outstanding requests'));
    }
    // A copy (the caller may reuse `msg`) with our id.
    const full = withId(msg as Record<string, unknown>, this.pending.allocId());
    const est = estimateBytes(full);
    if (this.bufferedBytes() + est > o.limits.sendHighWaterBytes) {
      m.busyRejections++;
      return Promise.reject(new RequestError('E_BUSY', this.peerNode, 'send queue over its high-water mark'));
    }
    if (o.checkOutgoing && !outgoingOk(o.decoder, full)) {
      const r = o.decoder.validator.validate(full);
      if (!r.ok) return Promise.reject(new RequestError(r.code, o.self, `outgoing ${r.message}`));
    }
    // An idle link (nothing outstanding, nothing queued) sends the request now, alone in its frame,
    // without the turn's flush job: a serial round trip pays no promise hop for it. Requests made
    // while others are outstanding (pipelined traffic) are queued and leave batched at the turn's
    // flush, as before; so does every request after the first of a burst that starts on an idle
    // link (the first has made it busy). Order is kept: the queue is empty, nothing sent later can
    // overtake this one. test/link-queue.test.ts checks both.
    const alone = this.pending.size === 0 && this.queueLen === 0;
    const ms = timeoutMs ?? o.requestTimeoutMs;
    const deadline = o.clock.now() + ms;
    const p = new Promise<RequestReplyMap[T['t']]>((resolve, reject) => {
      this.pending.set({
        id: full.id,
        seq: 0,
        expect: REPLY_TYPE[full.t],
        resolve: resolve as (m: Message) => void,
        reject,
        deadline,
        t: full.t,
        ms,
      });
    });
    if (deadline < this.sweepAt) this.armSweep(deadline);
    if (alone) this.sendAlone(full);
    else this.enqueue(full, est);
    return p;
  }

  /** (Re)arms the deadline timer for `at` (absolute ms). */
  private armSweep(at: number): void {
    const c = this.o.clock;
    if (this.sweepTimer !== undefined) c.clearTimeout(this.sweepTimer);
    this.sweepAt = at;
    this.sweepTimer = c.setTimeout(() => this.guard(() => this.sweep()), Math.max(0, at - c.now()));
  }

  /** Rejects every request past its deadline (in send order), re-arms for the next deadline. */
  private sweep(): void {
    this.sweepTimer = undefined;
    this.sweepAt = Number.POSITIVE_INFINITY;
    if (this.state === 'closed') return;
    const now = this.o.clock.now();
    let next = Number.POSITIVE_INFINITY;
    for (const p of this.pending.entries()) {
      if (p.deadline <= now) {
        this.pending.take(p.id);
        this.o.metrics.c.requestTimeouts++;
        p.reject(new RequestError('E_TIMEOUT', this.peerNode, `${p.t} ${p.id}: no reply within ${p.ms} ms`));
      } else if (p.deadline < next) next = p.deadline;
    }
    // A timer may fire a little before the wall clock reaches the deadline: never spin.
    if (next !== Number.POSITIVE_INFINITY) this.armSweep(Math.max(next, now + 1));
  }

  /** Sends a one-way message; returns false (and counts) if dropped (not up, or over high-water). */
  sendOneWay(msg: OneWayMessage): boolean {
    const m = this.o.metrics.c;
    const est = estimateBytes(msg);
    if (this.state !== 'up' || this.bufferedBytes() + est > this.o.limits.sendHighWaterBytes) {
      m.oneWayDropped++;
      return false;
    }
    if (this.o.checkOutgoing && !outgoingOk(this.o.decoder, msg)) {
      const r = this.o.decoder.validator.validate(msg);
      if (!r.ok) {
        this.o.logger.error({ error: r.message }, 'protocol: invalid outgoing one-way message dropped');
        m.oneWayDropped++;
        return false;
      }
    }
    this.enqueue(msg, est);
    return true;
  }

  /** Sends a reply (always queued: replies are bounded by limits.maxIncomingRequests). */
  reply(req: RequestMessage, reply: Record<string, unknown>): void {
    if (this.incoming > 0) this.incoming--;
    if (this.state !== 'up') return; // session ended: a reply for it must not reach a later session
    // A copy with `re` (see withRe).
    let msg = withRe(reply, req);
    if (msg.t !== REPLY_TYPE[req.t] && msg.t !== 'error') {
      this.o.logger.error({ req: req.t, reply: msg.t }, 'protocol: handler returned the wrong reply type');
      msg = {
        t: 'error',
        re: req.id,
        cid: req.cid,
        code: 'E_INTERNAL',
        message: `wrong reply type ${msg.t}`,
      };
    } else if (this.o.checkOutgoing && !outgoingOk(this.o.decoder, msg)) {
      const r = this.o.decoder.validator.validate(msg);
      if (!r.ok) {
        this.o.logger.error({ error: r.message }, 'protocol: handler returned an invalid reply');
        msg = {
          t: 'error',
          re: req.id,
          cid: req.cid,
          code: 'E_INTERNAL',
          message: `invalid reply: ${r.message}`,
        };
      }
    }
    // The last reply this link owes: no other reply can join its frame, so it leaves now (with
    // whatever else this turn queued before it) instead of after the rest of this turn's microtasks,
    // and no flush is scheduled for it (one promise hop less on every serial round trip; a flush
    // scheduled earlier in the turn for other messages then finds the queue empty).
    // While other requests of the peer are outstanding, replies wait for the turn's flush and leave
    // batched (test/link-queue.test.ts); either way a reply is encoded in the turn it is queued.
    const m = msg as unknown as Message;
    if (this.incoming === 0) {
      if (this.queueLen === 0) this.sendAlone(m);
      else {
        this.push(m, estimateBytes(m));
        this.flushGuarded();
      }
    } else this.enqueue(m, estimateBytes(m));
  }

  /** Sends an error reply for a request. */
  replyError(req: RequestMessage, code: string, message: string): void {
    const c: WireErrorCode = isWireErrorCode(code) ? code : 'E_INTERNAL';
    this.reply(req, { t: 'error', code: c, message: String(message).slice(0, 512) });
  }

  /** Appends to this turn's queue; the caller flushes (or enqueue() schedules the flush). */
  private push(msg: Message, est: number): void {
    const n = this.queueLen++;
    this.queue[n] = msg;
    this.queueEst[n] = est;
    this.queuedBytes += est;
  }

  private enqueue(msg: Message, est: number): void {
    this.push(msg, est);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // A native promise, not queueMicrotask: fake-timers may fake the latter. One resolved promise
      // for every link (a `then` on it queues the job; nothing is allocated for the promise itself).
      RESOLVED.then(this.flushGuarded);
    }
  }

  /**
   * Encodes the queue (everything queued in this turn) into batch frames of at most limits.maxBatch
   * messages and about BATCH_SOFT_BYTES (never over maxFrameBytes / 2 estimated), and hands them to
   * the transport corked, so one turn's frames leave in one write.
   */
  private flush(): void {
    this.flushScheduled = false;
    // Already sent by an earlier flush of this turn (the last reply's, see reply()).
    if (this.queueLen === 0) return;
    const q = this.queue;
    const est = this.queueEst;
    const count = this.queueLen;
    this.queue = this.spareQueue ?? [];
    this.queueEst = this.spareEst ?? [];
    this.spareQueue = undefined;
    this.spareEst = undefined;
    this.queueLen = 0;
    this.queuedBytes = 0;
    if (this.state === 'closed') return;
    if (count === 1) {
      // one message: one frame, nothing to batch or cork
      try {
        this.sendNow(q[0]);
      } finally {
        q[0] = undefined as unknown as Message;
        this.spareQueue = q;
        this.spareEst = est;
      }
      return;
    }
    const { maxBatch, maxFrameBytes } = this.o.limits;
    const cap = Math.min(BATCH_SOFT_BYTES, maxFrameBytes / 2);
    const conn = this.o.conn;
    const corked = conn.cork !== undefined;
    if (corked) conn.cork!();
    try {
      let i = 0;
      while (i < count) {
        const limit = Math.min(maxBatch, count - i);
        let n = 1;
        let bytes = est[i];
        while (n < limit && bytes + est[i + n] <= cap) {
          bytes += est[i + n];
          n++;
        }
        this.sendNow(n === 1 ? q[i] : q.slice(i, i + n));
        i += n;
      }
    } finally {
      if (corked) conn.uncork!();
      for (let k = 0; k < count; k++) q[k] = undefined as unknown as Message; // let them be collected
      this.spareQueue = q;
      this.spareEst = est;
    }
  }

  /** One message sent now, in its own frame, past an empty queue (request() and reply() say when);
   * a failure closes the link as a failed flush does. */
  private sendAlone(m: Message): void {
    try {
      this.sendNow(m);
    } catch (e) {
      this.failed(e);
    }
  }

  private sendNow(m: Message | Message[]): void {
    const { frame, release } = encodeLinkFrameLeased(m);
    if (Array.isArray(m)) this.o.metrics.frameOut(m, frame.byteLength);
    else this.o.metrics.frameOut1(m.t, frame.byteLength);
    const tap = this.o.onFrame;
    if (tap === undefined) {
      // The transport is the frame's last reader: it gives the encoder's lease back once done.
      this.o.conn.send(frame, release);
    } else {
      // A tap may keep the frame (tests record them): the lease is never given back, so these
      // bytes are never reused (fast-encode.ts Slab; test/slab-reuse.test.ts).
      tap('out', this.peerNode, frame);
      this.o.conn.send(frame);
    }
  }

  // ---- receiving --------------------------------------------------------------------------------

  private seen(): void {
    this.seenSinceBeat = true;
    if (this.stampedSinceBeat) return;
    this.stampedSinceBeat = true;
    this.lastSeen = this.o.clock.now();
  }

  private pong(): void {
    this.seen();
    const sent = this.pingTimes.shift();
    if (sent === undefined || sent <= this.leaseBasis || this.state !== 'up') return;
    this.leaseBasis = sent;
    this.o.onLease?.(this, sent);
  }

  private onFrame(frame: Uint8Array): void {
    if (this.state === 'closed') return;
    this.seen();
    this.o.onFrame?.('in', this.peerNode, frame);
    if (this.state === 'await-ready' && this.early.length > 0) {
      this.bufferEarly(frame);
      return;
    }
    const r = this.o.decoder.decode(frame);
    if (!r.ok) {
      this.o.metrics.c.framesIn++;
      this.o.metrics.c.bytesIn += frame.byteLength;
      this.reject(r.code, r.message, r.re);
      return;
    }
    if (r.messages.length === 1) this.o.metrics.frameIn1(r.messages[0].t, frame.byteLength);
    else this.o.metrics.frameIn(r.messages, frame.byteLength);
    switch (this.state) {
      case 'await-hello':
        this.onHello(r.messages);
        return;
      case 'await-welcome':
        this.onWelcome(r.messages);
        return;
      case 'await-auth':
        this.onAuth(r.messages);
        return;
      case 'await-ready':
        this.onReady(r.messages, frame);
        return;
      case 'up':
        for (const msg of r.messages) {
          if (this.state !== 'up') return;
          this.dispatch(msg);
        }
        return;
    }
  }

  /** A rejected frame: error reply, count, and close when the malformed budget is spent. */
  private reject(code: WireErrorCode, message: string, re?: number): void {
    const o = this.o;
    o.metrics.rejected(code);
    if (this.state !== 'up') {
      // Before authentication nobody gets a second chance.
      this.sendError(code, message, re);
      this.close(CloseCode.HANDSHAKE, `${code}: ${message}`.slice(0, 120), 'handshakeFailures');
      return;
    }
    this.sendError(code, message, re);
    const now = o.clock.now();
    this.budget = Math.min(
      o.limits.malformedBurst,
      this.budget + ((now - this.budgetAt) / 1000) * o.limits.malformedPerSecond,
    );
    this.budgetAt = now;
    this.budget -= 1;
    if (this.budget < 0) this.close(CloseCode.ABUSE, 'too many malformed frames', 'abuseCloses');
  }

  private sendError(code: WireErrorCode, message: string, re?: number): void {
    this.o.metrics.c.errorsSent++;
    const m: ErrorMsg = { t: 'error', code, message: message.slice(0, 512) };
    if (re !== undefined) m.re = re;
    this.enqueue(m, 128);
  }

  private dispatch(msg: Message): void {
    const o = this.o;
    const t = msg.t;
    if (REQUEST_TYPES.has(t)) {
      const req = msg as RequestMessage;
      if (this.incoming >= o.limits.maxIncomingRequests) {
        o.metrics.c.incomingRefused++;
        this.sendError(
          'E_TOO_MANY',
          `more than ${o.limits.maxIncomingRequests} requests outstanding`,
          req.id,
        );
        return;
      }
      this.incoming++;
      o.onRequest(this, req);
      return;
    }
    if (REPLY_TYPES.has(t) || (t === 'error' && msg.re !== undefined)) {
      const re = (msg as { re: number }).re;
      const p = this.pending.take(re);
      if (p === undefined) {
        o.metrics.c.lateReplies++;
        return;
      }
      if (t === 'error') {
        const e = msg as ErrorMsg;
        p.reject(new RequestError(e.code, this.peerNode, e.message));
      } else if (t !== p.expect) {
        o.metrics.rejected('E_MALFORMED');
        p.reject(new RequestError('E_MALFORMED', this.peerNode, `expected ${p.expect}, got ${t}`));
      } else {
        p.resolve(msg);
      }
      return;
    }
    if (t === 'segment-gone' || t === 'error') {
      o.onOneWay(this, msg as OneWayMessage);
      return;
    }
    if (HANDSHAKE_TYPES.has(t)) {
      this.reject('E_STATE', `${t} after the handshake`);
      return;
    }
    this.reject('E_UNKNOWN_TYPE', `unexpected ${t}`);
  }

  // ---- handshake --------------------------------------------------------------------------------

  private single(msgs: Message[], t: Message['t']): Message | undefined {
    const m = msgs.length === 1 ? msgs[0] : undefined;
    if (m && m.t === 'error' && this.state !== 'await-hello') {
      this.peerError = m;
      return undefined;
    }
    if (!m || m.t !== t) {
      this.reject('E_STATE', `expected ${t}`);
      return undefined;
    }
    return m;
  }

  private onHello(msgs: Message[]): void {
    const h = this.single(msgs, 'hello');
    if (h?.t !== 'hello') return;
    const o = this.o;
    this.peerNode = h.node;
    this.peerEpoch = h.epoch;
    this.peerBoot = h.boot ?? h.epoch;
    const common = o.versions.filter((v) => h.versions.includes(v));
    if (common.length === 0) {
      o.metrics.c.versionFailures++;
      this.sendError('E_VERSION', `no common version: we speak ${o.versions.join(',')}`);
      this.close(CloseCode.VERSION, 'no common protocol version');
      return;
    }
    this.version = Math.max(...common);
    if (h.node === o.self) {
      this.close(CloseCode.WRONG_NODE, 'peer uses our node id', 'handshakeFailures');
      return;
    }
    const refuse = o.admit(this, h.node, h.epoch, 'hello');
    if (refuse !== null) {
      this.close(refuse, `refused: ${closeCodeName(refuse)}`);
      return;
    }
    this.peerNonce = h.nonce;
    const proof = serverProof(o.clusterKey, h.nonce, this.myNonce, h.node, o.self);
    this.sendNow({
      t: 'welcome',
      version: this.version,
      node: o.self,
      epoch: o.epoch,
      boot: o.boot,
      nonce: this.myNonce,
      proof,
    });
    this.state = nextLinkState(this.state, 'hello');
  }

  private onWelcome(msgs: Message[]): void {
    const w = this.single(msgs, 'welcome');
    if (w?.t !== 'welcome') return;
    const o = this.o;
    this.peerNode = w.node;
    this.peerEpoch = w.epoch;
    this.peerBoot = w.boot ?? w.epoch;
    if (!o.versions.includes(w.version)) {
      o.metrics.c.versionFailures++;
      this.close(CloseCode.VERSION, `server chose version ${w.version} we do not speak`);
      return;
    }
    this.version = w.version;
    if (w.node === o.self || (o.expectNode !== undefined && w.node !== o.expectNode)) {
      this.close(
        CloseCode.WRONG_NODE,
        `expected ${o.expectNode ?? 'another node'}, got ${w.node}`,
        'handshakeFailures',
      );
      return;
    }
    const expected = serverProof(o.clusterKey, this.myNonce, w.nonce, o.self, w.node);
    if (!proofsEqual(expected, w.proof)) {
      o.metrics.c.authFailures++;
      this.close(CloseCode.AUTH, 'server proof does not match the cluster key');
      return;
    }
    const refuse = o.admit(this, w.node, w.epoch, 'welcome');
    if (refuse !== null) {
      this.close(refuse, `refused: ${closeCodeName(refuse)}`);
      return;
    }
    this.peerNonce = w.nonce;
    this.sendNow({ t: 'auth', proof: clientProof(o.clusterKey, this.myNonce, w.nonce, o.self, w.node) });
    this.state = nextLinkState(this.state, 'welcome');
  }

  private onAuth(msgs: Message[]): void {
    const a = this.single(msgs, 'auth');
    if (a?.t !== 'auth') return;
    const o = this.o;
    const expected = clientProof(o.clusterKey, this.peerNonce!, this.myNonce, this.peerNode, o.self);
    if (!proofsEqual(expected, a.proof)) {
      o.metrics.c.authFailures++;
      this.sendError('E_AUTH', 'authentication failed');
      this.close(CloseCode.AUTH, 'authentication failed');
      return;
    }
    // Admission again: another session of this node may have come up (or been committed to by us
    // as its client) while we waited for auth. Accepting here brings this session up.
    const refuse = o.admit(this, this.peerNode, this.peerEpoch, 'auth');
    if (refuse !== null) {
      this.close(refuse, `refused: ${closeCodeName(refuse)}`);
      return;
    }
    this.sendNow({ t: 'ready', epoch: this.peerEpoch });
    this.goUp();
  }

  private onReady(msgs: Message[], frame: Uint8Array): void {
    const first = msgs[0];
    if (first?.t === 'error') {
      this.peerError = first;
      return;
    }
    if (first?.t !== 'ready') {
      // Only a reordering transport can deliver session traffic before ready: keep it for later.
      this.bufferEarly(frame);
      return;
    }
    if (msgs.length !== 1 || first.epoch !== this.o.epoch) {
      this.reject('E_STATE', 'ready must be alone and echo our epoch');
      return;
    }
    const refuse = this.o.admit(this, this.peerNode, this.peerEpoch, 'ready');
    if (refuse !== null) {
      this.close(refuse, `refused: ${closeCodeName(refuse)}`);
      return;
    }
    this.goUp();
    const early = this.early;
    this.early = [];
    for (const f of early) {
      if (this.state !== 'up') return;
      this.onFrame(f);
    }
  }

  private bufferEarly(frame: Uint8Array): void {
    if (this.early.length >= this.o.limits.maxEarlyFrames) {
      this.close(CloseCode.HANDSHAKE, 'too many frames before ready', 'handshakeFailures');
      return;
    }
    this.early.push(frame);
  }

  private goUp(): void {
    this.session = Object.freeze({ node: this.peerNode, epoch: this.peerEpoch });
    this.state = nextLinkState(this.state, this.role === 'server' ? 'auth' : 'ready');
    this.o.conn.authenticated?.();
    this.o.clock.clearTimeout(this.handshakeTimer);
    this.stampedSinceBeat = false; // the session's first stamp is its coming up
    this.seen();
    this.scheduleBeat();
    this.o.onUp(this);
  }

  // ---- heartbeats -------------------------------------------------------------------------------

  private scheduleBeat(): void {
    this.beatTimer = this.o.clock.setTimeout(() => this.guard(() => this.beat()), this.o.heartbeatMs);
  }

  private beat(): void {
    if (this.state !== 'up') return;
    if (this.seenSinceBeat) this.missed = 0;
    else this.missed++;
    this.seenSinceBeat = false;
    this.stampedSinceBeat = false;
    if (this.missed >= this.o.missedBeats) {
      this.close(CloseCode.HEARTBEAT, `no frame or pong for ${this.missed} heartbeats`, 'heartbeatDeaths');
      return;
    }
    this.pingTimes.push(this.o.clock.now());
    if (this.pingTimes.length > 64) this.pingTimes.shift();
    this.o.conn.ping();
    this.scheduleBeat();
  }

  // ---- closing ----------------------------------------------------------------------------------

  /** Closes the session: rejects every outstanding request, closes the connection. Idempotent. */
  close(
    code: number,
    reason: string,
    counter?: 'handshakeFailures' | 'abuseCloses' | 'heartbeatDeaths',
  ): void {
    if (this.state === 'closed') return;
    if (counter) this.o.metrics.c[counter]++;
    // Flush queued errors first so the peer learns why (best effort).
    if (this.queueLen > 0) this.flush();
    // Closed by us before the transport is told: a transport that reports its own close back
    // synchronously (ws does) then finds the link closed, so nothing is counted twice (a wrong
    // key counted once in authFailures, not once more as "closed by the peer with 4003").
    this.closed(code, reason, true);
    this.o.conn.close(code, reason);
  }

  private closed(code: number, reason: string, byUs: boolean): void {
    if (this.state === 'closed') return;
    const wasUp = this.state === 'up';
    this.state = nextLinkState(this.state, 'close');
    this.closeCode = code;
    this.closeReason = reason;
    const c = this.o.clock;
    c.clearTimeout(this.handshakeTimer);
    c.clearTimeout(this.beatTimer);
    if (this.sweepTimer !== undefined) c.clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.sweepAt = Number.POSITIVE_INFINITY;
    this.queue = [];
    this.queueEst = [];
    this.queueLen = 0;
    this.spareQueue = undefined;
    this.spareEst = undefined;
    this.queuedBytes = 0;
    this.early = [];
    const why = `${closeCodeName(code)}: ${reason}`;
    const left = this.pending.entries();
    this.pending.clear();
    for (const p of left) {
      p.reject(
        new RequestError('E_STALE_EPOCH', this.peerNode, `session ended before reply to ${p.id} (${why})`),
      );
    }
    if (!wasUp && code === CloseCode.AUTH && !byUs) this.o.metrics.c.authFailures++;
    this.o.onClose(this, code, reason, byUs);
  }

  /** `guard(() => this.onFrame(f))` without a closure per frame. */
  private guardedFrame(f: Uint8Array): void {
    try {
      this.onFrame(f);
    } catch (e) {
      this.failed(e);
    }
  }

  private readonly flushGuarded = (): void => {
    try {
      this.flush();
    } catch (e) {
      this.failed(e);
    }
  };

  private failed(e: unknown): void {
    this.o.logger.error({ error: String((e as Error)?.stack ?? e) }, 'protocol: link callback failed');
    try {
      this.close(CloseCode.INTERNAL, 'internal error');
    } catch {
      // nothing more to do
    }
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.o.logger.error({ error: String((e as Error)?.stack ?? e) }, 'protocol: link callback failed');
      try {
        this.close(CloseCode.INTERNAL, 'internal error');
      } catch {
        // nothing more to do
      }
    }
  }
}

export { WireError };
