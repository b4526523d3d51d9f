/**
 * The real docker compose runs (../shared/tools/compose-e2e.sh does the engine, the base image and
 * the clean-up, also on failure): the repository's own Dockerfile and docker-compose.yml, built and
 * brought up for real.
 *   1. the scalable `node` service at 5 replicas (membership from the service's DNS name) and the
 *      demo, which finds its three instances through `--connect dns:node:7500`: exit code 0;
 *   2. the `load` profile: `xpmesh load` against every replica, JSON and HTML reports written to a
 *      folder on the host, the history linearizable.
 * Runs when docker-compose and dockerd exist and CI=true or XPMESH_COMPOSE_TEST=1; otherwise it
 * skips, loudly.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
// ../shared beside the repository (XPMESH_SHARED_DIR overrides it, e.g. for a git worktree elsewhere)
const E2E = resolve(process.env.XPMESH_SHARED_DIR ?? resolve(ROOT, '../shared'), 'tools/compose-e2e.sh');
// generous: the image is built from scratch by a private engine (npm ci twice, tsc), on 2 cores
const BUDGET_MS = 540_000;

function has(cmd: string): boolean {
  return (
    spawnSync('sh', ['-c', `command -v ${cmd}`], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH}` },
    }).status === 0
  );
}

const wanted = process.env.CI === 'true' || process.env.XPMESH_COMPOSE_TEST === '1';
const missing = ['docker-compose', 'dockerd'].filter((c) => !has(c));
const skip = !wanted
  ? 'set CI=true or XPMESH_COMPOSE_TEST=1 to run the docker compose end-to-end test'
  : missing.length > 0
    ? `missing ${missing.join(', ')} (apt-get install -y --no-install-recommends docker.io docker-compose)`
    : !existsSync(E2E)
      ? `${E2E} not found (shared/ must sit beside the repository)`
      : false;
if (skip) console.warn(`\n*** SKIPPING the docker compose tests: ${skip} ***\n`);

/** compose-e2e.sh PROJECT SERVICE with extra environment; resolves with its exit code and output. */
async function composeE2e(
  service: string,
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  const child = spawn('bash', [E2E, ROOT, service], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, XPMESH_LOG_LEVEL: 'info', ...env },
  });
  let output = '';
  child.stdout.on('data', (d) => {
    output += d;
  });
  child.stderr.on('data', (d) => {
    output += d;
  });
  // SIGTERM lets the script's trap tear the engine down
  const timer = setTimeout(() => child.kill('SIGTERM'), BUDGET_MS);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(timer);
  return { code, output };
}

const reports = mkdtempSync(join(tmpdir(), 'xpmesh-compose-reports-'));
after(() => rmSync(reports, { recursive: true, force: true }));

describe('docker compose', { skip }, () => {
  it('docker-compose.yml is valid compose v1', () => {
    const r = spawnSync('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` },
    });
    assert.equal(r.status, 0, r.stderr);
  });

  it('up: the node service scaled to 5 forms one cluster from DNS, and the demo passes', {
    timeout: BUDGET_MS + 30_000,
  }, async () => {
    const { code, output } = await composeE2e('demo', { XPMESH_REPLICAS: '5', COMPOSE_PROFILES: 'demo' });
    assert.equal(code, 0, `compose-e2e exited ${code}; last output:\n${output.slice(-6000)}`);
    assert.match(output, /Demo passed/);
    // five replicas came up (compose names them <project>_node_1.._5)
    for (let i = 1; i <= 5; i++) assert.match(output, new RegExp(`_node_${i}\\b`), `replica ${i}`);
    // each replica found the other four through the name `node` (membership log lines)
    assert.match(output, /membership: addresses changed/);
  });

  it('the load profile runs xpmesh load against the cluster and writes its reports to the host', {
    timeout: BUDGET_MS + 30_000,
  }, async () => {
    chmodSync(reports, 0o777); // the image runs as the unprivileged `node` user
    const { code, output } = await composeE2e('load', {
      COMPOSE_PROFILES: 'load',
      XPMESH_REPORTS: reports,
      XPMESH_LOAD_DURATION_MS: '3000',
    });
    assert.equal(code, 0, `compose-e2e exited ${code}; last output:\n${output.slice(-6000)}`);
    const report = JSON.parse(readFileSync(join(reports, 'load.json'), 'utf8'));
    assert.equal(report.ok, true, 'history linearizable');
    assert.equal(report.cluster.mode, 'connect');
    assert.equal(report.params.instances, 3, 'every replica of the node service');
    assert.ok(report.ops.total > 0, 'operations ran');
    assert.ok(report.remoteFaults > 0, 'pages moved between containers');
    assert.match(readFileSync(join(reports, 'load.html'), 'utf8'), /<html/i);
  });
});
