/**
 * Runs one workload against a set of instances (admin clients; instance 0 is the home of the
 * shared segment): sets up processes, the segment and the attachments, drives the load program
 * inside every process in chunks (so progress is live and attach/detach can happen between
 * chunks), runs the workload's background events, then tears everything down and collects the
 * history and the instances' counters.
 */

import { PAGE_SIZE } from '@xpmesh/protocol/base';
import { AdminCallError, type AdminClient } from '../daemon/admin-client.js';
import {
  type ArrivalSchedule,
  arrivalsBy,
  HARNESS_EXPORT,
  HARNESS_MODULE,
  type HarnessArgs,
  type HarnessResult,
} from './harness.js';
import type { HistoryOp, LostChunk } from './history.js';
import { MAX_PROCS, MAX_SEQ, prng } from './program.js';
import { type InstanceSnapshot, snapshot } from './stats.js';
import type { WorkloadModule } from './workload-api.js';
import { makePlan, type Plan, touchedPages } from './workloads.js';

export const PROGRAM_MODULE = HARNESS_MODULE;

/** A k6-style stage: ramp linearly to `target` over `durationMs`. */
export interface Stage {
  durationMs: number;
  target: number;
}

/**
 * How operations arrive. `closed`: every active process calls `op` as fast as it can (the next
 * call starts when the last ended); with stages, the number of active processes ramps. `open`:
 * calls are due at a rate (ops/s over all processes, ramped by stages), whether or not the last
 * one ended, and latency is measured from when a call was due (no coordinated omission).
 */
export type LoadModel =
  | { kind: 'closed'; stages?: Stage[] }
  | { kind: 'open'; rate: number; stages?: Stage[] };

/** The target over time of a model with stages: points (ms, value), ramped linearly between. */
export function stagePoints(start: number, stages: readonly Stage[]): Array<{ tMs: number; value: number }> {
  const pts = [{ tMs: 0, value: start }];
  let t = 0;
  for (const s of stages) {
    t += s.durationMs;
    pts.push({ tMs: t, value: s.target });
  }
  return pts;
}

export function valueAt(pts: ReadonlyArray<{ tMs: number; value: number }>, tMs: number): number {
  if (pts.length === 0) return 0;
  if (tMs <= pts[0].tMs) return pts[0].value;
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1];
    const b = pts[i];
    if (tMs <= b.tMs)
      return b.tMs === a.tMs ? b.value : a.value + ((b.value - a.value) * (tMs - a.tMs)) / (b.tMs - a.tMs);
  }
  return pts[pts.length - 1].value;
}

/** Something that happened during the run, for the over-time chart (ms from the start). */
export interface TimelineEvent {
  tMs: number;
  kind: 'reclaim' | 'fork' | 'reattach' | 'fence' | 'peer-down' | 'peer-up' | 'unreachable' | 'stage';
  /** Events of one kind close together are merged: how many. */
  n: number;
  detail?: string;
}

export const MAX_TIMELINE = 5000;

export interface LoadOptions {
  workload: WorkloadModule;
  /** Where the workload came from: a built-in's name or the module's path (for the report). */
  workloadSource?: string;
  model?: LoadModel;
  procsPerInstance: number;
  pages: number;
  segmentPages: number;
  /** Hard caps: the run stops at whichever comes first. */
  durationMs: number;
  maxOps: number;
  seed: number;
  onProgress?: (p: Progress) => void;
}

export interface Progress {
  ops: number;
  errors: number;
  elapsedMs: number;
  /** ops/s over the last progress interval */
  opsPerSec: number;
}

export interface ProcInfo {
  index: number;
  instance: number;
  node: string;
  pid: number;
  base: number;
  apid?: string;
  role: 'home' | 'attacher';
}

export interface RunOutcome {
  procs: ProcInfo[];
  segid: string;
  history: HistoryOp[];
  startTs: number;
  endTs: number;
  elapsedMs: number;
  opsByProc: number[];
  errors: Record<string, number>;
  errorSamples: string[];
  /**
   * `run` chunks whose result never came back (timeout, lost connection, process killed…): their
   * operations may have happened but are not in `history`, which is therefore incomplete.
   */
  lostChunks: LostChunk[];
  events: {
    reclaims: Record<string, number>;
    forks: number;
    forkErrors: Record<string, number>;
    reattaches: number;
    chunks: number;
  };
  /** Background and cluster events with their time (bounded, merged when close together). */
  timeline: TimelineEvent[];
  /** Calls of `op`, and (open model) arrivals due before the end that never started. */
  iterations: number;
  dropped: number;
  /** The plan's parameters and key count (for the report). */
  keys: number;
  before: InstanceSnapshot[];
  after: InstanceSnapshot[];
  invariants: Array<{ node: string; ok: boolean; violations: string[] }>;
}

/**
 * Admin answers that refuse a call before its handler runs: a `run` refused so started no program
 * and lost no operation. Any other failure (E_TIMEOUT, E_CONNECT, a killed process…) may have come
 * after the program ran, in part or in full.
 */
const REFUSED_BEFORE_RUN = new Set([
  'E_BAD_REQUEST',
  'E_UNAUTHORIZED',
  'E_NOT_FOUND',
  'E_METHOD',
  'E_SHUTTING_DOWN',
]);

/** The most the load program can do in one call (its own hard cap, program.ts). */
const PROGRAM_MAX_OPS = 1_000_000;

/**
 * A chunk of process `proc` that started at sequence number `seqBase` with an op cap of `maxOps`
 * and whose result was lost: at most that many operations, and its writes wrote values
 * `(proc << 20) | s` for seqBase < s <= seqBase + maxOps (program.ts).
 */
export function lostChunk(
  process: string,
  proc: number,
  chunk: number,
  seqBase: number,
  maxOps: number,
  error: string,
): LostChunk {
  const n = Math.max(0, Math.min(maxOps, PROGRAM_MAX_OPS));
  const hi = (proc & (MAX_PROCS - 1)) << 20;
  const last = Math.min(seqBase + n, MAX_SEQ);
  return {
    process,
    chunk,
    error,
    maxOps: n,
    writeValues: last > seqBase ? { from: hi | (seqBase + 1), to: hi | last } : null,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const codeOf = (e: unknown) =>
  e instanceof AdminCallError ? e.code : ((e as { code?: string })?.code ?? 'ERROR');

/** Wait until every instance has `n - 1` peer links up (bounded). */
export async function waitMesh(clients: AdminClient[], deadlineMs = 30_000): Promise<string[]> {
  const end = Date.now() + deadlineMs;
  const nodes: string[] = [];
  for (const c of clients) {
    await c.waitHealthy(Math.max(1000, end - Date.now()));
    for (;;) {
      const s = await c.get<{ node: string; peers: Array<{ state: string }> }>('/status');
      const up = s.peers.filter((p) => p.state === 'up').length;
      if (up >= clients.length - 1) {
        nodes.push(s.node);
        break;
      }
      if (Date.now() > end) throw new Error(`${c.base}: ${up} peer link(s) up after ${deadlineMs} ms`);
      await sleep(100);
    }
  }
  return nodes;
}

export async function runWorkload(clients: AdminClient[], o: LoadOptions): Promise<RunOutcome> {
  const nInst = clients.length;
  const nProcs = nInst * o.procsPerInstance;
  if (nProcs > MAX_PROCS) throw new Error(`at most ${MAX_PROCS} processes`);
  const plan: Plan = makePlan(o.workload, {
    procs: nProcs,
    instances: nInst,
    pages: o.pages,
    segmentPages: o.segmentPages,
    touchedPages: touchedPages(o.pages, o.segmentPages),
    seed: o.seed,
  });
  const model: LoadModel = o.model ?? { kind: 'closed' };
  const opSource = o.workload.op.toString();
  const nodes = await waitMesh(clients);
  const size = o.segmentPages * PAGE_SIZE;
  const procs: ProcInfo[] = [];
  const home = clients[0];
  let segid = '';
  const events: RunOutcome['events'] = { reclaims: {}, forks: 0, forkErrors: {}, reattaches: 0, chunks: 0 };
  const errors: Record<string, number> = {};
  const errorSamples: string[] = [];
  const lostChunks: LostChunk[] = [];
  const history: HistoryOp[] = [];
  const opsByProc = new Array<number>(nProcs).fill(0);
  const forkChildren = new Set<number>();
  const timeline: TimelineEvent[] = [];
  let timelineFull = false;
  let iterations = 0;
  let dropped = 0;
  let runT0 = 0;
  const mark = (kind: TimelineEvent['kind'], detail?: string, mergeMs = 50) => {
    if (runT0 === 0) return;
    const tMs = Date.now() - runT0;
    for (let i = timeline.length - 1; i >= 0 && i >= timeline.length - 8; i--) {
      const e = timeline[i];
      if (e.kind === kind && e.detail === detail && tMs - e.tMs <= mergeMs) {
        e.n++;
        return;
      }
    }
    if (timeline.length >= MAX_TIMELINE) {
      timelineFull = true;
      return;
    }
    timeline.push({ tMs, kind, n: 1, ...(detail === undefined ? {} : { detail }) });
  };
  const before: InstanceSnapshot[] = [];
  let startTs = 0;
  let checksBefore: number[] = [];
  let endTs = 0;
  try {
    // ---- set-up: the home process, its segment, the attachers ----------------------------------
    const hpid = (await home.op<{ pid: number }>('spawn', { name: 'load-home' })).pid;
    procs.push({ index: 0, instance: 0, node: nodes[0], pid: hpid, base: 0, role: 'home' });
    procs[0].base = (await home.op<{ addr: number }>('mmap', { pid: hpid, len: size })).addr;
    segid = (await home.op<{ segid: string }>('make', { pid: hpid, addr: procs[0].base, size, mode: 0o666 }))
      .segid;
    for (let i = 0; i < nInst; i++) {
      for (let j = 0; j < o.procsPerInstance; j++) {
        if (i === 0 && j === 0) continue;
        const c = clients[i];
        const pid = (await c.op<{ pid: number }>('spawn', { name: `load-${i}-${j}` })).pid;
        const p: ProcInfo = {
          index: procs.length,
          instance: i,
          node: nodes[i],
          pid,
          base: 0,
          role: 'attacher',
        };
        procs.push(p);
        p.apid = (await c.op<{ apid: string }>('get', { pid, segid, access: 'rw' })).apid;
        p.base = (await c.op<{ addr: number }>('attach', { pid, apid: p.apid, offset: 0, size })).addr;
      }
    }
    before.push(...(await Promise.all(clients.map((c) => snapshot(c)))));
    // Kernel invariant findings are cumulative: remember how many there were, report only new ones.
    checksBefore = await Promise.all(
      clients.map((c) =>
        c.op<{ violations: string[] }>('check', {}).then(
          (r) => r.violations.length,
          () => 0,
        ),
      ),
    );

    // ---- the run -------------------------------------------------------------------------------
    const t0 = Date.now();
    runT0 = t0;
    startTs = performance.timeOrigin + performance.now();
    const stageMs = (model.stages ?? []).reduce((a, st) => a + st.durationMs, 0);
    const runMs = model.stages?.length ? stageMs : o.durationMs;
    const deadline = t0 + runMs;
    // Closed model with stages: how many processes are active at a time (activation order
    // interleaves the instances, the home process first).
    const active = model.kind === 'closed' && model.stages?.length ? stagePoints(1, model.stages) : undefined;
    const order = procs
      .map((p) => p.index)
      .sort((a, b) => (a % o.procsPerInstance) - (b % o.procsPerInstance) || a - b);
    const rank = new Map(order.map((idx, r) => [idx, r]));
    const isActive = (idx: number, tMs: number) =>
      !active || (rank.get(idx) ?? 0) < Math.round(valueAt(active, tMs));
    // Open model: every process takes an equal share of the rate, phase-shifted.
    const ratePts =
      model.kind === 'open'
        ? model.stages?.length
          ? stagePoints(model.rate, model.stages)
          : [
              { tMs: 0, value: model.rate },
              { tMs: runMs, value: model.rate },
            ]
        : undefined;
    const arrivalPoints = ratePts?.map((p) => ({ tMs: p.tMs, rate: p.value / nProcs }));
    if (model.stages?.length) {
      let t = 0;
      for (const st of model.stages) {
        timeline.push({
          tMs: t,
          kind: 'stage',
          n: 1,
          detail: `→ ${st.target}${model.kind === 'open' ? ' ops/s' : ' procs'} over ${st.durationMs} ms`,
        });
        t += st.durationMs;
      }
    }
    const watcher = watchCluster(clients, nodes, mark);
    const opsBounded = o.maxOps < Number.MAX_SAFE_INTEGER && o.durationMs >= 60_000;
    const perProcOps = Math.max(1, Math.floor(o.maxOps / nProcs));
    let stop = false;
    let totalOps = 0;
    let totalErrors = 0;
    let lastOps = 0;
    let lastT = t0;
    const progressTimer = setInterval(() => {
      const now = Date.now();
      const rate = ((totalOps - lastOps) * 1000) / Math.max(1, now - lastT);
      lastOps = totalOps;
      lastT = now;
      o.onProgress?.({ ops: totalOps, errors: totalErrors, elapsedMs: now - t0, opsPerSec: rate });
    }, 250);
    const seedOf = (proc: number, chunk: number) =>
      (Math.imul(o.seed ^ 0x9e3779b9, 2654435761) ^
        Math.imul(proc + 1, 0x85ebca6b) ^
        Math.imul(chunk + 1, 0xc2b2ae35)) >>>
      0;

    const driveProc = async (p: ProcInfo) => {
      const c = clients[p.instance];
      let seq = 0;
      let chunk = 0;
      let done = 0;
      let state = '';
      let arrival: ArrivalSchedule | undefined = arrivalPoints
        ? { points: arrivalPoints, phase: p.index / nProcs, next: 0 }
        : undefined;
      while (!stop) {
        const left = deadline - Date.now();
        if (left <= 0 || done >= perProcOps) break;
        if (!isActive(p.index, Date.now() - t0)) {
          await sleep(Math.min(50, left));
          continue;
        }
        if (arrival && arrival.startTs === undefined) arrival.elapsedMs = Date.now() - t0;
        const args: HarnessArgs = {
          proc: p.index,
          procs: nProcs,
          seed: seedOf(p.index, chunk),
          vaddrs: plan.keys.map((k) => p.base + k.page * PAGE_SIZE + k.word * 4),
          workload: { name: o.workload.name, op: opSource, params: plan.params },
          state,
          maxOps: Math.min(perProcOps - done, opsBounded ? 5000 : perProcOps),
          // Chunks end by op count when --ops bounds the run, except in the open model, where a
          // chunk paced at a low rate could outlast the `run` call's deadline.
          durationMs: Math.min(
            left,
            opsBounded && !arrival ? left : active ? Math.min(plan.chunkMs, 100) : plan.chunkMs,
          ),
          seqBase: seq,
          ...(arrival ? { arrival } : {}),
        };
        let r: HarnessResult;
        try {
          r = (
            await c.op<{ result: HarnessResult }>('run', {
              pid: p.pid,
              module: PROGRAM_MODULE,
              export: HARNESS_EXPORT,
              args,
            })
          ).result;
        } catch (e) {
          const code = codeOf(e);
          errors[`run:${code}`] = (errors[`run:${code}`] ?? 0) + 1;
          totalErrors++;
          if (errorSamples.length < 10)
            errorSamples.push(`${p.node}/pid${p.pid} run: ${(e as Error).message}`);
          // The program may have run (it may even still be running): its operations are missing.
          if (!REFUSED_BEFORE_RUN.has(code))
            lostChunks.push(
              lostChunk(`${p.node}/pid${p.pid}`, p.index, chunk, seq, args.maxOps, `run:${code}`),
            );
          break;
        }
        chunk++;
        events.chunks++;
        seq = r.seq;
        state = r.state;
        iterations += r.iterations;
        if (arrival && r.nextArrival !== undefined)
          arrival = { ...arrival, next: r.nextArrival, startTs: r.arrivalStartTs, elapsedMs: undefined };
        const who = `${p.node}/pid${p.pid}`;
        for (let i = 0; i < r.kinds.length; i++) {
          const op: HistoryOp = {
            process: who,
            address: r.keys[i],
            kind: r.kinds[i] as 'r' | 'w',
            value: r.values[i],
            invokeTs: r.invoke[i],
            responseTs: r.response[i],
          };
          if (r.intended) op.intendedTs = r.intended[i];
          history.push(op);
        }
        done += r.kinds.length;
        opsByProc[p.index] += r.kinds.length;
        totalOps += r.kinds.length;
        for (const [k, v] of Object.entries(r.errors)) {
          errors[k] = (errors[k] ?? 0) + v;
          totalErrors += v;
        }
        for (const s of r.errorSamples) if (errorSamples.length < 10) errorSamples.push(`${who}: ${s}`);
        if (r.fatal) break;
        if (r.kinds.length === 0 && Object.keys(r.errors).length > 0) break;
        if (plan.churn && p.role === 'attacher' && p.apid && chunk % plan.churn.every === 0 && !stop) {
          try {
            await c.op('detach', { pid: p.pid, addr: p.base });
            p.base = (
              await c.op<{ addr: number }>('attach', { pid: p.pid, apid: p.apid, offset: 0, size })
            ).addr;
            events.reattaches++;
            mark('reattach', undefined, 200);
          } catch (e) {
            const code = `reattach:${codeOf(e)}`;
            errors[code] = (errors[code] ?? 0) + 1;
            totalErrors++;
            if (errorSamples.length < 10) errorSamples.push(`${p.node}/pid${p.pid} ${(e as Error).message}`);
            break;
          }
        }
      }
      // Open model: arrivals due before the end that never started were dropped.
      if (arrival && arrivalPoints) {
        const due = Math.ceil(arrivalsBy(arrivalPoints, runMs) - arrival.phase);
        dropped += Math.max(0, due - arrival.next);
      }
    };

    const rnd = prng(o.seed ^ 0x5bd1e995);
    const touched = [...new Set(plan.keys.map((k) => k.page))];
    const reclaimLoop = async () => {
      if (!plan.reclaim) return;
      for (let n = 0; !stop && n < 1_000_000; n++) {
        const page =
          rnd() < 0.8 ? touched[Math.floor(rnd() * touched.length)] : Math.floor(rnd() * o.segmentPages);
        let outcome: string;
        try {
          outcome = (
            await home.op<{ outcome: string }>('reclaim', {
              pid: hpid,
              addr: procs[0].base + page * PAGE_SIZE,
            })
          ).outcome;
        } catch (e) {
          outcome = `error:${codeOf(e)}`;
        }
        events.reclaims[outcome] = (events.reclaims[outcome] ?? 0) + 1;
        mark('reclaim', undefined, 100);
        if (plan.reclaim.pauseMs > 0) await sleep(plan.reclaim.pauseMs);
        else if (n % 16 === 15) await sleep(1);
      }
    };
    const forkLoop = async () => {
      if (!plan.fork) return;
      for (let n = 0; !stop && n < 100_000; n++) {
        try {
          const child = (await home.op<{ pid: number }>('fork', { pid: hpid })).pid;
          forkChildren.add(child);
          events.forks++;
          mark('fork');
          await sleep(plan.fork.childLifeMs);
          await home.op('exit', { pid: child });
          forkChildren.delete(child);
        } catch (e) {
          const code = codeOf(e);
          events.forkErrors[code] = (events.forkErrors[code] ?? 0) + 1;
          await sleep(10);
        }
        await sleep(plan.fork.pauseMs);
      }
    };
    const drivers = procs.map((p) => driveProc(p));
    const background = [reclaimLoop(), forkLoop()];
    const hardStop = setTimeout(() => {
      stop = true;
    }, runMs + 1000);
    try {
      await Promise.all(drivers);
    } finally {
      stop = true;
      clearTimeout(hardStop);
      await Promise.allSettled(background);
      clearInterval(progressTimer);
      await watcher.stop();
    }
    if (timelineFull) timeline.push({ tMs: Date.now() - t0, kind: 'stage', n: 0, detail: 'timeline full' });
    endTs = performance.timeOrigin + performance.now();
    o.onProgress?.({ ops: totalOps, errors: totalErrors, elapsedMs: Date.now() - t0, opsPerSec: 0 });
  } finally {
    // ---- tear-down: fork children, attachers, then the home ---------------------------------
    for (const child of forkChildren) await home.op('exit', { pid: child }).catch(() => undefined);
    for (const p of procs.slice(1))
      await clients[p.instance].op('exit', { pid: p.pid }).catch(() => undefined);
    if (procs[0]) await home.op('exit', { pid: procs[0].pid }).catch(() => undefined);
  }
  await sleep(100);
  // An instance that no longer answers (a crashed host) contributes no counters: its snapshot
  // from before the run stands in, and its invariant check says it could not be run.
  const after = await Promise.all(
    clients.map((c, i) => (before[i] ? snapshot(c).catch(() => before[i]) : snapshot(c))),
  );
  const invariants = await Promise.all(
    clients.map(async (c, i) => {
      try {
        const r = await c.op<{ ok: boolean; violations: string[] }>('check', {});
        const fresh = r.violations.slice(checksBefore[i] ?? 0);
        return { node: nodes[i], ok: fresh.length === 0, violations: fresh.slice(0, 20) };
      } catch (e) {
        return { node: nodes[i], ok: false, violations: [`check failed: ${(e as Error).message}`] };
      }
    }),
  );
  return {
    procs,
    segid,
    history,
    startTs,
    endTs,
    elapsedMs: endTs - startTs,
    opsByProc,
    errors,
    errorSamples,
    lostChunks,
    events,
    timeline,
    iterations,
    dropped,
    keys: plan.keys.length,
    before,
    after,
    invariants,
  };
}

/**
 * Polls every instance's /status while the run goes (every 250 ms) and marks what the chart
 * shows: fences (the driver's `fences` counter went up), peer links going down or up, and an
 * instance that stopped answering (a crashed or cut host).
 */
function watchCluster(
  clients: AdminClient[],
  nodes: string[],
  mark: (kind: TimelineEvent['kind'], detail?: string, mergeMs?: number) => void,
): { stop(): Promise<void> } {
  let stopped = false;
  const fences = new Map<number, number>();
  const peers = new Map<string, string>();
  const down = new Set<number>();
  const inflight = new Set<number>();
  type Status = {
    driver?: { counters?: Record<string, number> };
    peers?: Array<{ node?: string; state?: string }>;
  };
  const poll = async (i: number) => {
    if (inflight.has(i)) return;
    inflight.add(i);
    let timer: NodeJS.Timeout | undefined;
    try {
      const call = clients[i].get<Status>('/status');
      call.catch(() => undefined).finally(() => inflight.delete(i));
      const s = await Promise.race([
        call,
        new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new Error('timeout')), 2000);
        }),
      ]);
      if (down.delete(i)) mark('peer-up', `${nodes[i]} answers again`);
      const f = s.driver?.counters?.fences ?? 0;
      const prev = fences.get(i);
      if (prev !== undefined && f > prev) mark('fence', `${nodes[i]} fenced ${f - prev} peer(s)`, 250);
      fences.set(i, f);
      for (const p of s.peers ?? []) {
        const key = `${nodes[i]}>${p.node}`;
        const was = peers.get(key);
        const state = String(p.state);
        if (was !== undefined && was !== state) {
          if (state === 'up') mark('peer-up', `${nodes[i]} sees ${p.node} up`, 250);
          else if (was === 'up') mark('peer-down', `${nodes[i]} sees ${p.node} ${state}`, 250);
        }
        peers.set(key, state);
      }
    } catch {
      if (!down.has(i)) {
        down.add(i);
        mark('unreachable', `${nodes[i]} does not answer`);
      }
    } finally {
      clearTimeout(timer);
    }
  };
  const loop = (async () => {
    for (let n = 0; !stopped && n < 2_400_000; n++) {
      await Promise.all(clients.map((_, i) => poll(i)));
      await sleep(250);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
