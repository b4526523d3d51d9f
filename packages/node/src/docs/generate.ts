/**
 * Docs generated from code (`npm run docs`; generate.test.ts fails when a doc is stale). Every
 * default and timing figure a doc quotes comes from ONE source: the configuration table
 * (CONFIG_SETTINGS) and the timing defaults it is built on (TIMING_DEFAULTS in @xpmesh/protocol).
 *
 * In docs/*.md:
 * - `<!-- generated: NAME -->` … `<!-- /generated -->` is a block (a table) rendered by BLOCKS[NAME];
 * - `<!-- value: NAME -->…<!-- /value -->` is an inline figure rendered by VALUES[NAME].
 * The markers are HTML comments: invisible when the Markdown is rendered.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FORGOTTEN_FENCES_KEPT, MAX_NODE_INDEX, NODE_SWEEP_FLOOR } from '@xpmesh/driver';
import { DEFAULT_LEASE_MS, DEFAULT_LIMITS, defaultLeaseMarginMs, TIMING_DEFAULTS } from '@xpmesh/protocol';
import { CONFIG_SETTINGS } from '../daemon/config.js';

const T = TIMING_DEFAULTS;
const ms = (n: number) => `${n} ms`;

/** Inline figures, by name. */
export const VALUES: Readonly<Record<string, string>> = {
  heartbeatMs: ms(T.heartbeatMs),
  missedBeats: String(T.missedBeats),
  deadAfterMs: ms(T.heartbeatMs * T.missedBeats),
  /** The latest: the last frame may arrive just after a beat, so one more interval can pass. */
  deadWithinMs: ms(T.heartbeatMs * (T.missedBeats + 1)),
  requestTimeoutMs: ms(T.requestTimeoutMs),
  ackTimeoutMs: ms(T.ackTimeoutMs),
  leaseMs: ms(DEFAULT_LEASE_MS),
  leaseMarginMs: ms(defaultLeaseMarginMs(DEFAULT_LEASE_MS)),
  prefault: String(T.prefault),
  /** The driver's `prefault` option counts the faulting page too. */
  driverPrefault: String(T.prefault + 1),
  handshakeTimeoutMs: ms(DEFAULT_LIMITS.handshakeTimeoutMs),
  reconnectMinMs: ms(T.reconnectMinMs),
  reconnectMaxMs: ms(T.reconnectMaxMs),
  invalidationBoundMs: ms(T.ackTimeoutMs + DEFAULT_LEASE_MS + defaultLeaseMarginMs(DEFAULT_LEASE_MS)),
  /** Node indexes the driver can hand out at once (its reverse map stores them in 16 bits). */
  driverNodeIndexes: String(MAX_NODE_INDEX + 1),
  /** The driver sweeps its per-node tables past max(this, 2 × their size after the last sweep). */
  driverNodeSweepFloor: String(NODE_SWEEP_FLOOR),
  /** Fencing levels of pruned nodes the driver keeps for its status. */
  driverForgottenFences: String(FORGOTTEN_FENCES_KEPT),
};

/**
 * The docs' wording of a setting where it says more than `xpmesh node --help` has room for. Words
 * only: the default column always comes from CONFIG_SETTINGS.
 */
const DOC_MEANING: Readonly<Record<string, string>> = {
  id: 'node id of this instance (1-64 chars of `[A-Za-z0-9._-]`); it prefixes the segment ids this instance makes',
  peers:
    "other instances, comma-separated `host:port` (service names under compose); this instance's own address is dropped from the list",
  'cluster-key': 'shared secret authenticating peers (challenge-response; never sent on the wire)',
  frames: 'physical memory in 4 KiB frames (4096 = 16 MiB; 16 … 1048576)',
  'swap-file': 'the swap area, a real file; its name is removed right after it is opened (below)',
  'admin-port': 'port of the admin HTTP API (`0` = any free port, printed in the `admin listening` log line)',
  'admin-token': 'bearer token for admin operations (see below)',
  'log-level':
    '`trace`, `debug`, `info`, `warn`, `error`, `fatal`, `silent`; `debug` logs one line per protocol event',
  'missed-beats':
    'missed heartbeats before a peer is declared dead and fenced (a silent peer is declared dead and fenced between `heartbeat-ms × missed-beats` and `heartbeat-ms × (missed-beats + 1)` after its last frame)',
  'shutdown-ms': 'SIGTERM grace period; after it the instance exits with status 1 anyway',
  'tls-cert': 'PEM certificate file: peer links use `wss`',
  'max-peers':
    'peer-table size (configured peers plus authenticated node ids that joined); a new node id that authenticates beyond it evicts a departed, unconfigured entry (`xpmesh_peers_evicted_total`; its epochs are kept, docs/protocol.md §7), or if none can be evicted is refused with close 4012 and counted (`xpmesh_refusals_total{kind="peer_table_full"}`)',
  'tls-key': 'PEM private key file for `--tls-cert`',
};

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(head), `| ${w.map((n) => '-'.repeat(n)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

function settingsTable(): string {
  const rows = CONFIG_SETTINGS.map((s) => {
    const meaning = DOC_MEANING[s.flag] ?? s.help;
    return [
      `\`--${s.flag}\``,
      `\`${s.env}\``,
      s.default === '' ? '—' : `\`${s.default}\``,
      meaning.replace(/\|/g, '\\|'),
    ];
  });
  return table(['flag', 'environment', 'default', 'meaning'], rows);
}

function timingTable(): string {
  const lease = DEFAULT_LEASE_MS;
  const rows: string[][] = [
    [
      'heartbeat interval',
      '`--heartbeat-ms`',
      '`heartbeatMs`',
      VALUES.heartbeatMs,
      'a ping on every session',
    ],
    [
      'missed beats',
      '`--missed-beats`',
      '`missedBeats`',
      VALUES.missedBeats,
      'silent intervals before a peer is dead (close 4006)',
    ],
    [
      'peer declared dead after',
      '—',
      '—',
      `${VALUES.deadAfterMs} – ${VALUES.deadWithinMs}`,
      'heartbeat × missed beats at the earliest, heartbeat × (missed beats + 1) at the latest (the last frame may arrive just after a beat)',
    ],
    [
      'request deadline',
      '`--request-timeout-ms`',
      '`requestTimeoutMs`',
      VALUES.requestTimeoutMs,
      'every request (`E_TIMEOUT`)',
    ],
    [
      'invalidate ack deadline',
      '`--ack-timeout-ms`',
      '`ackTimeoutMs` (driver)',
      VALUES.ackTimeoutMs,
      'a mapper that misses it is fenced',
    ],
    [
      'lease on remote copies',
      '`--lease-ms`',
      '`leaseMs` (driver)',
      VALUES.leaseMs,
      `heartbeat × missed beats (\`--lease-ms 0\`); must exceed the heartbeat`,
    ],
    [
      'fence margin',
      '—',
      '`leaseMarginMs` (driver)',
      VALUES.leaseMarginMs,
      `max(50 ms, lease / 10): a home waits lease + margin after a fence (${lease} + ${defaultLeaseMarginMs(lease)} ms)`,
    ],
    ['longest invalidation', '—', '—', VALUES.invalidationBoundMs, 'ack deadline + lease + margin'],
    [
      'prefault',
      '`--prefault`',
      '`prefault` (driver)',
      `${VALUES.prefault} (driver: ${VALUES.driverPrefault})`,
      'extra pages mapped ahead by one remote fault; the driver option counts the faulting page too',
    ],
    [
      'handshake deadline',
      '—',
      '`limits.handshakeTimeoutMs`',
      VALUES.handshakeTimeoutMs,
      'hello → ready (close 4004); also the dial timeout',
    ],
    [
      'reconnect backoff',
      '—',
      '`reconnectMinMs`, `reconnectMaxMs`',
      `${VALUES.reconnectMinMs} … ${VALUES.reconnectMaxMs}`,
      'delay = min(max, min × 2^attempt) × uniform(0.5, 1)',
    ],
  ];
  return table(['what', 'daemon flag', 'library option', 'default', 'notes'], rows);
}

/** Generated blocks, by name. */
export const BLOCKS: Readonly<Record<string, () => string>> = {
  settings: settingsTable,
  timing: timingTable,
};

const BLOCK_RE = /(<!-- generated: ([a-z-]+) -->\n)([\s\S]*?)(\n<!-- \/generated -->)/g;
const VALUE_RE = /(<!-- value: ([A-Za-z]+) -->)(.*?)(<!-- \/value -->)/g;

/** The doc with every generated block and value rendered from code; throws on an unknown name. */
export function regenerate(text: string, file = 'doc'): string {
  return text
    .replace(BLOCK_RE, (_m, open: string, name: string, _old: string, close: string) => {
      const render = BLOCKS[name];
      if (!render) throw new Error(`${file}: unknown generated block "${name}"`);
      return `${open}${render()}${close}`;
    })
    .replace(VALUE_RE, (_m, open: string, name: string, _old: string, close: string) => {
      const v = VALUES[name];
      if (v === undefined) throw new Error(`${file}: unknown value "${name}"`);
      return `${open}${v}${close}`;
    });
}

/** Names used by a doc (blocks and values). */
export function markersIn(text: string): { blocks: string[]; values: string[] } {
  return {
    blocks: [...text.matchAll(BLOCK_RE)].map((m) => m[2]),
    values: [...text.matchAll(VALUE_RE)].map((m) => m[2]),
  };
}

/** Every docs/*.md file of the repository: name → text. */
export function readDocs(docsDir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of readdirSync(docsDir).sort())
    if (f.endsWith('.md')) out.set(f, readFileSync(join(docsDir, f), 'utf8'));
  return out;
}
