/**
 * Membership from DNS: the addresses a name resolves to are the instances. Docker Swarm
 * (`tasks.<service>`), docker compose (`<service>` resolves to every replica) and a Kubernetes
 * headless Service all publish their members this way.
 *
 * Contract: every `intervalMs` each name is resolved again; an address that appears is handed to
 * the peer network to dial (by URL only: the peer is known by the node id it authenticates with in
 * the handshake, never by its address); an address that disappears is no longer dialled (a session
 * that is up stays until its heartbeats or a close end it); our own address is never dialled. A
 * failed resolution keeps the last answer. The set of addresses is bounded (`maxAddresses`), so a
 * hostile or broken DNS server cannot grow the dial table. Every wait is a timer that `stop()`
 * clears; nothing here blocks.
 */
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';

/** Resolves a name to its addresses (IPv4/IPv6 literals). Injected in tests. */
export type Resolver = (name: string) => Promise<string[]>;

/** getaddrinfo (as `ping` would): /etc/hosts, then DNS, so `localhost` and engine DNS both work. */
export const systemResolver: Resolver = async (name) =>
  (await lookup(name, { all: true, verbatim: true })).map((a) => a.address);

export interface DnsName {
  host: string;
  port: number;
}

/** What membership needs from the peer network (TransportPeerNetwork has both). */
export interface DialTable {
  addPeer(p: { url: string }): void;
  removePeer(url: string): boolean;
}

export interface MembershipLogger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  debug(fields: Record<string, unknown>, msg: string): void;
}

export interface DnsMembershipOptions {
  names: DnsName[];
  scheme: 'ws' | 'wss';
  intervalMs: number;
  net: DialTable;
  /** True for an address (with the name's port) that is this instance's own listener. */
  isSelf: (address: string, port: number) => boolean;
  resolve?: Resolver;
  logger?: MembershipLogger;
  /** At most this many addresses are dialled (the rest are ignored and counted). */
  maxAddresses?: number;
}

export interface MembershipStats {
  resolutions: number;
  failures: number;
  added: number;
  removed: number;
  selfSkipped: number;
  overLimit: number;
  /** The URLs currently dialled because of DNS. */
  urls: string[];
}

export const DEFAULT_MAX_DNS_ADDRESSES = 256;

const silent: MembershipLogger = { info() {}, warn() {}, debug() {} };

export function peerUrl(scheme: 'ws' | 'wss', address: string, port: number): string {
  return `${scheme}://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/**
 * Our own addresses for a listener on `listenHost`: a wildcard listener (0.0.0.0, ::) is every
 * local interface address; otherwise only the address it is bound to (127.0.0.1 is not us when we
 * listen on 127.0.0.2).
 */
export function selfMatcher(
  listenHost: string,
  listenPort: number,
  interfaces: () => string[] = localAddresses,
): (address: string, port: number) => boolean {
  const wildcard = listenHost === '0.0.0.0' || listenHost === '::' || listenHost === '';
  return (address, port) => {
    if (port !== listenPort) return false;
    if (!wildcard) return address === listenHost;
    return interfaces().includes(address);
  };
}

export function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(a.address);
  return out;
}

export class DnsMembership {
  private readonly o: Required<Omit<DnsMembershipOptions, 'logger'>> & { logger: MembershipLogger };
  private readonly dialled = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;
  private readonly s = { resolutions: 0, failures: 0, added: 0, removed: 0, selfSkipped: 0, overLimit: 0 };
  /** Names whose last resolution failed (logged once per failure streak). */
  private readonly failing = new Set<string>();

  constructor(opts: DnsMembershipOptions) {
    this.o = {
      resolve: systemResolver,
      maxAddresses: DEFAULT_MAX_DNS_ADDRESSES,
      logger: silent,
      ...opts,
    } as DnsMembership['o'];
  }

  /** Resolves now, then every intervalMs until stop(). */
  start(): void {
    if (this.stopped || this.timer || this.running) return;
    const tick = () => {
      this.timer = undefined;
      this.running = this.refresh()
        .then(() => undefined)
        .catch((err) => this.o.logger.warn({ err }, 'membership: refresh failed'))
        .finally(() => {
          this.running = undefined;
          if (!this.stopped) {
            this.timer = setTimeout(tick, this.o.intervalMs);
            this.timer.unref();
          }
        });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  stats(): MembershipStats {
    return { ...this.s, urls: [...this.dialled] };
  }

  /** One resolution of every name; dials what is new, stops dialling what is gone. */
  async refresh(): Promise<{ added: string[]; removed: string[] }> {
    const seen = new Set<string>();
    let complete = true;
    for (const name of this.o.names) {
      let addresses: string[];
      try {
        addresses = await this.o.resolve(name.host);
        this.s.resolutions++;
        if (this.failing.delete(name.host))
          this.o.logger.info({ name: name.host, addresses }, 'membership: name resolves again');
      } catch (err) {
        this.s.failures++;
        complete = false;
        if (!this.failing.has(name.host)) {
          this.failing.add(name.host);
          this.o.logger.warn(
            { name: name.host, code: (err as NodeJS.ErrnoException).code },
            'membership: name does not resolve (yet); keeping the last answer and retrying',
          );
        }
        continue;
      }
      for (const a of addresses) {
        if (this.o.isSelf(a, name.port)) {
          this.s.selfSkipped++;
          continue;
        }
        seen.add(peerUrl(this.o.scheme, a, name.port));
      }
    }
    if (this.stopped) return { added: [], removed: [] };
    const added: string[] = [];
    const removed: string[] = [];
    // An address is dropped only after a resolution of every name succeeded without it.
    if (complete) {
      for (const url of this.dialled) {
        if (seen.has(url)) continue;
        this.dialled.delete(url);
        this.o.net.removePeer(url);
        this.s.removed++;
        removed.push(url);
      }
    }
    for (const url of [...seen].sort()) {
      if (this.dialled.has(url)) continue;
      if (this.dialled.size >= this.o.maxAddresses) {
        this.s.overLimit++;
        continue;
      }
      this.dialled.add(url);
      this.o.net.addPeer({ url });
      this.s.added++;
      added.push(url);
    }
    if (added.length || removed.length)
      this.o.logger.info({ added, removed, members: this.dialled.size }, 'membership: addresses changed');
    return { added, removed };
  }
}
