/**
 * The admin HTTP API of one instance (node:http).
 *
 *   GET  /healthz            liveness + readiness: { ok, node, shuttingDown }
 *   GET  /status             memory, processes, segments, attachments, reverse maps, peers
 *   GET  /pages?segid=S      per-page state of a segment (at its home or at an attacher)
 *   GET  /metrics            Prometheus text format
 *   GET  /events             Server-Sent Events: page-state changes, protocol messages, fences
 *   POST /ops/NAME           an operation (JSON body, schema in ops.ts) → JSON result
 *
 * Security: bound to 127.0.0.1 by default. Operations that change state need
 * `Authorization: Bearer TOKEN` when the API is bound anywhere else, or whenever a token is
 * configured; refusals answer 401 E_UNAUTHORIZED and are counted in xpmesh_admin_refused_total.
 *
 * Hostile input (docs/reliability.md, "Hostile input"): every request has header, body and idle
 * deadlines, bodies and JSON nesting have a bound (413 / 400 answered, never a reset), connections
 * are capped, every `/events` subscriber has a bounded buffer (a slow one is dropped, never the
 * instance), and metric labels come from fixed sets (a path never becomes a label). Each limit is
 * in ADMIN_LIMITS and counted in xpmesh_admin_limits_total{limit}.
 */
import { timingSafeEqual } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { viewHandler } from '../view/serve.js';
import { isDefaultAdminHost } from './config.js';
import type { DaemonLogger } from './logger.js';
import type { InstanceMetrics } from './metrics.js';
import {
  AdminError,
  httpStatusOf,
  KNOWN_ERROR_CODES,
  OP_NAMES,
  OP_SCHEMAS,
  type OpHandlers,
  type OpName,
  READ_ONLY_OPS,
  toErrorBody,
} from './ops.js';

/** An event for live views; `type` is the SSE event name. */
export interface AdminEvent {
  type: 'page-state' | 'message' | 'fence' | 'lost-dirty' | 'peer' | 'process' | 'log';
  [k: string]: unknown;
}

export interface AdminBackend {
  readonly node: string;
  status(): unknown | Promise<unknown>;
  pages(segid: string): unknown | Promise<unknown>;
  readonly ops: OpHandlers;
  /** Emits 'event' with an {@link AdminEvent}. */
  readonly events: EventEmitter;
}

export interface AdminOptions {
  host: string;
  port: number;
  token: string | undefined;
  metrics: InstanceMetrics;
  logger: DaemonLogger;
  /** Admin base URLs of every instance the live view (/view) should show; default: this one. */
  viewNodes?: string[];
  /** Overrides of ADMIN_LIMITS (tests use small ones). */
  limits?: Partial<AdminLimits>;
}

/** Every limit of the admin API (docs/limits.md, "Admin API", lists the same table; a test checks). */
export interface AdminLimits {
  /** Largest request body; larger: 413 E_TOO_LARGE (answered; the rest of the body is discarded). */
  maxBodyBytes: number;
  /** Deepest JSON nesting of a request body; deeper: 400 E_TOO_DEEP. */
  maxJsonDepth: number;
  /** Request line and headers must arrive within this; else 408 and the connection is closed. */
  headersTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this; else 408, connection closed. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way for this long is closed (`/events` streams are kept
   * busy by their heartbeat comments). */
  socketIdleMs: number;
  /** Concurrent connections (none of them authenticated: the token is per request); more are
   * closed at accept. */
  maxConnections: number;
  /** Concurrent `/events` subscribers; more: 503 E_BUSY. */
  maxSseClients: number;
  /** Bytes an `/events` subscriber may have unread (queued in the instance); over it the subscriber
   * is dropped and its buffer freed. */
  sseBufferBytes: number;
  /** Interval of the `/events` heartbeat comment. */
  sseHeartbeatMs: number;
}

/** The reconnect delay an `/events` stream asks its client for (the SSE `retry:` field). */
export const SSE_RETRY_MS = 1000;

export const ADMIN_LIMITS: Readonly<AdminLimits> = Object.freeze({
  maxBodyBytes: 8 << 20,
  maxJsonDepth: 64,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 2_000,
  socketIdleMs: 60_000,
  maxConnections: 256,
  maxSseClients: 32,
  sseBufferBytes: 256 << 10,
  sseHeartbeatMs: 15_000,
});

/** The `limit` label of xpmesh_admin_limits_total: a fixed set. */
export const ADMIN_LIMIT_KINDS = {
  body_too_large: 'a request body over maxBodyBytes (413)',
  json_too_deep: 'a request body nested deeper than maxJsonDepth (400 E_TOO_DEEP)',
  request_timeout: 'headers or body not complete within headersTimeoutMs / requestTimeoutMs (408)',
  bad_request: 'a request HTTP could not parse (400), e.g. oversized headers',
  idle_timeout: 'a connection closed after socketIdleMs without traffic',
  connections_full: 'a connection closed at accept: maxConnections were open',
  sse_full: 'an /events subscription refused: maxSseClients were subscribed (503)',
  sse_slow: 'an /events subscriber dropped: more than sseBufferBytes unread',
} as const;
export type AdminLimitKind = keyof typeof ADMIN_LIMIT_KINDS;

/** The `op` label of xpmesh_admin_requests_total for a GET path: from this table, else "unknown". */
const GET_ROUTES: Readonly<Record<string, string>> = Object.freeze({
  '/': 'index',
  '/healthz': 'healthz',
  '/status': 'status',
  '/pages': 'pages',
  '/metrics': 'metrics',
  '/events': 'events',
});

/** The depth of a parsed JSON value (iterative: a hostile body cannot overflow the stack). */
export function jsonDepth(value: unknown, limit: number): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d > max) max = d;
    if (max > limit) return max;
    for (const c of Array.isArray(v) ? v : Object.values(v)) stack.push([c, d + 1]);
  }
  return max;
}

/** One `/events` subscriber: once its socket stops taking data, frames wait in `queue` (ours,
 * bounded by sseBufferBytes), never in the stream's own unbounded buffer. */
interface Subscriber {
  res: ServerResponse;
  queue: string[];
  queued: number;
}

/** GET endpoints a page served from another instance may read (the live view); never /ops. */
const CORS_READABLE = new Set(['/healthz', '/status', '/pages', '/events']);

/** Is a bearer token needed for state-changing operations? */
export function adminRequiresToken(host: string, token: string | undefined): boolean {
  return token !== undefined || !isDefaultAdminHost(host);
}

/** JSON that survives page payloads: byte arrays become { bytes: n } (or hex when short). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (v instanceof Uint8Array)
      return v.byteLength <= 64 ? { hex: Buffer.from(v).toString('hex') } : { bytes: v.byteLength };
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Map) return Object.fromEntries(v);
    if (v instanceof Set) return [...v];
    return v;
  });
}

export class AdminServer {
  private readonly server: Server;
  private readonly sse = new Set<Subscriber>();
  private readonly requireToken: boolean;
  private shuttingDown = false;
  private readonly view: ReturnType<typeof viewHandler>;
  private readonly limits: AdminLimits;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private readonly onEvent = (ev: AdminEvent) => {
    if (this.sse.size === 0) return;
    const frame = `event: ${ev.type}\ndata: ${toJson(ev)}\n\n`;
    for (const sub of this.sse) this.push(sub, frame);
  };

  constructor(
    private readonly backend: AdminBackend,
    private readonly opts: AdminOptions,
  ) {
    this.requireToken = adminRequiresToken(opts.host, opts.token);
    this.view = viewHandler({ nodes: opts.viewNodes });
    const l = { ...ADMIN_LIMITS, ...opts.limits };
    this.limits = l;
    this.server = createServer(
      {
        headersTimeout: l.headersTimeoutMs,
        requestTimeout: l.requestTimeoutMs,
        // how often the header/request deadlines are checked (default 30 s)
        connectionsCheckingInterval: Math.max(50, Math.min(1000, l.headersTimeoutMs / 2)),
      },
      (req, res) => {
        this.handle(req, res).catch((err) => {
          opts.logger.error({ err }, 'admin handler failed');
          if (!res.headersSent) this.send(res, 500, { code: 'E_INTERNAL', message: 'internal error' });
          else res.destroy();
        });
      },
    );
    this.server.keepAliveTimeout = l.keepAliveTimeoutMs;
    this.server.maxConnections = l.maxConnections;
    this.server.on('drop', () => this.limited('connections_full'));
    this.server.on('connection', (socket: Socket) => {
      socket.setTimeout(l.socketIdleMs, () => {
        this.limited('idle_timeout');
        socket.destroy();
      });
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy(); // the client went away: nothing to answer, nothing to count
        return;
      }
      const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      this.limited(timeout ? 'request_timeout' : 'bad_request');
      const status = timeout
        ? '408 Request Timeout'
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? '431 Request Header Fields Too Large'
          : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    backend.events.on('event', this.onEvent);
  }

  private limited(kind: AdminLimitKind): void {
    this.opts.metrics.adminLimits.inc({ limit: kind });
  }

  /** A request refused before its body is looked at: the body is read and dropped (never
   * buffered) before the answer, so the caller reads the answer instead of a reset. */
  private async refuseBody(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!(await this.discard(req))) res.setHeader('connection', 'close');
  }

  /**
   * Reads and drops the rest of a refused body before the answer goes out: a client still sending
   * when the server closes would get a reset instead of the 413. Bounded: resolves false (the
   * answer then closes the connection) after 4 × maxBodyBytes more, or requestTimeoutMs.
   */
  private discard(req: IncomingMessage): Promise<boolean> {
    return new Promise((resolve) => {
      if (req.complete) {
        resolve(true);
        return;
      }
      let left = 4 * this.limits.maxBodyBytes;
      const done = (ok: boolean) => {
        clearTimeout(timer);
        req.off('data', onData);
        if (!ok) req.pause();
        resolve(ok);
      };
      const onData = (c: Buffer) => {
        left -= c.length;
        if (left < 0) done(false);
      };
      const timer = setTimeout(() => done(false), this.limits.requestTimeoutMs);
      req.on('data', onData);
      req.once('end', () => done(true));
      req.once('close', () => done(req.complete));
      req.resume();
    });
  }

  /**
   * Sends one frame to a subscriber. While its socket takes data, frames go straight out; once the
   * socket's buffer is full they wait in the subscriber's queue (flushed on 'drain'); a queue over
   * sseBufferBytes drops the subscriber and frees the queue. The stream's own buffer never holds
   * more than one flush, so dropping is cheap and the memory is given back at once.
   */
  private push(sub: Subscriber, frame: string): void {
    const res = sub.res;
    if (sub.queue.length === 0 && !res.writableNeedDrain) {
      res.write(frame);
      return;
    }
    if (sub.queued + frame.length > this.limits.sseBufferBytes) {
      this.sse.delete(sub);
      this.limited('sse_slow');
      this.opts.logger.warn(
        { remote: res.socket?.remoteAddress, unread: sub.queued + res.writableLength },
        'events subscriber dropped: not reading',
      );
      sub.queue = [];
      sub.queued = 0;
      res.destroy();
      return;
    }
    sub.queue.push(frame);
    sub.queued += frame.length;
  }

  private drain(sub: Subscriber): void {
    if (sub.queue.length === 0 || !this.sse.has(sub)) return;
    const text = sub.queue.join('');
    sub.queue = [];
    sub.queued = 0;
    sub.res.write(text);
  }

  /** Subscribers currently connected to /events (tests, /status). */
  get subscribers(): number {
    return this.sse.size;
  }

  /** Listen; resolves with the base URL. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const url = this.url();
    this.opts.logger.info({ url, requireToken: this.requireToken }, 'admin listening');
    if (this.requireToken && this.opts.token === undefined) {
      this.opts.logger.warn(
        'admin API is off the default loopback address and no token is configured: every operation will be refused',
      );
    }
    return url;
  }

  url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}`;
  }

  /** Stop taking operations (healthz reports shuttingDown); reads keep working until close. */
  beginShutdown(): void {
    this.shuttingDown = true;
  }

  async close(): Promise<void> {
    this.shuttingDown = true;
    this.backend.events.off('event', this.onEvent);
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const { res } of this.sse) res.end();
    this.sse.clear();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private send(res: ServerResponse, status: number, body: unknown): void {
    const text = toJson(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  /** Answers an error. `op` must come from a fixed set (an op name, a GET_ROUTES name, "unknown"). */
  private fail(res: ServerResponse, op: string, err: unknown): void {
    const body = toErrorBody(err);
    const status = err instanceof AdminError ? err.status : httpStatusOf(body.code);
    if (status >= 500 && status !== 503 && status !== 504 && status !== 507)
      this.opts.logger.error({ err, op }, 'admin operation failed');
    this.opts.metrics.adminRequests.inc({ op, code: metricCode(body.code) });
    this.send(res, status, body);
  }

  private authorized(req: IncomingMessage): boolean {
    const token = this.opts.token;
    if (token === undefined) return false;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(header);
    if (!m) return false;
    const a = Buffer.from(m[1]);
    const b = Buffer.from(token);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    if (path === '/view' || path.startsWith('/view/')) {
      this.view(req, res);
      return;
    }
    if (CORS_READABLE.has(path)) res.setHeader('access-control-allow-origin', '*');
    if (path.startsWith('/ops/')) {
      const name = path.slice('/ops/'.length);
      if (req.method !== 'POST') {
        await this.refuseBody(req, res);
        return this.fail(
          res,
          opLabel(name),
          new AdminError('E_METHOD', `use POST for ${path.slice(0, 200)}`),
        );
      }
      return this.operation(name, req, res);
    }
    const route = GET_ROUTES[path] ?? 'unknown';
    if (req.method !== 'GET') {
      await this.refuseBody(req, res);
      return this.fail(res, route, new AdminError('E_METHOD', `use GET for ${path.slice(0, 200)}`));
    }
    switch (path) {
      case '/':
        return this.send(res, 200, {
          node: this.backend.node,
          endpoints: ['/healthz', '/status', '/pages?segid=', '/metrics', '/events', '/view'],
          ops: OP_NAMES,
        });
      case '/healthz':
        return this.send(res, this.shuttingDown ? 503 : 200, {
          ok: !this.shuttingDown,
          node: this.backend.node,
          shuttingDown: this.shuttingDown,
        });
      case '/status':
        return this.send(res, 200, await this.backend.status());
      case '/pages': {
        const segid = url.searchParams.get('segid');
        if (!segid)
          return this.fail(
            res,
            'pages',
            new AdminError('E_BAD_REQUEST', 'query parameter segid is required'),
          );
        try {
          return this.send(res, 200, await this.backend.pages(segid));
        } catch (err) {
          return this.fail(res, 'pages', err);
        }
      }
      case '/metrics': {
        const text = await this.opts.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.opts.metrics.registry.contentType });
        res.end(text);
        return;
      }
      case '/events': {
        if (this.sse.size >= this.limits.maxSseClients) {
          this.limited('sse_full');
          return this.fail(
            res,
            'events',
            new AdminError('E_BUSY', `${this.limits.maxSseClients} event subscribers already`, 503),
          );
        }
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        });
        res.write(`: xpmesh ${this.backend.node}\nretry: ${SSE_RETRY_MS}\n\n`);
        const sub: Subscriber = { res, queue: [], queued: 0 };
        this.sse.add(sub);
        res.on('drain', () => this.drain(sub));
        req.on('close', () => {
          this.sse.delete(sub);
          sub.queue = [];
        });
        this.heartbeat ??= setInterval(() => {
          for (const s of this.sse) this.push(s, ': ping\n\n');
        }, this.limits.sseHeartbeatMs).unref();
        return;
      }
      default:
        return this.fail(
          res,
          'unknown',
          new AdminError('E_NOT_FOUND', `no such endpoint: ${path.slice(0, 200)}`),
        );
    }
  }

  private async operation(name: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!(OP_NAMES as string[]).includes(name)) {
      await this.refuseBody(req, res);
      return this.fail(
        res,
        'unknown',
        new AdminError('E_NOT_FOUND', `no such operation: ${name} (have ${OP_NAMES.join(', ')})`),
      );
    }
    const op = name as OpName;
    if (this.requireToken && !READ_ONLY_OPS.has(op) && !this.authorized(req)) {
      await this.refuseBody(req, res);
      const reason = req.headers.authorization ? 'bad_token' : 'no_token';
      this.opts.metrics.adminRefused.inc({ reason });
      this.opts.logger.warn({ op, reason, remote: req.socket.remoteAddress }, 'admin operation refused');
      return this.fail(
        res,
        op,
        new AdminError('E_UNAUTHORIZED', `operation ${op} requires a valid bearer token`),
      );
    }
    if (this.shuttingDown) {
      await this.refuseBody(req, res);
      return this.fail(res, op, new AdminError('E_SHUTTING_DOWN', 'the instance is shutting down'));
    }
    const max = this.limits.maxBodyBytes;
    const declared = Number(req.headers['content-length'] ?? 0);
    const text = declared > max ? undefined : await readBody(req, max);
    if (text === undefined) {
      this.limited('body_too_large');
      const drained = await this.discard(req);
      if (!drained) res.setHeader('connection', 'close');
      return this.fail(res, op, new AdminError('E_TOO_LARGE', `body over ${max} bytes`));
    }
    let body: unknown;
    try {
      body = text === '' ? {} : JSON.parse(text);
    } catch (err) {
      return this.fail(
        res,
        op,
        new AdminError('E_BAD_REQUEST', `body is not JSON: ${(err as Error).message}`),
      );
    }
    if (jsonDepth(body, this.limits.maxJsonDepth) > this.limits.maxJsonDepth) {
      this.limited('json_too_deep');
      return this.fail(
        res,
        op,
        new AdminError('E_TOO_DEEP', `body nested deeper than ${this.limits.maxJsonDepth} levels`),
      );
    }
    const parsed = OP_SCHEMAS[op].safeParse(body);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
        .join('; ');
      return this.fail(res, op, new AdminError('E_BAD_REQUEST', `${op}: ${issues}`));
    }
    try {
      const handler = this.backend.ops[op] as (input: unknown) => Promise<unknown>;
      const result = await handler(parsed.data);
      this.opts.metrics.adminRequests.inc({ op, code: 'ok' });
      this.send(res, 200, result ?? { ok: true });
    } catch (err) {
      this.fail(res, op, err);
    }
  }
}

/** The `code` label: a known code, else "other" (codes of lower layers are a closed set, but the
 * label set must not depend on that). */
function metricCode(code: string): string {
  return code === 'ok' || KNOWN_ERROR_CODES.has(code) ? code : 'other';
}

/** The `op` label for /ops/NAME: the name if it is an operation, else "unknown". */
function opLabel(name: string): string {
  return (OP_NAMES as string[]).includes(name) ? name : 'unknown';
}

/**
 * The body as text, or undefined once it passes `max` bytes (what arrived is dropped at once; the
 * caller answers 413 and discards the rest). A body cut short by the client resolves with what
 * came (the JSON parse then fails: 400).
 */
function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > max) {
        chunks.length = 0;
        req.off('data', onData);
        resolve(undefined);
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}
