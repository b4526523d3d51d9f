/**
 * Thresholds, stage and config parsing, run comparison and history files, on hand-made reports
 * and histories (the real-cluster runs are in features.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { historyFileFor, parseStage, readConfig, runLoadCli } from './cli.js';
import { compareReports, compareText } from './compare.js';
import { checkHistory, type HistoryOp } from './history.js';
import { HistoryFileError, readHistoryFile, writeHistoryFile } from './history-file.js';
import type { LoadReport } from './report.js';
import { evaluateThresholds, formatActual, parseThreshold } from './thresholds.js';

const pct = (p50: number, p99: number) => ({
  count: 10,
  p50,
  p90: p99,
  p99,
  p999: p99,
  max: p99 * 2,
  mean: p50,
});

function report(over: Partial<LoadReport> = {}): LoadReport {
  return {
    version: 2,
    tool: 'xpmesh load',
    workload: 'w',
    params: {
      instances: 2,
      procsPerInstance: 1,
      pages: 1,
      segmentPages: 1,
      durationMs: 500,
      maxOps: 10,
      seed: 1,
      workloadSource: 'w',
      model: { kind: 'closed' },
    },
    cluster: { mode: 'local', nodes: ['n1', 'n2'], urls: [] },
    startedAt: '2026-01-01T00:00:00.000Z',
    elapsedMs: 500,
    ops: { total: 1000, reads: 600, writes: 400, errors: 5, opsPerSec: 2000, perProcess: [500, 500] },
    opLatencyUs: { all: pct(300, 4000), read: pct(200, 3000), write: pct(400, 5000) },
    serviceTimeUs: pct(250, 3500),
    model: { kind: 'closed', iterations: 1000, dropped: 0, keys: 1 },
    remoteFaultLatencyUs: {
      source: '',
      count: 1,
      p50: 900,
      p90: 1000,
      p99: 2000,
      p999: 2000,
      maxBucketUs: 2500,
    },
    invalidationLatencyUs: {
      source: '',
      count: 1,
      p50: 500,
      p90: 600,
      p99: 700,
      p999: 700,
      maxBucketUs: 1000,
    },
    messages: { total: 2000, bytes: 1, perOp: 2, bytesPerOp: 1, byType: {} },
    counters: {},
    upgrades: 0,
    recalls: 0,
    fences: 0,
    remoteFaults: 0,
    errors: { total: 5, byCode: { SIGBUS: 5 }, samples: [] },
    events: { reclaims: {}, forks: 0, forkErrors: {}, reattaches: 0, chunks: 1 },
    throughput: [],
    latencyHistogram: [],
    faultHistogram: [],
    timeSeries: { binMs: 100, bins: [] },
    timeline: [],
    history: {
      ok: true,
      verdict: 'linearizable',
      ops: 1000,
      addresses: 1,
      reads: 600,
      writes: 400,
      violations: [],
      clockSlackMs: 0.02,
    },
    invariants: [{ node: 'n1', ok: true, violations: [] }],
    ok: true,
    ...over,
  };
}

describe('thresholds', () => {
  it('parse metric, operator and unit (latency in us; ms by default)', () => {
    assert.deepEqual(parseThreshold('p99<5ms'), { expr: 'p99<5ms', metric: 'p99', op: '<', limit: 5000 });
    assert.equal(parseThreshold('p50 <= 250us').limit, 250);
    assert.equal(parseThreshold('write.max<2').limit, 2000);
    assert.equal(parseThreshold('service.p99<1s').limit, 1_000_000);
    assert.equal(parseThreshold('error_rate<1%').limit, 0.01);
    assert.equal(parseThreshold('history==linearizable').limit, 'ok');
    for (const bad of [
      'p98<1ms',
      'p99',
      'p99<fast',
      'errors<1ms',
      'history<ok',
      'history==maybe',
      'p99<5%',
      'ops>1%',
    ])
      assert.throws(() => parseThreshold(bad), /threshold/, bad);
  });

  it('evaluate against a report: each with its actual value', () => {
    const r = report();
    const res = evaluateThresholds(
      r,
      [
        'p99<5ms',
        'p99<3ms',
        'errors==0',
        'error_rate<1%',
        'history==ok',
        'invariants==ok',
        'ops_per_sec>=2000',
        'fault.p99<1ms',
      ].map(parseThreshold),
    );
    assert.deepEqual(
      res.map((t) => [t.expr, t.ok]),
      [
        ['p99<5ms', true],
        ['p99<3ms', false],
        ['errors==0', false],
        ['error_rate<1%', true],
        ['history==ok', true],
        ['invariants==ok', true],
        ['ops_per_sec>=2000', true],
        ['fault.p99<1ms', false],
      ],
    );
    assert.equal(formatActual(res[1]), '4ms');
    assert.equal(formatActual(res[3]), '0.498%');
    const bad = evaluateThresholds(
      report({ history: { ...report().history, ok: false, verdict: 'violated' } }),
      [parseThreshold('history==ok')],
    );
    assert.deepEqual([bad[0].ok, bad[0].actual], [false, 'violated']);
  });
});

describe('options', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-load-opts-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('stages: DURATION:TARGET with ms, s, m or bare ms', () => {
    assert.deepEqual(parseStage('2s:500'), { durationMs: 2000, target: 500 });
    assert.deepEqual(parseStage('250ms:3'), { durationMs: 250, target: 3 });
    assert.deepEqual(parseStage('1m:0'), { durationMs: 60_000, target: 0 });
    assert.deepEqual(parseStage('1500:10'), { durationMs: 1500, target: 10 });
    for (const bad of ['2s', ':5', '2h:5', '0:5', '11m:1', '2s:-1'])
      assert.throws(() => parseStage(bad), bad);
  });

  it('config files: flag names, lists for repeatables, unknown keys refused', () => {
    const f = join(dir, 'c.json');
    writeFileSync(
      f,
      JSON.stringify({ workload: 'ping-pong', pages: 4, threshold: 'p99<1s', stage: ['1s:2'], quiet: true }),
    );
    assert.deepEqual(readConfig(f), {
      workload: 'ping-pong',
      pages: '4',
      threshold: ['p99<1s'],
      stage: ['1s:2'],
      quiet: true,
    });
    for (const bad of [{ nope: 1 }, { pages: [1] }, { quiet: 'yes' }, [1], { compare: true }]) {
      writeFileSync(f, JSON.stringify(bad));
      assert.throws(() => readConfig(f), /--config/, JSON.stringify(bad));
    }
    writeFileSync(f, '{');
    assert.throws(() => readConfig(f), /not JSON/);
  });

  it('bad workloads, models and thresholds are usage errors (exit 2) before any instance starts', async () => {
    const bad = join(dir, 'bad.mjs');
    writeFileSync(
      bad,
      "export default { name: 'bad', plan: () => ({ keys: [{ page: 99, word: 0 }] }), op(t) { t.read(0); } };",
    );
    const notModule = join(dir, 'nm.mjs');
    writeFileSync(notModule, 'export const x = 1;');
    const lines: string[] = [];
    const quiet = { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l), isTTY: false };
    for (const args of [
      ['--workload', bad, '--pages', '2'],
      ['--workload', notModule],
      ['--workload', join(dir, 'missing.js')],
      ['--rate', '0'],
      ['--rate', 'fast'],
      ['--stage', '1s:99'],
      ['--duration', '1000', '--stage', '1s:2'],
      ['--threshold', 'p99<soon'],
      ['--compare', 'a.json'],
      ['--config', join(dir, 'nope.json')],
    ])
      assert.equal(await runLoadCli(args, quiet), 2, `${args.join(' ')}: ${lines.join('\n')}`);
    assert.ok(lines.some((l) => /bad plan \(keys\.0\.page/.test(l)));
    assert.ok(lines.some((l) => /not a workload module/.test(l)));
  });

  it('history files per workload', () => {
    assert.equal(historyFileFor('h.jsonl', 'mixed', false), 'h.jsonl');
    assert.equal(historyFileFor('/x/h.jsonl', 'mixed', true), '/x/h.mixed.jsonl');
    assert.equal(historyFileFor('h', 'mixed', true), 'h.mixed.jsonl');
  });
});

describe('comparison', () => {
  it('change of throughput and of each percentile, better or worse, parameters side by side', () => {
    const a = report();
    const b = report({
      ops: { ...a.ops, opsPerSec: 3000 },
      opLatencyUs: { ...a.opLatencyUs, all: pct(150, 4000) },
      params: { ...a.params, seed: 2 },
    });
    const c = compareReports(a, b);
    const m = (n: string) => c.metrics.find((x) => x.metric === n)!;
    assert.deepEqual([m('ops/s').changePct, m('ops/s').verdict], [50, 'better']);
    assert.deepEqual([m('latency p50 (us)').changePct, m('latency p50 (us)').verdict], [-50, 'better']);
    assert.deepEqual([m('latency p99 (us)').changePct, m('latency p99 (us)').verdict], [0, 'same']);
    assert.equal(m('history').verdict, 'same');
    const seed = c.params.find((p) => p.param === 'seed')!;
    assert.deepEqual([seed.old, seed.new, seed.differs], ['1', '2', true]);
    assert.equal(c.params.find((p) => p.param === 'pages')!.differs, false);
    const text = compareText([c]);
    assert.match(text, /ops\/s +2,000 +3,000 +\+50% +better/);
    assert.match(text, /seed +1 +2 +≠/);
  });
});

describe('history files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-hist-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const ops: HistoryOp[] = [
    { process: 'b', address: 1, kind: 'r', value: 7, invokeTs: 3, responseTs: 4, intendedTs: 2.5 },
    { process: 'a', address: 1, kind: 'w', value: 7, invokeTs: 1, responseTs: 2 },
  ];

  it('round-trips operations, lost chunks and the header; the verdict is the same', async () => {
    const f = join(dir, 'h.jsonl');
    const lost = [
      { process: 'c', chunk: 0, error: 'run:E_TIMEOUT', maxOps: 5, writeValues: { from: 1, to: 5 } },
    ];
    assert.equal(writeHistoryFile(f, { workload: 'w', clockSlackMs: 0.02 }, ops, lost), 4);
    const h = await readHistoryFile(f);
    assert.equal(h.meta?.workload, 'w');
    assert.equal(h.meta?.clockSlackMs, 0.02);
    assert.deepEqual(h.ops, [ops[1], ops[0]], 'ordered by invocation');
    assert.deepEqual(h.lost, lost);
    assert.deepEqual(checkHistory(h.ops, 20, 0.02, h.lost), checkHistory(ops, 20, 0.02, lost));
  });

  it('names the line of anything malformed', async () => {
    const head = JSON.stringify({
      xpmesh: 'history',
      version: 1,
      workload: 'w',
      clockSlackMs: 0.02,
      initialValue: 0,
    });
    const cases: Array<[string, RegExp]> = [
      ['{"process":"a","address":-1,"kind":"r","value":0,"invokeTs":1,"responseTs":2}', /:2: "address"/],
      [
        '{"process":"a","address":1,"kind":"r","value":4294967296,"invokeTs":1,"responseTs":2}',
        /:2: "value"/,
      ],
      [
        '{"process":"a","address":1,"kind":"r","value":1,"invokeTs":3,"responseTs":2}',
        /:2: "responseTs" is before/,
      ],
      ['[1]', /:2: not a JSON object/],
      ['{oops', /:2: not JSON/],
      [head, /:2: a second header/],
      ['{"lost":{"process":"a","chunk":0,"error":"x","maxOps":1,"writeValues":{"from":1}}}', /writeValues/],
    ];
    for (const [line, re] of cases) {
      const f = join(dir, 'bad.jsonl');
      writeFileSync(f, `${head}\n${line}\n`);
      await assert.rejects(
        readHistoryFile(f),
        (e: unknown) => e instanceof HistoryFileError && re.test(e.message),
        line,
      );
    }
    const f = join(dir, 'v2.jsonl');
    writeFileSync(f, `${JSON.stringify({ xpmesh: 'history', version: 2 })}\n`);
    await assert.rejects(readHistoryFile(f), /format version 2/);
  });
});
