/**
 * A client of one instance's admin API (used by `xpmesh ctl`, the demo and the tests).
 * Errors come back as {@link AdminCallError} carrying the server's stable `code`.
 */
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

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      const timeout = (err as Error).name === 'TimeoutError';
      throw new AdminCallError(
        timeout ? 'E_TIMEOUT' : 'E_CONNECT',
        0,
        `${method} ${this.base}${path}: ${cause ?? (err as Error).message}`,
      );
    }
    const text = await res.text();
    const type = res.headers.get('content-type') ?? '';
    const value: unknown = type.includes('json') && text !== '' ? JSON.parse(text) : text;
    if (!res.ok) {
      const e = (value ?? {}) as { code?: string; message?: string };
      throw new AdminCallError(e.code ?? `HTTP_${res.status}`, res.status, e.message ?? String(text));
    }
    return value;
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
