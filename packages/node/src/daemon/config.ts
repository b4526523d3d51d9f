/**
 * Instance configuration: one typed object, built from command-line flags and XPMESH_* environment
 * variables (flags win). docs/configuration.md lists every setting; `CONFIG_SETTINGS` below is the
 * single table both the parser and the docs follow.
 *
 * Only the CLI entry point reads `process.env`; it hands the environment in as a plain record.
 */
import { readFileSync } from 'node:fs';
import { hostname as osHostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS, TIMING_DEFAULTS } from '@xpmesh/protocol';
import { type CredentialPolicy, parseCredentialPolicy } from './cred-policy.js';
import { DEFAULT_ADMIN_PORT, DEFAULT_LISTEN_PORT } from './default-ports.js';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export interface PeerAddress {
  host: string;
  port: number;
}

export interface NodeConfig {
  /** This instance's node id (1-64 chars, [A-Za-z0-9._-]). */
  node: string;
  listenHost: string;
  listenPort: number;
  /** The other instances (this instance dials them; duplicates of itself are dropped). */
  peers: PeerAddress[];
  /** DNS names whose addresses are the instances (membership from DNS, re-resolved; see membership.ts). */
  peersDns: PeerAddress[];
  /** How often the DNS names are resolved again. */
  peersDnsIntervalMs: number;
  clusterKey: string;
  /** Physical memory size in 4 KiB frames. */
  frames: number;
  swapPath: string;
  adminHost: string;
  /** 0 picks a free port (printed in the `admin listening` log line). */
  adminPort: number;
  /** Bearer token for mutating admin operations; required for them when the admin API is not on loopback. */
  adminToken: string | undefined;
  logLevel: LogLevel;
  heartbeatMs: number;
  missedBeats: number;
  requestTimeoutMs: number;
  ackTimeoutMs: number;
  /** Lease on remote copies (resolved: never 0). */
  leaseMs: number;
  /** Pages to map ahead on a remote fault (0 = one page at a time). */
  prefault: number;
  /** Grace period for SIGTERM: detach, answer pending invalidations, close links. */
  shutdownMs: number;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  /** Peer-table entries: configured peers plus authenticated node ids that joined (limits.maxPeers). */
  maxPeers: number;
  /** Per-peer credential policy for remote `get` (cred-policy.ts); undefined: claims are trusted. */
  credPolicy: CredentialPolicy | undefined;
}

/** The well-known development key used when none is given and every address is loopback. */
export const DEV_CLUSTER_KEY = 'xpmesh-insecure-development-key';

export class ConfigError extends Error {
  readonly code = 'E_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Kind = 'string' | 'int' | 'peers' | 'level' | 'file';

/** One setting: its flag, its environment variable, its default and what it means. */
export interface SettingSpec {
  key: keyof NodeConfig | 'clusterKeyFile' | 'adminTokenFile' | 'credPolicyFile';
  flag: string;
  env: string;
  kind: Kind;
  default: string;
  help: string;
}

/** `--frames`: its default and bounds (4 KiB frames). */
export const FRAMES = { default: 4096, min: 16, max: 1 << 20 } as const;
/** Bounds of `--peers-dns-interval-ms`. */
export const PEERS_DNS_INTERVAL_MS = { min: 100, max: 600_000 } as const;

export const CONFIG_SETTINGS: readonly SettingSpec[] = [
  {
    key: 'node',
    flag: 'id',
    env: 'XPMESH_NODE_ID',
    kind: 'string',
    default: '<hostname>',
    help: 'node id of this instance (default: the host name, made valid; stable where the engine names hosts: Swarm hostname template, StatefulSet pod name)',
  },
  {
    key: 'listenHost',
    flag: 'listen-host',
    env: 'XPMESH_LISTEN_HOST',
    kind: 'string',
    default: '127.0.0.1',
    help: 'address the peer link (WebSocket) listens on',
  },
  {
    key: 'listenPort',
    flag: 'listen-port',
    env: 'XPMESH_LISTEN_PORT',
    kind: 'int',
    default: String(DEFAULT_LISTEN_PORT),
    help: 'port of the peer link',
  },
  {
    key: 'peers',
    flag: 'peers',
    env: 'XPMESH_PEERS',
    kind: 'peers',
    default: '',
    help: 'other instances, comma-separated host:port (service names under compose)',
  },
  {
    key: 'peersDns',
    flag: 'peers-dns',
    env: 'XPMESH_PEERS_DNS',
    kind: 'peers',
    default: '',
    help: 'DNS names whose addresses are the instances, comma-separated NAME:PORT (tasks.node:7400 under Swarm, the service under compose, a headless Service under Kubernetes); re-resolved, new addresses dialled, own address skipped',
  },
  {
    key: 'peersDnsIntervalMs',
    flag: 'peers-dns-interval-ms',
    env: 'XPMESH_PEERS_DNS_INTERVAL_MS',
    kind: 'int',
    default: '5000',
    help: `how often --peers-dns names are resolved again (${PEERS_DNS_INTERVAL_MS.min}..${PEERS_DNS_INTERVAL_MS.max})`,
  },
  {
    key: 'clusterKey',
    flag: 'cluster-key',
    env: 'XPMESH_CLUSTER_KEY',
    kind: 'string',
    default: '',
    help: 'shared secret authenticating peers (never sent on the wire)',
  },
  {
    key: 'clusterKeyFile',
    flag: 'cluster-key-file',
    env: 'XPMESH_CLUSTER_KEY_FILE',
    kind: 'file',
    default: '',
    help: 'file holding the cluster key (trailing whitespace trimmed)',
  },
  {
    key: 'frames',
    flag: 'frames',
    env: 'XPMESH_FRAMES',
    kind: 'int',
    default: String(FRAMES.default),
    help: `physical memory in 4 KiB frames (${FRAMES.default} = ${FRAMES.default / 256} MiB)`,
  },
  {
    key: 'swapPath',
    flag: 'swap-file',
    env: 'XPMESH_SWAP_FILE',
    kind: 'string',
    default: '<tmpdir>/xpmesh-<id>-<pid>.swap',
    help: 'swap file (created at start-up; its name is removed at once, nothing is left at exit)',
  },
  {
    key: 'adminHost',
    flag: 'admin-host',
    env: 'XPMESH_ADMIN_HOST',
    kind: 'string',
    default: '127.0.0.1',
    help: 'address of the admin HTTP API',
  },
  {
    key: 'adminPort',
    flag: 'admin-port',
    env: 'XPMESH_ADMIN_PORT',
    kind: 'int',
    default: String(DEFAULT_ADMIN_PORT),
    help: 'port of the admin HTTP API (0 = any free port)',
  },
  {
    key: 'adminToken',
    flag: 'admin-token',
    env: 'XPMESH_ADMIN_TOKEN',
    kind: 'string',
    default: '',
    help: 'bearer token for admin operations (required off loopback)',
  },
  {
    key: 'adminTokenFile',
    flag: 'admin-token-file',
    env: 'XPMESH_ADMIN_TOKEN_FILE',
    kind: 'file',
    default: '',
    help: 'file holding the admin token',
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    env: 'XPMESH_LOG_LEVEL',
    kind: 'level',
    default: 'info',
    help: 'trace|debug|info|warn|error|fatal|silent (debug: one line per protocol event)',
  },
  {
    key: 'heartbeatMs',
    flag: 'heartbeat-ms',
    env: 'XPMESH_HEARTBEAT_MS',
    kind: 'int',
    default: String(TIMING_DEFAULTS.heartbeatMs),
    help: 'heartbeat interval on every peer link',
  },
  {
    key: 'missedBeats',
    flag: 'missed-beats',
    env: 'XPMESH_MISSED_BEATS',
    kind: 'int',
    default: String(TIMING_DEFAULTS.missedBeats),
    help: 'missed heartbeats before a peer is declared dead and fenced',
  },
  {
    key: 'requestTimeoutMs',
    flag: 'request-timeout-ms',
    env: 'XPMESH_REQUEST_TIMEOUT_MS',
    kind: 'int',
    default: String(TIMING_DEFAULTS.requestTimeoutMs),
    help: 'deadline of every peer request',
  },
  {
    key: 'ackTimeoutMs',
    flag: 'ack-timeout-ms',
    env: 'XPMESH_ACK_TIMEOUT_MS',
    kind: 'int',
    default: String(TIMING_DEFAULTS.ackTimeoutMs),
    help: 'deadline for invalidation acks; a peer missing it is fenced',
  },
  {
    key: 'leaseMs',
    flag: 'lease-ms',
    env: 'XPMESH_LEASE_MS',
    kind: 'int',
    default: '0',
    help: "lease on remote copies: an attacher stops using copies it has not had renewed for this long, and a home waits this long (plus a margin) before it treats a fenced instance's copies as gone (0 = heartbeat-ms × missed-beats; must exceed heartbeat-ms)",
  },
  {
    key: 'prefault',
    flag: 'prefault',
    env: 'XPMESH_PREFAULT',
    kind: 'int',
    default: String(TIMING_DEFAULTS.prefault),
    help: 'extra pages mapped ahead on a remote fault',
  },
  {
    key: 'shutdownMs',
    flag: 'shutdown-ms',
    env: 'XPMESH_SHUTDOWN_MS',
    kind: 'int',
    default: '5000',
    help: 'SIGTERM grace period before the instance exits anyway',
  },
  {
    key: 'tlsCert',
    flag: 'tls-cert',
    env: 'XPMESH_TLS_CERT',
    kind: 'string',
    default: '',
    help: 'PEM certificate file: peer links use wss',
  },
  {
    key: 'tlsKey',
    flag: 'tls-key',
    env: 'XPMESH_TLS_KEY',
    kind: 'string',
    default: '',
    help: 'PEM private key file for --tls-cert',
  },
  {
    key: 'maxPeers',
    flag: 'max-peers',
    env: 'XPMESH_MAX_PEERS',
    kind: 'int',
    default: String(DEFAULT_LIMITS.maxPeers),
    help: 'peer-table size: a new node id that authenticates beyond it is refused (close 4012, counted as peer_table_full)',
  },
  {
    key: 'credPolicy',
    flag: 'cred-policy',
    env: 'XPMESH_CRED_POLICY',
    kind: 'string',
    default: '',
    help: 'per-peer credential policy for remote gets, JSON: {"<node>|*": {deny, squash: [uid,gid], uids: {from: to}, gids, rootSquash: [uid,gid], onlyUids: [[a,b]]}} (none: uid/gid claims are trusted, like NFS AUTH_SYS)',
  },
  {
    key: 'credPolicyFile',
    flag: 'cred-policy-file',
    env: 'XPMESH_CRED_POLICY_FILE',
    kind: 'file',
    default: '',
    help: 'file holding the credential policy (JSON)',
  },
];

const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/;
/** Bound on --peers-dns names (each is resolved every interval). */
export const MAX_DNS_NAMES = 8;

/**
 * The default node id: the host name, made valid (other characters become '-', at most 64).
 * Engines that name hosts stably give stable ids: a Swarm stack's `hostname: node-{{.Task.Slot}}`,
 * a StatefulSet's pod name; elsewhere the host name is at least unique (a container id).
 */
export function nodeIdFromHostname(hostname: string): string {
  const id = hostname.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  return id === '' ? 'n1' : id;
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The admin API's default bind: operations need no token only here. */
export function isDefaultAdminHost(host: string): boolean {
  return host === '127.0.0.1' || host === '::1' || host === 'localhost';
}

export function parsePeers(text: string): PeerAddress[] {
  const out: PeerAddress[] = [];
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(item);
    if (!m) throw new ConfigError(`peer "${item}" is not host:port`);
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new ConfigError(`peer "${item}": port out of range`);
    out.push({ host: m[1].replace(/^\[|\]$/g, ''), port });
  }
  return out;
}

function parseIntSetting(spec: SettingSpec, text: string): number {
  if (!/^\d+$/.test(text))
    throw new ConfigError(`--${spec.flag} (${spec.env}) must be a non-negative integer, got "${text}"`);
  return Number(text);
}

/**
 * Build the configuration. `flags` are parsed command-line values keyed by flag name; `env` is the
 * process environment (passed in, never read here). `pid` names the default swap file.
 */
export function resolveConfig(
  flags: Record<string, string | undefined>,
  env: Record<string, string | undefined>,
  pid = 0,
  hostname: string = osHostname(),
): NodeConfig {
  const raw = new Map<string, string>();
  for (const spec of CONFIG_SETTINGS) {
    const v = flags[spec.flag] ?? env[spec.env];
    if (v !== undefined && v !== '') raw.set(spec.key, v);
  }
  const str = (k: string, d: string) => raw.get(k) ?? d;
  const int = (k: SettingSpec['key']) => {
    const spec = CONFIG_SETTINGS.find((s) => s.key === k)!;
    return parseIntSetting(spec, raw.get(k) ?? spec.default);
  };
  const readSecretFile = (k: string): string | undefined => {
    const path = raw.get(k);
    if (path === undefined) return undefined;
    try {
      return readFileSync(path, 'utf8').trim();
    } catch (err) {
      throw new ConfigError(
        `cannot read ${k === 'clusterKeyFile' ? 'cluster key' : k === 'credPolicyFile' ? 'credential policy' : 'admin token'} file ${path}: ${(err as Error).message}`,
      );
    }
  };

  const node = str('node', nodeIdFromHostname(hostname));
  if (!NODE_ID.test(node)) throw new ConfigError(`node id "${node}" must be 1-64 chars of [A-Za-z0-9._-]`);
  const logLevel = str('logLevel', 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel))
    throw new ConfigError(`log level "${logLevel}" is not one of ${LOG_LEVELS.join('|')}`);

  const listenHost = str('listenHost', '127.0.0.1');
  const listenPort = int('listenPort');
  const adminHost = str('adminHost', '127.0.0.1');
  const adminPort = int('adminPort');
  for (const [name, port, min] of [
    ['listen-port', listenPort, 1],
    ['admin-port', adminPort, 0],
  ] as const) {
    if (port < min || port > 65535) throw new ConfigError(`--${name} ${port} is out of range`);
  }
  const peers = parsePeers(str('peers', '')).filter((p) => !(p.port === listenPort && p.host === listenHost));
  const peersDns = parsePeers(str('peersDns', ''));
  if (peersDns.length > MAX_DNS_NAMES) throw new ConfigError(`--peers-dns: at most ${MAX_DNS_NAMES} names`);
  const peersDnsIntervalMs = int('peersDnsIntervalMs');
  if (peersDnsIntervalMs < PEERS_DNS_INTERVAL_MS.min || peersDnsIntervalMs > PEERS_DNS_INTERVAL_MS.max)
    throw new ConfigError(
      `--peers-dns-interval-ms ${peersDnsIntervalMs} must be between ${PEERS_DNS_INTERVAL_MS.min} and ${PEERS_DNS_INTERVAL_MS.max}`,
    );

  let clusterKey = raw.get('clusterKey') ?? readSecretFile('clusterKeyFile') ?? '';
  if (clusterKey === '') {
    const allLoopback =
      isLoopbackHost(listenHost) &&
      peers.every((p) => isLoopbackHost(p.host)) &&
      peersDns.every((p) => isLoopbackHost(p.host));
    if (!allLoopback)
      throw new ConfigError(
        'a cluster key is required (--cluster-key, --cluster-key-file or XPMESH_CLUSTER_KEY) when peers are not on loopback',
      );
    clusterKey = DEV_CLUSTER_KEY;
  }
  // The peer network refuses a key under 16 bytes; say so here, before anything starts.
  if (Buffer.byteLength(clusterKey, 'utf8') < 16)
    throw new ConfigError(
      `the cluster key must be at least 16 bytes (got ${Buffer.byteLength(clusterKey, 'utf8')}); set --cluster-key, --cluster-key-file or XPMESH_CLUSTER_KEY`,
    );
  const adminToken = raw.get('adminToken') ?? readSecretFile('adminTokenFile');

  const frames = int('frames');
  if (frames < FRAMES.min || frames > FRAMES.max)
    throw new ConfigError(`--frames ${frames} must be between ${FRAMES.min} and ${FRAMES.max}`);
  const heartbeatMs = int('heartbeatMs');
  const missedBeats = int('missedBeats');
  const requestTimeoutMs = int('requestTimeoutMs');
  const ackTimeoutMs = int('ackTimeoutMs');
  for (const [name, v] of [
    ['heartbeat-ms', heartbeatMs],
    ['missed-beats', missedBeats],
    ['request-timeout-ms', requestTimeoutMs],
    ['ack-timeout-ms', ackTimeoutMs],
  ] as const) {
    if (v < 1) throw new ConfigError(`--${name} must be at least 1`);
  }
  const leaseRaw = int('leaseMs');
  const leaseMs = leaseRaw === 0 ? heartbeatMs * missedBeats : leaseRaw;
  if (leaseMs <= heartbeatMs)
    throw new ConfigError(
      `--lease-ms ${leaseMs} must exceed --heartbeat-ms ${heartbeatMs} (renewals come once per heartbeat)`,
    );
  let credPolicy: CredentialPolicy | undefined;
  const policyText = raw.get('credPolicy') ?? readSecretFile('credPolicyFile');
  if (policyText !== undefined) {
    try {
      credPolicy = parseCredentialPolicy(policyText);
    } catch (err) {
      throw new ConfigError(`--cred-policy (XPMESH_CRED_POLICY): ${(err as Error).message}`);
    }
  }
  const maxPeers = int('maxPeers');
  if (maxPeers < 1) throw new ConfigError('--max-peers must be at least 1');
  const tlsCert = raw.get('tlsCert');
  const tlsKey = raw.get('tlsKey');
  if ((tlsCert === undefined) !== (tlsKey === undefined))
    throw new ConfigError('--tls-cert and --tls-key go together');
  for (const [flag, path] of [
    ['tls-cert', tlsCert],
    ['tls-key', tlsKey],
  ] as const) {
    if (path === undefined) continue;
    try {
      readFileSync(path);
    } catch (err) {
      throw new ConfigError(
        `--${flag} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? err})`,
      );
    }
  }

  return {
    node,
    listenHost,
    listenPort,
    peers,
    peersDns,
    peersDnsIntervalMs,
    clusterKey,
    frames,
    swapPath: raw.get('swapPath') ?? join(tmpdir(), `xpmesh-${node}-${pid}.swap`),
    adminHost,
    adminPort,
    adminToken,
    logLevel,
    heartbeatMs,
    missedBeats,
    requestTimeoutMs,
    ackTimeoutMs,
    leaseMs,
    prefault: int('prefault'),
    shutdownMs: int('shutdownMs'),
    tlsCert,
    tlsKey,
    maxPeers,
    credPolicy,
  };
}

/** parseArgs option table for every setting (all strings; resolveConfig validates). */
export function configArgOptions(): Record<string, { type: 'string' }> {
  const out: Record<string, { type: 'string' }> = {};
  for (const s of CONFIG_SETTINGS) out[s.flag] = { type: 'string' };
  return out;
}
