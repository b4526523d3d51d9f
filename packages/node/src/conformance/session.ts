/**
 * A raw protocol client for the conformance kit: one WebSocket, frames encoded by hand, the
 * handshake computed from docs/protocol.md §5 (not from the server code), requests with ids and
 * deadlines, and hooks to answer the home's invalidations. It trusts nothing the other side sends:
 * every wait has a deadline and every frame is decoded inside a try.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { decodeRaw, encodeFrame, type Message } from '@xpmesh/protocol';
import WebSocket from 'ws';

export type Msg = Record<string, unknown> & { t?: unknown };

export interface Closed {
  code: number;
  reason: string;
}

const ZERO = Buffer.from([0]);

/** docs/protocol.md §5: HMAC-SHA256(K, label ‖ 0x00 ‖ nonce1 ‖ nonce2 ‖ C ‖ 0x00 ‖ S). */
export function proof(
  key: string,
  label: 'xpmesh-server' | 'xpmesh-client',
  n1: Uint8Array,
  n2: Uint8Array,
  client: string,
  server: string,
): Buffer {
  return createHmac('sha256', Buffer.from(key, 'utf8'))
    .update(label)
    .update(ZERO)
    .update(n1)
    .update(n2)
    .update(client, 'utf8')
    .update(ZERO)
    .update(server, 'utf8')
    .digest();
}

/** Encode anything (also values the protocol forbids) as one MessagePack frame. */
export function frame(value: unknown): Uint8Array {
  return encodeFrame(value as Message);
}

/** A WebSocket with a message queue, deadlines on every wait, and request/reply bookkeeping. */
export class RawSocket {
  private readonly queue: Msg[] = [];
  private wake: (() => void) | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(m: Msg): void; timer: NodeJS.Timeout }>();
  /** Every message received, with its arrival time (ms, performance.now()). */
  readonly log: Array<{ at: number; m: Msg }> = [];
  closedWith: Closed | undefined;
  readonly closed: Promise<Closed>;
  /** Answer incoming requests (invalidate); return undefined to leave one unanswered. */
  onRequest: ((m: Msg) => Promise<Msg | undefined> | Msg | undefined) | undefined;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise<Closed>((resolve) => {
      ws.once('close', (code: number, reason: Buffer) => {
        this.closedWith = { code, reason: reason.toString() };
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.resolve({ t: '<closed>', code });
        }
        this.pending.clear();
        this.wake?.();
        resolve(this.closedWith);
      });
    });
    ws.on('error', () => {}); // a close follows
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let v: unknown;
      try {
        v = isBinary ? decodeRaw(data) : { t: '<text>' };
      } catch (e) {
        v = { t: '<undecodable>', error: (e as Error).message };
      }
      for (const m of (Array.isArray(v) ? v : [v]) as Msg[]) this.deliver(m);
      this.wake?.();
    });
  }

  static open(url: string, timeoutMs: number): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        perMessageDeflate: false,
        maxPayload: 4 << 20,
        handshakeTimeout: timeoutMs,
      });
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`cannot connect to ${url} within ${timeoutMs} ms`));
      }, timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve(new RawSocket(ws));
      });
      ws.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to ${url}: ${e.message}`));
      });
    });
  }

  private deliver(m: Msg): void {
    this.log.push({ at: performance.now(), m });
    if (typeof m !== 'object' || m === null) {
      this.queue.push({ t: '<not a map>' });
      return;
    }
    const re = m.re;
    if (typeof re === 'number' && this.pending.has(re)) {
      const p = this.pending.get(re)!;
      this.pending.delete(re);
      clearTimeout(p.timer);
      p.resolve(m);
      return;
    }
    if (this.onRequest && typeof m.id === 'number' && m.t === 'invalidate') {
      const id = m.id;
      Promise.resolve()
        .then(() => this.onRequest?.(m))
        .then(
          (reply) => {
            if (reply !== undefined)
              this.send({ ...reply, re: id, ...(m.cid !== undefined ? { cid: m.cid } : {}) });
          },
          () => undefined,
        );
      return;
    }
    this.queue.push(m);
  }

  send(value: unknown): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame(value));
  }

  sendBytes(bytes: Uint8Array | string, binary = true): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes, { binary });
  }

  /** Send a request with a fresh id; resolves with its reply, `{t:'<timeout>'}` or `{t:'<closed>'}`. */
  request(body: Msg, timeoutMs: number): Promise<Msg> {
    const id = this.nextId++;
    return this.requestWithId(id, { ...body, id }, timeoutMs);
  }

  /** Like request, for a frame whose id the caller chose (bad-input rules: the error echoes it). */
  requestWithId(id: number, value: unknown, timeoutMs: number, raw?: Uint8Array | string): Promise<Msg> {
    return new Promise<Msg>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ t: '<timeout>' });
      }, timeoutMs);
      this.pending.set(id, { resolve, timer });
      if (raw !== undefined) this.sendBytes(raw, typeof raw !== 'string');
      else this.send(value);
    });
  }

  /** The first queued message matching `pred` (removed from the queue), or undefined at the deadline. */
  async next(pred: (m: Msg) => boolean, timeoutMs: number): Promise<Msg | undefined> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const i = this.queue.findIndex(pred);
      if (i >= 0) return this.queue.splice(i, 1)[0];
      const left = end - performance.now();
      if (left <= 0 || this.closedWith) return undefined;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 100));
        this.wake = () => {
          clearTimeout(t);
          this.wake = undefined;
          r();
        };
      });
    }
  }

  /** The close, or undefined if the socket is still open at the deadline. */
  async closeWithin(timeoutMs: number): Promise<Closed | undefined> {
    if (this.closedWith) return this.closedWith;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed,
      new Promise<undefined>((res) => {
        timer = setTimeout(() => res(undefined), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    return r;
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)
      this.ws.terminate();
  }
}

export interface HelloOptions {
  node: string;
  epoch?: number;
  versions?: number[];
  /** Send a wrong client proof (auth rule). */
  badProof?: boolean;
}

export interface Handshake {
  socket: RawSocket;
  /** The server's welcome (undefined if it never came). */
  welcome?: Msg;
  /** True if the server proved the key (welcome.proof checked). */
  serverProved: boolean;
  /** The session is up (`ready` with our epoch). */
  up: boolean;
  /** What the server sent instead, and how it closed, when not up. */
  error?: Msg;
  close?: Closed;
}

/** Run the handshake of docs/protocol.md §5; never throws after the socket opened. */
export async function handshake(
  url: string,
  key: string,
  o: HelloOptions,
  timeoutMs: number,
): Promise<Handshake> {
  const socket = await RawSocket.open(url, timeoutMs);
  const epoch = o.epoch ?? Date.now() * 1000 + Math.floor(Math.random() * 1000);
  const cnonce = randomBytes(32);
  socket.send({ t: 'hello', versions: o.versions ?? [2], node: o.node, epoch, boot: epoch, nonce: cnonce });
  const first = await socket.next(() => true, timeoutMs);
  const out: Handshake = { socket, serverProved: false, up: false };
  if (first?.t !== 'welcome') {
    out.error = first;
    out.close = await socket.closeWithin(2000);
    return out;
  }
  out.welcome = first;
  const server = String(first.node);
  const snonce = first.nonce instanceof Uint8Array ? first.nonce : new Uint8Array(0);
  const ps = first.proof instanceof Uint8Array ? Buffer.from(first.proof) : Buffer.alloc(0);
  out.serverProved = ps.equals(proof(key, 'xpmesh-server', cnonce, snonce, o.node, server));
  const pc = proof(key, 'xpmesh-client', snonce, cnonce, o.node, server);
  if (o.badProof) pc[0] ^= 0xff;
  socket.send({ t: 'auth', proof: pc });
  const second = await socket.next(() => true, timeoutMs);
  if (second?.t === 'ready' && second.epoch === epoch) {
    out.up = true;
    return out;
  }
  out.error = second;
  out.close = await socket.closeWithin(2000);
  return out;
}
