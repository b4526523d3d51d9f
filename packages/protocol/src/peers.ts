/**
 * The peer network as the driver sees it: a set of authenticated links to other instances, each in
 * a session with an epoch. Implemented over WebSocket and over the in-memory transport.
 *
 * CONTRACT STATUS: agreement between the protocol package and the driver. Additive changes only.
 */
import type { WireErrorCode } from './error-table.js';
import type { OneWayMessage, RequestMessage, RequestReplyMap } from './messages.js';

/** A peer session: the node id and the epoch of its current session. */
export interface PeerSession {
  readonly node: string;
  readonly epoch: number;
}

export type PeerState = 'connecting' | 'up' | 'down' | 'fenced';

export interface PeerStatus extends PeerSession {
  readonly state: PeerState;
  /** Milliseconds since the last frame or pong from the peer: never under the exact age, at most one
   * heartbeat interval over it (the clock is read once per heartbeat while frames flow: Link.lastSeen). */
  readonly lastSeenMs: number;
  /** Requests awaiting a reply. */
  readonly outstanding: number;
}

/** Request options. */
export interface RequestOptions {
  /** Deadline in ms (default: the network's configured request timeout). */
  timeoutMs?: number;
}

/** Thrown (rejected) by request(): `code` is a WireErrorCode ('E_TIMEOUT', 'E_STALE_EPOCH' when the
 * session ended before the reply, or the code of an error reply from the peer). */
export class RequestError extends Error {
  readonly code: WireErrorCode;
  readonly peer: string;
  constructor(code: WireErrorCode, peer: string, message: string) {
    super(`${code} from ${peer}: ${message}`);
    this.name = 'RequestError';
    this.code = code;
    this.peer = peer;
  }
}

/** Handler for requests arriving from a peer: resolve with the reply, or throw an error with a
 * `code` (a WireError, or any error whose code the table maps) which is sent back as an `error` reply. The network fills in `re` and `cid`. */
export type RequestHandler = (
  from: PeerSession,
  msg: RequestMessage,
) => Promise<RequestReplyMap[RequestMessage['t']] | Omit<RequestReplyMap[RequestMessage['t']], 're'>>;

export interface PeerNetworkEvents {
  /** A peer's new session is established (after connect or reconnect). */
  up: (peer: PeerSession) => void;
  /** A peer's session ended: missed heartbeats, closed, or fenced by us. All its outstanding requests
   * have been rejected with E_STALE_EPOCH or E_TIMEOUT before this fires. */
  down: (peer: PeerSession, why: string) => void;
  /** A one-way message arrived. */
  message: (from: PeerSession, msg: OneWayMessage) => void;
  /**
   * The peer's session answered a ping we sent `ageMs` ago: the peer had not closed (fenced) the
   * session at that time or later. A lease taken from the peer may run for L - ageMs from now; the
   * peer, once it closes the session, waits L (plus drift) before it treats what it leased to us as
   * free. See docs/protocol.md "Leases".
   */
  lease: (peer: PeerSession, ageMs: number) => void;
}

/**
 * A network of peer sessions. Contract the driver relies on (docs/protocol.md §7; the driver's
 * DriverState.pruneNodes forgets a node's fencing memory because of it): every session of a node
 * that comes up has an epoch larger than that of every earlier session of that node that came up
 * (and than its fenced epoch), for the network's lifetime, also after the node's peer-table entry
 * was evicted; and a session that ended delivers no request or message any more.
 */
export interface PeerNetwork {
  /** This instance's node id. */
  readonly self: string;
  /** Current sessions (only peers that are up). */
  sessions(): PeerSession[];
  status(): PeerStatus[];
  /** Send a request to `node`'s current session and await its reply. Fails with E_STALE_EPOCH if the
   * session is not up or ends before the reply; E_TIMEOUT at the deadline. */
  request<T extends RequestMessage>(
    node: string,
    msg: Omit<T, 'id'>,
    opts?: RequestOptions,
  ): Promise<RequestReplyMap[T['t']]>;
  /** Age in ms of the lease basis of `node`'s current session (see the 'lease' event): how long
   * ago we sent the latest ping it answered (or opened the session). Undefined if not up. */
  leaseAge(node: string): number | undefined;
  /** Send a one-way message (dropped if the peer is down). */
  send(node: string, msg: OneWayMessage): void;
  /** Install the handler for incoming requests (one handler). */
  onRequest(handler: RequestHandler): void;
  on<E extends keyof PeerNetworkEvents>(event: E, listener: PeerNetworkEvents[E]): void;
  off<E extends keyof PeerNetworkEvents>(event: E, listener: PeerNetworkEvents[E]): void;
  /** Fence a peer: close its session now, reject its outstanding requests, and refuse anything more
   * from that session; it must reconnect with a larger epoch. */
  fence(node: string, why: string): void;
  close(): Promise<void>;
}
