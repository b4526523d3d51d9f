/**
 * Thresholds (`--threshold 'p99<5ms'`): pass/fail criteria on a run's report, k6 style. Each one
 * is `METRIC OP VALUE`; the run's exit code says whether all held (docs/load.md "Thresholds").
 */
import type { LoadReport } from './report.js';

export type ThresholdOp = '<' | '<=' | '>' | '>=' | '==' | '!=';

export interface Threshold {
  expr: string;
  metric: string;
  op: ThresholdOp;
  /** A number (latencies in us), or a word for `history` / `invariants`. */
  limit: number | string;
}

export interface ThresholdResult extends Threshold {
  actual: number | string | null;
  ok: boolean;
}

const LAT_FIELDS = ['p50', 'p90', 'p99', 'p999', 'max', 'mean'] as const;
const LAT_GROUPS = ['', 'read.', 'write.', 'service.', 'fault.', 'invalidation.'] as const;

/** Every metric a threshold may name, and what it reads from the report. */
export const THRESHOLD_METRICS: Record<string, { kind: 'latency' | 'number' | 'verdict'; doc: string }> = {
  ...Object.fromEntries(
    LAT_GROUPS.flatMap((g) =>
      LAT_FIELDS.filter(
        (f) => !(g === 'fault.' || g === 'invalidation.') || (f !== 'max' && f !== 'mean'),
      ).map((f) => [
        `${g}${f}`,
        {
          kind: 'latency' as const,
          doc:
            g === ''
              ? 'op latency (in the open model from the time the call was due)'
              : g === 'service.'
                ? 'service time (invoke → response of each access)'
                : g === 'fault.'
                  ? 'server-side remote fault latency (bucket-interpolated)'
                  : g === 'invalidation.'
                    ? 'server-side invalidation latency (bucket-interpolated)'
                    : `${g.slice(0, -1)} latency`,
        },
      ]),
    ),
  ),
  ops: { kind: 'number', doc: 'operations recorded' },
  ops_per_sec: { kind: 'number', doc: 'throughput (ops/s)' },
  errors: { kind: 'number', doc: 'refused accesses and failed admin calls' },
  error_rate: { kind: 'number', doc: 'errors / (ops + errors), a fraction (or %)' },
  dropped: { kind: 'number', doc: 'open model: calls due before the end that never started' },
  fences: { kind: 'number', doc: 'instances fenced during the run' },
  msgs_per_op: { kind: 'number', doc: 'protocol messages per operation' },
  history: { kind: 'verdict', doc: 'history check: ok (linearizable), violated, incomplete' },
  invariants: { kind: 'verdict', doc: 'kernel invariant check: ok or violated' },
};

export class ThresholdError extends Error {
  readonly code = 'E_THRESHOLD';
}

const UNIT_US: Record<string, number> = { us: 1, µs: 1, ms: 1000, s: 1_000_000 };

/** Parse `p99<5ms`, `errors==0`, `history==ok`, `error_rate<1%`, `ops_per_sec>=1000`. */
export function parseThreshold(expr: string): Threshold {
  const m = /^\s*([a-z_.0-9]+)\s*(<=|>=|==|!=|<|>)\s*([^\s]+)\s*$/i.exec(expr);
  if (!m)
    throw new ThresholdError(
      `threshold "${expr}": expected METRIC OP VALUE, e.g. p99<5ms, errors==0, history==ok`,
    );
  const [, metric, op, raw] = m;
  const def = THRESHOLD_METRICS[metric];
  if (!def)
    throw new ThresholdError(
      `threshold "${expr}": unknown metric "${metric}" (have ${Object.keys(THRESHOLD_METRICS).join(', ')})`,
    );
  if (def.kind === 'verdict') {
    if (op !== '==' && op !== '!=') throw new ThresholdError(`threshold "${expr}": ${metric} takes == or !=`);
    const ok = ['ok', 'linearizable', 'violated', 'incomplete'];
    if (!ok.includes(raw) || (metric === 'invariants' && !['ok', 'violated'].includes(raw)))
      throw new ThresholdError(
        `threshold "${expr}": ${metric} is compared with ${metric === 'history' ? ok.join(', ') : 'ok, violated'}`,
      );
    return { expr, metric, op: op as ThresholdOp, limit: raw === 'linearizable' ? 'ok' : raw };
  }
  const n = /^(\d+(?:\.\d+)?)(us|µs|ms|s|%)?$/.exec(raw);
  if (!n) throw new ThresholdError(`threshold "${expr}": "${raw}" is not a number (with an optional unit)`);
  let v = Number(n[1]);
  const unit = n[2];
  if (def.kind === 'latency') {
    if (unit === '%') throw new ThresholdError(`threshold "${expr}": a latency takes us, ms or s`);
    v *= UNIT_US[unit ?? 'ms'];
  } else if (unit === '%') {
    if (metric !== 'error_rate') throw new ThresholdError(`threshold "${expr}": only error_rate takes %`);
    v /= 100;
  } else if (unit) throw new ThresholdError(`threshold "${expr}": ${metric} is a count, not a time`);
  return { expr, metric, op: op as ThresholdOp, limit: v };
}

/** The value of a metric in a report (latencies in us). */
export function metricValue(r: LoadReport, metric: string): number | string | null {
  const dot = metric.indexOf('.');
  if (THRESHOLD_METRICS[metric]?.kind === 'latency') {
    const group = dot < 0 ? '' : metric.slice(0, dot);
    const field = dot < 0 ? metric : metric.slice(dot + 1);
    const src: Record<string, unknown> | undefined =
      group === ''
        ? (r.opLatencyUs.all as unknown as Record<string, unknown>)
        : group === 'read' || group === 'write'
          ? (r.opLatencyUs[group] as unknown as Record<string, unknown>)
          : group === 'service'
            ? ((r.serviceTimeUs ?? r.opLatencyUs.all) as unknown as Record<string, unknown>)
            : group === 'fault'
              ? (r.remoteFaultLatencyUs as unknown as Record<string, unknown>)
              : (r.invalidationLatencyUs as unknown as Record<string, unknown>);
    const v = src?.[field];
    return typeof v === 'number' ? v : null;
  }
  switch (metric) {
    case 'ops':
      return r.ops.total;
    case 'ops_per_sec':
      return r.ops.opsPerSec;
    case 'errors':
      return r.ops.errors;
    case 'error_rate':
      return r.ops.total + r.ops.errors === 0 ? 0 : r.ops.errors / (r.ops.total + r.ops.errors);
    case 'dropped':
      return r.model?.dropped ?? 0;
    case 'fences':
      return r.fences;
    case 'msgs_per_op':
      return r.messages.perOp;
    case 'history':
      return r.history.verdict === 'linearizable' ? 'ok' : r.history.verdict;
    case 'invariants':
      return r.invariants.every((i) => i.ok) ? 'ok' : 'violated';
  }
  return null;
}

function holds(actual: number | string, op: ThresholdOp, limit: number | string): boolean {
  switch (op) {
    case '<':
      return actual < limit;
    case '<=':
      return actual <= limit;
    case '>':
      return actual > limit;
    case '>=':
      return actual >= limit;
    case '==':
      return actual === limit;
    case '!=':
      return actual !== limit;
  }
}

export function evaluateThresholds(r: LoadReport, ts: readonly Threshold[]): ThresholdResult[] {
  return ts.map((t) => {
    const actual = metricValue(r, t.metric);
    return { ...t, actual, ok: actual !== null && holds(actual, t.op, t.limit) };
  });
}

/** How a threshold's actual value reads (latencies in the unit the threshold used). */
export function formatActual(t: ThresholdResult): string {
  if (t.actual === null) return 'n/a';
  if (typeof t.actual === 'string') return t.actual;
  if (THRESHOLD_METRICS[t.metric]?.kind === 'latency') {
    const unit = /(us|µs|ms|s)\s*$/.exec(t.expr)?.[1] ?? 'ms';
    return `${Math.round((t.actual / UNIT_US[unit]) * 1000) / 1000}${unit}`;
  }
  if (t.metric === 'error_rate' && /%\s*$/.test(t.expr)) return `${Math.round(t.actual * 100_000) / 1000}%`;
  return String(Math.round(t.actual * 1000) / 1000);
}

/** The metric table of docs/load.md ("Thresholds"), generated from THRESHOLD_METRICS (docs.test.ts checks it). */
export function thresholdTableMarkdown(): string {
  const groups = new Map<string, string[]>();
  for (const [name, def] of Object.entries(THRESHOLD_METRICS)) {
    const dot = name.indexOf('.');
    const doc = def.doc;
    const key = `${def.kind}|${doc}|${dot < 0 && def.kind !== 'latency' ? name : name.slice(0, dot + 1)}`;
    groups.set(key, [...(groups.get(key) ?? []), name]);
  }
  const rows = [...groups].map(([key, names]) => {
    const [kind, doc] = key.split('|');
    const shown = names.map((n) => `\`${n}\``).join(', ');
    const values =
      kind === 'latency' ? 'time (us, ms, s)' : kind === 'verdict' ? '`ok` / `violated`…' : 'number';
    return [shown, doc, values];
  });
  const head = ['metric', 'meaning', 'value'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(head), `| ${w.map((n) => '-'.repeat(n)).join(' | ')} |`, ...rows.map(line)].join('\n');
}
