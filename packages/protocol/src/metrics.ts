/**
 * Counters of one peer network. `snapshot()` returns plain data that the daemon exports to
 * Prometheus (docs/protocol.md, "Metrics", lists every counter).
 */

export interface TypeCounters {
  msgsIn: number;
  bytesIn: number;
  msgsOut: number;
  bytesOut: number;
}

export interface NetworkMetrics {
  /** Per message type. Bytes of a batch frame are split evenly among its messages. */
  byType: Record<string, TypeCounters>;
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Rejected incoming frames, by error code. */
  rejected: Record<string, number>;
  /** Error replies sent for rejected frames (one per rejected frame while the session lives). */
  errorsSent: number;
  authFailures: number;
  versionFailures: number;
  handshakeFailures: number;
  abuseCloses: number;
  heartbeatDeaths: number;
  requestTimeouts: number;
  /** Requests refused locally: E_BUSY (high-water mark) or E_TOO_MANY (outstanding limit). */
  busyRejections: number;
  tooManyRejections: number;
  /** One-way messages dropped because the peer was down or over the high-water mark. */
  oneWayDropped: number;
  /** Replies whose request had already completed (deadline) or was unknown. */
  lateReplies: number;
  /** Incoming requests refused with E_TOO_MANY (peer over limits.maxIncomingRequests). */
  incomingRefused: number;
  /** Sessions refused because their epoch was stale (fenced or not newer). */
  staleRefused: number;
  /** Authenticated sessions of a new node id refused because the peer table was full (4012). */
  peersRefused: number;
  /** Peer-table entries evicted to make room for an authenticated new node id (docs/protocol.md §7). */
  peersEvicted: number;
  /** Connections closed at accept because limits.maxPendingConnections were unauthenticated. */
  pendingRefused: number;
  sessionsUp: number;
  sessionsDown: number;
  /** Connections closed (by us or the peer, in handshake or up), by close code. */
  closesByCode: Record<string, number>;
  fences: number;
  dialFailures: number;
  /** Our live session was superseded by another live instance claiming our node id (never silent). */
  idCollisions: number;
}

export class Metrics {
  private m: NetworkMetrics = {
    byType: {},
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    rejected: {},
    errorsSent: 0,
    authFailures: 0,
    versionFailures: 0,
    handshakeFailures: 0,
    abuseCloses: 0,
    heartbeatDeaths: 0,
    requestTimeouts: 0,
    busyRejections: 0,
    tooManyRejections: 0,
    oneWayDropped: 0,
    lateReplies: 0,
    incomingRefused: 0,
    staleRefused: 0,
    peersRefused: 0,
    peersEvicted: 0,
    pendingRefused: 0,
    sessionsUp: 0,
    sessionsDown: 0,
    closesByCode: {},
    fences: 0,
    dialFailures: 0,
    idCollisions: 0,
  };

  get c(): NetworkMetrics {
    return this.m;
  }

  /** The counters of `byType`, by type, in a Map: a keyed load from `byType` (type names with a
   * '-') was a megamorphic lookup on every frame, both ways. Same objects, so `byType` stays exact. */
  private readonly types = new Map<string, TypeCounters>();

  private type(t: string): TypeCounters {
    let c = this.types.get(t);
    if (c === undefined) {
      c = { msgsIn: 0, bytesIn: 0, msgsOut: 0, bytesOut: 0 };
      this.m.byType[t] = c;
      this.types.set(t, c);
    }
    return c;
  }

  frameIn(types: readonly { t: string }[], bytes: number): void {
    this.m.framesIn++;
    this.m.bytesIn += bytes;
    const share = bytes / types.length;
    for (const { t } of types) {
      const c = this.type(t);
      c.msgsIn++;
      c.bytesIn += share;
    }
  }

  /** frameIn of a frame with one message (no array). */
  frameIn1(t: string, bytes: number): void {
    this.m.framesIn++;
    this.m.bytesIn += bytes;
    const c = this.type(t);
    c.msgsIn++;
    c.bytesIn += bytes;
  }

  /** frameOut of a frame with one message (no array). */
  frameOut1(t: string, bytes: number): void {
    this.m.framesOut++;
    this.m.bytesOut += bytes;
    const c = this.type(t);
    c.msgsOut++;
    c.bytesOut += bytes;
  }

  frameOut(types: readonly { t: string }[], bytes: number): void {
    this.m.framesOut++;
    this.m.bytesOut += bytes;
    const share = bytes / types.length;
    for (const { t } of types) {
      const c = this.type(t);
      c.msgsOut++;
      c.bytesOut += share;
    }
  }

  rejected(code: string): void {
    this.m.rejected[code] = (this.m.rejected[code] ?? 0) + 1;
  }

  snapshot(): NetworkMetrics {
    return structuredClone(this.m);
  }
}
