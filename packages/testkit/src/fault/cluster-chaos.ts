/**
 * A host crash under load on a cluster found through DNS (the Swarm test's one-shot `chaos`
 * service; it runs inside the cluster's network, so the traffic rule holds). The crash itself is
 * done from outside (the test's hook, with swarm-e2e.sh's node control); this side runs the
 * fault-tolerant workload (workload.ts: the soak's, with its history rules for a fenced instance)
 * and measures what the survivors do. Files in --report-dir are the hand-over with the hook:
 *
 *   plan.json     (written here)  the home and the instances the hook may crash (never the home)
 *   running.json  (written here)  the load is running on every instance: crash now
 *   crash.json    (the hook's)    { node, host, t }: which instance's host was crashed, and when
 *                                 (epoch ms; every host shares this machine's clock)
 *   chaos.json    (written here)  the result below
 *
 * Checks (exit 1 if any fails): the survivors fence the crashed instance within the detection
 * bound, (missed-beats + 1) × heartbeat-ms (docs/configuration.md's heartbeat-ms × missed-beats
 * counts from the last beat seen, which may be one interval old at the crash), here with a generous
 * margin for observation and a loaded machine; no call of the workload outside the fault window waited past its bound;
 * the history stays linearizable under the documented dirty-page policy; lost dirty pages are
 * counted by the home; the instance the engine restarts joins again (same node id, a new epoch at
 * every survivor) and serves (get + attach + a remote read of the load's segment).
 * Usage: node dist/fault/cluster-chaos.js --connect dns:tasks.node:7500 --instances 3 --report-dir /reports
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveConnect } from '@xpmesh/node/daemon/discover';
import { type CallResult, Controller, type InstanceStatus } from './controller.js';
import type { LoadSummary } from './workload.js';

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ChaosResult {
  ok: boolean;
  failures: string[];
  nodes: Record<string, string>;
  home: string;
  victim?: string;
  crash?: { node: string; host: string; t: number };
  /** Per survivor: ms from the crash to the fence it reported (first observation). */
  fenceMs: Record<string, number>;
  fenceBoundMs: number;
  lostDirtyPages: number;
  rejoin?: {
    url: string;
    epochBefore: number;
    epochAfter: Record<string, number>;
    upMs: number;
    joinToServeMs: number;
  };
  load?: LoadSummary;
  elapsedMs: number;
}

async function metricValue(c: Controller, node: string, name: string): Promise<number> {
  const r = await c.admin(node).get<string>('/metrics', 3000);
  if (!r.ok || typeof r.value !== 'string') return 0;
  let sum = 0;
  for (const line of r.value.split('\n'))
    if (line.startsWith(name) && !line.startsWith('#')) sum += Number(line.split(' ').pop()) || 0;
  return sum;
}

export async function runChaos(argv: string[]): Promise<ChaosResult> {
  const { values } = parseArgs({
    args: argv,
    options: {
      connect: { type: 'string' },
      instances: { type: 'string', default: '3' },
      'report-dir': { type: 'string', default: '/reports' },
      token: { type: 'string' },
      'crash-wait-ms': { type: 'string', default: '90000' },
      'rejoin-wait-ms': { type: 'string', default: '150000' },
      // (missed-beats + 1) × heartbeat-ms with the stack's 3 × 500 ms: the last beat seen may be one
      // interval old when the host dies
      'fence-bound-ms': { type: 'string', default: '2000' },
    },
  });
  const t0 = now();
  const dir = values['report-dir'] as string;
  const token = (values.token as string | undefined) ?? process.env.XPMESH_ADMIN_TOKEN ?? '';
  const n = Number(values.instances);
  const fenceBound = Number(values['fence-bound-ms']);
  const say = (m: string, d?: unknown) =>
    process.stdout.write(
      `chaos [${((now() - t0) / 1000).toFixed(1)}s] ${m}${d === undefined ? '' : ` ${JSON.stringify(d)}`}\n`,
    );
  const failures: string[] = [];
  const result: ChaosResult = {
    ok: false,
    failures,
    nodes: {},
    home: '',
    fenceMs: {},
    fenceBoundMs: fenceBound,
    lostDirtyPages: 0,
    elapsedMs: 0,
  };

  // 1. the instances behind the name, by the node id they report
  const connect = values.connect as string;
  const urls = await resolveConnect(connect, { min: n, waitMs: 120_000 });
  for (const url of urls.slice(0, n)) {
    const c0 = new Controller();
    c0.init({ nodes: [{ id: 'x', url }], token, pollMs: 60_000, sse: false, messages: false });
    const s = await c0.status('x', true, 5000);
    c0.close();
    if (!s) throw new Error(`no /status from ${url}`);
    result.nodes[s.node] = url;
  }
  const ids = Object.keys(result.nodes).sort();
  const c = new Controller();
  c.init({
    nodes: ids.map((id) => ({ id, url: result.nodes[id] })),
    token,
    pollMs: 100,
    sse: true,
    messages: false,
  });
  await c.waitMesh(ids, 60_000, 1000);
  const home = ids[0];
  result.home = home;
  writeFileSync(
    join(dir, 'plan.json'),
    `${JSON.stringify({ home, victims: ids.slice(1), nodes: result.nodes })}\n`,
  );
  say('mesh up', { ids, home });

  // 2. the workload, running on every instance before the crash
  const { segid } = (await c.handle('load.start', {
    nodes: ids,
    home,
    procsPerNode: 1,
    callTimeoutMs: 20_000,
  })) as { segid: string };
  const warm = (await c.handle('load.progress', {
    nodes: ids,
    after: now(),
    minOps: 100,
    timeoutMs: 60_000,
  })) as { ok: boolean; opsByNode: Record<string, number> };
  if (!warm.ok) failures.push(`the load did not run on every instance: ${JSON.stringify(warm.opsByNode)}`);
  writeFileSync(join(dir, 'running.json'), `${JSON.stringify({ t: Date.now(), segid })}\n`);
  say('load running: crash now', warm.opsByNode);

  // 3. the crash (from outside), the fence at every survivor
  const crashFile = join(dir, 'crash.json');
  const crashDeadline = now() + Number(values['crash-wait-ms']);
  while (!existsSync(crashFile) && now() < crashDeadline) await sleep(100);
  let windows: Array<{ node: string; from: number; to: number }> = [];
  if (!existsSync(crashFile)) failures.push('no crash happened (crash.json never appeared)');
  else {
    await sleep(200); // the hook writes it in one go; let it land
    const crash = JSON.parse(readFileSync(crashFile, 'utf8')) as { node: string; host: string; t: number };
    result.crash = crash;
    result.victim = crash.node;
    const victim = crash.node;
    if (victim === home) failures.push('the hook crashed the home (plan.json says not to)');
    const survivors = ids.filter((id) => id !== victim);
    say('crash reported', crash);
    // Every host shares this machine's clock; observations are stamped on the same epoch-ms scale.
    const crashPerf = crash.t;
    for (const s of survivors) {
      try {
        const o = await c.waitFor({
          kind: 'fence',
          observer: s,
          node: victim,
          after: crashPerf - 50,
          timeoutMs: 30_000,
        });
        result.fenceMs[s] = Math.round(o.t - crashPerf);
      } catch {
        failures.push(`${s} did not fence ${victim} within 30 s of the crash`);
      }
    }
    say('fenced', result.fenceMs);
    for (const [s, ms] of Object.entries(result.fenceMs))
      if (ms > fenceBound * 3 + 2000)
        failures.push(
          `${s} fenced ${victim} after ${ms} ms (documented bound ${fenceBound} ms, allowed ×3 + 2 s)`,
        );
    // the survivors keep serving after the fence
    const after = (await c.handle('load.progress', {
      nodes: survivors,
      after: now(),
      minOps: 100,
      timeoutMs: 30_000,
    })) as { ok: boolean; opsByNode: Record<string, number> };
    if (!after.ok)
      failures.push(`the survivors stopped serving after the fence: ${JSON.stringify(after.opsByNode)}`);
    c.nodeGone(victim);
    const epochBefore = Math.max(
      ...survivors.map((s) => c.query({ kind: 'peer', observer: s, node: victim }).at(-1)?.epoch ?? -1),
    );

    // 4. the instance the engine restarts joins again (same id, new epoch) and serves
    const rejoinDeadline = now() + Number(values['rejoin-wait-ms']);
    let rejoined: { url: string; status: InstanceStatus } | undefined;
    while (!rejoined && now() < rejoinDeadline) {
      await sleep(500);
      let found: string[] = [];
      try {
        found = await resolveConnect(connect, { min: 1, waitMs: 1000 });
      } catch {
        continue;
      }
      for (const url of found) {
        if (Object.values(result.nodes).includes(url) && url !== result.nodes[victim]) continue;
        const probe = new Controller();
        probe.init({ nodes: [{ id: 'p', url }], token, pollMs: 60_000, sse: false, messages: false });
        const s = await probe.status('p', true, 2000);
        probe.close();
        if (s?.node === victim && s.peers.filter((p) => p.state === 'up').length >= survivors.length) {
          rejoined = { url, status: s };
          break;
        }
      }
    }
    if (!rejoined) failures.push(`${victim} did not come back within ${values['rejoin-wait-ms']} ms`);
    else {
      const upAt = now();
      const epochAfter: Record<string, number> = {};
      for (const s of survivors) {
        const st = await c.status(s, true, 3000);
        const p = st?.peers.find((x) => x.node === victim);
        epochAfter[s] = p?.state === 'up' ? p.epoch : -1;
        if (!(epochAfter[s] > epochBefore))
          failures.push(`${s}: ${victim} is not up with a new epoch (${epochAfter[s]} vs ${epochBefore})`);
      }
      // serve: get + attach + read a page of the load's segment from the home
      const probe = new Controller();
      probe.init({
        nodes: [{ id: victim, url: rejoined.url }],
        token,
        pollMs: 60_000,
        sse: false,
        messages: false,
      });
      const call = (op: string, body: object) =>
        probe.admin(victim).op(op, body, 15_000) as Promise<CallResult<Record<string, number | string>>>;
      const sp = await call('spawn', { name: 'rejoin-probe' });
      const gt = sp.ok ? await call('get', { pid: sp.value?.pid as number, segid, access: 'r' }) : sp;
      const at = gt.ok
        ? await call('attach', { pid: sp.value?.pid as number, apid: gt.value?.apid as string, size: 4096 })
        : gt;
      const rd = at.ok
        ? await call('read', { pid: sp.value?.pid as number, addr: at.value?.addr as number, len: 8 })
        : at;
      const servedAt = now();
      const st = await probe.status(victim, true, 3000);
      probe.close();
      if (!rd.ok) failures.push(`the rejoined ${victim} cannot serve: ${rd.code} ${rd.message}`);
      const uptime = (st as unknown as { uptimeMs?: number })?.uptimeMs ?? 0;
      const startedAt = now() - uptime;
      result.rejoin = {
        url: rejoined.url,
        epochBefore,
        epochAfter,
        upMs: Math.round(upAt - crashPerf),
        joinToServeMs: Math.round(servedAt - startedAt),
      };
      say('rejoined and served', result.rejoin);
    }
    windows = [{ node: victim, from: crashPerf - 1000, to: now() }];
  }

  // 5. stop the load; the history, the waits, the dirty-page policy
  const summary = (await c.handle('load.stop', { windows })) as LoadSummary;
  result.load = summary;
  result.lostDirtyPages = await metricValue(c, home, 'xpmesh_lost_dirty_pages_total');
  const lostEvents = c.query({ kind: 'lost-dirty' }).length;
  if (!summary.history.ok)
    failures.push(`history not linearizable: ${summary.history.failedCount} round(s) failed`);
  if (summary.deadlines.slow.length > 0)
    failures.push(
      `${summary.deadlines.slow.length} call(s) waited past their bound: ${JSON.stringify(summary.deadlines.slow.slice(0, 3))}`,
    );
  if (lostEvents > 0 && result.lostDirtyPages === 0)
    failures.push('lost-dirty events seen but not counted by the home');
  c.close();
  result.elapsedMs = Math.round(now() - t0);
  result.ok = failures.length === 0;
  writeFileSync(join(dir, 'chaos.json'), `${JSON.stringify(result, null, 2)}\n`);
  say(result.ok ? 'PASSED' : 'FAILED', {
    failures,
    lostDirtyPages: result.lostDirtyPages,
    ops: summary.ops.total,
  });
  return result;
}

if (process.argv[1]?.endsWith('cluster-chaos.js')) {
  runChaos(process.argv.slice(2)).then(
    (r) => process.exit(r.ok ? 0 : 1),
    (err) => {
      process.stderr.write(`chaos: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    },
  );
}
