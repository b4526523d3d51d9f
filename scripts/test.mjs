#!/usr/bin/env node
// Runs every compiled test file (packages/*/dist/**/*.test.js) with node:test.
// Heavy suites (compose, namespaces, spin, browser) are ordinary test files that skip loudly when
// their tools are missing; .ci/run installs those tools.
// Usage: node scripts/test.mjs [substring filter ...]
// Env: XPMESH_TEST_GROUP_BUDGET_MS (per group, default 40 min: both groups stay inside a 90 min CI run).
import { spawn } from 'node:child_process';
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
// The run has a deadline: each group has a watchdog that ends it (its process group: every test
// file and what they spawned) if it runs past GROUP_BUDGET_MS, so a hang ends the run with a line
// that says so, not at CI's time limit. (Not `--test-timeout`: on Node 20 it bounds each whole FILE
// too, and the Swarm suite legitimately runs longer than any sane per-test default; slow tests set
// their own `timeout`.)
const GROUP_BUDGET_MS = Number(process.env.XPMESH_TEST_GROUP_BUDGET_MS ?? 40 * 60_000);
let current;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (current) {
      try {
        process.kill(-current.pid, sig);
      } catch {}
    }
    process.exit(130);
  });
}
function runGroup(group, concurrency) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...group], {
      stdio: 'inherit',
      detached: true,
    });
    current = child;
    const watchdog = setTimeout(() => {
      console.error(
        `test.mjs: the group of ${group.length} file(s) ran past ${GROUP_BUDGET_MS / 60_000} min: ending it (SIGKILL to its process group)`,
      );
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, GROUP_BUDGET_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(watchdog);
      current = undefined;
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}
let status = 0;
for (const { files: group, concurrency } of groups) {
  if (group.length === 0) continue;
  const code = await runGroup(group, concurrency);
  if (code !== 0) status = code;
}
process.exit(status);
