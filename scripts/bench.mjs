#!/usr/bin/env node
// Runs every compiled benchmark (packages/*/dist/**/*.bench.js), one process each, and writes
// bench-results.json: an array of {suite, name, value, unit, baseline, ratio}.
// A benchmark prints one line per figure to stdout: `BENCH {"suite":...,"name":...,"value":...,
// "unit":...,"baseline":<number|null>,"ratio":<number|null>}`; other output passes through.
// Usage: node scripts/bench.mjs [substring filter ...]   (BENCH_QUICK=1 for a short smoke run)
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
const results = [];
for (const f of files.sort()) {
  if (filters.length && !filters.some((s) => f.includes(s))) continue;
  console.error(`bench: ${f.slice(root.length)}`);
  const r = spawnSync(process.execPath, ['--expose-gc', f], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 600_000,
  });
  for (const line of (r.stdout ?? '').split('\n')) {
    if (line.startsWith('BENCH ')) {
      const rec = JSON.parse(line.slice(6));
      results.push(rec);
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
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  memGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  date: new Date().toISOString(),
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
