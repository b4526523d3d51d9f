/**
 * The live view of the cluster (docs/view.md): a dependency-free page served at GET /view.
 *
 *   GET /view, /view/           index.html (the instances to watch go into a <meta> tag)
 *   GET /view/view.js           the page's script (plain browser JS, not compiled by tsc)
 *   GET /view/view.css          its stylesheet
 *   GET /view/<anything else>   404
 *
 * The static files are NOT compiled: they live in packages/node/src/view/static/ and are read from
 * the source tree at run time. The compiled module is dist/view/serve.js, so the directory is
 * ../../src/view/static/ relative to it (./static/ when this file runs from src/ directly, e.g. a
 * TS loader). Anything that ships dist/ (the Docker image) must ship src/view/static/ too.
 *
 * Which instances the page watches: `?nodes=URL,URL` in the page's address wins; otherwise the
 * `nodes` given here; otherwise the origin the page was served from. Each is an admin API base URL
 * (a path prefix is allowed, e.g. behind a reverse proxy). The Content-Security-Policy allows
 * script and style from 'self' only and connections to 'self' plus exactly the origins of those
 * URLs; nothing inline, no frames, no forms.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';

export interface ViewOptions {
  /** Admin API base URLs the page watches when its address has no `?nodes=`. */
  nodes?: string[];
}

const FILES: Readonly<Record<string, { file: string; type: string }>> = {
  '': { file: 'index.html', type: 'text/html; charset=utf-8' },
  'view.js': { file: 'view.js', type: 'text/javascript; charset=utf-8' },
  'view.css': { file: 'view.css', type: 'text/css; charset=utf-8' },
};

const NODES_PLACEHOLDER = '%XPMESH_NODES%';
const SETTINGS_PLACEHOLDER = '%XPMESH_VIEW_SETTINGS%';

/**
 * The page's timing and bounds (the page reads them from its `xpmesh-view` meta tag, written here:
 * view.js has no copy, docs/view.md quotes them from this table).
 */
export const VIEW_SETTINGS = {
  /** /status is polled too (an attach, for one, emits no event). */
  statusPollMs: 500,
  /** Refreshes that events trigger are coalesced over this long. */
  refreshDelayMs: 120,
  /** A fetch of /status or /pages that takes longer is abandoned. */
  fetchTimeoutMs: 3000,
  /** Rows kept in the message log. */
  maxLog: 400,
  /** Fences kept in their list. */
  maxFences: 100,
  /** A changed page is outlined this long. */
  highlightMs: 1200,
  /** Beyond this many changed pages at once, outlines would only add noise. */
  maxHighlight: 1024,
  /** A stream that failed for good is reopened after this, doubling up to retryMaxMs. */
  retryMinMs: 1000,
  retryMaxMs: 10_000,
  /** The summary's message rate is over this window. */
  rateWindowMs: 5000,
} as const;

/** Where the static files are: next to the source (dist/view → ../../src/view/static). */
export function staticDir(): string {
  const candidates = [
    new URL('../../src/view/static/', import.meta.url),
    new URL('./static/', import.meta.url),
  ];
  for (const c of candidates) {
    const dir = fileURLToPath(c);
    if (existsSync(`${dir}index.html`)) return dir;
  }
  return fileURLToPath(candidates[0]);
}

/** The http(s) origins of the URLs that parse; everything else is dropped. */
export function originsOf(urls: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const raw of urls) {
    const s = raw.trim();
    if (s === '') continue;
    try {
      const u = new URL(s);
      if (u.protocol === 'http:' || u.protocol === 'https:') out.add(u.origin);
    } catch {
      // not a URL: the page reports it; the policy ignores it
    }
  }
  return [...out];
}

/** The Content-Security-Policy for the page, allowing connections to `origins` besides 'self'. */
export function contentSecurityPolicy(origins: string[] = []): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    `connect-src ${["'self'", ...origins].join(' ')}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function plain(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'x-content-type-options': 'nosniff',
    ...extra,
  });
  res.end(text);
}

/**
 * A request handler for the view. Returns true when it handled the request (the path is /view or
 * under /view/), false to let the caller route it elsewhere. Responses are written asynchronously.
 */
export function viewHandler(opts: ViewOptions = {}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const dir = staticDir();
  const configured = (opts.nodes ?? []).map((s) => s.trim()).filter((s) => s !== '');
  return (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://view');
    } catch {
      return false;
    }
    const path = url.pathname;
    if (path !== '/view' && !path.startsWith('/view/')) return false;
    const name = path === '/view' ? '' : path.slice('/view/'.length);
    const entry = Object.hasOwn(FILES, name) ? FILES[name] : undefined;
    if (!entry) {
      plain(res, 404, `no such file: ${path}\n`);
      return true;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      plain(res, 405, `use GET for ${path}\n`, { allow: 'GET, HEAD' });
      return true;
    }
    const requested = (url.searchParams.get('nodes') ?? '').split(',');
    const csp = contentSecurityPolicy(originsOf([...configured, ...requested]));
    readFile(`${dir}${entry.file}`)
      .then((buf) => {
        let body = buf;
        if (entry.file === 'index.html')
          body = Buffer.from(
            buf
              .toString('utf8')
              .replace(NODES_PLACEHOLDER, escapeAttr(configured.join(',')))
              .replace(SETTINGS_PLACEHOLDER, escapeAttr(JSON.stringify(VIEW_SETTINGS))),
          );
        res.writeHead(200, {
          'content-type': entry.type,
          'content-length': body.byteLength,
          'content-security-policy': csp,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
          'cache-control': 'no-cache',
        });
        res.end(req.method === 'HEAD' ? undefined : body);
      })
      .catch((err: Error) => {
        if (res.headersSent) return void res.destroy();
        plain(res, 500, `cannot read ${entry.file} from ${dir}: ${err.message}\n`);
      });
    return true;
  };
}
