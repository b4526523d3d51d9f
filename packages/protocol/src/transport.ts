/**
 * A transport carries binary frames between two endpoints, in order, with ping/pong heartbeats and a
 * close code. Two implementations: WebSocket (ws-transport.ts) and in-memory (memory.ts). The link
 * (link.ts) and the peer network (network.ts) only see this interface.
 */

export interface ConnHandlers {
  /** One frame arrived. The buffer belongs to the receiver (nobody else reuses it). */
  onFrame(frame: Uint8Array): void;
  /** The answer to one of our pings arrived. */
  onPong(): void;
  /** The connection closed (by either side, or failed). Called once. */
  onClose(code: number, reason: string): void;
}

export interface Conn {
  /** Human-readable remote address (for logs). */
  readonly remote: string;
  /** Installs the handlers; events that happened before are delivered now, in order. */
  setHandlers(h: ConnHandlers): void;
  /**
   * Sends one binary frame. Never throws; a send on a closed connection is dropped.
   * `done`, if given, is the sender's lease on the frame's memory (fast-encode.ts Slab): the transport
   * calls it at most once, and only when neither it nor anything it handed the frame to reads those
   * bytes anymore (ws: within send() or uncork(), when the kernel took every byte written so far,
   * else never; memory: right after its copy). A transport that cannot tell never calls it (always
   * safe: the memory is then never reused). After `done` the sender may overwrite the frame.
   */
  send(frame: Uint8Array, done?: () => void): void;
  /** Optional: hold the frames sent until `uncork()` and write them together (one syscall). */
  cork?(): void;
  /** Optional: ends a `cork()`; always called in the same turn. */
  uncork?(): void;
  /** Bytes accepted by send() but not yet handed to the network (ws: `bufferedAmount`). */
  bufferedAmount(): number;
  /** Sends a heartbeat ping; the peer's transport answers with a pong without involving its link. */
  ping(): void;
  /** Closes with a code (1000, 4000-4999) and a reason (≤ 123 bytes). Idempotent. */
  close(code: number, reason: string): void;
  /** Optional: the link authenticated this connection (its session is up); a listener that caps
   * unauthenticated connections stops counting it. */
  authenticated?(): void;
}

export interface Listener {
  /** Address peers dial to reach this listener (ws: the URL with the bound port). */
  readonly address: string;
  close(): Promise<void>;
}

export interface Transport {
  /** Starts accepting connections. */
  listen(onConn: (conn: Conn) => void): Promise<Listener>;
  /** Connects to `address`; rejects (within `timeoutMs`) if nobody listens there. */
  dial(address: string, timeoutMs: number): Promise<Conn>;
}

/** Deterministic PRNG (mulberry32): same seed, same sequence. Returns [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
