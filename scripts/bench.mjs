#!/usr/bin/env node
// Runs every compiled benchmark (packages/*/dist/**/*.bench.js), one process each, and writes
// bench-results.json: an array of {suite, name, value, unit, baseline, ratio}.
// A benchmark prints one line per figure to stdout: `BENCH {"suite":...,"name":...,"value":...,
// "unit":...,"baseline":<number|null>,"ratio":<number|null>}`; other output passes through.
// Every benchmark file runs BENCH_RUNS times (default 3), its runs one after another; a figure is the
// median over the runs of its value, of its baseline and (separately) of its same-run ratio, so one
// disturbed run on a shared VM does not set the figure. `runs` and every run's ratio are kept in
// bench-results.json. Each file's own figures are already medians of alternating rounds.
// Usage: node scripts/bench.mjs [substring filter ...]   (BENCH_QUICK=1 for a short smoke run;
// BENCH_RUNS=1 for a single run)
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.bench.js')) files.push(p);
  }
}
for (const pkg of readdirSync(join(root, 'packages'))) {
  try {
    walk(join(root, 'packages', pkg, 'dist'));
  } catch {}
}
const RUNS = Math.max(1, Math.min(9, Number(process.env.BENCH_RUNS ?? 3) || 1));
const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const round = (x, d) => (x === null ? null : Number(x.toFixed(d)));
const results = [];
for (const f of files.sort()) {
  if (filters.length && !filters.some((s) => f.includes(s))) continue;
  /** Figures of this file by suite/name, one record per run, in first-seen order. */
  const byName = new Map();
  for (let run = 1; run <= RUNS; run++) {
    console.error(`bench: ${f.slice(root.length)}${RUNS > 1 ? ` (run ${run} of ${RUNS})` : ''}`);
    const r = spawnSync(process.execPath, ['--expose-gc', f], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      timeout: 600_000,
    });
    for (const line of (r.stdout ?? '').split('\n')) {
      if (line.startsWith('BENCH ')) {
        const rec = JSON.parse(line.slice(6));
        const key = `${rec.suite}/${rec.name}`;
        if (!byName.has(key)) byName.set(key, []);
        byName.get(key).push(rec);
        console.error(
          `  ${rec.suite}/${rec.name}: ${rec.value} ${rec.unit}${rec.ratio != null ? ` (ratio ${rec.ratio})` : ''}`,
        );
      } else if (line.trim()) console.error(`  | ${line}`);
    }
    if (r.status !== 0) {
      console.error(`bench: ${f} exited ${r.status} ${r.signal ?? ''}\n${r.stderr}`);
      process.exitCode = 1;
    }
  }
  for (const recs of byName.values()) {
    const first = recs[0];
    const rec = {
      suite: first.suite,
      name: first.name,
      value: round(median(recs.map((x) => x.value)), 2),
      unit: first.unit,
      baseline: first.baseline === null ? null : round(median(recs.map((x) => x.baseline)), 2),
      ratio: first.ratio === null ? null : round(median(recs.map((x) => x.ratio)), 3),
    };
    if (RUNS > 1) {
      rec.runs = recs.length;
      if (first.ratio !== null) rec.ratios = recs.map((x) => x.ratio);
    }
    results.push(rec);
  }
}
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  memGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  date: new Date().toISOString(),
  runs: RUNS,
};
// A filtered run replaces only the suites it ran: the other suites' figures stay in the file.
let kept = [];
if (filters.length) {
  try {
    const ran = new Set(results.map((x) => x.suite));
    kept = JSON.parse(readFileSync(join(root, 'bench-results.json'), 'utf8')).filter(
      (x) => !ran.has(x.suite),
    );
  } catch {}
}
writeFileSync(join(root, 'bench-results.json'), JSON.stringify([...kept, ...results], null, 2));
writeFileSync(join(root, 'bench-machine.json'), JSON.stringify(machine, null, 2));
console.error(
  `bench: ${results.length} figures -> bench-results.json${kept.length ? ` (kept ${kept.length} of other suites)` : ''}`,
);
