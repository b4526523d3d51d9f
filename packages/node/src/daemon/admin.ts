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
 */
import { timingSafeEqual } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { viewHandler } from '../view/serve.js';
import { isDefaultAdminHost } from './config.js';
import type { DaemonLogger } from './logger.js';
import type { InstanceMetrics } from './metrics.js';
import {
  AdminError,
  httpStatusOf,
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
}

/** GET endpoints a page served from another instance may read (the live view); never /ops. */
const CORS_READABLE = new Set(['/healthz', '/status', '/pages', '/events']);

const MAX_BODY = 8 << 20;

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
  private readonly sse = new Set<ServerResponse>();
  private readonly requireToken: boolean;
  private shuttingDown = false;
  private readonly view: ReturnType<typeof viewHandler>;
  private readonly onEvent = (ev: AdminEvent) => {
    if (this.sse.size === 0) return;
    const frame = `event: ${ev.type}\ndata: ${toJson(ev)}\n\n`;
    for (const res of this.sse) res.write(frame);
  };

  constructor(
    private readonly backend: AdminBackend,
    private readonly opts: AdminOptions,
  ) {
    this.requireToken = adminRequiresToken(opts.host, opts.token);
    this.view = viewHandler({ nodes: opts.viewNodes });
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        opts.logger.error({ err }, 'admin handler failed');
        if (!res.headersSent) this.send(res, 500, { code: 'E_INTERNAL', message: 'internal error' });
        else res.destroy();
      });
    });
    this.server.keepAliveTimeout = 2000;
    backend.events.on('event', this.onEvent);
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
    for (const res of this.sse) res.end();
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

  private fail(res: ServerResponse, op: string, err: unknown): void {
    const body = toErrorBody(err);
    const status = err instanceof AdminError ? err.status : httpStatusOf(body.code);
    if (body.code === 'E_INTERNAL') this.opts.logger.error({ err, op }, 'admin operation failed');
    this.opts.metrics.adminRequests.inc({ op, code: body.code });
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
      if (req.method !== 'POST')
        return this.fail(res, name, new AdminError('E_METHOD', `use POST for ${path}`));
      return this.operation(name, req, res);
    }
    if (req.method !== 'GET') return this.fail(res, path, new AdminError('E_METHOD', `use GET for ${path}`));
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
      case '/events':
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        });
        res.write(`: xpmesh ${this.backend.node}\nretry: 1000\n\n`);
        this.sse.add(res);
        req.on('close', () => this.sse.delete(res));
        return;
      default:
        return this.fail(res, path, new AdminError('E_NOT_FOUND', `no such endpoint: ${path}`));
    }
  }

  private async operation(name: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!(OP_NAMES as string[]).includes(name)) {
      req.resume();
      return this.fail(
        res,
        'unknown',
        new AdminError('E_NOT_FOUND', `no such operation: ${name} (have ${OP_NAMES.join(', ')})`),
      );
    }
    const op = name as OpName;
    if (this.requireToken && !READ_ONLY_OPS.has(op) && !this.authorized(req)) {
      req.resume();
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
      req.resume();
      return this.fail(res, op, new AdminError('E_SHUTTING_DOWN', 'the instance is shutting down'));
    }
    let body: unknown;
    try {
      const text = await readBody(req);
      body = text === '' ? {} : JSON.parse(text);
    } catch (err) {
      return this.fail(
        res,
        op,
        new AdminError('E_BAD_REQUEST', `body is not JSON: ${(err as Error).message}`),
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

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`body over ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
