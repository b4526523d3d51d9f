/**
 * Comparing two runs (`xpmesh load --compare old.json new.json`, or `--baseline old.json` on a
 * run): the change in throughput and in each latency percentile, with the run parameters side by
 * side, as text, JSON and HTML. Reports with several workloads are matched by workload name.
 */
import { readFileSync } from 'node:fs';
import type { LoadReport } from './report.js';
import { round } from './stats.js';

export interface MetricChange {
  metric: string;
  old: number | string | null;
  new: number | string | null;
  /** (new − old) / old in %, when both are numbers and old is not 0. */
  changePct: number | null;
  /** 'better' / 'worse' / 'same' for metrics with a direction, else null. */
  verdict: 'better' | 'worse' | 'same' | null;
}

export interface Comparison {
  workload: string;
  params: Array<{ param: string; old: string; new: string; differs: boolean }>;
  metrics: MetricChange[];
}

export class CompareError extends Error {
  readonly code = 'E_COMPARE';
}

/** Changes smaller than this (in %) are called "same". */
export const SAME_WITHIN_PCT = 1;

export function readReports(file: string): LoadReport[] {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CompareError(`${file}: not a readable JSON report (${(e as Error).message})`);
  }
  const list = Array.isArray(v) ? v : [v];
  for (const r of list)
    if (!r || typeof r !== 'object' || (r as { tool?: unknown }).tool !== 'xpmesh load')
      throw new CompareError(`${file}: not an xpmesh load report (no "tool": "xpmesh load")`);
  return list as LoadReport[];
}

const show = (v: unknown): string =>
  v === undefined || v === null ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v);

function change(metric: string, a: unknown, b: unknown, better: 'higher' | 'lower' | null): MetricChange {
  const o = typeof a === 'number' ? a : typeof a === 'string' ? a : null;
  const n = typeof b === 'number' ? b : typeof b === 'string' ? b : null;
  let changePct: number | null = null;
  let verdict: MetricChange['verdict'] = null;
  if (typeof o === 'number' && typeof n === 'number') {
    changePct = o === 0 ? (n === 0 ? 0 : null) : round(((n - o) / Math.abs(o)) * 100, 1);
    if (better && changePct !== null)
      verdict =
        Math.abs(changePct) < SAME_WITHIN_PCT
          ? 'same'
          : changePct > 0 === (better === 'higher')
            ? 'better'
            : 'worse';
  } else if (better === null && o !== null && n !== null) verdict = o === n ? 'same' : null;
  return { metric, old: o, new: n, changePct, verdict };
}

export function compareReports(a: LoadReport, b: LoadReport): Comparison {
  const pa = {
    ...a.params,
    cluster: `${a.cluster.mode}, ${a.cluster.nodes.length} instance(s)`,
    startedAt: a.startedAt,
  };
  const pb = {
    ...b.params,
    cluster: `${b.cluster.mode}, ${b.cluster.nodes.length} instance(s)`,
    startedAt: b.startedAt,
  };
  const keys = [...new Set([...Object.keys(pa), ...Object.keys(pb)])];
  const params = keys.map((k) => {
    const o = show((pa as Record<string, unknown>)[k]);
    const n = show((pb as Record<string, unknown>)[k]);
    return { param: k, old: o, new: n, differs: o !== n && k !== 'startedAt' };
  });
  const metrics: MetricChange[] = [
    change('ops/s', a.ops.opsPerSec, b.ops.opsPerSec, 'higher'),
    change('operations', a.ops.total, b.ops.total, null),
  ];
  for (const f of ['p50', 'p90', 'p99', 'p999', 'max', 'mean'] as const)
    metrics.push(change(`latency ${f} (us)`, a.opLatencyUs.all[f], b.opLatencyUs.all[f], 'lower'));
  if (a.serviceTimeUs || b.serviceTimeUs)
    for (const f of ['p50', 'p99'] as const)
      metrics.push(change(`service time ${f} (us)`, a.serviceTimeUs?.[f], b.serviceTimeUs?.[f], 'lower'));
  for (const f of ['p50', 'p90', 'p99', 'p999'] as const)
    metrics.push(
      change(`remote fault ${f} (us)`, a.remoteFaultLatencyUs[f], b.remoteFaultLatencyUs[f], 'lower'),
    );
  for (const f of ['p50', 'p99'] as const)
    metrics.push(
      change(`invalidation ${f} (us)`, a.invalidationLatencyUs[f], b.invalidationLatencyUs[f], 'lower'),
    );
  metrics.push(
    change('messages per op', a.messages.perOp, b.messages.perOp, 'lower'),
    change('bytes per op', a.messages.bytesPerOp, b.messages.bytesPerOp, 'lower'),
    change('errors', a.ops.errors, b.ops.errors, 'lower'),
    change('dropped (open model)', a.model?.dropped ?? 0, b.model?.dropped ?? 0, 'lower'),
    change('fences', a.fences, b.fences, 'lower'),
    change('history', a.history.verdict, b.history.verdict, null),
  );
  return { workload: b.workload, params, metrics };
}

/** Pair the workloads of two report files by name (in the new file's order). */
export function compareFiles(oldFile: string, newFile: string): Comparison[] {
  const olds = readReports(oldFile);
  const news = readReports(newFile);
  const out: Comparison[] = [];
  for (const n of news) {
    const o =
      olds.find((r) => r.workload === n.workload) ??
      (olds.length === 1 && news.length === 1 ? olds[0] : undefined);
    if (o) out.push(compareReports(o, n));
  }
  if (out.length === 0)
    throw new CompareError(
      `no workload in common: ${olds.map((r) => r.workload).join(', ')} vs ${news.map((r) => r.workload).join(', ')}`,
    );
  return out;
}

const pct = (c: MetricChange) =>
  c.changePct === null ? (c.old === c.new ? '' : 'changed') : `${c.changePct > 0 ? '+' : ''}${c.changePct}%`;
const cell = (v: number | string | null) =>
  v === null
    ? '-'
    : typeof v === 'number'
      ? Math.abs(v) >= 1000
        ? Math.round(v).toLocaleString('en-US')
        : String(round(v))
      : v;

export function compareText(cs: Comparison[], oldName = 'old', newName = 'new'): string {
  const out: string[] = [];
  for (const c of cs) {
    out.push(`comparison: ${c.workload}   (${oldName} → ${newName})`);
    const rows: string[][] = [['metric', oldName, newName, 'change', '']];
    for (const m of c.metrics)
      rows.push([
        m.metric,
        cell(m.old),
        cell(m.new),
        pct(m),
        m.verdict === 'same' || m.verdict === null ? '' : m.verdict,
      ]);
    rows.push(['', '', '', '', '']);
    rows.push(['parameter', oldName, newName, '', '']);
    for (const p of c.params) rows.push([p.param, p.old, p.new, p.differs ? '≠' : '', '']);
    const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows)
      out.push(
        r
          .map((v, i) => (i === 0 ? v.padEnd(w[i]) : v.padStart(w[i])))
          .join('  ')
          .trimEnd(),
      );
    out.push('');
  }
  return out.join('\n');
}

const esc = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

/** The comparison as an HTML fragment (a table per workload). */
export function compareHtmlFragment(cs: Comparison[], oldName = 'baseline', newName = 'this run'): string {
  return cs
    .map((c) => {
      const metrics = c.metrics
        .map(
          (m) =>
            `<tr class="${m.verdict ?? ''}"><th>${esc(m.metric)}</th><td>${esc(cell(m.old))}</td><td>${esc(cell(m.new))}</td><td>${esc(pct(m))}</td><td>${esc(m.verdict === 'same' || !m.verdict ? '' : m.verdict)}</td></tr>`,
        )
        .join('');
      const params = c.params
        .map(
          (p) =>
            `<tr${p.differs ? ' class="differs"' : ''}><th>${esc(p.param)}</th><td>${esc(p.old)}</td><td>${esc(p.new)}</td></tr>`,
        )
        .join('');
      return `<h2>Comparison: ${esc(c.workload)}</h2>
<table class="compare-metrics"><tr><th>metric</th><th>${esc(oldName)}</th><th>${esc(newName)}</th><th>change</th><th></th></tr>${metrics}</table>
<h3>Parameters</h3><table class="compare-params"><tr><th>parameter</th><th>${esc(oldName)}</th><th>${esc(newName)}</th></tr>${params}</table>`;
    })
    .join('\n');
}

export function compareHtml(cs: Comparison[], oldName: string, newName: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xpmesh load: comparison</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:60em;color:#111}
table{border-collapse:collapse;margin:.5em 0}th,td{text-align:left;padding:2px 12px 2px 0}
td{font-variant-numeric:tabular-nums}.better td{color:#15803d}.worse td{color:#b91c1c}.differs{background:#fef3c7}
</style></head><body>
<h1>xpmesh load — ${esc(oldName)} vs ${esc(newName)}</h1>
<div id="comparison">${compareHtmlFragment(cs, oldName, newName)}</div>
</body></html>
`;
}
