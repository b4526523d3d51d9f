/**
 * A lost `run` chunk (e.g. the admin call timed out) takes its operations out of the history. The
 * reads of the values it wrote must then not be reported as `unknown-value` violations: the check
 * says the history is incomplete (which processes, how many operations at most) and keeps them as
 * consequences; genuine violations among the recorded operations still count.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdminCallError, type AdminClient } from '../daemon/admin-client.js';
import type { HarnessArgs, HarnessResult } from './harness.js';
import { checkHistory, type HistoryOp, type LostChunk } from './history.js';
import { buildReport, htmlReport, textReport } from './report.js';
import { type LoadOptions, lostChunk, type RunOutcome, runWorkload } from './runner.js';
import { builtinWorkload } from './workloads.js';

const op = (
  process: string,
  kind: 'r' | 'w',
  value: number,
  invokeTs: number,
  responseTs: number,
  address = 1,
): HistoryOp => ({ process, address, kind, value, invokeTs, responseTs });

/** Process index 1 ("n2/pid1") lost its first chunk: up to 5 ops, writes of values (1 << 20) | 1..5. */
const LOST: LostChunk = lostChunk('n2/pid1', 1, 0, 0, 5, 'run:E_TIMEOUT');
const lostValue = (1 << 20) | 3;

describe('history check with lost chunks', () => {
  it('describes the lost chunk: its processes, its op bound, the values it may have written', () => {
    assert.deepEqual(LOST, {
      process: 'n2/pid1',
      chunk: 0,
      error: 'run:E_TIMEOUT',
      maxOps: 5,
      writeValues: { from: (1 << 20) | 1, to: (1 << 20) | 5 },
    });
    // A later chunk starts after the sequence numbers already used; the program caps a call at 10^6 ops.
    // Sequence numbers stop at 2^20 - 1.
    const later = lostChunk('n1/pid2', 2, 3, 100_000, 5_000_000, 'run:E_CONNECT');
    assert.equal(later.maxOps, 1_000_000);
    assert.deepEqual(later.writeValues, { from: (2 << 20) | 100_001, to: (2 << 20) | ((1 << 20) - 1) });
  });

  it('without the lost chunk, a read of its value looks like an unknown-value violation', () => {
    const h = [
      op('n1/pid1', 'w', 10, 0, 1),
      op('n1/pid1', 'r', lostValue, 5, 6),
      op('n3/pid1', 'r', 10, 2, 3),
    ];
    const r = checkHistory(h);
    assert.equal(r.ok, false);
    assert.equal(r.verdict, 'violated');
    assert.equal(r.violations[0].rule, 'unknown-value');
  });

  it('with it, the history is incomplete, and the read is a consequence, not a violation', () => {
    const h = [
      op('n1/pid1', 'w', 10, 0, 1),
      op('n1/pid1', 'r', lostValue, 5, 6),
      op('n3/pid1', 'r', 10, 2, 3),
    ];
    const r = checkHistory(h, 20, 0, [LOST]);
    assert.equal(r.ok, false, 'an incomplete history is not certified');
    assert.equal(r.verdict, 'incomplete');
    assert.deepEqual(r.violations, []);
    assert.equal(r.incomplete?.rule, 'history-incomplete');
    assert.deepEqual(r.incomplete?.processes, ['n2/pid1']);
    assert.equal(r.incomplete?.maxLostOps, 5);
    assert.equal(r.incomplete?.readsOfLostWrites, 1);
    assert.equal(r.consequences?.length, 1);
    assert.equal(r.consequences?.[0].rule, 'unknown-value');
    assert.match(r.incomplete?.message ?? '', /n2\/pid1.*run:E_TIMEOUT.*at most 5 operation/);
  });

  it('still reports genuine violations: a stale read, and an unknown value no lost chunk wrote', () => {
    const stale = [
      op('a', 'w', 10, 0, 1),
      op('b', 'w', 11, 2, 3),
      op('c', 'r', 10, 4, 5),
      op('c', 'r', lostValue, 6, 7),
    ];
    const r = checkHistory(stale, 20, 0, [LOST]);
    assert.equal(r.verdict, 'violated');
    assert.deepEqual(
      r.violations.map((v) => v.rule),
      ['overwritten-value'],
    );
    assert.equal(r.incomplete?.readsOfLostWrites, 1, 'the history is still flagged incomplete');

    const alien = checkHistory(
      [op('a', 'r', (1 << 20) | 6, 0, 1), op('a', 'r', (3 << 20) | 1, 2, 3)],
      20,
      0,
      [LOST],
    );
    assert.equal(alien.verdict, 'violated');
    assert.equal(alien.violations.length, 2, 'values outside the lost range are unknown values');
    assert.ok(alien.violations.every((v) => v.rule === 'unknown-value'));
  });

  it('a lost chunk whose written values are unknown explains any unknown value', () => {
    const vague: LostChunk = { ...LOST, maxOps: null, writeValues: null };
    const r = checkHistory([op('a', 'r', 12345, 0, 1)], 20, 0, [vague]);
    assert.equal(r.verdict, 'incomplete');
    assert.equal(r.incomplete?.maxLostOps, null);
    assert.match(r.incomplete?.message ?? '', /an unknown number of operation/);
  });

  it('lost-value reads do not crowd genuine violations out of the capped list', () => {
    const h: HistoryOp[] = [];
    for (let i = 0; i < 30; i++) h.push(op('a', 'r', (1 << 20) | 1, i, i + 0.5, 1));
    h.push(op('b', 'r', 999, 0, 1, 2));
    const r = checkHistory(h, 5, 0, [LOST]);
    assert.deepEqual(
      r.violations.map((v) => v.address),
      [2],
    );
    assert.equal(r.incomplete?.readsOfLostWrites, 30);
    assert.equal(r.consequences?.length, 5);
  });

  it('is unchanged for a complete history', () => {
    const r = checkHistory([op('a', 'w', 10, 0, 1), op('b', 'r', 10, 2, 3)]);
    assert.deepEqual(
      [r.ok, r.verdict, r.incomplete, r.consequences],
      [true, 'linearizable', undefined, undefined],
    );
  });
});

/**
 * Stand-in admin clients of a 2-instance cluster (one process each): the home's process reads the
 * value the attacher's first chunk wrote, and the attacher's `run` fails with `failRun`.
 */
function fakeCluster(failRun: AdminCallError): AdminClient[] {
  const mk = (node: string, run: (args: HarnessArgs) => Promise<{ result: HarnessResult }>) => {
    let pids = 0;
    const ops: Record<string, (body: Record<string, unknown>) => Promise<unknown>> = {
      spawn: async () => ({ pid: ++pids }),
      mmap: async () => ({ addr: 0x1000_0000 }),
      make: async () => ({ segid: `${node}:1` }),
      get: async () => ({ apid: 'apid-1' }),
      attach: async () => ({ addr: 0x2000_0000 }),
      check: async () => ({ ok: true, violations: [] }),
      exit: async () => ({ ok: true }),
      run: async (body) => run(body.args as HarnessArgs),
    };
    return {
      base: `http://${node}.invalid`,
      waitHealthy: async () => {},
      op: async (name: string, body: Record<string, unknown> = {}) => {
        const f = ops[name];
        if (!f) throw new Error(`unexpected op ${name}`);
        return f(body);
      },
      get: async (path: string) =>
        path === '/status' ? { node, peers: [{ state: 'up' }], driver: { counters: {} } } : '',
    } as unknown as AdminClient;
  };
  const home = mk('n1', async (a) => ({
    result: {
      proc: a.proc,
      pid: 1,
      kinds: 'r',
      keys: [0],
      values: [(1 << 20) | 1], // the first value process 1 writes
      invoke: [1000],
      response: [1001],
      seq: a.seqBase,
      iterations: 1,
      state: '',
      errors: {},
      errorSamples: [],
    },
  }));
  const attacher = mk('n2', async () => {
    throw failRun;
  });
  return [home, attacher];
}

const OPTS: LoadOptions = {
  workload: builtinWorkload('ping-pong')!,
  procsPerInstance: 1,
  pages: 1,
  segmentPages: 1,
  durationMs: 60_000,
  maxOps: 2,
  seed: 1,
};

describe('load report of a run with a lost chunk', () => {
  const timeout = () => new AdminCallError('E_TIMEOUT', 0, 'POST http://n2.invalid/ops/run: timed out');

  it('the runner records the lost chunk, and the report says incomplete instead of a violation', async () => {
    const run: RunOutcome = await runWorkload(fakeCluster(timeout()), OPTS);
    assert.deepEqual(run.errors, { 'run:E_TIMEOUT': 1 });
    assert.equal(run.history.length, 1);
    assert.equal(run.lostChunks.length, 1);
    assert.deepEqual(run.lostChunks[0], {
      process: 'n2/pid1',
      chunk: 0,
      error: 'run:E_TIMEOUT',
      maxOps: 1,
      writeValues: { from: (1 << 20) | 1, to: (1 << 20) | 1 },
    });

    const report = buildReport(OPTS, run, { mode: 'connect', urls: [] }, new Date(0));
    assert.equal(report.ok, false);
    assert.equal(report.history.verdict, 'incomplete');
    assert.deepEqual(report.history.violations, []);
    assert.deepEqual(report.history.incomplete?.processes, ['n2/pid1']);
    assert.equal(report.history.incomplete?.maxLostOps, 1);
    assert.equal(report.history.incomplete?.readsOfLostWrites, 1);

    const text = textReport(report);
    assert.match(text, /history check +INCOMPLETE: 1 chunk\(s\) of n2\/pid1 lost, at most 1 operation/);
    assert.match(text, /⚠ history-incomplete: /);
    assert.match(text, /lost: n2\/pid1 chunk 0 \(run:E_TIMEOUT\)/);
    assert.doesNotMatch(text, /FAILED|✘/);

    const json = JSON.parse(JSON.stringify(report));
    assert.equal(json.ok, false);
    assert.equal(json.history.verdict, 'incomplete');
    assert.equal(json.history.incomplete.rule, 'history-incomplete');
    assert.equal(json.history.incomplete.chunks[0].error, 'run:E_TIMEOUT');
    assert.equal(json.history.consequences[0].rule, 'unknown-value');

    const html = htmlReport(report);
    assert.match(html, /History check: INCOMPLETE/);
    assert.match(html, /<div id="incomplete">/);
    assert.doesNotMatch(html, /id="violations"/);
  });

  it('a run the instance refused before it started loses nothing', async () => {
    const refused = new AdminCallError('E_SHUTTING_DOWN', 503, 'the instance is shutting down');
    const run = await runWorkload(fakeCluster(refused), OPTS);
    assert.deepEqual(run.errors, { 'run:E_SHUTTING_DOWN': 1 });
    assert.deepEqual(run.lostChunks, []);
    // Nothing explains the value the home read: that is a violation.
    const report = buildReport(OPTS, run, { mode: 'connect', urls: [] }, new Date(0));
    assert.equal(report.history.verdict, 'violated');
    assert.equal(report.history.violations[0].rule, 'unknown-value');
  });
});
