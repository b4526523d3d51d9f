/**
 * `--connect dns:NAME:PORT` for the tools (`xpmesh demo`, `load`, `ctl`): the admin URLs of every
 * instance behind a DNS name (the same name the instances use for membership: `tasks.node` under
 * Swarm, the service under compose, a headless Service under Kubernetes), so no URL is typed.
 * Anything else passed to --connect is a comma-separated list of admin URLs, as before.
 */
import { isIP } from 'node:net';
import { type Resolver, systemResolver } from './membership.js';

export class ConnectError extends Error {
  readonly code = 'E_CONNECT_SPEC';
}

export interface DnsConnect {
  name: string;
  port: number;
}

/** `dns:NAME:PORT` → {name, port}; anything else → undefined. Throws on a malformed dns: spec. */
export function parseDnsConnect(spec: string): DnsConnect | undefined {
  if (!spec.startsWith('dns:')) return undefined;
  const m = /^dns:([A-Za-z0-9._-]{1,253}):(\d{1,5})$/.exec(spec.trim());
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new ConnectError(`--connect "${spec}" is not dns:NAME:PORT (e.g. dns:tasks.node:7500)`);
  return { name: m[1], port };
}

/** Sorts addresses so every tool picks the same instances in the same roles (IPv4 numerically). */
function addressKey(a: string): string {
  if (isIP(a) === 4)
    return a
      .split('.')
      .map((x) => x.padStart(3, '0'))
      .join('.');
  return `~${a}`;
}

export function adminUrl(address: string, port: number): string {
  return `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

export interface ResolveConnectOptions {
  /** Wait until the name has at least this many addresses (default 1). */
  min?: number;
  /** ... but no longer than this (default 30000 ms); then fail. */
  waitMs?: number;
  /** Poll interval while waiting (default 500 ms). */
  pollMs?: number;
  resolve?: Resolver;
}

/**
 * Resolves `--connect` (a malformed spec throws ConnectError; a name that does not reach `min`
 * addresses in time throws a plain Error): a dns: spec to the admin URL of every address (sorted, waiting until at
 * least `min` resolve, bounded by waitMs), or a comma-separated URL list as given.
 */
export async function resolveConnect(spec: string, o: ResolveConnectOptions = {}): Promise<string[]> {
  const dns = parseDnsConnect(spec);
  if (!dns)
    return spec
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const min = o.min ?? 1;
  const resolve = o.resolve ?? systemResolver;
  const deadline = Date.now() + (o.waitMs ?? 30_000);
  let last: string[] = [];
  let lastError = '';
  for (;;) {
    try {
      last = [...new Set(await resolve(dns.name))].sort((a, b) => (addressKey(a) < addressKey(b) ? -1 : 1));
      lastError = '';
    } catch (err) {
      lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    }
    if (last.length >= min) return last.map((a) => adminUrl(a, dns.port));
    if (Date.now() >= deadline)
      throw new Error(
        `${dns.name} resolved to ${last.length} address(es)${lastError ? ` (${lastError})` : ''}, ` +
          `needed ${min}, within ${o.waitMs ?? 30_000} ms`,
      );
    await new Promise((r) => setTimeout(r, o.pollMs ?? 500));
  }
}
