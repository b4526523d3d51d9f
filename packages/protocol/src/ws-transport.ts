/**
 * WebSocket transport (`ws`): binary frames, permessage-deflate off, `maxPayload` = the frame limit,
 * heartbeats as WebSocket ping/pong control frames (answered by the peer's ws library), optional TLS.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
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
}

type Event = { k: 'frame'; f: Uint8Array } | { k: 'pong' } | { k: 'close'; code: number; reason: string };

/** One ws connection as a Conn. */
export class WsConn implements Conn {
  private handlers: ConnHandlers | undefined;
  private backlog: Event[] = [];
  private done = false;
  constructor(
    readonly ws: WebSocket,
    readonly remote: string,
    private readonly logger: Logger,
  ) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => {
      // A text frame is still a frame: validation rejects it (E_MALFORMED) and counts it.
      const f = isBinary ? (data as Buffer) : Buffer.from([0xc1]);
      this.emit({ k: 'frame', f });
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

  send(frame: Uint8Array): void {
    if (this.done || this.ws.readyState !== WebSocket.OPEN) return;
    try {
      this.ws.send(frame, { binary: true, compress: false });
    } catch (err) {
      this.logger.debug({ error: String(err) }, 'ws: send failed');
    }
  }

  /** Corks the underlying socket: ws writes each frame with its own write; corked, a turn's frames
   * leave in one writev. (`_socket` is ws's net.Socket; absent before open / after close.) */
  cork(): void {
    (this.ws as unknown as { _socket?: { cork(): void } })._socket?.cork();
  }

  uncork(): void {
    (this.ws as unknown as { _socket?: { uncork(): void } })._socket?.uncork();
  }

  bufferedAmount(): number {
    return this.ws.bufferedAmount;
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
      let https: HttpsServer | undefined;
      let wss: WebSocketServer;
      const common = { maxPayload: opts.maxFrameBytes, perMessageDeflate: false, clientTracking: true };
      if (tls?.certFile && tls.keyFile) {
        https = createHttpsServer({ cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) });
        wss = new WebSocketServer({ ...common, server: https });
        await new Promise<void>((resolve, reject) => {
          https!.once('error', reject);
          https!.listen(l.port, l.host, () => resolve());
        });
      } else {
        wss = new WebSocketServer({ ...common, host: l.host, port: l.port });
        await new Promise<void>((resolve, reject) => {
          wss.once('error', reject);
          wss.once('listening', () => resolve());
        });
      }
      wss.on('error', (err) => logger.error({ error: String(err) }, 'ws: server error'));
      wss.on('connection', (ws, req) => {
        try {
          const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
          onConn(new WsConn(ws, remote, logger));
        } catch (err) {
          logger.error({ error: String(err) }, 'ws: accept failed');
          ws.terminate();
        }
      });
      const addr = (https ?? wss).address() as AddressInfo;
      const scheme = https ? 'wss' : 'ws';
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      const listener: Listener = {
        address: `${scheme}://${host}:${addr.port}`,
        close: () =>
          new Promise<void>((resolve) => {
            for (const c of wss.clients) c.terminate();
            wss.close(() => {
              if (https) https.close(() => resolve());
              else resolve();
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
