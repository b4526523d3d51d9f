/**
 * Every configurable limit of the wire protocol, with its default. docs/limits.md lists the same
 * table; `limitsTable()` is what a test compares it against.
 */

import { TIMING_DEFAULTS } from './defaults.js';

export interface Limits {
  /** Largest frame (bytes) accepted or sent. Bigger incoming frames: E_TOO_LARGE (ws: close 1009). */
  maxFrameBytes: number;
  /** Largest number of messages in one batch frame. */
  maxBatch: number;
  /** Pages in one map request / map-ok / invalidate-ack / detach (count of PageData or pages covered). */
  maxPagesPerMessage: number;
  /** Ranges in one invalidate or detach. */
  maxRangesPerMessage: number;
  /** Requests we may have outstanding towards one peer (more: E_TOO_MANY locally, at once). */
  maxOutstandingRequests: number;
  /** Requests a peer may have outstanding towards us (more: E_TOO_MANY error reply). */
  maxIncomingRequests: number;
  /** Bytes queued for one peer (unsent batch + transport buffer) above which new requests and one-way
   * messages fail fast with E_BUSY. Replies are always queued (bounded by maxIncomingRequests). */
  sendHighWaterBytes: number;
  /** Malformed frames a session may send in a burst before it is closed (4002 CLOSE_ABUSE). */
  malformedBurst: number;
  /** Refill rate of the malformed-frame budget, per second. */
  malformedPerSecond: number;
  /** Deadline of the whole handshake (hello → ready), ms; on the ws transport also of the TLS
   * handshake and the HTTP upgrade request before it. */
  handshakeTimeoutMs: number;
  /** Frames a client buffers while waiting for `ready` (only reorder-injecting transports need it). */
  maxEarlyFrames: number;
  /** Longest string field (segid, apid, node ids, message) in characters. */
  maxStringChars: number;
  /** Entries in the peer table (configured peers plus authenticated node ids that joined). A new
   * authenticated node id beyond it evicts a departed, unconfigured entry (counted peersEvicted), or
   * if there is none is refused with close 4012 and counted (peersRefused). */
  maxPeers: number;
  /** Node ids evicted from the peer table whose epochs are still remembered (fenced epoch, last
   * accepted epoch, incarnation), so that an evicted node is judged on return exactly as if it had
   * stayed. When it is full, entries that have anything to remember are no longer evicted (a new
   * node id is refused 4012 again): safety over availability (docs/protocol.md §7, "Membership"). */
  maxPeerTombstones: number;
  /** Accepted connections that have not authenticated yet, at most (ws transport: from TCP accept
   * to the verified proof); more are closed at accept and counted (pendingRefused). */
  maxPendingConnections: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxFrameBytes: 1 << 20,
  maxBatch: 256,
  maxPagesPerMessage: 64,
  maxRangesPerMessage: 1024,
  maxOutstandingRequests: 1024,
  maxIncomingRequests: 1024,
  sendHighWaterBytes: 8 << 20,
  malformedBurst: 32,
  malformedPerSecond: 4,
  handshakeTimeoutMs: TIMING_DEFAULTS.handshakeTimeoutMs,
  maxEarlyFrames: 1024,
  maxStringChars: 512,
  maxPeers: 1024,
  maxPeerTombstones: 65536,
  maxPendingConnections: 64,
});

export function resolveLimits(partial?: Partial<Limits>): Limits {
  const l = { ...DEFAULT_LIMITS, ...partial };
  for (const [k, v] of Object.entries(l)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new RangeError(`limits.${k}: ${v}`);
  }
  // A full map-ok must fit in a frame.
  const minFrame = l.maxPagesPerMessage * (4096 + 64) + 1024;
  if (l.maxFrameBytes < minFrame) throw new RangeError(`limits.maxFrameBytes must be >= ${minFrame}`);
  return l;
}
