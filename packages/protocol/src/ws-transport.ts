/**
 * WebSocket transport (`ws`): binary frames, permessage-deflate off, `maxPayload` = the frame limit,
 * heartbeats as WebSocket ping/pong control frames (answered by the peer's ws library), optional TLS.
 */
import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { type Logger, silentLogger } from './base.js';
import { CloseCode } from './errors.js';
import type { Conn, ConnHandlers, Listener, Transport } from './transport.js';

export interface TlsOptions {
  /** PEM certificate file (server side). */
  certFile?: string;
  /** PEM private key file (server side). */
  keyFile?: string;
  /** PEM CA file to verify the peer's certificate (client side; default: system CAs). */
  caFile?: string;
  /** Verify the server certificate (default true). */
  rejectUnauthorized?: boolean;
}

export interface WsTransportOptions {
  listen?: { host: string; port: number };
  maxFrameBytes: number;
  tls?: TlsOptions;
  logger?: Logger;
  /**
   * Deadline (ms) of everything before the link's own handshake: TLS handshake, HTTP request line
   * and headers of the upgrade. A connection that has not upgraded by then is closed (default 5000).
   */
  handshakeTimeoutMs?: number;
  /** Accepted connections that have not authenticated yet (TCP accepted, not yet `authenticated()`),
   * at most; more are closed at accept (default 64). */
  maxPendingConnections?: number;
  /** Called for every connection closed at accept because maxPendingConnections were pending. */
  onRefused?: () => void;
}

type Event = { k: 'frame'; f: Uint8Array } | { k: 'pong' } | { k: 'close'; code: number; reason: string };

/** ws copies its send options per call; one frozen object instead of a literal per frame. */
const SEND_OPTIONS = Object.freeze({ binary: true, compress: false });

/**
 * Small frames are framed here (RFC 6455 §5.2: FIN, binary opcode, length; a client's masked with a
 * fresh random key, §5.3) and written to the socket in ONE write, instead of through ws.send: ws
 * copies its options twice per frame and writes an unmasked frame as a corked pair (header, payload),
 * which Node turns into a writev (~0.8 µs more per frame than one write of the same bytes, measured on
 * loopback). The bytes on the wire are the frame ws would write (a client's with another random key).
 * Frames up to DIRECT_MAX bytes; masked (client) ones masked natively by bufferutil from 48 bytes
 * (as ws does), or, without it (not installed, or WS_NO_BUFFER_UTIL set, which ws honours too), in a
 * JavaScript loop and only up to 512 bytes (larger ones go through ws.send, as before).
 */
const DIRECT_MAX = 16 * 1024;
type MaskFn = (
  source: Uint8Array,
  mask: Uint8Array,
  output: Uint8Array,
  offset: number,
  length: number,
) => void;
const nativeMask: MaskFn | undefined = (() => {
  if (process.env.WS_NO_BUFFER_UTIL) return undefined;
  try {
    const m = createRequire(import.meta.url)('bufferutil') as { mask?: MaskFn };
    return typeof m.mask === 'function' && String(m.mask).includes('[native code]') ? m.mask : undefined;
  } catch {
    return undefined;
  }
})();
const DIRECT_MASKED_MAX = nativeMask !== undefined ? DIRECT_MAX : 512;
/** Below this, masking in JavaScript beats a call into the addon (ws's threshold). */
const NATIVE_MASK_MIN = 48;
/** Header (2 or 4 bytes: no frame here needs the 8-byte length) + mask key + payload. */
const SCRATCH_BYTES = DIRECT_MAX + 8;
/**
 * The buffer small frames are built in, shared by every connection: a frame is copied into it and
 * written, and the buffer is reused only if Node holds nothing of it after the write (see
 * writeDirect()); otherwise Node keeps it and the next frame gets a new one.
 */
let scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
/** Masking keys for client frames: 4 random bytes per frame from a pool refilled by the CSPRNG (what ws
 * does too), never reused. */
const MASK_POOL_BYTES = 8 * 1024;
const maskPool = Buffer.allocUnsafeSlow(MASK_POOL_BYTES);
let maskAt = MASK_POOL_BYTES;

/** The parts of ws's WebSocket that writeDirect() reads (ws 8: lib/websocket.js, lib/sender.js). */
interface WsInternals {
  _isServer: boolean;
  _socket?: { writableLength: number; write(b: Uint8Array): boolean };
  /** ws's Sender; `_state` 0 (DEFAULT) is "not deflating, not reading a Blob, nothing queued". */
  _sender?: { _state?: number; _queue?: unknown[] };
}

/** One ws connection as a Conn. */
export class WsConn implements Conn {
  private handlers: ConnHandlers | undefined;
  private backlog: Event[] = [];
  private done = false;
  /** Between cork() and uncork(): the leases of the frames sent meanwhile (see send()). */
  private corked = false;
  private readonly corkedLeases: (() => void)[] = [];
  constructor(
    readonly ws: WebSocket,
    readonly remote: string,
    private readonly logger: Logger,
    /** Accepted connections: tells the listener this one authenticated. */
    private readonly onAuthenticated?: () => void,
  ) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => {
      // A text frame is still a frame: validation rejects it (E_MALFORMED) and counts it.
      const f = isBinary ? (data as Buffer) : Buffer.from([0xc1]);
      const h = this.handlers;
      if (h === undefined) {
        this.backlog.push({ k: 'frame', f });
        return;
      }
      // emit() without an event object per frame (the hot path).
      if (this.done) return;
      try {
        h.onFrame(f);
      } catch (err) {
        this.logger.error({ error: String(err) }, 'ws: handler threw');
      }
    });
    ws.on('pong', () => this.emit({ k: 'pong' }));
    ws.on('close', (code, reason) => this.emit({ k: 'close', code, reason: reason.toString('utf8') }));
    ws.on('error', (err) => {
      this.logger.debug({ remote, error: String(err) }, 'ws: socket error');
    });
  }

  setHandlers(h: ConnHandlers): void {
    this.handlers = h;
    const b = this.backlog;
    this.backlog = [];
    for (const e of b) this.emit(e);
  }

  private emit(e: Event): void {
    const h = this.handlers;
    if (!h) {
      this.backlog.push(e);
      return;
    }
    try {
      if (e.k === 'frame') {
        if (!this.done) h.onFrame(e.f);
      } else if (e.k === 'pong') {
        if (!this.done) h.onPong();
      } else if (!this.done) {
        this.done = true;
        h.onClose(e.code, e.reason);
      }
    } catch (err) {
      this.logger.error({ error: String(err) }, 'ws: handler threw');
    }
  }

  /**
   * `done` (the sender's lease, transport.ts) is called when ws and Node are known to hold nothing of
   * the frame, decided synchronously, without a write callback (a callback per frame costs Node a
   * closure and a nextTick per corked writev, more than reusing the memory saves):
   *
   *   Proof. `ws.bufferedAmount` is Node's writable length of the socket (every chunk written and not
   *   completed: corked, queued behind a write in flight, or in flight asynchronously, which is the
   *   only case where libuv keeps a reference to the chunk) plus ws's own send queue (ws sender.js
   *   `_bufferedBytes`: frames it holds while busy). ws writes a frame (or, for a masked client frame,
   *   a masked copy) to the socket within ws.send. So when bufferedAmount is 0 right after ws.send
   *   (uncorked) or right after uncork(), every chunk written so far completed synchronously: the
   *   kernel copied the bytes in the write/writev call, and nothing of ws, Node or libuv reads them
   *   again. Otherwise the lease is dropped: never released (the frame's slab is not rewound; see
   *   fast-encode.ts Slab), which is always safe. Same when ws.send throws. Not sent at all
   *   (closed): nothing holds it, released at once.
   *   test/slab-reuse.test.ts sends MBs per turn (writes queue in Node) and checks every byte arrives
   *   as encoded; releasing regardless of bufferedAmount fails it.
   * A frame writeDirect() takes is copied before it is written: nothing refers to it afterwards, so
   * it is given back at once.
   */
  send(frame: Uint8Array, done?: () => void): void {
    if (this.done || this.ws.readyState !== WebSocket.OPEN) {
      done?.();
      return;
    }
    if (!this.corked && this.writeDirect(frame)) {
      // copied: nothing of ws, Node or libuv refers to `frame`
      done?.();
      return;
    }
    try {
      this.ws.send(frame, SEND_OPTIONS);
    } catch (err) {
      this.logger.debug({ error: String(err) }, 'ws: send failed');
      return;
    }
    if (done === undefined) return;
    if (this.corked) this.corkedLeases.push(done);
    else if (this.ws.bufferedAmount === 0) done();
  }

  /**
   * Writes `frame` as one WebSocket frame in one socket write, or returns false (then ws.send sends
   * it). Taken only when ws's sender is idle (state DEFAULT, nothing queued: with permessage-deflate
   * off and no Blob ever sent it always is) and the socket has nothing queued, so this frame cannot
   * overtake anything ws wrote or holds (ws writes every frame, data or control, within the call that
   * sends it), and later ones cannot overtake it (ws writes to the same socket, in order).
   *
   * The frame is copied into `scratch`; if the socket's writable length is 0 after the write, the
   * write completed synchronously (the kernel copied the bytes; the argument of send() above), and
   * the scratch buffer is reused for the next frame; else Node holds it and a new one is taken. A
   * socket with a backlog is never written to here, so a backlog pins at most one scratch buffer.
   * test/ws-direct.test.ts checks the bytes on the wire (both directions, every length class, masks
   * fresh per frame) and frames written while the socket is backed up.
   */
  private writeDirect(frame: Uint8Array): boolean {
    const ws = this.ws as unknown as WsInternals;
    const sock = ws._socket;
    const sender = ws._sender;
    const n = frame.byteLength;
    const masked = !ws._isServer;
    if (
      n > (masked ? DIRECT_MASKED_MAX : DIRECT_MAX) ||
      sock === undefined ||
      sender === undefined ||
      sender._state !== 0 ||
      sender._queue === undefined ||
      sender._queue.length !== 0 ||
      sock.writableLength !== 0
    ) {
      return false;
    }
    const out = scratch;
    out[0] = 0x82; // FIN, binary
    let at: number;
    if (n <= 125) {
      out[1] = n;
      at = 2;
    } else {
      out[1] = 126;
      out[2] = n >>> 8;
      out[3] = n & 0xff;
      at = 4;
    }
    if (masked) {
      out[1] |= 0x80;
      if (maskAt === MASK_POOL_BYTES) {
        randomFillSync(maskPool);
        maskAt = 0;
      }
      if (n >= NATIVE_MASK_MIN && nativeMask !== undefined) {
        const key = maskPool.subarray(maskAt, maskAt + 4);
        out.set(key, at);
        maskAt += 4;
        nativeMask(frame, key, out, at + 4, n);
        return this.writeOut(sock, out, at + 4 + n);
      }
      const m0 = maskPool[maskAt];
      const m1 = maskPool[maskAt + 1];
      const m2 = maskPool[maskAt + 2];
      const m3 = maskPool[maskAt + 3];
      maskAt += 4;
      out[at] = m0;
      out[at + 1] = m1;
      out[at + 2] = m2;
      out[at + 3] = m3;
      at += 4;
      let i = 0;
      for (; i + 3 < n; i += 4) {
        out[at + i] = frame[i] ^ m0;
        out[at + i + 1] = frame[i + 1] ^ m1;
        out[at + i + 2] = frame[i + 2] ^ m2;
        out[at + i + 3] = frame[i + 3] ^ m3;
      }
      for (; i < n; i++) out[at + i] = frame[i] ^ maskPool[maskAt - 4 + (i & 3)];
    } else {
      out.set(frame, at);
    }
    return this.writeOut(sock, out, at + n);
  }

  /** writeDirect's write of the first `n` bytes of `out` (the scratch buffer), which it replaces if
   * Node keeps them (see writeDirect). */
  private writeOut(sock: NonNullable<WsInternals['_socket']>, out: Buffer, n: number): true {
    sock.write(out.subarray(0, n));
    if (sock.writableLength !== 0) scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
    return true;
  }

  /** Corks the underlying socket: ws writes each frame with its own write; corked, a turn's frames
   * leave in one writev. (`_socket` is ws's net.Socket; absent before open / after close.) */
  cork(): void {
    (this.ws as unknown as { _socket?: { cork(): void } })._socket?.cork();
    this.corked = true;
  }

  uncork(): void {
    (this.ws as unknown as { _socket?: { uncork(): void } })._socket?.uncork();
    this.corked = false;
    const leases = this.corkedLeases;
    if (leases.length === 0) return;
    // the corked frames were just written: released only if all of that completed (see send())
    if (this.ws.bufferedAmount === 0) for (const r of leases) r();
    leases.length = 0;
  }

  bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  authenticated(): void {
    this.onAuthenticated?.();
  }

  ping(): void {
    if (this.done || this.ws.readyState !== WebSocket.OPEN) return;
    try {
      this.ws.ping();
    } catch (err) {
      this.logger.debug({ error: String(err) }, 'ws: ping failed');
    }
  }

  close(code: number, reason: string): void {
    try {
      if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
        this.ws.close(code, Buffer.from(reason).subarray(0, 123).toString());
      }
      // The closing handshake has its own deadline: terminate if the peer does not answer.
      const ws = this.ws;
      setTimeout(() => {
        if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      }, 2000).unref();
    } catch (err) {
      this.logger.debug({ error: String(err) }, 'ws: close failed');
      this.ws.terminate();
    }
    if (!this.done) {
      this.done = true;
      this.handlers?.onClose(code, reason);
    }
  }
}

export function wsTransport(opts: WsTransportOptions): Transport {
  const logger = opts.logger ?? silentLogger;
  const tls = opts.tls;
  return {
    listen: async (onConn) => {
      const l = opts.listen;
      if (!l) throw new Error('ws transport: no listen address');
      const deadline = opts.handshakeTimeoutMs ?? 5000;
      const maxPending = opts.maxPendingConnections ?? 64;
      // Our own HTTP server, so the time before the upgrade has deadlines (Node's defaults: 60 s for
      // headers, checked every 30 s; TLS 120 s) and unauthenticated sockets are capped.
      const httpOpts = {
        headersTimeout: deadline,
        requestTimeout: deadline,
        connectionsCheckingInterval: Math.max(50, Math.min(1000, deadline / 2)),
      };
      const server: HttpServer =
        tls?.certFile && tls.keyFile
          ? createHttpsServer({
              ...httpOpts,
              cert: readFileSync(tls.certFile),
              key: readFileSync(tls.keyFile),
              handshakeTimeout: deadline,
            })
          : createHttpServer(httpOpts);
      const secure = tls?.certFile !== undefined && tls.keyFile !== undefined;
      // Sockets accepted and not authenticated yet (by the link, after the cluster-key proof), by
      // remote address and port (the same for a TLS socket and the TCP socket under it).
      const pending = new Map<string, Socket>();
      const keyOf = (sock: Socket) => `${sock.remoteAddress}|${sock.remotePort}`;
      server.on('connection', (socket: Socket) => {
        if (pending.size >= maxPending) {
          socket.destroy();
          try {
            opts.onRefused?.();
          } catch (err) {
            logger.error({ error: String(err) }, 'ws: onRefused threw');
          }
          return;
        }
        const key = keyOf(socket);
        pending.set(key, socket);
        socket.once('close', () => {
          if (pending.get(key) === socket) pending.delete(key);
        });
        // Nothing may sit on an accepted socket past the deadline without upgrading; after the
        // upgrade the link's handshake timer, then its heartbeats, take over.
        socket.setTimeout(deadline, () => socket.destroy());
      });
      server.on('upgrade', (req) => {
        pending.get(keyOf(req.socket))?.setTimeout(0);
      });
      const wss = new WebSocketServer({
        maxPayload: opts.maxFrameBytes,
        perMessageDeflate: false,
        clientTracking: true,
        server,
      });
      // ws re-emits the server's errors on wss: a listener must be there before listen() can fail
      const wssErrors = (err: Error) => logger.debug({ error: String(err) }, 'ws: server error');
      wss.on('error', wssErrors);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(l.port, l.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      wss.off('error', wssErrors);
      server.on('error', (err) => logger.error({ error: String(err) }, 'ws: server error'));
      wss.on('error', (err) => logger.error({ error: String(err) }, 'ws: server error'));
      wss.on('connection', (ws, req) => {
        try {
          const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
          const key = keyOf(req.socket);
          onConn(new WsConn(ws, remote, logger, () => pending.delete(key)));
        } catch (err) {
          logger.error({ error: String(err) }, 'ws: accept failed');
          ws.terminate();
        }
      });
      const https = secure ? server : undefined;
      const addr = server.address() as AddressInfo;
      const scheme = https ? 'wss' : 'ws';
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      const listener: Listener = {
        address: `${scheme}://${host}:${addr.port}`,
        close: () =>
          new Promise<void>((resolve) => {
            for (const c of wss.clients) c.terminate();
            for (const sock of pending.values()) sock.destroy();
            wss.close(() => {
              server.close(() => resolve());
              server.closeAllConnections();
            });
          }),
      };
      return listener;
    },
    dial: (address, timeoutMs) =>
      new Promise<Conn>((resolve, reject) => {
        let ws: WebSocket;
        try {
          ws = new WebSocket(address, {
            maxPayload: opts.maxFrameBytes,
            perMessageDeflate: false,
            handshakeTimeout: timeoutMs,
            ca: tls?.caFile ? readFileSync(tls.caFile) : undefined,
            rejectUnauthorized: tls?.rejectUnauthorized ?? true,
          });
        } catch (err) {
          reject(err);
          return;
        }
        const timer = setTimeout(() => {
          ws.terminate();
          reject(new Error(`ws: dial ${address} timed out`));
        }, timeoutMs + 100);
        const onError = (err: Error) => {
          clearTimeout(timer);
          reject(err);
        };
        ws.once('error', onError);
        ws.once('open', () => {
          clearTimeout(timer);
          ws.off('error', onError);
          resolve(new WsConn(ws, address, logger));
        });
      }),
  };
}

export { CloseCode };
