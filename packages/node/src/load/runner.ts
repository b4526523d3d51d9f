/**
 * Runs one workload against a set of instances (admin clients; instance 0 is the home of the
 * shared segment): sets up processes, the segment and the attachments, drives the load program
 * inside every process in chunks (so progress is live and attach/detach can happen between
 * chunks), runs the workload's background events, then tears everything down and collects the
 * history and the instances' counters.
 */

import { PAGE_SIZE } from '@xpmesh/protocol/base';
import { AdminCallError, type AdminClient } from '../daemon/admin-client.js';
import type { HistoryOp, LostChunk } from './history.js';
import { type LoadProgramArgs, type LoadProgramResult, MAX_PROCS, MAX_SEQ, prng } from './program.js';
import { type InstanceSnapshot, snapshot } from './stats.js';
import { plan as makePlan, type Plan, type Workload } from './workloads.js';

export const PROGRAM_MODULE = 'load/program.js';

export interface LoadOptions {
  workload: Workload;
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
  const plan: Plan = makePlan(o.workload, nProcs, o.pages, o.segmentPages);
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
    startTs = performance.timeOrigin + performance.now();
    const deadline = t0 + o.durationMs;
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
      const role = plan.roles[p.index];
      const c = clients[p.instance];
      let seq = 0;
      let chunk = 0;
      let done = 0;
      while (!stop) {
        const left = deadline - Date.now();
        if (left <= 0 || done >= perProcOps) break;
        const args: LoadProgramArgs = {
          proc: p.index,
          seed: seedOf(p.index, chunk),
          vaddrs: plan.keys.map((k) => p.base + k.page * PAGE_SIZE + k.word * 4),
          keys: plan.keys.map((k) => k.key),
          readable: role.readable,
          writable: role.writable,
          writeFraction: role.writeFraction,
          maxOps: Math.min(perProcOps - done, opsBounded ? 5000 : perProcOps),
          durationMs: Math.min(left, opsBounded ? left : plan.chunkMs),
          seqBase: seq,
        };
        let r: LoadProgramResult;
        try {
          r = (
            await c.op<{ result: LoadProgramResult }>('run', {
              pid: p.pid,
              module: PROGRAM_MODULE,
              export: 'loadProgram',
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
        const who = `${p.node}/pid${p.pid}`;
        for (let i = 0; i < r.kinds.length; i++) {
          history.push({
            process: who,
            address: r.keys[i],
            kind: r.kinds[i] as 'r' | 'w',
            value: r.values[i],
            invokeTs: r.invoke[i],
            responseTs: r.response[i],
          });
        }
        done += r.kinds.length;
        opsByProc[p.index] += r.kinds.length;
        totalOps += r.kinds.length;
        for (const [k, v] of Object.entries(r.errors)) {
          errors[k] = (errors[k] ?? 0) + v;
          totalErrors += v;
        }
        for (const s of r.errorSamples) if (errorSamples.length < 10) errorSamples.push(`${who}: ${s}`);
        if (r.kinds.length === 0 && Object.keys(r.errors).length > 0) break;
        if (plan.churn && p.role === 'attacher' && p.apid && chunk % plan.churn.every === 0 && !stop) {
          try {
            await c.op('detach', { pid: p.pid, addr: p.base });
            p.base = (
              await c.op<{ addr: number }>('attach', { pid: p.pid, apid: p.apid, offset: 0, size })
            ).addr;
            events.reattaches++;
          } catch (e) {
            const code = `reattach:${codeOf(e)}`;
            errors[code] = (errors[code] ?? 0) + 1;
            totalErrors++;
            if (errorSamples.length < 10) errorSamples.push(`${p.node}/pid${p.pid} ${(e as Error).message}`);
            break;
          }
        }
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
    }, o.durationMs + 1000);
    try {
      await Promise.all(drivers);
    } finally {
      stop = true;
      clearTimeout(hardStop);
      await Promise.allSettled(background);
      clearInterval(progressTimer);
    }
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
  const after = await Promise.all(clients.map((c) => snapshot(c)));
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
    before,
    after,
    invariants,
  };
}
