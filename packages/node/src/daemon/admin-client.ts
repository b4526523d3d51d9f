/**
 * A client of one instance's admin API (used by `xpmesh ctl`, the demo and the tests).
 * Errors come back as {@link AdminCallError} carrying the server's stable `code`.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { OpName } from './ops.js';

export class AdminCallError extends Error {
  readonly code: string;
  readonly status: number;
  /** The message without the code in front (servers often repeat the code inside their message). */
  readonly detail: string;
  constructor(code: string, status: number, message: string) {
    let detail = message;
    while (detail.startsWith(`${code}: `)) detail = detail.slice(code.length + 2);
    super(`${code}: ${detail}`);
    this.name = 'AdminCallError';
    this.code = code;
    this.status = status;
    this.detail = detail;
  }
}

export interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

export class AdminClient {
  readonly base: string;
  constructor(
    base: string,
    private readonly token?: string,
    private readonly timeoutMs = 20_000,
  ) {
    this.base = base.replace(/\/+$/, '');
  }

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = {};
    if (json) h['content-type'] = 'application/json';
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  /**
   * One request over node:http(s) (not fetch: undici's start-up cost would dominate a short
   * `xpmesh ctl` call). A connect failure is E_CONNECT (with the socket's code), the deadline
   * E_TIMEOUT, an error answer the server's { code, message }.
   */
  private call(method: string, path: string, body?: unknown): Promise<unknown> {
    const url = new URL(this.base + path);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers = this.headers(body !== undefined);
    if (payload) headers['content-length'] = String(payload.byteLength);
    const where = `${method} ${this.base}${path}`;
    return new Promise<unknown>((resolve, reject) => {
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      // agent: false: a fresh connection per call (a pooled keep-alive socket the server is closing
      // at that moment would fail the call with ECONNRESET)
      const req = send(url, { method, headers, timeout: this.timeoutMs, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(new AdminCallError('E_CONNECT', 0, `${where}: ${e.message}`)));
        res.on('end', () => {
          clearTimeout(deadline);
          const text = Buffer.concat(chunks).toString('utf8');
          const type = String(res.headers['content-type'] ?? '');
          let value: unknown = text;
          if (type.includes('json') && text !== '') {
            try {
              value = JSON.parse(text);
            } catch {
              reject(
                new AdminCallError('E_BAD_RESPONSE', res.statusCode ?? 0, `${where}: answer is not JSON`),
              );
              return;
            }
          }
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            const e = (value ?? {}) as { code?: string; message?: string };
            reject(new AdminCallError(e.code ?? `HTTP_${status}`, status, e.message ?? String(text)));
            return;
          }
          resolve(value);
        });
      });
      // one deadline for the whole exchange (the socket timeout only covers idle time)
      const deadline = setTimeout(
        () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT_XPMESH' })),
        this.timeoutMs,
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT_XPMESH' })));
      req.on('error', (err: Error & { code?: string }) => {
        clearTimeout(deadline);
        if (err.code === 'ETIMEDOUT_XPMESH')
          reject(new AdminCallError('E_TIMEOUT', 0, `${where}: no answer within ${this.timeoutMs} ms`));
        else reject(new AdminCallError('E_CONNECT', 0, `${where}: ${err.code ?? err.message}`));
      });
      req.end(payload);
    });
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.call('GET', path) as Promise<T>;
  }

  op<T = Record<string, unknown>>(name: OpName, body: object = {}): Promise<T> {
    return this.call('POST', `/ops/${name}`, body) as Promise<T>;
  }

  /** Wait until /healthz answers ok, or throw at the deadline. */
  async waitHealthy(deadlineMs: number): Promise<void> {
    const end = Date.now() + deadlineMs;
    let last = '';
    while (Date.now() < end) {
      try {
        const h = await this.get<{ ok: boolean }>('/healthz');
        if (h.ok) return;
      } catch (err) {
        last = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new AdminCallError('E_TIMEOUT', 0, `${this.base} not healthy after ${deadlineMs} ms (${last})`);
  }

  /** Subscribe to the SSE stream; resolves once connected. */
  async subscribe(onEvent: (ev: SseEvent) => void): Promise<{ close(): void }> {
    const ctl = new AbortController();
    const res = await fetch(`${this.base}/events`, { headers: this.headers(false), signal: ctl.signal });
    if (!res.ok || !res.body)
      throw new AdminCallError(`HTTP_${res.status}`, res.status, 'cannot subscribe to /events');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          buf += decoder.decode(value, { stream: true });
          for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let event = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data !== '') {
              try {
                onEvent({ event, data: JSON.parse(data) });
              } catch {
                // a malformed event is skipped: live views are best effort
              }
            }
          }
        }
      } catch {
        // aborted or connection closed
      }
    })();
    return { close: () => ctl.abort() };
  }
}
