/**
 * The workload harness on a stand-in process context (a Map as memory): what the op sees (and
 * cannot reach), the recording, the limits, and the open model's arrival schedule.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ProcessContext } from '@xpmesh/kernel';
import { arrivalsBy, arrivalTime, type HarnessArgs, opExpression, workloadProgram } from './harness.js';
import { BUILTIN_WORKLOADS, checkModule, makePlan, touchedPages } from './workloads.js';

function memory(refuse = new Set<number>()): ProcessContext {
  const m = new Map<number, number>();
  return {
    pid: 7,
    read32: (a: number) => {
      if (refuse.has(a)) throw Object.assign(new Error('no page'), { code: 'SIGBUS' });
      return m.get(a) ?? 0;
    },
    write32: (a: number, v: number) => {
      if (refuse.has(a)) throw Object.assign(new Error('no page'), { code: 'SIGBUS' });
      m.set(a, v);
    },
  } as unknown as ProcessContext;
}

const args = (op: string, more: Partial<HarnessArgs> = {}): HarnessArgs => ({
  proc: 1,
  procs: 2,
  seed: 5,
  vaddrs: [0, 4, 8, 12],
  workload: { name: 't', op, params: { x: 3 } },
  state: '',
  maxOps: 50,
  durationMs: 1000,
  seqBase: 0,
  ...more,
});

describe('workload harness', () => {
  it('records every access with unique write values and keeps t.state across chunks', () => {
    const op =
      '(t) => { t.state.n = (t.state.n ?? 0) + 1; if (t.state.n % 2) t.write(t.state.n % t.keys); else t.read(0); }';
    const r = workloadProgram(memory(), args(op, { maxOps: 10 }));
    assert.equal(r.kinds.length, 10);
    assert.equal(r.kinds, 'wrwrwrwrwr');
    const writes = r.values.filter((_, i) => r.kinds[i] === 'w');
    assert.deepEqual(
      writes,
      [1, 2, 3, 4, 5].map((s) => (1 << 20) | s),
    );
    assert.equal(JSON.parse(r.state).n, 10);
    const r2 = workloadProgram(memory(), args(op, { maxOps: 2, state: r.state, seqBase: r.seq }));
    assert.equal(JSON.parse(r2.state).n, 12);
    assert.equal(r2.values[0], (1 << 20) | 6, 'sequence numbers continue');
  });

  it('the op sees t and the language, not Node, the harness or code generation', () => {
    const op = `(t) => {
      t.state.g = [typeof process, typeof require, typeof h, typeof setTimeout, typeof Buffer].join();
      try { t.state.eval = (0, eval)('1'); } catch (e) { t.state.eval = String(e.message); }
      try { t.state.fn = t.read.constructor('return process')(); } catch (e) { t.state.fn = String(e.message); }
      t.state.params = t.params.x;
      t.read(0);
    }`;
    const r = workloadProgram(memory(), args(op, { maxOps: 1 }));
    const st = JSON.parse(r.state);
    assert.equal(st.g, 'undefined,undefined,undefined,undefined,undefined');
    assert.match(st.eval, /Code generation from strings disallowed/);
    assert.match(st.fn, /Code generation from strings disallowed/);
    assert.equal(st.params, 3);
  });

  it('an op that replaces built-ins cannot change the harness', () => {
    const op = `(t) => {
      globalThis.JSON = { stringify: () => ({}), parse: () => ({}) };
      globalThis.Error = function () { return {}; };
      t.state.n = (t.state.n ?? 0) + 1;
      t.read(0);
    }`;
    const r1 = workloadProgram(memory(), args(op, { maxOps: 2 }));
    const r2 = workloadProgram(memory(), args(op, { maxOps: 2, state: r1.state }));
    assert.equal(r2.state, '{"n":4}');
    const r3 = workloadProgram(memory(), args(op.replace('t.read(0)', 't.read(99)'), { maxOps: 2 }));
    assert.ok(r3.errors.E_KEY >= 1, 'refusals still come back as errors');
  });

  it('a refused access throws SIGBUS into the op, is counted, and did not take effect', () => {
    const op = '(t) => { try { t.write(1); } catch (e) { t.state.code = e.code; } t.read(0); }';
    const r = workloadProgram(memory(new Set([4])), args(op, { maxOps: 3 }));
    assert.equal(r.errors.SIGBUS, 3);
    assert.equal(JSON.parse(r.state).code, 'SIGBUS');
    assert.equal(r.kinds, 'rrr');
  });

  it('bad keys, thrown errors, endless loops and oversized state are stopped and counted', () => {
    const badKey = workloadProgram(memory(), args('(t) => t.read(99)'));
    assert.ok(badKey.errors.E_KEY >= 1);
    assert.equal(badKey.kinds, '');
    const thrower = workloadProgram(memory(), args('(t) => { throw new TypeError("oops"); }'));
    assert.equal(thrower.errors.E_WORKLOAD, 20, 'stops after 20 errors in a row');
    const loop = workloadProgram(memory(), args('(t) => { for (;;) {} }', { durationMs: 50, graceMs: 100 }));
    assert.equal(loop.fatal, 'E_PROGRAM_TIMEOUT');
    const big = workloadProgram(
      memory(),
      args('(t) => { t.state.s = "x".repeat(70000); t.read(0); }', { maxOps: 1 }),
    );
    assert.equal(big.fatal, 'E_STATE');
  });

  it('ops written as a method, a function or an arrow all compile', () => {
    for (const src of [
      'op(t) { t.read(0); }',
      'function (t) { t.read(0); }',
      't => t.read(0)',
      'function op(t) { t.read(0) } // c',
    ])
      assert.equal(workloadProgram(memory(), args(src, { maxOps: 2 })).kinds, 'rr', opExpression(src));
  });

  it('every built-in workload is a valid module whose op runs on its own', () => {
    for (const w of BUILTIN_WORKLOADS) {
      checkModule(w, w.name);
      const plan = makePlan(w, {
        procs: 4,
        instances: 2,
        pages: 4,
        segmentPages: 8,
        touchedPages: touchedPages(4, 8),
        seed: 1,
      });
      const r = workloadProgram(memory(), {
        ...args(w.op.toString(), { maxOps: 100 }),
        vaddrs: plan.keys.map((k) => k.key * 4),
        workload: { name: w.name, op: w.op.toString(), params: plan.params },
      });
      assert.equal(r.kinds.length, 100, `${w.name}: ${JSON.stringify(r.errors)}`);
    }
  });

  it('plans are checked: keys in the segment, distinct, bounded params', () => {
    const base = BUILTIN_WORKLOADS[0];
    const input = { procs: 2, instances: 1, pages: 2, segmentPages: 2, touchedPages: [0, 1], seed: 1 };
    const bad = (keys: unknown, params?: unknown) =>
      assert.throws(
        () => makePlan({ ...base, plan: () => ({ keys, params }) as never }, input),
        /bad plan|twice|params/,
      );
    bad([{ page: 2, word: 0 }]);
    bad([{ page: 0, word: 1024 }]);
    bad([
      { page: 0, word: 1 },
      { page: 0, word: 1 },
    ]);
    bad([]);
    bad([{ page: 0, word: 0 }], { s: 'x'.repeat(70_000) });
    assert.throws(() => checkModule({ name: 'x', plan: () => ({}), op: async () => {} }, 'm'), /synchronous/);
    assert.throws(() => checkModule({ name: 'x', op: () => {} }, 'm'), /plan/);
  });
});

describe('open model schedule', () => {
  it('a constant rate gives evenly spaced arrivals; a ramp gives the integral', () => {
    const flat = [
      { tMs: 0, rate: 100 },
      { tMs: 1000, rate: 100 },
    ];
    assert.equal(arrivalTime(flat, 0), 0);
    assert.ok(Math.abs(arrivalTime(flat, 10) - 100) < 1e-9);
    assert.ok(Math.abs(arrivalsBy(flat, 500) - 50) < 1e-9);
    // 0 → 200 ops/s over 1 s: 100 arrivals; the 25th at sqrt(0.25) s.
    const ramp = [
      { tMs: 0, rate: 0 },
      { tMs: 1000, rate: 200 },
    ];
    assert.ok(Math.abs(arrivalsBy(ramp, 1000) - 100) < 1e-9);
    assert.ok(Math.abs(arrivalTime(ramp, 25) - 500) < 1e-6);
    for (const k of [1, 7, 50, 99]) assert.ok(Math.abs(arrivalsBy(ramp, arrivalTime(ramp, k)) - k) < 1e-6);
    // After the last point the last rate holds; a rate of 0 never arrives.
    assert.ok(Math.abs(arrivalTime(ramp, 300) - 2000) < 1e-6);
    assert.equal(arrivalTime([{ tMs: 0, rate: 0 }], 1), Number.POSITIVE_INFINITY);
  });

  it('the harness paces calls at their due times and records when each was due', () => {
    const r = workloadProgram(
      memory(),
      args('(t) => t.read(0)', {
        maxOps: 1000,
        durationMs: 300,
        arrival: { points: [{ tMs: 0, rate: 100 }], phase: 0, next: 0, elapsedMs: 0 },
      }),
    );
    const n = r.kinds.length;
    assert.ok(n >= 25 && n <= 31, `about 30 calls in 300 ms at 100/s, got ${n}`);
    assert.equal(r.nextArrival, n);
    const due = r.intended!;
    for (let i = 1; i < n; i++) assert.ok(Math.abs(due[i] - due[i - 1] - 10) < 1e-6, 'due 10 ms apart');
    for (let i = 0; i < n; i++) assert.ok(r.invoke[i] >= due[i], 'never started before it was due');
  });
});
