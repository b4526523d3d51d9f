/**
 * Stable error codes (on the wire, in `error` messages and RequestError.code) and WebSocket close
 * codes (4000-4999, private use). docs/errors.md holds the same tables; a test checks they agree.
 */
import type { WireErrorCode } from './messages.js';

export const WIRE_ERROR_CODES: Readonly<Record<WireErrorCode, string>> = Object.freeze({
  E_MALFORMED: 'frame could not be decoded or failed validation',
  E_UNKNOWN_TYPE: 'unknown message type',
  E_TOO_LARGE: 'frame, batch or list over a limit',
  E_VERSION: 'no common protocol version',
  E_AUTH: 'authentication failed',
  E_STATE: 'message not valid in the link state (e.g. a request before ready, hello after ready)',
  E_TOO_MANY: 'too many outstanding requests',
  E_TIMEOUT: 'deadline expired',
  E_STALE_EPOCH: 'session ended, fenced, or superseded before the reply',
  E_NO_SEGMENT: 'unknown or removed segment',
  E_NO_PERMIT: 'unknown or released apid',
  E_PERM: "permission denied by the segment's mode bits",
  E_RANGE: 'page range outside the segment',
  E_ACCESS: 'access mode not allowed by the permit',
  E_FAULT: 'the home could not resolve the page (hole, unmapped): SIGBUS at the attacher',
  E_BUSY: 'temporarily refused (send queue over its high-water mark, or shutting down); retry later',
  E_INTERNAL: 'a bug; logged',
});

export function isWireErrorCode(s: unknown): s is WireErrorCode {
  return typeof s === 'string' && Object.hasOwn(WIRE_ERROR_CODES, s);
}

/** WebSocket close codes used by xpmesh links. Memory transport uses the same numbers. */
export const CloseCode = Object.freeze({
  /** Normal close (network shutting down). */
  NORMAL: 1000,
  /** Frame over limits.maxFrameBytes (set by ws itself). */
  TOO_BIG: 1009,
  /** Protocol violation during the handshake (wrong first frame, malformed hello/welcome/auth). */
  HANDSHAKE: 4000,
  /** No common protocol version. */
  VERSION: 4001,
  /** Repeated malformed frames: the malformed budget (limits.malformedBurst) is exhausted. */
  ABUSE: 4002,
  /** Authentication failed: the peer's proof does not match our cluster key. */
  AUTH: 4003,
  /** Handshake did not complete within limits.handshakeTimeoutMs. */
  HANDSHAKE_TIMEOUT: 4004,
  /** The peer's epoch is not larger than a fenced or current session's epoch. */
  STALE_EPOCH: 4005,
  /** The peer missed limits' heartbeats (missedBeats × heartbeatMs without a frame or pong). */
  HEARTBEAT: 4006,
  /** We fenced the peer: its session is void; reconnect with a larger epoch. */
  FENCED: 4007,
  /** A newer session (larger epoch) of the same peer replaced this one. */
  SUPERSEDED: 4008,
  /** A session with this incarnation of the peer is up (or won a crossing dial): it is kept, this
   * connection is dropped. docs/protocol.md §7. */
  DUPLICATE: 4009,
  /** The node id announced is our own, or not the one configured for this URL. */
  WRONG_NODE: 4010,
  /** Internal error (a bug). */
  INTERNAL: 4011,
  /** An authenticated node id not in the peer table, and the table is full (limits.maxPeers). */
  TOO_MANY_PEERS: 4012,
});
export type CloseCodeName = keyof typeof CloseCode;

export const CLOSE_CODE_DOCS: Readonly<Record<CloseCodeName, string>> = Object.freeze({
  NORMAL: 'normal close: the network is shutting down',
  TOO_BIG: 'frame over limits.maxFrameBytes (set by the ws library)',
  HANDSHAKE: 'protocol violation during the handshake',
  VERSION: 'no common protocol version',
  ABUSE: 'too many malformed frames (malformed budget exhausted)',
  AUTH: 'authentication failed (wrong cluster key)',
  HANDSHAKE_TIMEOUT: 'handshake not complete within limits.handshakeTimeoutMs',
  STALE_EPOCH: 'epoch not larger than a fenced or current session of that node',
  HEARTBEAT: 'peer declared dead after missedBeats heartbeats',
  FENCED: 'peer fenced: session void; reconnect with a larger epoch',
  SUPERSEDED: 'a newer session of the same peer replaced this one',
  DUPLICATE: 'a session between the two nodes already exists',
  WRONG_NODE: 'node id is ours, or not the one configured for this URL',
  INTERNAL: 'internal error (a bug)',
  TOO_MANY_PEERS: 'an authenticated new node id, but the peer table is full (limits.maxPeers)',
});

export function closeCodeName(code: number): string {
  for (const [k, v] of Object.entries(CloseCode)) if (v === code) return k;
  return String(code);
}

/** An error carrying a wire code; `code` survives structured clone as plain data. */
export class WireError extends Error {
  readonly code: WireErrorCode;
  constructor(code: WireErrorCode, message: string) {
    super(message);
    this.name = 'WireError';
    this.code = code;
  }
}
