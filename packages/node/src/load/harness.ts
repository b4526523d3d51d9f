/**
 * The workload harness: runs INSIDE a process (its worker thread, through the admin `run`
 * operation), so every access goes through the process's page table and takes real page faults.
 * It runs one chunk of a workload: it calls the workload's `op` function (shipped as source text,
 * docs/load.md "Writing a workload") over and over, records every read and write it makes for the
 * history check, paces the calls in the open model (arrival rate), and enforces the limits.
 *
 * The `op` function runs in its own V8 context (node:vm) inside the worker: it sees only the
 * `OpContext` handle built here (read/write by key, a seeded random, its params and state) and the
 * JavaScript built-ins; no require, import, process, timers or Node API, and no code generation
 * from strings. The whole chunk runs under a vm timeout, so a workload that loops forever is
 * stopped. node:vm is not a security boundary: only an admin-token holder may `run` (docs/load.md).
 *
 * Write values are unique per run: (proc << 20) | seq. Timestamps are `performance.timeOrigin +
 * performance.now()` in ms, comparable across the threads and processes of one machine.
 */
import vm from 'node:vm';
import type { ProcessContext } from '@xpmesh/kernel';
import { type LoadProgramResult, MAX_PROCS, MAX_SEQ } from './program.js';

/** Piecewise-linear arrival rate of ONE process: points (ms from `startTs`, ops/s), ramped between. */
export interface ArrivalSchedule {
  /**
   * Time origin of the schedule in this worker's clock (the `arrivalStartTs` an earlier chunk
   * returned). Absent on a process's first chunk: the origin is then `elapsedMs` before now, so
   * the tester's and the instance's clocks need not agree.
   */
  startTs?: number;
  /** With no `startTs`: how long the run had been going when this chunk was sent. */
  elapsedMs?: number;
  points: Array<{ tMs: number; rate: number }>;
  /** This process's arrivals are at the times its cumulative count N(t) reaches k + phase. */
  phase: number;
  /** Index k of the next arrival (carried from chunk to chunk). */
  next: number;
}

export interface HarnessArgs {
  /** Global process index, 0..2047 (the high bits of every written value). */
  proc: number;
  procs: number;
  seed: number;
  /** Virtual address of each key in THIS process (index = key). */
  vaddrs: number[];
  workload: { name: string; op: string; params: unknown };
  /** The op's `t.state` as JSON, from the previous chunk ("" for the first). */
  state: string;
  /** Hard caps: the chunk stops at whichever comes first. */
  maxOps: number;
  durationMs: number;
  /** Sequence numbers already used by this process (earlier chunks). */
  seqBase: number;
  /** Open model: when each call of `op` is due. Absent: closed model (as fast as it can). */
  arrival?: ArrivalSchedule;
  /** How long the chunk may overrun its duration before the vm stops it (at most CHUNK_GRACE_MS). */
  graceMs?: number;
}

/** A chunk's recorded accesses: the same record as the old program's (LoadProgramResult), plus the
 * harness's own fields. */
export interface HarnessResult extends LoadProgramResult {
  /** Open model only: the intended start of the `op` call each access belongs to. */
  intended?: number[];
  /** Calls of `op` made. */
  iterations: number;
  /** Open model: the index of the next arrival (those due and not started are queued). */
  nextArrival?: number;
  /** The schedule's origin in this worker's clock (send it back as `arrival.startTs`). */
  arrivalStartTs?: number;
  state: string;
  /** Set when the chunk could not go on at all (the runner stops driving this process). */
  fatal?: string;
}

export const HARNESS_MODULE = 'load/harness.js';
export const HARNESS_EXPORT = 'workloadProgram';
/** The most one chunk can do, whatever it is asked. */
export const CHUNK_MAX_OPS = 1_000_000;
export const CHUNK_MAX_MS = 600_000;
/** A chunk may overrun its duration by this much (a fault in flight) before the vm stops it. */
export const CHUNK_GRACE_MS = 30_000;
export const MAX_STATE_BYTES = 64 * 1024;
export const MAX_SOURCE_BYTES = 64 * 1024;
const MAX_CONSECUTIVE_ERRORS = 20;

/**
 * Cumulative arrivals of a piecewise-linear rate (ops/s) at `tMs`, and its inverse. Before the
 * first point and after the last the rate is the nearest point's.
 */
export function arrivalsBy(points: ArrivalSchedule['points'], tMs: number): number {
  let n = 0;
  let prevT = 0;
  let prevR = points.length ? points[0].rate : 0;
  for (const p of points) {
    if (tMs <= p.tMs) {
      const r = prevR + ((p.rate - prevR) * (tMs - prevT)) / Math.max(1e-9, p.tMs - prevT);
      return n + ((prevR + r) / 2) * ((tMs - prevT) / 1000);
    }
    n += ((prevR + p.rate) / 2) * ((p.tMs - prevT) / 1000);
    prevT = p.tMs;
    prevR = p.rate;
  }
  return n + prevR * ((tMs - prevT) / 1000);
}

/** The time (ms from the origin) at which `arrivalsBy` reaches `k`; Infinity if it never does. */
export function arrivalTime(points: ArrivalSchedule['points'], k: number): number {
  let n = 0;
  let prevT = 0;
  let prevR = points.length ? points[0].rate : 0;
  const solve = (r0: number, r1: number, dt: number, need: number): number => {
    // n(x) = r0 x + (r1 - r0) x^2 / (2 dt), x in seconds; find x with n(x) = need.
    const a = (r1 - r0) / (2 * dt);
    if (Math.abs(a) < 1e-12) return r0 > 0 ? need / r0 : Number.POSITIVE_INFINITY;
    const disc = r0 * r0 + 4 * a * need;
    return (-r0 + Math.sqrt(Math.max(0, disc))) / (2 * a);
  };
  for (const p of points) {
    const dt = (p.tMs - prevT) / 1000;
    const seg = ((prevR + p.rate) / 2) * dt;
    if (dt > 0 && n + seg >= k) return prevT + solve(prevR, p.rate, dt, k - n) * 1000;
    n += seg;
    prevT = p.tMs;
    prevR = p.rate;
  }
  return prevR > 0 ? prevT + ((k - n) / prevR) * 1000 : Number.POSITIVE_INFINITY;
}

/**
 * Builds, inside the op's context, the loop and the `t` handle the op function receives. It gets
 * host functions only through `h` (kept in this closure, never on an object the op can reach, and
 * the op is compiled in its own script, so it cannot name `h`) and hands the op only objects of
 * its own realm and primitives. Host functions never throw into it: a refused access comes back
 * as NaN and the error text is fetched as a string.
 */
const SANDBOX_SOURCE = `(function () {
'use strict';
// Bound before any op runs: an op that replaces a global cannot change the harness.
const imul = Math.imul, parse = JSON.parse, stringify = JSON.stringify, freeze = Object.freeze;
const WeakSetC = WeakSet, ErrorC = Error, StringC = String;
return function (h, op, paramsJson, stateJson, keyCount, proc, procs, seed) {
  let a = seed >>> 0;
  const random = () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = imul(a ^ (a >>> 15), 1 | a);
    x = (x + imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const ours = new WeakSetC();
  const fail = (text) => {
    const i = text.indexOf('|');
    const e = new ErrorC(text.slice(i + 1));
    e.code = text.slice(0, i);
    ours.add(e);
    return e;
  };
  const hAccess = h.access;
  const hBegin = h.begin;
  const access = (write, key) => {
    const v = hAccess(write, key);
    if (v !== v) throw fail(h.lastError());
    return v;
  };
  const t = freeze({
    proc, procs, keys: keyCount,
    params: paramsJson === '' ? undefined : parse(paramsJson),
    state: stateJson === '' ? {} : parse(stateJson),
    random,
    read: (key) => access(false, key),
    write: (key) => access(true, key),
  });
  return function runChunk() {
    while (hBegin()) {
      try {
        op(t);
      } catch (e) {
        if (!ours.has(e)) {
          const code = e !== null && typeof e === 'object' && typeof e.code === 'string' ? e.code : 'E_WORKLOAD';
          h.opError(code, StringC(e !== null && typeof e === 'object' && 'message' in e ? e.message : e));
        }
      }
    }
    return stringify(t.state);
  };
};
})()`;

/**
 * The op function's text as an expression: a function or an arrow as is; a method (`op(t) {…}`,
 * what `toString()` gives for a method of an object literal) wrapped in an object.
 */
export function opExpression(source: string): string {
  const s = source.trim();
  let expr: string;
  try {
    new vm.Script(`(${s}\n)`);
    expr = `(${s}\n)`;
  } catch {
    expr = `(function () { const o = {${s}\n}; return o[Object.keys(o)[0]]; })()`;
  }
  // A vm context's global object answers every lookup through an interceptor: `Math.floor` in a
  // hot loop would cost more than the access it picks. The op sees the same built-ins, bound
  // once as locals of an enclosing function.
  return `(function () { const ${FAST_GLOBALS.map((g) => `${g} = globalThis.${g}`).join(', ')}; return ${expr}; })()`;
}

/** Built-ins an op is likely to use in its hot path. */
const FAST_GLOBALS = [
  'Math',
  'JSON',
  'Number',
  'String',
  'Object',
  'Array',
  'Boolean',
  'Map',
  'Set',
  'Error',
  'TypeError',
  'RangeError',
  'Int32Array',
  'Uint32Array',
  'Float64Array',
  'parseInt',
  'parseFloat',
  'isFinite',
  'isNaN',
];

interface Compiled {
  context: vm.Context;
  op: unknown;
  factory: (...a: unknown[]) => () => string;
}

/** Compiled sandboxes, by op source: a worker keeps them across chunks (bounded). */
const compiled = new Map<string, Compiled>();

/** Compile an op's source in a fresh context (throws on a syntax error or a non-function). */
export function compileSandbox(opSource: string): Compiled {
  const hit = compiled.get(opSource);
  if (hit) return hit;
  if (typeof opSource !== 'string' || opSource.length > MAX_SOURCE_BYTES)
    throw new Error(`the op source must be a string of at most ${MAX_SOURCE_BYTES} bytes`);
  const context = vm.createContext(Object.create(null), {
    name: 'xpmesh workload',
    codeGeneration: { strings: false, wasm: false },
  });
  // The harness first (it binds the built-ins it uses), then the op.
  const factory = new vm.Script(SANDBOX_SOURCE, { filename: 'xpmesh-harness.js' }).runInContext(
    context,
  ) as Compiled['factory'];
  const op = new vm.Script(opExpression(opSource), { filename: 'workload-op.js' }).runInContext(context);
  if (typeof op !== 'function') throw new Error('the workload op is not a function');
  const c = { context, op, factory };
  if (compiled.size >= 8) compiled.delete(compiled.keys().next().value as string);
  compiled.set(opSource, c);
  return c;
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Sleep this thread until `ts` (the process's worker blocks; nothing else runs in it meanwhile). */
function sleepUntil(now: () => number, ts: number): void {
  for (;;) {
    const ms = ts - now();
    if (ms <= 0) return;
    Atomics.wait(sleepCell, 0, 0, ms);
  }
}

export function workloadProgram(ctx: ProcessContext, a: HarnessArgs): HarnessResult {
  const origin = performance.timeOrigin;
  const now = () => origin + performance.now();
  const start = now();
  const maxOps = Math.max(0, Math.min(a.maxOps, CHUNK_MAX_OPS));
  const durationMs = Math.max(0, Math.min(a.durationMs, CHUNK_MAX_MS));
  const end = start + durationMs;
  const hi = (a.proc & (MAX_PROCS - 1)) << 20;
  const kinds: string[] = [];
  const out: HarnessResult = {
    proc: a.proc,
    pid: ctx.pid,
    kinds: '',
    keys: [],
    values: [],
    invoke: [],
    response: [],
    seq: a.seqBase,
    iterations: 0,
    state: a.state,
    errors: {},
    errorSamples: [],
  };
  const countError = (code: string, message: string) => {
    out.errors[code] = (out.errors[code] ?? 0) + 1;
    if (out.errorSamples.length < 5) out.errorSamples.push(`${code}: ${message}`);
  };
  const arrival = a.arrival ? { ...a.arrival } : undefined;
  const origin0 = arrival ? (arrival.startTs ?? start - Math.max(0, arrival.elapsedMs ?? 0)) : 0;
  const intended: number[] | undefined = arrival ? [] : undefined;
  let next = arrival?.next ?? 0;
  let current = 0;
  let seq = a.seqBase;
  let stopped = false;
  let consecutiveErrors = 0;
  let lastError = '';
  let killed: unknown;
  const n = a.vaddrs.length;

  const host = {
    begin(): boolean {
      if (stopped || killed !== undefined) return false;
      if (kinds.length >= maxOps || consecutiveErrors >= MAX_CONSECUTIVE_ERRORS) return false;
      if (arrival) {
        if (now() >= end) return false;
        const due = origin0 + arrivalTime(arrival.points, next + arrival.phase);
        if (due >= end) return false;
        sleepUntil(now, due);
        current = due;
        next++;
      } else if ((out.iterations & 15) === 0 && now() >= end) return false; // now() costs ~0.1-0.3 us
      out.iterations++;
      return true;
    },
    access(write: boolean, key: unknown): number {
      if (typeof key !== 'number' || !Number.isInteger(key) || key < 0 || key >= n) {
        const shown = typeof key === 'number' ? String(key) : typeof key; // never call into the op's objects
        lastError = `E_KEY|key ${shown} is not an integer in 0..${n - 1}`;
        countError('E_KEY', lastError.slice(6));
        consecutiveErrors++;
        return Number.NaN;
      }
      if (kinds.length >= maxOps || (write && seq >= MAX_SEQ)) {
        stopped = true;
        lastError = 'E_OP_LIMIT|the chunk reached its operation cap';
        return Number.NaN;
      }
      const va = a.vaddrs[key];
      const t0 = now();
      try {
        let value: number;
        if (write) {
          value = hi | (seq + 1);
          ctx.write32(va, value);
          seq++;
        } else value = ctx.read32(va);
        const t1 = now();
        kinds.push(write ? 'w' : 'r');
        out.keys.push(key);
        out.values.push(value);
        out.invoke.push(t0);
        out.response.push(t1);
        intended?.push(current);
        consecutiveErrors = 0;
        return value;
      } catch (err) {
        if ((err as Error)?.name === 'ProcessKilled') {
          killed = err;
          lastError = 'ESRCH|process killed';
          return Number.NaN;
        }
        // A refused access (SIGBUS/SIGSEGV: e.g. a detached or gone segment) did not take effect.
        const code = String((err as { code?: unknown }).code ?? 'EFAULT');
        const message = String((err as Error)?.message ?? err);
        countError(code, message);
        consecutiveErrors++;
        lastError = `${code}|${message}`;
        return Number.NaN;
      }
    },
    lastError: (): string => lastError,
    opError(code: string, message: string): void {
      countError(String(code).slice(0, 64), String(message).slice(0, 500));
      consecutiveErrors++;
    },
  };

  let runChunk: () => string;
  try {
    const sb = compileSandbox(a.workload.op);
    runChunk = sb.factory(
      host,
      sb.op,
      a.workload.params === undefined ? '' : JSON.stringify(a.workload.params),
      a.state ?? '',
      n,
      a.proc,
      a.procs,
      a.seed >>> 0,
    );
    (sb.context as Record<string, unknown>).__xpmeshRunChunk = runChunk;
    const state = new vm.Script('__xpmeshRunChunk()').runInContext(sb.context, {
      timeout: durationMs + Math.max(1, Math.min(a.graceMs ?? CHUNK_GRACE_MS, CHUNK_GRACE_MS)),
    }) as string;
    if (typeof state !== 'string') {
      countError('E_STATE', 't.state did not serialize to JSON');
      out.fatal = 'E_STATE';
    } else if (state.length > MAX_STATE_BYTES) {
      countError('E_STATE', `t.state is ${state.length} bytes as JSON (at most ${MAX_STATE_BYTES})`);
      out.fatal = 'E_STATE';
    } else out.state = state;
  } catch (err) {
    if (killed !== undefined) throw killed;
    const e = err as { code?: string; message?: string };
    const code = e?.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT' ? 'E_PROGRAM_TIMEOUT' : 'E_WORKLOAD';
    countError(code, String(e?.message ?? err));
    out.fatal = code;
  }
  if (killed !== undefined) throw killed;
  if (arrival) {
    // Arrivals due before the end that have not started stay queued for the next chunk: the
    // runner counts what is still queued when the run ends as dropped.
    out.nextArrival = next;
    out.arrivalStartTs = origin0;
    out.intended = intended;
  }
  out.kinds = kinds.join('');
  out.seq = seq;
  return out;
}
