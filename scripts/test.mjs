#!/usr/bin/env node
// Runs every compiled test file (packages/*/dist/**/*.test.js) with node:test.
// Heavy suites (compose, namespaces, spin, browser) are ordinary test files that skip loudly when
// their tools are missing; .ci/run installs those tools.
// Usage: node scripts/test.mjs [substring filter ...]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
}
for (const pkg of readdirSync(join(root, 'packages'))) {
  const dist = join(root, 'packages', pkg, 'dist');
  try {
    walk(dist);
  } catch {
    // package not built
  }
}
const selected = files.filter((f) => filters.length === 0 || filters.some((s) => f.includes(s))).sort();
if (selected.length === 0) {
  console.error('no test files found: run `npm run build` first');
  process.exit(1);
}
// The suites that run a Docker engine (compose, Swarm) go last and one at a time: two private
// engines on one machine share /run/containerd, and a teardown of one breaks the other.
const isEngine = (f) => /(^|\/)(compose|compose-load|swarm)\.test\.js$/.test(f);
const groups = [
  { files: selected.filter((f) => !isEngine(f)), concurrency: 2 },
  { files: selected.filter(isEngine), concurrency: 1 },
];
let status = 0;
for (const { files: group, concurrency } of groups) {
  if (group.length === 0) continue;
  const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...group], {
    stdio: 'inherit',
  });
  if (r.status !== 0) status = r.status ?? 1;
}
process.exit(status);
