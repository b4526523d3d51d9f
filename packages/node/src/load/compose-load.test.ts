/**
 * `xpmesh load --connect` against a real docker compose cluster: the project's Dockerfile and
 * docker-compose.yml plus examples/compose-load.yml (the example workload module with thresholds
 * and a raw history checked offline by `check-history`, then an open-model run with stages), via
 * ../shared/tools/compose-e2e.sh. Runs when docker-compose and dockerd exist and CI=true or
 * XPMESH_COMPOSE_TEST=1; otherwise it skips, loudly.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
// shared/ sits beside the repository (a clone), or beside the directory of worktrees.
const E2E =
  ['../shared/tools/compose-e2e.sh', '../../shared/tools/compose-e2e.sh']
    .map((p) => resolve(ROOT, p))
    .find((p) => existsSync(p)) ?? resolve(ROOT, '../shared/tools/compose-e2e.sh');
const BUDGET_MS = 480_000;
/** At most this long waiting for another compose run to end first. */
const WAIT_MS = 600_000;

const has = (cmd: string) =>
  spawnSync('sh', ['-c', `command -v ${cmd}`], {
    stdio: 'ignore',
    env: { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH}` },
  }).status === 0;

const wanted = process.env.CI === 'true' || process.env.XPMESH_COMPOSE_TEST === '1';
const missing = ['docker-compose', 'dockerd'].filter((c) => !has(c));
const skip = !wanted
  ? 'set CI=true or XPMESH_COMPOSE_TEST=1 to run the docker compose load test'
  : missing.length > 0
    ? `missing ${missing.join(', ')} (apt-get install -y --no-install-recommends docker.io docker-compose)`
    : !existsSync(E2E)
      ? `${E2E} not found (shared/ must sit beside the repository)`
      : false;
if (skip) console.warn(`\n*** SKIPPING the docker compose load test: ${skip} ***\n`);

/**
 * Another compose-e2e.sh run (the daemon's compose test, which CI may run at the same time):
 * each removes the engine's /var/run state it did not find at its start, so two must not overlap.
 */
function otherComposeRun(): boolean {
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('compose-e2e.sh')) return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

describe('xpmesh load against docker compose', { skip }, () => {
  it('a user workload module, thresholds, check-history and the open model work with --connect', {
    timeout: WAIT_MS + BUDGET_MS + 120_000,
  }, async () => {
    for (let i = 0; i < 240 && otherComposeRun(); i++) await new Promise((r) => setTimeout(r, 2500));
    const child = spawn('bash', [E2E, ROOT, 'example-load', resolve(ROOT, 'examples/compose-load.yml')], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Only the cluster and the load service: not the demo (its exit would end the run).
      env: { ...process.env, COMPOSE_PROFILES: '' },
    });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), BUDGET_MS);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    assert.equal(code, 0, `compose-e2e exited ${code}; last output:\n${output.slice(-6000)}`);
    assert.match(output, /workload +hot-cold/);
    assert.match(output, /✓ threshold history==ok/);
    assert.match(output, /hot\.jsonl: hot-cold: ok: linearizable/);
    assert.match(output, /model +open: 500 ops\/s, stages 1000ms→1500 1000ms→500/);
  });
});
