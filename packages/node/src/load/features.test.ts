/**
 * `xpmesh load`'s k6-level features against a real local cluster (2 instances, separate OS
 * processes on 127.0.0.1), driven through the CLI with --connect:
 * - a user workload module (the example in examples/workloads/) runs inside the workers, its
 *   history is checked, exported with --history, and `check-history` gives the same verdict;
 *   hand-corrupted copies of that history are found non-linearizable;
 * - a threshold that must fail does fail (exit 99) while the others are shown as held;
 * - an arrival rate above what the cluster serves shows the latency growing (queueing, measured
 *   from the due time), not hidden;
 * - closed-model stages ramp the number of active processes;
 * - --compare and --baseline;
 * - the over-time chart marks reclaims, and a crashed host (an instance killed mid-run).
 * Every assertion is on the recorded structure, never on how fast this machine is.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import { runCheckHistoryCli } from './check-history.js';
import { type LoadCliIo, runLoadCli } from './cli.js';
import type { Comparison } from './compare.js';
import type { HistoryOp } from './history.js';
import type { LoadReport } from './report.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const EXAMPLE = join(ROOT, 'examples/workloads/hot-cold.js');

const io = (): LoadCliIo & { lines: string[]; text(): string } => {
  const lines: string[] = [];
  return {
    lines,
    out: (s) => lines.push(s),
    err: (s) => lines.push(s),
    isTTY: false,
    text: () => lines.join('\n'),
  };
};

const readJsonl = (f: string) =>
  readFileSync(f, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('xpmesh load: workloads, open model, thresholds, comparison, histories', {
  timeout: 240_000,
}, () => {
  let cluster: LocalCluster;
  let connect: string;
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-load-features-'));
  const f = (name: string) => join(dir, name);
  before(async () => {
    cluster = await launchCluster({ nodes: 2, frames: 2048, output: 'files', logDir: dir });
    connect = cluster.nodes.map((n) => n.adminUrl).join(',');
  });
  after(async () => {
    if (cluster) await cluster.stop(10_000);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the example workload module; its exported history checks the same offline', async () => {
    const out = io();
    const code = await runLoadCli(
      [
        '--connect',
        connect,
        '--workload',
        EXAMPLE,
        '--duration',
        '800',
        '--procs',
        '2',
        '--pages',
        '10',
        '--seed',
        '4',
        '--history',
        f('hot.jsonl'),
        '--json',
        f('hot.json'),
        '--html',
        f('hot.html'),
        '--threshold',
        'history==ok',
        '--threshold',
        'ops>0',
      ],
      out,
    );
    assert.equal(code, 0, out.text());
    const r = JSON.parse(readFileSync(f('hot.json'), 'utf8')) as LoadReport;
    assert.equal(r.workload, 'hot-cold');
    assert.equal(r.params.workloadSource, EXAMPLE);
    assert.ok(r.ops.total > 0 && r.ops.writes > 0 && r.ops.reads > 0);
    assert.equal(r.history.verdict, 'linearizable');
    assert.ok(Object.values(r.events.reclaims).reduce((a, b) => a + b, 0) > 0, 'background reclaim ran');
    assert.deepEqual(
      r.thresholds?.map((t) => [t.expr, t.ok]),
      [
        ['history==ok', true],
        ['ops>0', true],
      ],
    );
    // The history file: a header, then one operation per line.
    const lines = readJsonl(f('hot.jsonl'));
    assert.equal(lines[0].xpmesh, 'history');
    assert.equal(lines[0].workload, 'hot-cold');
    assert.equal(lines.length - 1, r.ops.total);
    for (const k of ['process', 'address', 'kind', 'value', 'invokeTs', 'responseTs'])
      assert.ok(k in lines[1], k);
    // Offline: the same verdict and the same counts.
    const chk = io();
    assert.equal(await runCheckHistoryCli([f('hot.jsonl'), '--json'], chk), 0, chk.text());
    const off = JSON.parse(chk.lines.join('\n'));
    assert.equal(off.verdict, r.history.verdict);
    assert.deepEqual(
      [off.ops, off.reads, off.writes, off.addresses, off.clockSlackMs],
      [r.history.ops, r.history.reads, r.history.writes, r.history.addresses, r.history.clockSlackMs],
    );
    // The over-time chart marks the reclaims on the run's time axis.
    const html = readFileSync(f('hot.html'), 'utf8');
    assert.match(html, /<svg id="over-time"/);
    assert.match(html, /class="series series-throughput" d="M/);
    assert.match(html, /class="series series-p99" d="M/);
    assert.match(html, /class="ev ev-reclaim"/);
    assert.match(html, /<table id="thresholds">/);
  });

  it('hand-corrupted copies of a checked history are found non-linearizable', async () => {
    const lines = readJsonl(f('hot.jsonl'));
    const head = lines[0];
    const ops = lines.slice(1) as unknown as HistoryOp[];
    const write = (name: string, list: unknown[]) =>
      writeFileSync(f(name), `${[head, ...list].map((l) => JSON.stringify(l)).join('\n')}\n`);
    // 1. A read that returns a value nobody wrote.
    const ri = ops.findIndex((o) => o.kind === 'r');
    assert.ok(ri >= 0);
    write(
      'unknown.jsonl',
      ops.map((o, i) => (i === ri ? { ...o, value: 0xfffff } : o)),
    );
    const a = io();
    assert.equal(await runCheckHistoryCli([f('unknown.jsonl'), '--json'], a), 1, a.text());
    const ra = JSON.parse(a.lines.join('\n'));
    assert.equal(ra.verdict, 'violated');
    assert.equal(ra.violations[0].rule, 'unknown-value');
    // 2. A stale read: after write w2 completed, a read returns w1's value, although w1 completed
    // before w2 began.
    const writes = ops.filter((o) => o.kind === 'w');
    let pair: [HistoryOp, HistoryOp] | undefined;
    for (const w1 of writes) {
      const w2 = writes.find((w) => w.address === w1.address && w.invokeTs > w1.responseTs + 0.5);
      if (w2) {
        pair = [w1, w2];
        break;
      }
    }
    assert.ok(pair, 'two sequential writes to one address');
    const end = ops.reduce((m, o) => Math.max(m, o.responseTs), 0);
    const stale: HistoryOp = {
      process: 'corruptor',
      address: pair[0].address,
      kind: 'r',
      value: pair[0].value,
      invokeTs: end + 5,
      responseTs: end + 6,
    };
    write('stale.jsonl', [...ops, stale]);
    const b = io();
    assert.equal(await runCheckHistoryCli([f('stale.jsonl')], b), 1, b.text());
    assert.match(b.text(), /FAILED/);
    assert.match(b.text(), /overwritten-value|overlapping-forward-zones/);
    // 3. A malformed line is a usage error naming the line.
    writeFileSync(f('bad.jsonl'), `${JSON.stringify(head)}\n{"process":"p","address":1,"kind":"x"}\n`);
    const c = io();
    assert.equal(await runCheckHistoryCli([f('bad.jsonl')], c), 2);
    assert.match(c.text(), /E_HISTORY_FORMAT: .*bad\.jsonl:2: "address"|bad\.jsonl:2: "kind"/);
  });

  it('a threshold that must fail fails the run (exit 99); the report shows each threshold', async () => {
    const out = io();
    const code = await runLoadCli(
      [
        '--connect',
        connect,
        '--workload',
        'ping-pong',
        '--pages',
        '1',
        '--procs',
        '1',
        '--duration',
        '500',
        '--threshold',
        'max<0.001us',
        '--threshold',
        'history==ok',
        '--threshold',
        'errors==0',
        '--json',
        f('pp1.json'),
      ],
      out,
    );
    assert.equal(code, 99, out.text());
    const r = JSON.parse(readFileSync(f('pp1.json'), 'utf8')) as LoadReport;
    assert.deepEqual(
      r.thresholds?.map((t) => [t.expr, t.ok]),
      [
        ['max<0.001us', false],
        ['history==ok', true],
        ['errors==0', true],
      ],
    );
    assert.ok((r.thresholds?.[0].actual as number) > 0.001);
    assert.match(out.text(), /✘ threshold max<0\.001us {2}\(actual /);
    assert.match(out.text(), /✓ threshold history==ok/);
    assert.match(out.text(), /thresholds +1 of 3 CROSSED/);
    // The same thresholds from a config file; the command line wins per option.
    writeFileSync(
      f('cfg.json'),
      JSON.stringify({ threshold: ['history==ok'], workload: 'ping-pong', pages: 1 }),
    );
    const out2 = io();
    const code2 = await runLoadCli(
      [
        '--connect',
        connect,
        '--config',
        f('cfg.json'),
        '--procs',
        '1',
        '--duration',
        '300',
        '--json',
        f('pp2.json'),
      ],
      out2,
    );
    assert.equal(code2, 0, out2.text());
    const r2 = JSON.parse(readFileSync(f('pp2.json'), 'utf8')) as LoadReport;
    assert.deepEqual(
      r2.thresholds?.map((t) => t.expr),
      ['history==ok'],
    );
    assert.equal(r2.params.pages, 1);
  });

  it('an arrival rate above what the cluster serves shows queueing, not hidden latency', async () => {
    // Each call takes at least 1 ms (it spins, then reads or writes a shared word), so a process
    // serves at most ~1000 calls/s whatever the driver's speed; 20000/s over 2 processes is 10×
    // that. (A built-in workload's hits can run at memory speed, so their capacity is no bound.)
    writeFileSync(
      f('slow.mjs'),
      `export default { name: 'slow-op', description: 'each call takes at least 1 ms',
        plan: ({ touchedPages }) => ({ keys: [{ page: touchedPages[0], word: 0 }] }),
        op(t) { const end = Date.now() + 1; while (Date.now() < end) {} if (t.random() < 0.5) t.write(0); else t.read(0); } };\n`,
    );
    const out = io();
    const code = await runLoadCli(
      [
        '--connect',
        connect,
        '--workload',
        f('slow.mjs'),
        '--pages',
        '1',
        '--procs',
        '1',
        '--rate',
        '20000',
        '--duration',
        '1500',
        '--json',
        f('open.json'),
        '--history',
        f('open.jsonl'),
      ],
      out,
    );
    assert.equal(code, 0, out.text());
    const r = JSON.parse(readFileSync(f('open.json'), 'utf8')) as LoadReport;
    assert.equal(r.params.model.kind, 'open');
    assert.ok(r.model.dropped > 0, 'calls due before the end never started');
    assert.ok(
      r.model.dropped + r.model.iterations >= 20_000 * 1.5 * 0.9,
      'every due call is either run or dropped',
    );
    // Latency from the due time exceeds the service time: the difference is time spent waiting.
    assert.ok(
      r.opLatencyUs.all.p50 > r.serviceTimeUs.p50,
      `latency p50 ${r.opLatencyUs.all.p50} > service p50 ${r.serviceTimeUs.p50}`,
    );
    // And the wait grows with the backlog: per process, the last call waited longer than the
    // first (calls fall behind their due times; in bursts of cache hits the lag may shrink for a
    // while, but over the run fewer calls were served than came due: `dropped` above).
    const ops = readJsonl(f('open.jsonl')).slice(1) as unknown as HistoryOp[];
    const byProc = new Map<string, HistoryOp[]>();
    for (const o of ops) {
      assert.equal(typeof o.intendedTs, 'number', 'every op records when it was due');
      assert.ok(o.invokeTs >= (o.intendedTs as number), 'no op starts before it is due');
      byProc.set(o.process, [...(byProc.get(o.process) ?? []), o]);
    }
    assert.equal(byProc.size, 2);
    for (const [p, list] of byProc) {
      list.sort((x, y) => (x.intendedTs as number) - (y.intendedTs as number));
      assert.ok(list.length > 10, `${p}: enough operations`);
      const lag = (o: HistoryOp) => o.invokeTs - (o.intendedTs as number);
      const first = lag(list[0]);
      const last = lag(list[list.length - 1]);
      assert.ok(last > first, `${p}: lag grows (${first.toFixed(2)} → ${last.toFixed(2)} ms)`);
    }
    assert.equal(r.history.verdict, 'linearizable');
  });

  it('closed-model stages ramp the number of active processes', async () => {
    const out = io();
    const code = await runLoadCli(
      [
        '--connect',
        connect,
        '--workload',
        'ping-pong',
        '--pages',
        '2',
        '--procs',
        '2',
        '--stage',
        '1s:1',
        '--stage',
        '1s:4',
        '--stage',
        '1s:4',
        '--json',
        f('ramp.json'),
        '--history',
        f('ramp.jsonl'),
      ],
      out,
    );
    assert.equal(code, 0, out.text());
    const r = JSON.parse(readFileSync(f('ramp.json'), 'utf8')) as LoadReport;
    assert.deepEqual(
      r.params.model.stages?.map((s) => [s.durationMs, s.target]),
      [
        [1000, 1],
        [1000, 4],
        [1000, 4],
      ],
    );
    assert.equal(r.timeline.filter((e) => e.kind === 'stage').length, 3);
    const ops = readJsonl(f('ramp.jsonl')).slice(1) as unknown as HistoryOp[];
    const first = new Map<string, number>();
    for (const o of ops)
      if (!first.has(o.process) || o.invokeTs < first.get(o.process)!) first.set(o.process, o.invokeTs);
    const start = Math.min(...first.values()); // the home's first op (it is active from the start)
    const starts = [...first.values()].map((t) => t - start).sort((a, b) => a - b);
    assert.equal(
      starts.length,
      4,
      `every process ran by the end: ${JSON.stringify([r.ops.perProcess, r.errors, r.elapsedMs])}`,
    );
    // During the first stage only the home process is active; the second becomes active when the
    // ramp passes 1.5 (1167 ms in), the last at 3.5 (1833 ms). The home's first op may itself be
    // late on a loaded machine, so only a lower bound with a wide margin: the second process
    // started more than 500 ms after the home.
    assert.ok(starts[1] >= 500, `the second process started ${starts[1].toFixed(0)} ms after the home`);
    assert.ok(starts[3] >= starts[1]);
  });

  it('--compare shows the change in throughput and each percentile, with parameters side by side', async () => {
    const out = io();
    const code = await runLoadCli(
      ['--compare', f('pp1.json'), f('pp2.json'), '--json', f('cmp.json'), '--html', f('cmp.html')],
      out,
    );
    assert.equal(code, 0, out.text());
    const [c] = JSON.parse(readFileSync(f('cmp.json'), 'utf8')) as Comparison[];
    const a = JSON.parse(readFileSync(f('pp1.json'), 'utf8')) as LoadReport;
    const b = JSON.parse(readFileSync(f('pp2.json'), 'utf8')) as LoadReport;
    const m = (name: string) => c.metrics.find((x) => x.metric === name)!;
    assert.equal(m('ops/s').old, a.ops.opsPerSec);
    assert.equal(m('ops/s').new, b.ops.opsPerSec);
    assert.ok(
      Math.abs(
        (m('ops/s').changePct as number) - ((b.ops.opsPerSec - a.ops.opsPerSec) / a.ops.opsPerSec) * 100,
      ) < 0.1,
    );
    for (const p of ['p50', 'p90', 'p99', 'p999', 'max'])
      assert.equal(m(`latency ${p} (us)`).new, b.opLatencyUs.all[p as 'p50']);
    const dur = c.params.find((p) => p.param === 'durationMs')!;
    assert.deepEqual([dur.old, dur.new, dur.differs], ['500', '300', true]);
    assert.match(out.text(), /ops\/s +[\d,]+ +[\d,]+ +[+-]?[\d.]+%/);
    assert.match(readFileSync(f('cmp.html'), 'utf8'), /<table class="compare-params">/);
    // A run against a baseline: the comparison is in the text and the HTML report.
    const out2 = io();
    const code2 = await runLoadCli(
      [
        '--connect',
        connect,
        '--workload',
        'ping-pong',
        '--pages',
        '1',
        '--procs',
        '1',
        '--duration',
        '300',
        '--baseline',
        f('pp1.json'),
        '--html',
        f('pp3.html'),
      ],
      out2,
    );
    assert.equal(code2, 0, out2.text());
    assert.match(out2.text(), /comparison: ping-pong +\(baseline → this run\)/);
    assert.match(readFileSync(f('pp3.html'), 'utf8'), /<div id="comparison">/);
    // Bad input: usage errors.
    assert.equal(await runLoadCli(['--compare', f('pp1.json')], io()), 2);
    assert.equal(await runLoadCli(['--compare', f('pp1.json'), f('hot.jsonl')], io()), 2);
  });

  // Last: it kills an instance.
  it('a host that crashes mid-run is marked on the over-time chart', async () => {
    const out = io();
    const run = runLoadCli(
      [
        '--connect',
        connect,
        '--workload',
        'reclaim-storm',
        '--procs',
        '1',
        '--pages',
        '4',
        '--duration',
        '4000',
        '--json',
        f('crash.json'),
        '--html',
        f('crash.html'),
      ],
      out,
    );
    // Kill it once the run is under way (its first progress line, ~1 s in), not during the set-up.
    for (let i = 0; i < 600 && !out.lines.some((l) => /^reclaim-storm: \d+% +[1-9]/.test(l)); i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.ok(
      out.lines.some((l) => /^reclaim-storm: \d+%/.test(l)),
      out.text(),
    );
    process.kill(cluster.nodes[1].pid, 'SIGKILL');
    const code = await run;
    assert.notEqual(code, 0, 'the run cannot be certified');
    const r = JSON.parse(readFileSync(f('crash.json'), 'utf8')) as LoadReport;
    const kinds = new Set(r.timeline.map((e) => e.kind));
    const seen = JSON.stringify(r.timeline.filter((e) => e.kind !== 'reclaim'));
    assert.ok(kinds.has('unreachable'), `timeline: ${seen}`);
    // The survivor notices: its link to the dead instance goes down, or it fences it.
    assert.ok(kinds.has('peer-down') || kinds.has('fence'), `timeline: ${seen}`);
    const html = readFileSync(f('crash.html'), 'utf8');
    assert.match(html, /class="evline ev-unreachable"/);
    assert.match(html, /class="ev ev-reclaim"/);
  });
});
