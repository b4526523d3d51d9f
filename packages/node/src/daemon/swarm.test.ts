/**
 * A real Docker Swarm across three hosts (../shared/tools/swarm-e2e.sh: network, pid, mount and
 * uts namespaces h1..h3, one dockerd each, overlay networking between them, the image built from
 * this repository's Dockerfile). The stack is deploy/swarm/stack.yml itself, plus test-only
 * services: `baseline` (the same load inside one container, so on one host) and `chaos`
 * (packages/testkit/src/fault/cluster-chaos.ts). The hook (deploy/swarm/test/hook.sh) runs them in order:
 *   1. `demo` passes with home, attacher and reader on three different hosts (max one task per host);
 *   2. `load`: a short run across hosts, its history linearizable; `baseline`: the same on one host;
 *   3. `chaos`: a host crashed (pid 1 killed, no FIN) under load: the survivors fence it within the
 *      documented bound, no call waits past its bound, the history stays linearizable under the
 *      dirty-page policy, lost dirty pages are counted, and the instance swarm restarts joins again
 *      with a new epoch and serves.
 * Runs as root when dockerd and docker exist and CI=true or XPMESH_SWARM_TEST=1; otherwise it skips,
 * loudly. XPMESH_SWARM_REPORTS=DIR keeps the reports (scripts/deployment-doc.mjs reads them).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
// ../shared beside the repository (XPMESH_SHARED_DIR overrides it, e.g. for a git worktree elsewhere)
const SHARED = process.env.XPMESH_SHARED_DIR ?? resolve(ROOT, '../shared');
const E2E = resolve(SHARED, 'tools/swarm-e2e.sh');
const STACK = join(ROOT, 'deploy/swarm/stack.yml');
const HOOK = join(ROOT, 'deploy/swarm/test/hook.sh');
const BUDGET_MS = 780_000;

function has(cmd: string): boolean {
  return (
    spawnSync('sh', ['-c', `command -v ${cmd}`], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH}` },
    }).status === 0
  );
}

const wanted = process.env.CI === 'true' || process.env.XPMESH_SWARM_TEST === '1';
const missing = ['dockerd', 'docker', 'unshare', 'nsenter', 'ip'].filter((c) => !has(c));
const skip = !wanted
  ? 'set CI=true or XPMESH_SWARM_TEST=1 to run the Docker Swarm end-to-end test'
  : process.getuid?.() !== 0
    ? 'needs root (network namespaces, dockerd)'
    : missing.length > 0
      ? `missing ${missing.join(', ')} (apt-get install -y --no-install-recommends docker.io iproute2)`
      : !existsSync(E2E)
        ? `${E2E} not found (shared/ must sit beside the repository)`
        : false;
if (skip) console.warn(`\n*** SKIPPING the Docker Swarm tests: ${skip} ***\n`);

type Service = Record<string, unknown> & { deploy?: Record<string, unknown> };

/** The repository's stack, unchanged, plus the test's one-shots, all scaled by the hook. */
export function testStack(stackText: string): string {
  const stack = parse(stackText, { merge: true }) as { services: Record<string, Service> };
  const s = stack.services;
  for (const name of ['node', 'demo', 'load']) assert.ok(s[name], `the stack has a ${name} service`);
  const oneShot = (command: string[], entrypoint?: string[]): Service => ({
    image: s.load.image,
    ...(entrypoint ? { entrypoint } : {}),
    command,
    environment: s.load.environment,
    volumes: s.load.volumes,
    networks: s.load.networks,
    deploy: { ...s.load.deploy, replicas: 0, placement: { constraints: ['node.labels.e2e.host == h1'] } },
  });
  s.load.deploy = { ...s.load.deploy, replicas: 0 }; // started by the hook after the demo
  s.baseline = oneShot([
    'load',
    '--instances',
    '3',
    '--duration',
    '5000',
    '--json',
    '/reports/load-local.json',
  ]);
  s.chaos = oneShot(
    ['--connect', 'dns:tasks.node:7500', '--instances', '3', '--report-dir', '/reports'],
    ['node', '/app/packages/testkit/dist/fault/cluster-chaos.js'],
  );
  return stringify(stack);
}

const work = mkdtempSync(join(tmpdir(), 'xpmesh-swarm-test-'));
const reports = join(work, 'reports');
after(() => {
  const keep = process.env.XPMESH_SWARM_REPORTS;
  if (keep && existsSync(reports)) cpSync(reports, keep, { recursive: true });
  rmSync(work, { recursive: true, force: true });
});

describe('Docker Swarm across three hosts', { skip }, () => {
  it('demo across hosts, load linearizable, a crashed host fenced and rejoined', {
    timeout: BUDGET_MS + 60_000,
  }, async () => {
    spawnSync('mkdir', ['-p', reports]);
    chmodSync(reports, 0o777); // the image runs as the unprivileged `node` user
    const stackFile = join(work, 'stack.yml');
    writeFileSync(stackFile, testStack(readFileSync(STACK, 'utf8')));
    // The runtime image ships no test tooling; the chaos tool lives in the private testkit. This run
    // builds the project's Dockerfile with one more stage at its end (so the default target): the
    // runtime image plus the testkit the build stage set aside in /out-testkit.
    const dockerfile = join(work, 'Dockerfile.e2e');
    writeFileSync(
      dockerfile,
      `${readFileSync(join(ROOT, 'Dockerfile'), 'utf8')}\n# swarm.test.ts only\nFROM runtime AS e2e\nCOPY --from=build /out-testkit packages\n`,
    );
    const child = spawn('bash', [E2E, ROOT, stackFile, 'chaos'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: false,
      env: {
        ...process.env,
        E2E_IMAGE: 'xpmesh:local',
        E2E_DOCKERFILE: dockerfile,
        E2E_TIMEOUT: '660',
        E2E_HOOK: HOOK,
        REPORTS: reports,
        XPMESH_REPORTS: reports,
      },
    });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    // SIGTERM lets the script's trap tear the hosts down
    const timer = setTimeout(() => child.kill('SIGTERM'), BUDGET_MS);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    writeFileSync(join(reports, 'swarm-e2e.log'), output);
    // the figures' context: this machine and how busy it was (other suites may share it)
    writeFileSync(
      join(reports, 'machine.json'),
      `${JSON.stringify({ cpus: cpus().length, loadavg: loadavg() })}\n`,
    );
    const tail = `\n--- swarm-e2e output (tail)\n${output.slice(-8000)}`;
    assert.equal(code, 0, `swarm-e2e exited ${code}${tail}`);

    // 1. the demo passed, its three instances on three hosts
    assert.match(output, /Demo passed/, `the demo's log${tail}`);
    const placement = [...output.matchAll(/e2e_node\.(\d+) (h\d)/g)].map((m) => `${m[1]}:${m[2]}`);
    assert.ok(new Set(placement.map((p) => p.split(':')[1])).size >= 3, `node tasks spread: ${placement}`);

    // 2. the load across hosts and its one-host baseline: linearizable
    const load = JSON.parse(readFileSync(join(reports, 'load.json'), 'utf8'));
    assert.equal(load.ok, true, 'cross-host load history linearizable');
    assert.equal(load.params.instances, 3);
    assert.ok(load.remoteFaults > 0);
    const local = JSON.parse(readFileSync(join(reports, 'load-local.json'), 'utf8'));
    assert.equal(local.ok, true, 'one-host load history linearizable');

    // 3. the crash
    const chaos = JSON.parse(readFileSync(join(reports, 'chaos.json'), 'utf8'));
    assert.deepEqual(chaos.failures, [], 'chaos checks');
    assert.equal(chaos.ok, true);
    assert.equal(Object.keys(chaos.fenceMs).length, 2, 'both survivors fenced the crashed instance');
    assert.ok(chaos.rejoin && chaos.rejoin.joinToServeMs > 0, 'the restarted instance joined and served');
    assert.equal(chaos.load.history.ok, true);
  });
});
