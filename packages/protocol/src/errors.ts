/**
 * WebSocket close codes (4000-4999, private use) and the error class of wire codes. The error codes
 * themselves are rows of the one error table (error-table.ts); docs/errors.md holds the same tables
 * and tests check they agree.
 */
import type { WireErrorCode } from './error-table.js';

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
  /** An authenticated node id not in the peer table, the table is full (limits.maxPeers) and no entry
   * can be evicted (docs/protocol.md §7, "Membership"). */
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
  TOO_MANY_PEERS:
    'an authenticated new node id, but the peer table is full (limits.maxPeers) and no entry can be evicted',
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
