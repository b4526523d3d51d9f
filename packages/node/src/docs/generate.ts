/**
 * Docs generated from code (`npm run docs`; generate.test.ts fails when a doc is stale). Every
 * default and timing figure a doc quotes comes from ONE source: the configuration table
 * (CONFIG_SETTINGS) and the timing defaults it is built on (TIMING_DEFAULTS in @xpmesh/protocol).
 *
 * In docs/*.md:
 * - `<!-- generated: NAME -->` … `<!-- /generated -->` is a block (a table) rendered by BLOCKS[NAME];
 * - `<!-- value: NAME -->…<!-- /value -->` is an inline figure rendered by VALUES[NAME];
 * - `<!-- value: pkg.NAME -->…` is a figure of a package above this one (testkit: the soak's and the
 *   fuzzer's option defaults), which this package cannot import: that package renders and checks
 *   it (packages/testkit/src/docs-values.ts) and `npm run docs` writes it; here it is kept as is.
 * The markers are HTML comments: invisible when the Markdown is rendered.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FORGOTTEN_FENCES_KEPT, MAX_NODE_INDEX, MAX_PAGES, NODE_SWEEP_FLOOR } from '@xpmesh/driver';
import {
  LEASE_SLOTS,
  MAX_RANGE_PAGES,
  MAX_SHRINK_BATCHES,
  MAX_SHRINK_CONCURRENCY,
  PRETOUCH_AHEAD,
  RECLAIM_BATCH,
} from '@xpmesh/kernel';
import {
  DEFAULT_LEASE_MS,
  DEFAULT_LIMITS,
  defaultLeaseMarginMs,
  MAX_CID_CHARS,
  MAX_ERROR_MESSAGE_CHARS,
  TIMING_DEFAULTS,
} from '@xpmesh/protocol';
import { CLUSTER_FRAMES, CLUSTER_NODES } from '../cli/cluster.js';
import { DEFAULT_ADMIN_URL } from '../cli/ctl.js';
import { ADMIN_LIMITS, SSE_RETRY_MS } from '../daemon/admin.js';
import { CONFIG_SETTINGS, FRAMES, MAX_DNS_NAMES, PEERS_DNS_INTERVAL_MS } from '../daemon/config.js';
import { HOSTILE_RSS_BOUND_MIB } from '../daemon/hostile-bound.js';
import { DEFAULT_MAX_DNS_ADDRESSES } from '../daemon/membership.js';
import {
  OP_SCHEMAS,
  PRESSURE_MAX_BATCHES,
  PRESSURE_MAX_BUDGET_MS,
  PRESSURE_MAX_CONCURRENCY,
} from '../daemon/ops.js';
import { LOAD_DEFAULTS, LIMITS as LOAD_LIMITS } from '../load/cli.js';
import { CHUNK_MAX_MS, CHUNK_MAX_OPS, MAX_SOURCE_BYTES, MAX_STATE_BYTES } from '../load/harness.js';
import { MAX_PROCS } from '../load/program.js';
import { PLAN_LIMITS } from '../load/workloads.js';
import { VIEW_SETTINGS } from '../view/serve.js';

const T = TIMING_DEFAULTS;
const ms = (n: number) => `${n} ms`;
/** A byte count, with its binary unit when it is a whole number of KiB or MiB: `1048576 (1 MiB)`. */
function bytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n} (${n / (1 << 20)} MiB)`;
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n} (${n / (1 << 10)} KiB)`;
  return String(n);
}
/** A limit's default as the docs print it: byte counts with their unit, durations in ms. */
const figure = (key: string, n: number) =>
  key.endsWith('Bytes') ? bytes(n) : key.endsWith('Ms') ? ms(n) : String(n);
const capitalized = (key: string) => key[0].toUpperCase() + key.slice(1);
/**
 * Every protocol limit (`limitsMaxPeers` = DEFAULT_LIMITS.maxPeers) and admin limit
 * (`adminMaxBodyBytes` = ADMIN_LIMITS.maxBodyBytes), named after the table and the key.
 */
function limitValues(prefix: string, table: Readonly<object>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(table).map(([k, v]) => [`${prefix}${capitalized(k)}`, figure(k, v as number)]),
  );
}
/** A figure as prose prints it: `2,000,000`. */
const big = (n: number) => n.toLocaleString('en-US');
/** A byte count in KiB, as prose prints it: `64 KiB`. */
const kib = (n: number) => `${n / 1024} KiB`;
/** The default of an `xpmesh node` setting (CONFIG_SETTINGS), by flag. */
function setting(flag: string): string {
  const s = CONFIG_SETTINGS.find((x) => x.flag === flag);
  if (!s) throw new Error(`no setting --${flag}`);
  return s.default;
}
/** The `run` operation's bounds (its zod schema). */
const runShape = OP_SCHEMAS.run.shape;
const pressureDefaults = OP_SCHEMAS.pressure.parse({ pages: 1 });

/** Inline figures, by name. */
const secs = (n: number) => (n % 1000 === 0 ? `${n / 1000} s` : ms(n));

export const VALUES: Readonly<Record<string, string>> = {
  sseRetry: secs(SSE_RETRY_MS),
  viewStatusPoll: secs(VIEW_SETTINGS.statusPollMs),
  viewMaxLog: String(VIEW_SETTINGS.maxLog),
  viewRetryMax: secs(VIEW_SETTINGS.retryMaxMs),
  viewRateWindow: secs(VIEW_SETTINGS.rateWindowMs),
  viewHighlight: secs(VIEW_SETTINGS.highlightMs),
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
  ...limitValues('limits', DEFAULT_LIMITS),
  ...limitValues('admin', ADMIN_LIMITS),
  /** Longest correlation id. */
  cidMaxChars: String(MAX_CID_CHARS),
  /** Longest `error.message`. */
  errorMessageMaxChars: String(MAX_ERROR_MESSAGE_CHARS),
  /** RSS the hostile-input suite lets its attacks add (MiB). */
  hostileRssBoundMib: String(HOSTILE_RSS_BOUND_MIB),
  /** Names in `--peers-dns`. */
  maxDnsNames: String(MAX_DNS_NAMES),
  /** Addresses dialled because of DNS. */
  maxDnsAddresses: String(DEFAULT_MAX_DNS_ADDRESSES),
  /** The `pressure` operation's bounds and defaults (its zod schema). */
  pressureMaxBudgetMs: big(PRESSURE_MAX_BUDGET_MS),
  pressureBudgetMs: big(pressureDefaults.budgetMs),
  pressureMaxConcurrency: String(PRESSURE_MAX_CONCURRENCY),
  pressureConcurrency: String(pressureDefaults.concurrency),
  pressureMaxBatches: String(PRESSURE_MAX_BATCHES),
  pressureBatches: String(pressureDefaults.batches),
  runModuleMaxChars: String(runShape.module.maxLength),
  runExportMaxChars: String(runShape.export.maxLength),
  /** The kernel's `shrink` bounds (the same as `pressure`'s: pressure.test.ts). */
  shrinkMaxConcurrency: String(MAX_SHRINK_CONCURRENCY),
  reclaimBatch: String(RECLAIM_BATCH),
  shrinkMaxBatches: String(MAX_SHRINK_BATCHES),
  peersDnsIntervalMs: setting('peers-dns-interval-ms'),
  peersDnsIntervalMinMs: String(PEERS_DNS_INTERVAL_MS.min),
  peersDnsIntervalMaxMs: String(PEERS_DNS_INTERVAL_MS.max),
  /** `xpmesh cluster` and `xpmesh ctl`. */
  clusterNodesMax: String(CLUSTER_NODES.max),
  clusterNodes: String(CLUSTER_NODES.default),
  clusterFrames: String(CLUSTER_FRAMES),
  ctlUrl: DEFAULT_ADMIN_URL,
  /** `xpmesh load`: option defaults, hard caps, the workload program's limits. */
  loadInstances: String(LOAD_DEFAULTS.instances),
  loadInstancesMax: String(LOAD_LIMITS.maxInstances),
  loadProcs: String(LOAD_DEFAULTS.procs),
  loadProcsMax: String(MAX_PROCS),
  loadPages: String(LOAD_DEFAULTS.pages),
  loadDurationMs: String(LOAD_DEFAULTS.durationMs),
  loadDurationWithOpsMs: String(LOAD_DEFAULTS.durationWithOpsMs),
  loadDurationMaxMs: String(LOAD_LIMITS.maxDurationMs),
  loadOps: String(LOAD_DEFAULTS.ops),
  loadOpsMax: String(LOAD_LIMITS.maxOps),
  loadSeed: String(LOAD_DEFAULTS.seed),
  loadMinFrames: String(LOAD_DEFAULTS.minFrames),
  loadChunkMaxOps: big(CHUNK_MAX_OPS),
  loadChunkMaxS: `${CHUNK_MAX_MS / 1000} s`,
  loadStateMax: kib(MAX_STATE_BYTES),
  loadSourceMax: kib(MAX_SOURCE_BYTES),
  loadConfigMax: kib(LOAD_LIMITS.maxConfigBytes),
  loadKeysMax: big(PLAN_LIMITS.maxKeys),
  loadParamsMax: kib(PLAN_LIMITS.maxParamsBytes),
  loadChunkMsMin: big(PLAN_LIMITS.chunkMs.min),
  loadChunkMsMax: big(PLAN_LIMITS.chunkMs.max),
  loadChunkMs: big(PLAN_LIMITS.chunkMs.default),
  /** Pages of one driver message (map, write-back round, detach chunk). */
  driverMaxPages: String(MAX_PAGES),
  /** The kernel's lease table: slots, slot 0 never a lease. */
  kernelLeaseSlots: String(LEASE_SLOTS),
  kernelLastLeaseSlot: String(LEASE_SLOTS - 1),
  /** Pages of one ranged call of the kernel's module API. */
  kernelRangePages: String(MAX_RANGE_PAGES),
  /** Never-used frames the kernel keeps touched ahead of allocation. */
  pretouchAhead: String(PRETOUCH_AHEAD),
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
  frames: `physical memory in 4 KiB frames (${FRAMES.default} = ${FRAMES.default / 256} MiB; ${FRAMES.min} … ${FRAMES.max})`,
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
const VALUE_RE = /(<!-- value: ((?:[a-z]+\.)?[A-Za-z]+) -->)(.*?)(<!-- \/value -->)/g;

/** Figures of packages above this one (`pkg.NAME`), by full name; see the header. */
export type ForeignValues = Readonly<Record<string, string>>;

/**
 * The doc with every generated block and value rendered from code; throws on an unknown name. A
 * `pkg.NAME` value is rendered from `foreign` when given, else kept as it is (its package checks it).
 */
export function regenerate(text: string, file = 'doc', foreign?: ForeignValues): string {
  return text
    .replace(BLOCK_RE, (_m, open: string, name: string, _old: string, close: string) => {
      const render = BLOCKS[name];
      if (!render) throw new Error(`${file}: unknown generated block "${name}"`);
      return `${open}${render()}${close}`;
    })
    .replace(VALUE_RE, (m, open: string, name: string, _old: string, close: string) => {
      if (name.includes('.')) {
        if (foreign === undefined) return m;
        const f = foreign[name];
        if (f === undefined) throw new Error(`${file}: unknown value "${name}"`);
        return `${open}${f}${close}`;
      }
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
