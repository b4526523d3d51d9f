/** Percentiles, Prometheus text parsing and instance counter snapshots for the load reports. */
import type { AdminClient } from '../daemon/admin-client.js';

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Exact percentiles (nearest rank) of a list of numbers. */
export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  const s = Float64Array.from(values).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  let sum = 0;
  for (const v of s) sum += v;
  return {
    count: s.length,
    p50: round(at(0.5)),
    p90: round(at(0.9)),
    p99: round(at(0.99)),
    p999: round(at(0.999)),
    max: round(s[s.length - 1]),
    mean: round(sum / s.length),
  };
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** One sample line of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3])
      for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    const v = m[4] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[4]);
    if (Number.isFinite(v) || v === Number.POSITIVE_INFINITY) out.push({ name: m[1], labels, value: v });
  }
  return out;
}

/** Cumulative histogram buckets (le → count), summed over label sets. */
export type Buckets = Map<number, number>;

export function histogramBuckets(samples: Sample[], name: string): Buckets {
  const b: Buckets = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le);
    b.set(le, (b.get(le) ?? 0) + s.value);
  }
  return b;
}

export function diffBuckets(after: Buckets, before: Buckets): Buckets {
  const d: Buckets = new Map();
  for (const [le, v] of after) d.set(le, v - (before.get(le) ?? 0));
  return d;
}

export function addBuckets(a: Buckets, b: Buckets): Buckets {
  const d: Buckets = new Map(a);
  for (const [le, v] of b) d.set(le, (d.get(le) ?? 0) + v);
  return d;
}

/**
 * Percentiles from cumulative buckets (seconds), in microseconds, linearly interpolated inside
 * the bucket (as Prometheus' histogram_quantile does). Coarse: only as fine as the buckets.
 */
export function bucketPercentiles(b: Buckets): Omit<Percentiles, 'mean' | 'max'> & { maxBucketUs: number } {
  const les = [...b.keys()].sort((x, y) => x - y);
  const total = les.length ? (b.get(les[les.length - 1]) ?? 0) : 0;
  const q = (p: number) => {
    if (total <= 0) return 0;
    const rank = p * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const le of les) {
      const c = b.get(le) ?? 0;
      if (c >= rank) {
        if (!Number.isFinite(le)) return prevLe * 1e6;
        const frac = c === prevCount ? 1 : (rank - prevCount) / (c - prevCount);
        return (prevLe + (le - prevLe) * frac) * 1e6;
      }
      prevLe = le;
      prevCount = c;
    }
    return prevLe * 1e6;
  };
  let maxLe = 0;
  let prev = 0;
  for (const le of les) {
    const c = b.get(le) ?? 0;
    if (c > prev) maxLe = le;
    prev = c;
  }
  return {
    count: total,
    p50: round(q(0.5)),
    p90: round(q(0.9)),
    p99: round(q(0.99)),
    p999: round(q(0.999)),
    maxBucketUs: Number.isFinite(maxLe) ? round(maxLe * 1e6) : -1,
  };
}

/** What one instance reports, at one moment: driver counters and metrics. */
export interface InstanceSnapshot {
  node: string;
  counters: Record<string, number>;
  messages: number;
  bytes: number;
  byType: Record<string, { msgs: number; bytes: number }>;
  fault: Buckets;
  invalidation: Buckets;
  framesTotal: number;
  framesFree: number;
}

export async function snapshot(client: AdminClient): Promise<InstanceSnapshot> {
  const [status, text] = await Promise.all([
    client.get<{
      node: string;
      driver?: { counters?: Record<string, number> };
      memory?: Record<string, unknown>;
    }>('/status'),
    client.get<string>('/metrics'),
  ]);
  const samples = parsePrometheus(typeof text === 'string' ? text : '');
  const byType: Record<string, { msgs: number; bytes: number }> = {};
  let messages = 0;
  let bytes = 0;
  for (const s of samples) {
    // Count each message once, by its sender.
    if (s.labels.direction !== 'out') continue;
    const isMsgs = s.name === 'xpmesh_messages_total';
    if (!isMsgs && s.name !== 'xpmesh_message_bytes_total') continue;
    byType[s.labels.type] ??= { msgs: 0, bytes: 0 };
    if (isMsgs) {
      messages += s.value;
      byType[s.labels.type].msgs += s.value;
    } else {
      bytes += s.value;
      byType[s.labels.type].bytes += s.value;
    }
  }
  const gauge = (n: string) => samples.find((s) => s.name === n)?.value ?? 0;
  const counters: Record<string, number> = {};
  for (const [k, v] of Object.entries(status.driver?.counters ?? {}))
    if (typeof v === 'number') counters[k] = v;
  return {
    node: status.node,
    counters,
    messages,
    bytes,
    byType,
    fault: histogramBuckets(samples, 'xpmesh_fault_latency_seconds'),
    invalidation: histogramBuckets(samples, 'xpmesh_invalidation_latency_seconds'),
    framesTotal: gauge('xpmesh_frames_total'),
    framesFree: gauge('xpmesh_frames_free'),
  };
}
