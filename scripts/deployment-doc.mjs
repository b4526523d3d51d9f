#!/usr/bin/env node
// Writes the "Figures" section of docs/deployment.md from measured runs. Never edit that section by
// hand. Inputs are kept in docs/figures/deployment.json (trimmed from the runs' reports):
//   XPMESH_SWARM_TEST=1 XPMESH_SWARM_REPORTS=/tmp/swarm node --test packages/node/dist/daemon/swarm.test.js
//   node scripts/deployment-doc.mjs --swarm /tmp/swarm          # the Swarm run's reports
//   node scripts/deployment-doc.mjs --scale /tmp/scale/load.json --scale-meta "compose, 16 instances"
//   node scripts/deployment-doc.mjs                             # re-render from docs/figures/deployment.json
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const root = new URL('..', import.meta.url).pathname;
const dataFile = join(root, 'docs/figures/deployment.json');
const doc = join(root, 'docs/deployment.md');
const { values } = parseArgs({
  options: { swarm: { type: 'string' }, scale: { type: 'string' }, 'scale-meta': { type: 'string' } },
});
const data = existsSync(dataFile) ? JSON.parse(readFileSync(dataFile, 'utf8')) : {};
const read = (dir, f) => JSON.parse(readFileSync(join(dir, f), 'utf8'));

/** The figures of one `xpmesh load` report that the tables use. */
function loadFigures(r) {
  return {
    instances: r.params.instances,
    procsPerInstance: r.params.procsPerInstance,
    pages: r.params.pages,
    durationMs: r.params.durationMs,
    workload: r.workload,
    mode: r.cluster.mode,
    nodes: r.cluster.nodes,
    ops: r.ops.total,
    opsPerSec: r.ops.opsPerSec,
    errors: r.ops.errors,
    opLatencyUs: r.opLatencyUs.all,
    remoteFaultLatencyUs: r.remoteFaultLatencyUs,
    invalidationLatencyUs: r.invalidationLatencyUs,
    remoteFaults: r.remoteFaults,
    upgrades: r.upgrades,
    recalls: r.recalls,
    history: { ok: r.ok, verdict: r.history.verdict, checked: r.history.checkedOps ?? r.history.ops },
    startedAt: r.startedAt,
  };
}

if (values.swarm) {
  const dir = values.swarm;
  const chaos = read(dir, 'chaos.json');
  const hook = read(dir, 'hook.json');
  data.swarm = {
    hosts: 3,
    crossHosts: loadFigures(read(dir, 'load.json')),
    oneHost: loadFigures(read(dir, 'load-local.json')),
    chaos: {
      ok: chaos.ok,
      failures: chaos.failures,
      victim: chaos.victim,
      host: chaos.crash?.host,
      fenceMs: chaos.fenceMs,
      fenceBoundMs: chaos.fenceBoundMs,
      lostDirtyPages: chaos.lostDirtyPages,
      rejoin: chaos.rejoin,
      hostDownMs: hook.hostDown - hook.crash,
      hostStartMs: hook.hostStart - hook.crash,
      hostReadyMs: hook.hostReady - hook.crash,
      load: {
        ops: chaos.load.ops.total,
        lostChunks: chaos.load.chunks.lost,
        history: chaos.load.history.ok,
        rounds: chaos.load.history.rounds,
        checkedOps: chaos.load.history.checkedOps,
        droppedReads: chaos.load.history.droppedReads,
        indeterminateWrites: chaos.load.history.indeterminateWrites,
        slowCalls: chaos.load.deadlines.slow.length,
        calls: chaos.load.deadlines.calls,
      },
    },
    measuredAt: new Date(hook.t0).toISOString(),
    machine: existsSync(join(dir, 'machine.json')) ? read(dir, 'machine.json') : undefined,
  };
}
if (values.scale) {
  data.scale = {
    ...loadFigures(JSON.parse(readFileSync(values.scale, 'utf8'))),
    setup: values['scale-meta'] ?? '',
  };
}
if (values.swarm || values.scale) writeFileSync(dataFile, `${JSON.stringify(data, null, 2)}\n`);

const n = (v) =>
  typeof v === 'number'
    ? Math.abs(v) < 10 && !Number.isInteger(v)
      ? v.toFixed(2)
      : Math.round(v).toLocaleString('en-US')
    : String(v ?? '-');
const us = (p) => (p && p.count !== 0 ? `p50 ${n(p.p50)} / p99 ${n(p.p99)} µs` : '-');
const lines = [];
const s = data.swarm;
if (s) {
  const x = s.crossHosts;
  const o = s.oneHost;
  lines.push(
    `### Swarm, three hosts (measured ${s.measuredAt.slice(0, 10)}, \`swarm.test.ts\`)`,
    '',
    `The same \`xpmesh load\` (workload \`${x.workload}\`, ${x.instances} instances × ${x.procsPerInstance} processes, ${x.pages} pages, ${n(x.durationMs)} ms) run once against the Swarm's`,
    'three instances on three hosts (VXLAN overlay between the host namespaces) and once inside one container',
    '(three instance processes on one host, loopback). Same machine, same run; server-side latencies come',
    "from the instances' histograms (bucket-interpolated).",
    s.machine
      ? `Machine: ${s.machine.cpus} CPUs, load average ${s.machine.loadavg.map((x) => x.toFixed(1)).join(' / ')} (1/5/15 min) at the end of the run.`
      : '',
    '',
    '| | across hosts (Swarm overlay) | one host (loopback) |',
    '| --- | --- | --- |',
    `| remote fault latency | ${us(x.remoteFaultLatencyUs)} | ${us(o.remoteFaultLatencyUs)} |`,
    `| invalidation latency (first invalidate → last ack) | ${us(x.invalidationLatencyUs)} | ${us(o.invalidationLatencyUs)} |`,
    `| operation latency (client, in the process) | ${us(x.opLatencyUs)} | ${us(o.opLatencyUs)} |`,
    `| operations, ops/s | ${n(x.ops)}, ${n(x.opsPerSec)} | ${n(o.ops)}, ${n(o.opsPerSec)} |`,
    `| remote faults / upgrades / recalls | ${n(x.remoteFaults)} / ${n(x.upgrades)} / ${n(x.recalls)} | ${n(o.remoteFaults)} / ${n(o.upgrades)} / ${n(o.recalls)} |`,
    `| history | ${x.history.ok ? 'linearizable' : 'NOT linearizable'} | ${o.history.ok ? 'linearizable' : 'NOT linearizable'} |`,
    '',
  );
  const c = s.chaos;
  const fences = Object.entries(c.fenceMs ?? {})
    .map(([k, v]) => `${k} ${n(v)} ms`)
    .join(', ');
  lines.push(
    `A host crash under load (\`chaos\`): the host running \`${c.victim}\` (${c.host}) lost its link and was killed outright`,
    '(its pid 1: no FIN or RST reaches the survivors, so they can only notice the silence); once the swarm manager had',
    'marked the host down, its link came back, it booted again and swarm started the task there again.',
    '',
    '| | |',
    '| --- | --- |',
    `| result | ${c.ok ? '**ok**: every check held' : `**FAILED**: ${c.failures.join('; ')}`} |`,
    `| time to fence the crashed host, per survivor | ${fences} (detection bound (missed-beats + 1) × heartbeat-ms = ${n(c.fenceBoundMs)} ms: the last beat seen may be one interval old when the host dies; observed through the survivors' event streams) |`,
    `| lost dirty pages (reverted to the last written-back data, counted by the home) | ${n(c.lostDirtyPages)} |`,
    `| load during the crash | ${n(c.load.ops)} operations, ${n(c.load.lostChunks)} chunk(s) lost with the host, ${n(c.load.slowCalls)} of ${n(c.load.calls)} calls past their bound |`,
    `| history | ${c.load.history ? 'linearizable' : 'NOT linearizable'} (${n(c.load.rounds)} round(s), ${n(c.load.checkedOps)} operations checked, ${n(c.load.droppedReads)} reads dropped and ${n(c.load.indeterminateWrites)} writes indeterminate under the dirty-page policy) |`,
    c.rejoin
      ? `| crash → the restarted instance up again at every survivor (new epoch) | ${n(c.rejoin.upMs)} ms (swarm marked the host down at ${n(c.hostDownMs)} ms; it booted again at ${n(c.hostStartMs)} ms, its engine ready at ${n(c.hostReadyMs)} ms) |`
      : '| rejoin | did not happen |',
    c.rejoin
      ? `| join to serving: process start → first remote read served by it | ${n(c.rejoin.joinToServeMs)} ms |`
      : '',
    '',
  );
} else lines.push('No Swarm run recorded yet: see the commands above.', '');
const k = data.scale;
if (k) {
  lines.push(
    `### Scaled: ${k.instances} instances (${k.setup})`,
    '',
    '| | |',
    '| --- | --- |',
    `| workload | \`${k.workload}\`, ${k.instances} instances × ${k.procsPerInstance} process(es), ${k.pages} pages, ${n(k.durationMs)} ms |`,
    `| operations, ops/s | ${n(k.ops)}, ${n(k.opsPerSec)} (${n(k.errors)} errors) |`,
    `| operation latency (client) | ${us(k.opLatencyUs)} |`,
    `| remote fault latency | ${us(k.remoteFaultLatencyUs)} |`,
    `| invalidation latency | ${us(k.invalidationLatencyUs)} |`,
    `| remote faults / upgrades / recalls | ${n(k.remoteFaults)} / ${n(k.upgrades)} / ${n(k.recalls)} |`,
    `| history | ${k.history.ok ? 'linearizable' : 'NOT linearizable'} |`,
    '',
  );
}
const text = readFileSync(doc, 'utf8');
const begin = '<!-- figures:begin (scripts/deployment-doc.mjs) -->';
const end = '<!-- figures:end -->';
const a = text.indexOf(begin);
const b = text.indexOf(end);
if (a < 0 || b < a) throw new Error(`${doc}: figure markers missing`);
writeFileSync(
  doc,
  `${text.slice(0, a + begin.length)}\n\n${lines.filter((l) => l !== null).join('\n')}\n${text.slice(b)}`,
);
// the tables as biome lays them out, so `npm run lint` stays clean
spawnSync('npx', ['biome', 'format', '--write', doc, dataFile], { cwd: root, stdio: 'ignore' });
console.log(`wrote ${doc}`);
