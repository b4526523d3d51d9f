/**
 * The instance's Prometheus registry (prom-client). docs/metrics.md lists every metric defined
 * here; `METRIC_NAMES` is checked against that page by a test.
 *
 * Counters and histograms are fed by events (protocol messages, driver faults and invalidations,
 * admin requests); gauges are read from the kernel, driver and peer network at scrape time.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CREDENTIAL_ACTIONS } from './cred-policy.js';

export interface GaugeSnapshot {
  framesTotal: number;
  framesFree: number;
  processes: number;
  segments: number;
  attachments: number;
  rmapEntries: number;
  exportedPages: number;
  peers: Record<string, number>;
  /** Protocol counters per message type (from the peer network), cumulative. */
  messages: Record<string, { msgsIn: number; bytesIn: number; msgsOut: number; bytesOut: number }>;
  /** Refusals by kind (REFUSAL_KINDS), cumulative: peers (network) and processes (driver). */
  refusals: Record<string, number>;
  /** Remote gets by what the credential policy did (CREDENTIAL_ACTIONS), cumulative. */
  credPolicy?: Record<string, number>;
  /** Peer-table entries evicted to make room for an authenticated new node id, cumulative. */
  peersEvicted?: number;
  /** Node ids the driver holds per-node state for (docs/driver.md "Per-node state"). */
  driverNodes?: number;
  /** Node ids whose per-node state the driver forgot, cumulative. */
  driverNodesPruned?: number;
}

/**
 * What `xpmesh_refusals_total` counts, by `kind` (docs/metrics.md): peers that did not get in, and
 * local or remote requests the driver refused. Admin calls without a valid token are counted
 * separately, in xpmesh_admin_refused_total.
 */
export const REFUSAL_KINDS = {
  peer_auth: 'a peer failed the mutual challenge-response (wrong key, or a replayed proof)',
  peer_handshake: 'a peer broke the handshake (talked before authenticating, bad hello)',
  peer_version: 'a peer offered no protocol version we speak',
  peer_stale_epoch: 'a peer session refused because its epoch was fenced or not newer',
  peer_table_full: 'an authenticated new node id refused because the peer table was full (--max-peers)',
  peer_pending_full:
    'a peer-port connection closed at accept: limits.maxPendingConnections were unauthenticated',
  frame_rejected: 'an incoming frame rejected by ingress validation (each answered with an error code)',
  abuse_close: 'a link closed because its peer kept sending invalid frames',
  no_permit: 'a request naming a permit (apid) the caller does not hold, or one revoked',
  access_denied: "a get refused by the segment's mode bits (uid/gid, RDONLY/RDWR)",
  readonly_write: 'a write to a read-only attachment (SIGSEGV from the kernel: the VMA has no PROT_WRITE)',
  node_id_collision:
    'our live session was replaced at a peer by another live instance that authenticated with our node id (never silent: also logged as an error)',
} as const;

const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

export class InstanceMetrics {
  readonly registry = new Registry();
  readonly faultLatency: Histogram<'access' | 'result'>;
  readonly invalidationLatency: Histogram<'reason' | 'result'>;
  readonly fences: Counter<'reason'>;
  readonly lostDirtyPages: Counter;
  readonly reclaim: Counter<'outcome'>;
  readonly adminRequests: Counter<'op' | 'code'>;
  readonly adminRefused: Counter<'reason'>;
  readonly adminLimits: Counter<'limit'>;

  constructor(node: string, snapshot: () => GaugeSnapshot) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node });
    this.faultLatency = new Histogram({
      name: 'xpmesh_fault_latency_seconds',
      help: 'Remote page fault latency at the attacher, from trap to PTE installed',
      labelNames: ['access', 'result'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.invalidationLatency = new Histogram({
      name: 'xpmesh_invalidation_latency_seconds',
      help: 'Invalidation latency at the home, from first invalidate sent to last ack received',
      labelNames: ['reason', 'result'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.fences = new Counter({
      name: 'xpmesh_fences_total',
      help: 'Peers fenced by this instance (missed heartbeats or ack deadline)',
      labelNames: ['reason'],
      registers,
    });
    this.lostDirtyPages = new Counter({
      name: 'xpmesh_lost_dirty_pages_total',
      help: 'Pages whose only dirty copy was on a fenced instance; reverted to the last written-back data',
      registers,
    });
    this.reclaim = new Counter({
      name: 'xpmesh_reclaim_total',
      help: 'Reclaim attempts forced through the admin API (reclaim, pressure) by outcome (reclaimed, or why the page was kept: referenced, external_failed, busy, pinned, unevictable, no_swap, again, io_error)',
      labelNames: ['outcome'],
      registers,
    });
    this.adminRequests = new Counter({
      name: 'xpmesh_admin_requests_total',
      help: 'Admin API requests by operation and result code (ok or an error code)',
      labelNames: ['op', 'code'],
      registers,
    });
    this.adminLimits = new Counter({
      name: 'xpmesh_admin_limits_total',
      help: 'Admin requests, connections and event subscribers stopped by a limit (ADMIN_LIMITS), by limit',
      labelNames: ['limit'],
      registers,
    });
    this.adminRefused = new Counter({
      name: 'xpmesh_admin_refused_total',
      help: 'Admin operations refused for lack of a valid bearer token',
      labelNames: ['reason'],
      registers,
    });

    let cached: GaugeSnapshot | undefined;
    const read = () => {
      cached ??= snapshot();
      queueMicrotask(() => {
        cached = undefined;
      });
      return cached;
    };
    const gauge = (name: string, help: string, pick: (s: GaugeSnapshot) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(pick(read()));
        },
      });
    // Message counters live in the peer network (every frame, handshakes included); they are
    // copied at scrape time, so they are counters that only the network increments.
    const perType = (name: string, help: string, field: 'msgs' | 'bytes') =>
      new Counter({
        name,
        help,
        labelNames: ['type', 'direction'],
        registers,
        collect() {
          this.reset();
          for (const [type, c] of Object.entries(read().messages)) {
            const vin = field === 'msgs' ? c.msgsIn : c.bytesIn;
            const vout = field === 'msgs' ? c.msgsOut : c.bytesOut;
            if (vin > 0) this.inc({ type, direction: 'in' }, Math.round(vin));
            if (vout > 0) this.inc({ type, direction: 'out' }, Math.round(vout));
          }
        },
      });
    perType(
      'xpmesh_messages_total',
      'Protocol messages by type and direction (in = received, out = sent)',
      'msgs',
    );
    perType('xpmesh_message_bytes_total', 'Encoded protocol message bytes by type and direction', 'bytes');
    new Counter({
      name: 'xpmesh_refusals_total',
      help: `Refusals by kind: ${Object.keys(REFUSAL_KINDS).join(', ')} (docs/metrics.md)`,
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        const r = read().refusals;
        for (const kind of Object.keys(REFUSAL_KINDS)) this.inc({ kind }, Math.round(r[kind] ?? 0));
      },
    });
    new Counter({
      name: 'xpmesh_peers_evicted_total',
      help: 'Peer-table entries evicted (departed, unconfigured, no connection) to admit an authenticated new node id; their epochs are kept (docs/protocol.md §7)',
      registers,
      collect() {
        this.reset();
        this.inc(Math.round(read().peersEvicted ?? 0));
      },
    });
    new Counter({
      name: 'xpmesh_cred_policy_total',
      help: 'Remote gets at this home by what the per-peer credential policy did: trusted (as claimed), mapped (uid/gid rewritten), denied (E_PERM)',
      labelNames: ['action'],
      registers,
      collect() {
        this.reset();
        const c = read().credPolicy ?? {};
        for (const action of CREDENTIAL_ACTIONS) this.inc({ action }, Math.round(c[action] ?? 0));
      },
    });
    gauge('xpmesh_frames_total', 'Physical page frames of this instance', (s) => s.framesTotal);
    gauge('xpmesh_frames_free', 'Free page frames', (s) => s.framesFree);
    gauge('xpmesh_processes', 'Live processes', (s) => s.processes);
    gauge('xpmesh_segments', 'Segments exported by this instance (xpmem_make)', (s) => s.segments);
    gauge('xpmesh_attachments', 'Attachments in local processes', (s) => s.attachments);
    gauge(
      'xpmesh_rmap_entries',
      'Driver reverse-map entries (remote mappings of local pages)',
      (s) => s.rmapEntries,
    );
    gauge('xpmesh_exported_pages', 'Pages with PG_external_rmap set', (s) => s.exportedPages);
    gauge(
      'xpmesh_driver_nodes',
      'Node ids the driver holds per-node state for (index, epochs, fencing memory); bounded under churn (docs/driver.md)',
      (s) => s.driverNodes ?? 0,
    );
    new Counter({
      name: 'xpmesh_driver_nodes_pruned_total',
      help: 'Node ids whose per-node driver state was forgotten once nothing of them was held (docs/driver.md)',
      registers,
      collect() {
        this.reset();
        this.inc(Math.round(read().driverNodesPruned ?? 0));
      },
    });
    new Gauge({
      name: 'xpmesh_peers',
      help: 'Peers by link state (connecting, up, down, fenced)',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(read().peers)) this.set({ state }, n);
      },
    });
  }
}

/** Every metric name, for the docs test. */
export function metricNames(m: InstanceMetrics): string[] {
  return m.registry.getMetricsAsArray().map((x) => x.name);
}
