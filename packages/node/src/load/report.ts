/**
 * The load report: one JSON object (documented field by field in docs/load.md), a text table for
 * the terminal, and a self-contained HTML page (inline SVG, no external assets).
 */
import { type CheckResult, checkHistory } from './history.js';
import type { LoadModel, LoadOptions, RunOutcome, TimelineEvent } from './runner.js';
import {
  addBuckets,
  type Buckets,
  bucketPercentiles,
  diffBuckets,
  type Percentiles,
  percentiles,
  round,
} from './stats.js';
import { formatActual, type ThresholdResult } from './thresholds.js';

/** Every top-level field docs/load.md documents. */
export const REPORT_FIELDS: ReadonlyArray<keyof LoadReport> = [
  'version',
  'tool',
  'workload',
  'params',
  'cluster',
  'startedAt',
  'elapsedMs',
  'ops',
  'opLatencyUs',
  'remoteFaultLatencyUs',
  'invalidationLatencyUs',
  'messages',
  'counters',
  'upgrades',
  'recalls',
  'fences',
  'remoteFaults',
  'errors',
  'events',
  'throughput',
  'latencyHistogram',
  'faultHistogram',
  'serviceTimeUs',
  'model',
  'timeSeries',
  'timeline',
  'history',
  'invariants',
  'ok',
];

export const REPORT_VERSION = 2;
/** Timestamps of different threads are trusted to within this (ms) by the history check. */
export const CLOCK_SLACK_MS = 0.02;

export interface LoadReport {
  version: number;
  tool: 'xpmesh load';
  workload: string;
  params: {
    instances: number;
    procsPerInstance: number;
    pages: number;
    segmentPages: number;
    durationMs: number;
    maxOps: number;
    seed: number;
    /** A built-in's name, or the module's path as given to --workload. */
    workloadSource: string;
    model: LoadModel;
  };
  cluster: { mode: 'local' | 'connect'; nodes: string[]; urls: string[] };
  startedAt: string;
  elapsedMs: number;
  ops: {
    total: number;
    reads: number;
    writes: number;
    errors: number;
    opsPerSec: number;
    perProcess: number[];
  };
  /**
   * Client-side latency of every operation (us), measured inside the process: in the closed model
   * around the access; in the open model from when its call was due (queueing included).
   */
  opLatencyUs: { all: Percentiles; read: Percentiles; write: Percentiles };
  /** Service time (us): invoke → response of each access, whatever the model. */
  serviceTimeUs: Percentiles;
  /** How operations arrived, and (open model) how many never started. */
  model: { kind: 'closed' | 'open'; iterations: number; dropped: number; keys: number };
  /** Server-side, from the instances' xpmesh_fault_latency_seconds histograms (bucket-interpolated, us). */
  remoteFaultLatencyUs: ReturnType<typeof bucketPercentiles> & { source: string };
  /** Server-side, from xpmesh_invalidation_latency_seconds (first invalidate → last ack, us). */
  invalidationLatencyUs: ReturnType<typeof bucketPercentiles> & { source: string };
  messages: {
    total: number;
    bytes: number;
    perOp: number;
    bytesPerOp: number;
    byType: Record<string, { msgs: number; bytes: number }>;
  };
  /** Driver counters (summed over instances, difference over the run). */
  counters: Record<string, number>;
  upgrades: number;
  recalls: number;
  fences: number;
  remoteFaults: number;
  errors: { total: number; byCode: Record<string, number>; samples: string[] };
  events: RunOutcome['events'];
  /** Operations completed per 100 ms bin, from the start of the run. */
  throughput: Array<{ tMs: number; ops: number }>;
  /** Client-side op latency histogram: power-of-two buckets (upper bound us → count). */
  latencyHistogram: Array<{ leUs: number; count: number }>;
  /** Fault latency histogram buckets from the instances (upper bound us → count in bucket). */
  faultHistogram: Array<{ leUs: number; count: number }>;
  /** Throughput and latency percentiles per time bin (latency as in opLatencyUs; bins by response). */
  timeSeries: {
    binMs: number;
    bins: Array<{
      tMs: number;
      ops: number;
      opsPerSec: number;
      p50: number;
      p90: number;
      p99: number;
      max: number;
    }>;
  };
  /** Background and cluster events, ms from the start (docs/load.md "Over time"). */
  timeline: TimelineEvent[];
  history: CheckResult & { clockSlackMs: number };
  invariants: RunOutcome['invariants'];
  /** Set when thresholds were given: each with its actual value and whether it held. */
  thresholds?: ThresholdResult[];
  ok: boolean;
}

function bucketsToList(b: Buckets): Array<{ leUs: number; count: number }> {
  const les = [...b.keys()].sort((x, y) => x - y);
  let prev = 0;
  return les.map((le) => {
    const c = b.get(le) ?? 0;
    const out = { leUs: Number.isFinite(le) ? round(le * 1e6) : -1, count: c - prev };
    prev = c;
    return out;
  });
}

export function buildReport(
  o: LoadOptions,
  run: RunOutcome,
  cluster: { mode: 'local' | 'connect'; urls: string[] },
  startedAt: Date,
): LoadReport {
  const h = run.history;
  const lat: number[] = [];
  const rl: number[] = [];
  const wl: number[] = [];
  const svc: number[] = [];
  for (const op of h) {
    const s = (op.responseTs - op.invokeTs) * 1000;
    const us =
      op.intendedTs !== undefined ? (op.responseTs - Math.min(op.intendedTs, op.invokeTs)) * 1000 : s;
    svc.push(s);
    lat.push(us);
    (op.kind === 'r' ? rl : wl).push(us);
  }
  // Lost `run` chunks make the history incomplete: the check says so instead of reporting the reads
  // of their writes as unknown values.
  const history = checkHistory(h, 20, CLOCK_SLACK_MS, run.lostChunks ?? []);
  const sumCounters: Record<string, number> = {};
  let msgs = 0;
  let bytes = 0;
  const byType: Record<string, { msgs: number; bytes: number }> = {};
  let fault: Buckets = new Map();
  let inval: Buckets = new Map();
  run.after.forEach((a, i) => {
    const b = run.before[i];
    for (const [k, v] of Object.entries(a.counters))
      sumCounters[k] = (sumCounters[k] ?? 0) + v - (b?.counters[k] ?? 0);
    msgs += a.messages - (b?.messages ?? 0);
    bytes += a.bytes - (b?.bytes ?? 0);
    for (const [t, v] of Object.entries(a.byType)) {
      byType[t] ??= { msgs: 0, bytes: 0 };
      const e = byType[t];
      e.msgs += v.msgs - (b?.byType[t]?.msgs ?? 0);
      e.bytes += v.bytes - (b?.byType[t]?.bytes ?? 0);
    }
    fault = addBuckets(fault, diffBuckets(a.fault, b?.fault ?? new Map()));
    inval = addBuckets(inval, diffBuckets(a.invalidation, b?.invalidation ?? new Map()));
  });
  const total = h.length;
  const elapsedMs = Math.max(1, run.elapsedMs);
  const bins = Math.max(1, Math.ceil(elapsedMs / 100));
  const tp = new Array<number>(Math.min(bins, 100_000)).fill(0);
  for (const op of h) {
    const i = Math.floor((op.responseTs - run.startTs) / 100);
    if (i >= 0 && i < tp.length) tp[i]++;
  }
  const hist = new Map<number, number>();
  for (const us of lat) {
    const le = 2 ** Math.max(-2, Math.ceil(Math.log2(Math.max(us, 0.25))));
    hist.set(le, (hist.get(le) ?? 0) + 1);
  }
  const errTotal = Object.values(run.errors).reduce((a, b) => a + b, 0);
  // Over time: at most ~300 bins, at least 100 ms each.
  const binMs = Math.max(100, Math.ceil(elapsedMs / 300 / 100) * 100);
  const nb = Math.max(1, Math.ceil(elapsedMs / binMs));
  const perBin: number[][] = Array.from({ length: nb }, () => []);
  h.forEach((op, i) => {
    const b = Math.floor((op.responseTs - run.startTs) / binMs);
    if (b >= 0 && b < nb) perBin[b].push(lat[i]);
  });
  const timeSeries = {
    binMs,
    bins: perBin.map((l, i) => {
      const p = percentiles(l);
      return {
        tMs: i * binMs,
        ops: l.length,
        opsPerSec: round((l.length * 1000) / binMs, 0),
        p50: p.p50,
        p90: p.p90,
        p99: p.p99,
        max: p.max,
      };
    }),
  };
  const model = o.model ?? { kind: 'closed' as const };
  const report: LoadReport = {
    version: REPORT_VERSION,
    tool: 'xpmesh load',
    workload: o.workload.name,
    params: {
      instances: run.before.length,
      procsPerInstance: o.procsPerInstance,
      pages: o.pages,
      segmentPages: o.segmentPages,
      durationMs: o.durationMs,
      maxOps: o.maxOps,
      seed: o.seed,
      workloadSource: o.workloadSource ?? o.workload.name,
      model,
    },
    cluster: { mode: cluster.mode, nodes: run.after.map((a) => a.node), urls: cluster.urls },
    startedAt: startedAt.toISOString(),
    elapsedMs: round(elapsedMs),
    ops: {
      total,
      reads: history.reads,
      writes: history.writes,
      errors: errTotal,
      opsPerSec: round((total * 1000) / elapsedMs, 0),
      perProcess: run.opsByProc,
    },
    opLatencyUs: { all: percentiles(lat), read: percentiles(rl), write: percentiles(wl) },
    serviceTimeUs: percentiles(svc),
    model: {
      kind: model.kind,
      iterations: run.iterations ?? 0,
      dropped: run.dropped ?? 0,
      keys: run.keys ?? 0,
    },
    remoteFaultLatencyUs: {
      source: 'xpmesh_fault_latency_seconds on every instance (server side, bucket-interpolated)',
      ...bucketPercentiles(fault),
    },
    invalidationLatencyUs: {
      source: 'xpmesh_invalidation_latency_seconds on every instance (server side, bucket-interpolated)',
      ...bucketPercentiles(inval),
    },
    messages: {
      total: msgs,
      bytes,
      perOp: total ? round(msgs / total, 4) : 0,
      bytesPerOp: total ? round(bytes / total, 2) : 0,
      byType,
    },
    counters: sumCounters,
    upgrades: sumCounters.upgrades ?? 0,
    recalls: sumCounters.recalls ?? 0,
    fences: sumCounters.fences ?? 0,
    remoteFaults: sumCounters.remoteFaults ?? 0,
    errors: { total: errTotal, byCode: run.errors, samples: run.errorSamples },
    events: run.events,
    throughput: tp.map((ops, i) => ({ tMs: i * 100, ops })),
    latencyHistogram: [...hist].sort((a, b) => a[0] - b[0]).map(([leUs, count]) => ({ leUs, count })),
    faultHistogram: bucketsToList(fault),
    timeSeries,
    timeline: run.timeline ?? [],
    history: { ...history, clockSlackMs: CLOCK_SLACK_MS },
    invariants: run.invariants,
    ok: history.ok,
  };
  return report;
}

// ---- text ---------------------------------------------------------------------------------------

const fmt = (x: number) => (Math.abs(x) >= 1000 ? Math.round(x).toLocaleString('en-US') : String(round(x)));

export function textReport(r: LoadReport): string {
  const pct = (p: { p50: number; p90: number; p99: number; p999: number; count: number }) =>
    `p50 ${fmt(p.p50)}  p90 ${fmt(p.p90)}  p99 ${fmt(p.p99)}  p99.9 ${fmt(p.p999)}  (n=${fmt(p.count)})`;
  const rows: Array<[string, string]> = [
    [
      'workload',
      `${r.workload}  (${r.params.instances} instances × ${r.params.procsPerInstance} processes, ${r.params.pages} pages of a ${r.params.segmentPages}-page segment, seed ${r.params.seed})`,
    ],
    ['model', modelLine(r)],
    ['elapsed', `${fmt(r.elapsedMs)} ms`],
    ['operations', `${fmt(r.ops.total)}  (${fmt(r.ops.reads)} reads, ${fmt(r.ops.writes)} writes)`],
    ['ops/s', fmt(r.ops.opsPerSec)],
    [
      r.model?.kind === 'open' ? 'op latency us (from due)' : 'op latency us (client)',
      pct(r.opLatencyUs.all),
    ],
    ['  reads', pct(r.opLatencyUs.read)],
    ['  writes', pct(r.opLatencyUs.write)],
    ...(r.model?.kind === 'open' && r.serviceTimeUs
      ? ([['service time us', pct(r.serviceTimeUs)]] as Array<[string, string]>)
      : []),
    ['remote fault us (server)', pct(r.remoteFaultLatencyUs)],
    ['invalidation RTT us (server)', pct(r.invalidationLatencyUs)],
    ['messages', `${fmt(r.messages.total)}  (${r.messages.perOp} per op)`],
    ['bytes', `${fmt(r.messages.bytes)}  (${r.messages.bytesPerOp} per op)`],
    ['remote faults', fmt(r.remoteFaults)],
    ['upgrades', fmt(r.upgrades)],
    ['recalls', fmt(r.recalls)],
    ['fences', fmt(r.fences)],
    ['errors', `${fmt(r.errors.total)}${r.errors.total ? `  ${JSON.stringify(r.errors.byCode)}` : ''}`],
  ];
  const ev = r.events;
  if (Object.keys(ev.reclaims).length) rows.push(['reclaims', JSON.stringify(ev.reclaims)]);
  if (ev.forks || Object.keys(ev.forkErrors).length)
    rows.push([
      'forks',
      `${ev.forks}${Object.keys(ev.forkErrors).length ? ` errors ${JSON.stringify(ev.forkErrors)}` : ''}`,
    ]);
  if (ev.reattaches) rows.push(['detach+attach cycles', String(ev.reattaches)]);
  const inv = r.invariants.filter((i) => !i.ok);
  rows.push(['kernel invariants', inv.length ? `VIOLATED on ${inv.map((i) => i.node).join(', ')}` : 'ok']);
  rows.push(['history check', historyVerdict(r.history)]);
  if (r.thresholds?.length) {
    const failed = r.thresholds.filter((t) => !t.ok).length;
    rows.push([
      'thresholds',
      failed ? `${failed} of ${r.thresholds.length} CROSSED` : `all ${r.thresholds.length} held`,
    ]);
  }
  const w = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`);
  for (const t of r.thresholds ?? [])
    lines.push(`  ${t.ok ? '✓' : '✘'} threshold ${t.expr}  (actual ${formatActual(t)})`);
  for (const v of r.history.violations) lines.push(`  ✘ ${v.rule}: ${v.message}`);
  const inc = r.history.incomplete;
  if (inc) {
    lines.push(`  ${INCOMPLETE_MARK} ${inc.rule}: ${inc.message}`);
    for (const c of inc.chunks)
      lines.push(
        `    lost: ${c.process} chunk ${c.chunk} (${c.error}), at most ${c.maxOps ?? '?'} op(s)` +
          (c.writeValues ? `, writes of values ${c.writeValues.from}..${c.writeValues.to}` : ''),
      );
    for (const v of (r.history.consequences ?? []).slice(0, 5)) lines.push(`    consequence: ${v.message}`);
  }
  for (const i of inv) for (const v of i.violations) lines.push(`  ✘ ${i.node}: ${v}`);
  return lines.join('\n');
}

const INCOMPLETE_MARK = '⚠';

function modelLine(r: LoadReport): string {
  const m = r.params.model ?? { kind: 'closed' };
  const stages = m.stages?.length
    ? `, stages ${m.stages.map((s) => `${s.durationMs}ms→${s.target}`).join(' ')}`
    : '';
  if (m.kind === 'open')
    return `open: ${fmt(m.rate)} ops/s${stages}; ${fmt(r.model.iterations)} calls, ${fmt(r.model.dropped)} dropped`;
  return `closed${stages ? ` (active processes${stages})` : ''}`;
}

/** The one-line verdict of the history check (text and HTML reports). */
export function historyVerdict(h: CheckResult): string {
  const inc = h.incomplete;
  const lost = inc
    ? `${inc.chunks.length} chunk(s) of ${inc.processes.join(', ')} lost, ` +
      `${inc.maxLostOps === null ? 'an unknown number of' : `at most ${fmt(inc.maxLostOps)}`} operation(s) missing`
    : '';
  if (h.violations.length)
    return `FAILED: ${h.violations.length} violation(s)${inc ? ` (and incomplete: ${lost})` : ''}`;
  if (inc)
    return (
      `INCOMPLETE: ${lost}; no violation among the ${fmt(h.ops)} recorded ops` +
      (inc.readsOfLostWrites ? `; ${fmt(inc.readsOfLostWrites)} read(s) of lost writes (not violations)` : '')
    );
  return `ok: linearizable (${fmt(h.ops)} ops on ${h.addresses} addresses)`;
}

// ---- HTML ---------------------------------------------------------------------------------------

const esc = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

/** A bar chart as inline SVG. */
export function svgBars(
  id: string,
  title: string,
  bars: Array<{ label: string; value: number }>,
  unit: string,
): string {
  const W = 640;
  const H = 220;
  const pad = 40;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const bw = bars.length ? (W - 2 * pad) / bars.length : 0;
  const rects = bars
    .map((b, i) => {
      const h = ((H - 2 * pad) * b.value) / max;
      const x = pad + i * bw;
      const y = H - pad - h;
      return `<rect class="bar" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(b.label)}: ${b.value}</title></rect>`;
    })
    .join('');
  const step = Math.max(1, Math.ceil(bars.length / 8));
  const labels = bars
    .map((b, i) =>
      i % step === 0
        ? `<text x="${(pad + i * bw + bw / 2).toFixed(1)}" y="${H - pad + 14}" text-anchor="middle">${esc(b.label)}</text>`
        : '',
    )
    .join('');
  return `<svg id="${id}" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">
<text x="${pad}" y="18" class="t">${esc(title)}</text>
<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#888"/>
<text x="4" y="${pad}" class="a">${max} ${esc(unit)}</text>${rects}${labels}</svg>`;
}

/** A line chart as inline SVG. */
export function svgLine(
  id: string,
  title: string,
  pts: Array<{ x: number; y: number }>,
  xUnit: string,
  yUnit: string,
): string {
  const W = 640;
  const H = 220;
  const pad = 40;
  const maxX = Math.max(1, ...pts.map((p) => p.x));
  const maxY = Math.max(1, ...pts.map((p) => p.y));
  const d = pts
    .map((p, i) => {
      const x = pad + ((W - 2 * pad) * p.x) / maxX;
      const y = H - pad - ((H - 2 * pad) * p.y) / maxY;
      return `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
  return `<svg id="${id}" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">
<text x="${pad}" y="18" class="t">${esc(title)}</text>
<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#888"/>
<line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="#888"/>
<text x="4" y="${pad - 4}" class="a">${fmt(maxY)} ${esc(yUnit)}</text>
<text x="${W - pad}" y="${H - pad + 14}" text-anchor="end" class="a">${fmt(maxX)} ${esc(xUnit)}</text>
<path class="line" d="${d || `M${pad},${H - pad}`}" fill="none" stroke="#2563eb" stroke-width="1.5"/></svg>`;
}

const EVENT_COLORS: Record<TimelineEvent['kind'], string> = {
  reclaim: '#a16207',
  fork: '#7c3aed',
  reattach: '#0891b2',
  fence: '#dc2626',
  'peer-down': '#ea580c',
  'peer-up': '#16a34a',
  unreachable: '#000000',
  stage: '#64748b',
};
/** Events drawn as a line across the whole chart (the rest are ticks in their lane). */
const LOUD_EVENTS = new Set<TimelineEvent['kind']>(['fence', 'peer-down', 'unreachable', 'stage']);

/**
 * Throughput (left axis) and latency p50 / p99 (right axis) per time bin, with the background and
 * cluster events on the same time axis: one lane of ticks per kind under the plot, and a line
 * across the plot for fences, links going down, unreachable hosts and stage changes.
 */
export function svgOverTime(r: LoadReport): string {
  const W = 900;
  const lanes = (Object.keys(EVENT_COLORS) as TimelineEvent['kind'][]).filter((k) =>
    r.timeline.some((e) => e.kind === k),
  );
  const PH = 220;
  const top = 30;
  const left = 84;
  const right = 64;
  const laneH = 14;
  const H = top + PH + 34 + lanes.length * laneH + 24;
  const bins = r.timeSeries.bins;
  const span = Math.max(r.elapsedMs, ...r.timeline.map((e) => e.tMs), 1);
  const x = (tMs: number) => left + ((W - left - right) * Math.min(tMs, span)) / span;
  const maxT = Math.max(1, ...bins.map((b) => b.opsPerSec));
  const maxL = Math.max(1, ...bins.map((b) => b.p99)) / 1000;
  const yT = (v: number) => top + PH - (PH * v) / maxT;
  const yL = (ms: number) => top + PH - (PH * ms) / maxL;
  // A point of null breaks the line: a bin with no operation has no latency to draw.
  const path = (pts: Array<[number, number] | null>) => {
    let pen = false;
    const d: string[] = [];
    for (const p of pts) {
      if (!p) {
        pen = false;
        continue;
      }
      d.push(`${pen ? 'L' : 'M'}${p[0].toFixed(1)},${p[1].toFixed(1)}`);
      pen = true;
    }
    return d.join(' ') || `M${left},${top + PH}`;
  };
  const mid = (b: { tMs: number }) => b.tMs + r.timeSeries.binMs / 2;
  const tp = path(bins.map((b) => [x(mid(b)), yT(b.opsPerSec)]));
  const p50 = path(bins.map((b) => (b.ops > 0 ? [x(mid(b)), yL(b.p50 / 1000)] : null)));
  const p99 = path(bins.map((b) => (b.ops > 0 ? [x(mid(b)), yL(b.p99 / 1000)] : null)));
  const laneY = (k: TimelineEvent['kind']) => top + PH + 34 + lanes.indexOf(k) * laneH;
  const marks = r.timeline
    .map((e) => {
      const ex = x(e.tMs).toFixed(1);
      const title = `<title>${esc(`${e.kind} at ${fmt(e.tMs)} ms${e.n > 1 ? ` (×${e.n})` : ''}${e.detail ? `: ${e.detail}` : ''}`)}</title>`;
      const ly = laneY(e.kind);
      const tick = `<line class="ev ev-${e.kind}" x1="${ex}" y1="${ly}" x2="${ex}" y2="${ly + laneH - 3}" stroke="${EVENT_COLORS[e.kind]}" stroke-width="${e.n > 1 ? 2.5 : 1.5}">${title}</line>`;
      return LOUD_EVENTS.has(e.kind)
        ? `${tick}<line class="evline ev-${e.kind}" x1="${ex}" y1="${top}" x2="${ex}" y2="${top + PH}" stroke="${EVENT_COLORS[e.kind]}" stroke-dasharray="4 3" stroke-width="1">${title}</line>`
        : tick;
    })
    .join('');
  const laneLabels = lanes
    .map(
      (k) =>
        `<text x="${left - 4}" y="${laneY(k) + 10}" text-anchor="end" fill="${EVENT_COLORS[k]}">${k}</text>`,
    )
    .join('');
  const xTicks = [0, 0.25, 0.5, 0.75, 1]
    .map(
      (f) =>
        `<text x="${x(span * f).toFixed(1)}" y="${top + PH + 14}" text-anchor="middle">${fmt((span * f) / 1000)} s</text>`,
    )
    .join('');
  return `<svg id="over-time" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="throughput and latency over time">
<text x="${left}" y="18" class="t">throughput (ops/s, blue) and latency p50 / p99 (ms, green / red) per ${r.timeSeries.binMs} ms</text>
<line x1="${left}" y1="${top + PH}" x2="${W - right}" y2="${top + PH}" stroke="#888"/>
<line x1="${left}" y1="${top}" x2="${left}" y2="${top + PH}" stroke="#2563eb"/>
<line x1="${W - right}" y1="${top}" x2="${W - right}" y2="${top + PH}" stroke="#dc2626"/>
<text x="${left - 4}" y="${top + 4}" text-anchor="end" class="a" fill="#2563eb">${fmt(maxT)}</text>
<text x="${W - right + 4}" y="${top + 4}" class="a" fill="#dc2626">${fmt(maxL)} ms</text>
${xTicks}
<path class="series series-throughput" d="${tp}" fill="none" stroke="#2563eb" stroke-width="1.5"/>
<path class="series series-p50" d="${p50}" fill="none" stroke="#16a34a" stroke-width="1.2"/>
<path class="series series-p99" d="${p99}" fill="none" stroke="#dc2626" stroke-width="1.2"/>
${laneLabels}${marks}
<text x="${left}" y="${H - 6}" class="a">events: ${lanes.length ? lanes.map((k) => `${k} ${r.timeline.filter((e) => e.kind === k).reduce((a, e) => a + e.n, 0)}`).join(' · ') : 'none'}</text></svg>`;
}

export function thresholdsHtml(r: LoadReport): string {
  if (!r.thresholds?.length) return '';
  const rows = r.thresholds
    .map(
      (t) =>
        `<tr class="${t.ok ? 'ok' : 'bad'}"><td>${t.ok ? '✓ held' : '✘ crossed'}</td><td><code>${esc(t.expr)}</code></td><td>${esc(formatActual(t))}</td></tr>`,
    )
    .join('');
  return `<h2>Thresholds</h2><table id="thresholds"><tr><th></th><th>threshold</th><th>actual</th></tr>${rows}</table>`;
}

export function htmlReport(r: LoadReport, extra = ''): string {
  const rows = textReport(r)
    .split('\n')
    .filter((l) => !/^ {2}[✘⚠]|^ {4}(lost|consequence):/.test(l))
    .map((l) => {
      const m = /^(\S.*?)\s{2,}(.*)$/.exec(l) ?? /^(\s+\S+)\s{2,}(.*)$/.exec(l);
      return m
        ? `<tr><th>${esc(m[1])}</th><td>${esc(m[2])}</td></tr>`
        : `<tr><td colspan="2">${esc(l)}</td></tr>`;
    })
    .join('\n');
  const latBars = r.latencyHistogram.map((b) => ({
    label: b.leUs < 1 ? `≤${b.leUs}` : `≤${fmt(b.leUs)}`,
    value: b.count,
  }));
  const faultBars = r.faultHistogram.map((b) => ({
    label: b.leUs < 0 ? '+Inf' : `≤${fmt(b.leUs)}`,
    value: b.count,
  }));
  const tp = r.throughput.map((b) => ({ x: (b.tMs + 100) / 1000, y: b.ops * 10 }));
  const violations = r.history.violations
    .map((v) => `<li><b>${esc(v.rule)}</b>: ${esc(v.message)}</li>`)
    .join('');
  const inc = r.history.incomplete;
  const incomplete = inc
    ? `<h2>Incomplete history</h2><div id="incomplete"><p><b>${esc(inc.rule)}</b>: ${esc(inc.message)}</p><ul>${inc.chunks
        .map(
          (c) =>
            `<li>${esc(c.process)} chunk ${c.chunk} (${esc(c.error)}), at most ${c.maxOps ?? '?'} op(s)${
              c.writeValues ? `, writes of values ${c.writeValues.from}..${c.writeValues.to}` : ''
            }</li>`,
        )
        .join('')}</ul>${
        r.history.consequences?.length
          ? `<p>Consequences (not violations):</p><ul>${r.history.consequences
              .map((v) => `<li>${esc(v.message)}</li>`)
              .join('')}</ul>`
          : ''
      }</div>`
    : '';
  const verdict = r.ok
    ? 'linearizable'
    : r.history.verdict === 'incomplete'
      ? 'INCOMPLETE (operations lost)'
      : 'VIOLATED';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xpmesh load: ${esc(r.workload)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:60em;color:#111}
table{border-collapse:collapse}th,td{text-align:left;padding:2px 12px 2px 0;vertical-align:top}
th{font-weight:600}svg{display:block;margin:1em 0;background:#fafafa;border:1px solid #ddd}
svg .bar{fill:#2563eb}svg text{font:11px system-ui,sans-serif;fill:#333}svg .t{font-weight:600;font-size:13px}
.ok{color:#15803d}.bad{color:#b91c1c}
</style></head><body>
<h1>xpmesh load — ${esc(r.workload)}</h1>
<p id="verdict" class="${r.ok ? 'ok' : 'bad'}">History check: ${verdict} · started ${esc(r.startedAt)} · ${esc(r.cluster.mode)} cluster of ${r.params.instances} instance(s)</p>
<table id="summary">${rows}</table>
${violations ? `<h2>Violations</h2><ul id="violations">${violations}</ul>` : ''}
${incomplete}
${thresholdsHtml(r)}
<h2>Over time</h2>
${svgOverTime(r)}
${extra}
<h2>Throughput over time</h2>
${svgLine('throughput', 'operations per second (100 ms bins)', tp, 's', 'ops/s')}
<h2>Latency histograms</h2>
${svgBars('op-latency', 'client-side operation latency (us, power-of-two buckets)', latBars, 'ops')}
${svgBars('fault-latency', 'remote fault latency (us, server histogram buckets)', faultBars, 'faults')}
<p>Generated by <code>xpmesh load</code>; the same figures are in the JSON report (<code>--json</code>).</p>
</body></html>
`;
}
