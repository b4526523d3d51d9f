#!/usr/bin/env node
/**
 * The soak: random real faults of every kind, every few seconds, under a mixed background load, on a
 * lab of instances in network namespaces (netns.ts). Bounded in time and in number of faults.
 * Prints one JSON summary on stdout (progress on stderr) and exits 0 when everything held:
 *
 *   node packages/testkit/dist/fault/soak.js --duration-ms 600000
 *
 * Fault kinds: partition (the victim cut from everyone, both ways), one-way (its frames, or the
 * frames to it, dropped), pair (two instances cut apart, both ways, the rest untouched), link-down,
 * crash (link down, SIGKILL, restart), pause (SIGSTOP … SIGCONT). The victim may be the home of the
 * shared segment: a crashed home loses the segment and the workload starts a new one.
 *
 * Summary: faults by kind and target, fences seen and time-to-fence percentiles (first and last
 * survivor), rejoins, operations, the history check of every round, lost dirty pages (counted by the
 * homes), new segments after home crashes, calls that waited past their deadline outside a fault
 * window, and the leak checks at the end (kernel invariants, pins == unpins, empty reverse maps and
 * caches, nothing left of the lab).
 */
import { prng } from '@xpmesh/node/load/program';
import type { InstanceStatus } from './controller.js';
import { DEFAULT_TIMINGS, Lab, leftovers, now, probeCapabilities, sleep, sweepOrphans } from './netns.js';
import {
  finishTool,
  type IntOptionSpec,
  intOption,
  intOptionOf,
  parseToolArgs,
  runIfMain,
} from './tool-cli.js';
import type { FaultWindow, LoadSummary, RoundCheck } from './workload.js';

const KINDS = ['partition', 'one-way', 'pair', 'link-down', 'crash', 'pause'] as const;
type Kind = (typeof KINDS)[number];

export const SOAK_LIMITS = { maxDurationMs: 3_600_000, maxFaults: 10_000 } as const;

/**
 * The soak's numeric options: flag, default and bounds. The help text, the parser and the defaults
 * docs/reliability.md quotes all come from here (docs-values.ts).
 */
export const SOAK_OPTIONS = {
  durationMs: { flag: 'duration-ms', def: 60_000, min: 1000, max: SOAK_LIMITS.maxDurationMs },
  faultEveryMs: { flag: 'fault-every-ms', def: 3000, min: 200, max: 600_000 },
  nodes: { flag: 'nodes', def: 3, min: 2, max: 9 },
  procs: { flag: 'procs', def: 2, min: 1, max: 8 },
  seed: { flag: 'seed', def: 1, min: 0, max: 2 ** 31 },
  reclaimEveryMs: { flag: 'reclaim-every-ms', def: 50, min: 0, max: 60_000 },
} as const;

/**
 * The soak's fault timing: the gap before a fault is `--fault-every-ms` × (1 ± gapJitter), uniform;
 * a fault is held holdMinMs + U(0, holdSpanMs); the workload moves to fresh words every roundMs.
 */
export const SOAK_TIMING = { gapJitter: 0.5, holdMinMs: 500, holdSpanMs: 2000, roundMs: 15_000 } as const;

export interface SoakOptions {
  durationMs: number;
  faultEveryMs: number;
  maxFaults: number;
  seed: number;
  nodes: number;
  procsPerNode: number;
  /** Forced reclaim of a touched page at the home every … ms (0: none). */
  reclaimEveryMs: number;
  /** Only these fault kinds / victims (default: all). */
  kinds?: Kind[];
  victims?: string[];
  json?: string;
  keepLogs: boolean;
  quiet: boolean;
}

function pct(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]);
}

function percentiles(xs: number[]) {
  return { count: xs.length, p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99), max: pct(xs, 100) };
}

export async function soak(o: SoakOptions): Promise<Record<string, unknown>> {
  const log = (s: string) => {
    if (!o.quiet) process.stderr.write(`${new Date().toISOString()} soak: ${s}\n`);
  };
  const cap = probeCapabilities();
  if (!cap.ok) return { ok: false, skipped: true, reason: cap.reason };
  const swept = sweepOrphans();
  if (swept.length) log(`removed leftovers of dead runs: ${swept.join(', ')}`);
  const rnd = prng(o.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const timings = DEFAULT_TIMINGS;
  const lab = await Lab.create({ ...timings, nodes: o.nodes, sse: false, pollMs: 50 });
  const b = lab.bounds;
  const ids = lab.nodes.map((n) => n.id);
  const home = ids[0];
  const problems: string[] = [];
  const byKind: Record<string, number> = {};
  const byTarget: Record<string, number> = {};
  const firstFence: number[] = [];
  const lastFence: number[] = [];
  const rejoinMs: number[] = [];
  let fencesMissed = 0;
  let overBound = 0;
  let rejoinFailed = 0;
  let faults = 0;
  const windows: FaultWindow[] = [];
  const deck: Kind[] = [];
  const lostByPid = new Map<number, number>();
  const fencesByPid = new Map<number, number>();
  const checkpointFailures: RoundCheck[] = [];
  let summary: LoadSummary | undefined;
  const leaks: Record<string, unknown> = {};
  const sampleCounters = async () => {
    for (const id of ids) {
      const r = await lab.ctl.get<InstanceStatus>(id, '/status', 2000);
      if (!r.ok || !r.value) continue;
      const c = r.value.driver.counters;
      lostByPid.set(r.value.pid, Math.max(lostByPid.get(r.value.pid) ?? 0, c.lostDirtyPages ?? 0));
      fencesByPid.set(r.value.pid, Math.max(fencesByPid.get(r.value.pid) ?? 0, c.fences ?? 0));
    }
  };
  const t0 = now();
  let keep = o.keepLogs;
  try {
    await lab.ctl.request('load.start', {
      nodes: ids,
      home,
      procsPerNode: o.procsPerNode,
      pages: 8,
      segmentPages: 16,
      wordsPerPage: 2,
      writeFraction: 0.3,
      chunkMs: 100,
      chunkOps: 100,
      pauseMs: 20,
      reclaimEveryMs: o.reclaimEveryMs,
      roundMs: SOAK_TIMING.roundMs,
      seed: o.seed,
      callBoundMs: b.opMs,
      callTimeoutMs: b.opMs * 3,
    });
    log(`lab ${lab.tag} up (${ids.join(', ')}; logs in ${lab.dir}); load running`);
    const end = t0 + o.durationMs;
    while (now() < end) {
      if (faults >= o.maxFaults) {
        await sleep(Math.min(1000, end - now())); // no more faults: the load runs to the end
        continue;
      }
      await sleep(
        Math.min(
          o.faultEveryMs * (1 - SOAK_TIMING.gapJitter + 2 * SOAK_TIMING.gapJitter * rnd()),
          Math.max(0, end - now()),
        ),
      );
      if (now() >= end) break;
      await sampleCounters();
      // kinds come from a shuffled deck: every kind occurs in each run of |kinds| faults
      if (deck.length === 0) {
        deck.push(...(o.kinds?.length ? o.kinds : KINDS));
        for (let i = deck.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [deck[i], deck[j]] = [deck[j], deck[i]];
        }
      }
      const kind: Kind = deck.pop()!;
      const victim = pick(o.victims?.length ? ids.filter((x) => o.victims?.includes(x)) : ids);
      const other = pick(ids.filter((x) => x !== victim));
      const cut = kind === 'pair' ? [victim, other] : [victim];
      const survivors = ids.filter((x) => !cut.includes(x));
      const before: Record<string, Record<string, number>> = {};
      for (const s of ids) {
        const st = await lab.ctl.get<InstanceStatus>(s, '/status', 2000);
        before[s] = {};
        for (const p of st.value?.peers ?? []) before[s][p.node] = p.epoch;
      }
      faults++;
      byKind[kind] = (byKind[kind] ?? 0) + 1;
      byTarget[victim] = (byTarget[victim] ?? 0) + 1;
      let tFault: number;
      let heal: () => Promise<number>;
      let detail = '';
      switch (kind) {
        case 'partition':
          tFault = await lab.isolate(victim, 'both');
          heal = () => lab.heal();
          break;
        case 'one-way': {
          const dir = rnd() < 0.5 ? 'out' : 'in';
          detail = dir;
          tFault = await lab.isolate(victim, dir);
          heal = () => lab.heal();
          break;
        }
        case 'pair':
          detail = other;
          tFault = await lab.partition(victim, other);
          heal = () => lab.heal();
          break;
        case 'link-down':
          tFault = await lab.linkDown(victim);
          heal = () => lab.linkUp(victim);
          break;
        case 'crash':
          tFault = await lab.crash(victim);
          heal = () => lab.restart(victim);
          break;
        case 'pause':
          tFault = lab.pause(victim);
          heal = async () => lab.resume(victim);
          break;
      }
      // Time to fence: who must fence whom. For a pair, each fences the other; otherwise every
      // survivor fences the victim.
      const expect: Array<[string, string]> =
        kind === 'pair'
          ? [
              [victim, other],
              [other, victim],
            ]
          : survivors.map((s) => [s, victim] as [string, string]);
      const hold = SOAK_TIMING.holdMinMs + rnd() * SOAK_TIMING.holdSpanMs;
      const times: number[] = [];
      await Promise.all(
        expect.map(async ([observer, fenced]) => {
          try {
            const f = await lab.ctl.request(
              'waitFor',
              { kind: 'fence', observer, node: fenced, after: tFault, timeoutMs: b.fenceMs * 3 },
              b.fenceMs * 3 + 10_000,
            );
            times.push(f.t - tFault);
          } catch {
            fencesMissed++;
            problems.push(
              `fault ${faults} (${kind} ${victim}${detail ? ` ${detail}` : ''}): ${observer} did not fence ${fenced} within ${b.fenceMs * 3} ms`,
            );
          }
        }),
      );
      if (times.length) {
        firstFence.push(Math.min(...times));
        lastFence.push(Math.max(...times));
        for (const x of times) if (x > b.fenceMs) overBound++;
      }
      const left = tFault + hold - now();
      if (left > 0) await sleep(left);
      if (kind === 'crash') await sampleCounters();
      const tHeal = await heal();
      let rejoined = false;
      let settledMs = 0;
      try {
        await lab.ctl.request('waitMesh', { timeoutMs: b.rejoinMs }, b.rejoinMs + 10_000);
        rejoined = true;
        rejoinMs.push(now() - tHeal);
        await lab.ctl.request(
          'waitMesh',
          { timeoutMs: b.rejoinMs, stableMs: b.meshStableMs },
          b.rejoinMs + 10_000,
        );
        settledMs = now() - tHeal;
      } catch (e) {
        rejoinFailed++;
        problems.push(
          `fault ${faults} (${kind} ${victim}): no mesh ${b.rejoinMs} ms after the heal: ${(e as Error).message}`,
        );
      }
      windows.push(...cut.map((node) => ({ node, from: tFault, to: now() })));
      if (rejoined) {
        // the healed instance is back in a new session with a higher epoch, as every peer it lost sees it
        for (const [observer, fenced] of expect) {
          const st = await lab.ctl.get<InstanceStatus>(observer, '/status', 2000);
          const p = st.value?.peers.find((x) => x.node === fenced);
          if (p?.state !== 'up' || !(p.epoch > (before[observer]?.[fenced] ?? -1)))
            problems.push(
              `fault ${faults} (${kind} ${victim}): ${observer} sees ${fenced} ${p?.state}@${p?.epoch}, not a new session above ${before[observer]?.[fenced]}`,
            );
        }
        await sleep(b.heartbeatTimeoutMs);
        const cp = await lab.ctl.request('load.checkpoint', {});
        if (cp.failed.length) checkpointFailures.push(...cp.failed);
      }
      await sampleCounters();
      log(
        `fault ${faults}: ${kind} ${victim}${detail ? ` (${detail})` : ''} held ${Math.round(hold)} ms, fenced after ${times.map((x) => Math.round(x)).join('/') || 'never'} ms, ${rejoined ? `rejoined ${Math.round(rejoinMs[rejoinMs.length - 1])} ms after the heal (stable after ${Math.round(settledMs)} ms)` : 'NO REJOIN'}`,
      );
    }
    summary = await lab.ctl.request('load.stop', { windows }, 600_000);
    await sampleCounters();
    // leak checks at quiescence, on every instance
    for (const id of ids) {
      const chk = await lab.ctl.call<{ ok: boolean; violations: string[] }>(id, 'check', {}, 10_000);
      let st: InstanceStatus | undefined;
      const until = now() + 5000;
      while (now() < until) {
        st = (await lab.ctl.get<InstanceStatus>(id, '/status', 2000)).value;
        const c = st?.driver.counters;
        if (st && c?.pins === c?.unpins && st.driver.rmap.entries === 0 && st.driver.cachedPages === 0) break;
        await sleep(100);
      }
      const c = st?.driver.counters;
      leaks[id] = {
        invariantsOk: chk.ok && chk.value?.ok === true,
        violations: chk.value?.violations.slice(0, 5),
        pins: c?.pins,
        unpins: c?.unpins,
        rmapEntries: st?.driver.rmap.entries,
        cachedPages: st?.driver.cachedPages,
        processes: st?.processes.length,
      };
    }
  } catch (e) {
    problems.push(`soak aborted: ${(e as Error).stack ?? e}`);
  } finally {
    const failed =
      problems.length > 0 ||
      summary?.history.ok !== true ||
      checkpointFailures.length > 0 ||
      (summary?.deadlines.slow.length ?? 0) > 0;
    keep = o.keepLogs || failed;
    await lab.destroy({ keepLogs: keep });
  }
  const left = leftovers();
  const lostPages = [...lostByPid.values()].reduce((a, x) => a + x, 0);
  const driverFences = [...fencesByPid.values()].reduce((a, x) => a + x, 0);
  const leakOk = Object.values(leaks).every((l) => {
    const x = l as {
      invariantsOk: boolean;
      pins: number;
      unpins: number;
      rmapEntries: number;
      cachedPages: number;
    };
    return x.invariantsOk && x.pins === x.unpins && x.rmapEntries === 0 && x.cachedPages === 0;
  });
  const historyOk = summary?.history.ok === true && checkpointFailures.length === 0;
  const deadlinesOk = summary !== undefined && summary.deadlines.slow.length === 0;
  const ok =
    problems.length === 0 &&
    historyOk &&
    deadlinesOk &&
    leakOk &&
    left.length === 0 &&
    overBound === 0 &&
    Object.keys(leaks).length === ids.length;
  const elapsed = now() - t0;
  return {
    ok,
    tool: 'xpmesh fault soak',
    seed: o.seed,
    durationMs: Math.round(elapsed),
    nodes: ids,
    home,
    timings,
    bounds: b,
    faults: { total: faults, byKind, byTarget },
    fences: {
      expected: faults === 0 ? 0 : firstFence.length + fencesMissed,
      missed: fencesMissed,
      overBound,
      boundMs: b.fenceMs,
      timeToFirstFenceMs: percentiles(firstFence),
      timeToLastFenceMs: percentiles(lastFence),
      driverFenceCounters: driverFences,
    },
    rejoin: { failed: rejoinFailed, afterHealMs: percentiles(rejoinMs) },
    ops: summary
      ? {
          total: summary.ops.total,
          reads: summary.ops.reads,
          writes: summary.ops.writes,
          perSec: Math.round((summary.ops.total * 1000) / Math.max(1, summary.elapsedMs)),
          byNode: summary.ops.byNode,
          errors: summary.ops.errors,
          chunks: summary.chunks,
          incarnations: summary.incarnations,
          reclaims: summary.reclaims,
        }
      : null,
    history: summary
      ? {
          ...summary.history,
          ok: historyOk,
          checkpointFailures: checkpointFailures.slice(0, 5),
        }
      : null,
    lostPages,
    segments: summary ? { generations: summary.generations, segids: summary.segids } : null,
    deadlines: summary ? summary.deadlines : null,
    leaks: {
      ok: leakOk && left.length === 0,
      instances: leaks,
      quiescence: summary?.quiescence && { ...summary.quiescence, pages: undefined },
      leftovers: left,
    },
    problems: problems.slice(0, 50),
    logs: keep ? lab.dir : undefined,
  };
}

const O = SOAK_OPTIONS;
const HELP = `usage: node packages/testkit/dist/fault/soak.js [options]

Random real faults (partition, one-way, pair, link-down, crash, pause) every few seconds under a
mixed read/write load with forced reclaims, on instances in network namespaces. Needs root,
iproute2 and nftables. Prints a JSON summary; exit 0 when everything held, 1 otherwise, 2 on bad
usage or a machine that cannot build namespaces.

  --duration-ms N     run time (default ${O.durationMs.def}, at most ${O.durationMs.max})
  --fault-every-ms N  mean gap between faults (default ${O.faultEveryMs.def})
  --max-faults N      stop after N faults (default: duration / gap, at most ${SOAK_LIMITS.maxFaults})
  --nodes N           instances (default ${O.nodes.def}, ${O.nodes.min}..${O.nodes.max})
  --procs N           processes per instance (default ${O.procs.def}, ${O.procs.min}..${O.procs.max})
  --seed N            random seed (default ${O.seed.def})
  --reclaim-every-ms N  forced reclaim at the home every N ms (default ${O.reclaimEveryMs.def}, 0 = none)
  --kinds K,K         only these fault kinds (${KINDS.join(', ')})
  --victims N,N       only these victims (n1 is the home of the shared segment)
  --json FILE         also write the summary to FILE
  --keep-logs         keep the instances' logs (kept anyway when something failed)
  --quiet             no progress on stderr`;

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const v = parseToolArgs(
    argv,
    {
      'duration-ms': { type: 'string' },
      'fault-every-ms': { type: 'string' },
      'max-faults': { type: 'string' },
      nodes: { type: 'string' },
      procs: { type: 'string' },
      seed: { type: 'string' },
      'reclaim-every-ms': { type: 'string' },
      kinds: { type: 'string' },
      victims: { type: 'string' },
      json: { type: 'string' },
      'keep-logs': { type: 'boolean' },
      quiet: { type: 'boolean' },
    },
    HELP,
  );
  if (typeof v === 'number') return v;
  const int = (name: string, def: number, min: number, max: number) => intOption(v, name, def, min, max);
  const opt = (o: IntOptionSpec) => intOptionOf(v, o);
  const list = (name: string): string[] | undefined => {
    const s = v[name];
    if (typeof s !== 'string') return undefined;
    const xs = s.split(',').filter(Boolean);
    if (name === 'kinds')
      for (const k of xs)
        if (!(KINDS as readonly string[]).includes(k)) throw new Error(`--kinds: unknown kind ${k}`);
    if (name === 'victims')
      for (const x of xs) if (!/^n[1-9]$/.test(x)) throw new Error(`--victims: ${x} is not n1..n9`);
    return xs;
  };
  let o: SoakOptions;
  try {
    const durationMs = opt(O.durationMs);
    const faultEveryMs = opt(O.faultEveryMs);
    o = {
      durationMs,
      faultEveryMs,
      maxFaults: int(
        'max-faults',
        Math.min(SOAK_LIMITS.maxFaults, Math.ceil(durationMs / faultEveryMs)),
        0,
        SOAK_LIMITS.maxFaults,
      ),
      nodes: opt(O.nodes),
      procsPerNode: opt(O.procs),
      seed: opt(O.seed),
      reclaimEveryMs: opt(O.reclaimEveryMs),
      kinds: list('kinds') as Kind[] | undefined,
      victims: list('victims'),
      json: typeof v.json === 'string' ? v.json : undefined,
      keepLogs: v['keep-logs'] === true,
      quiet: v.quiet === true,
    };
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  return finishTool(await soak(o), o.json);
}

runIfMain(import.meta.url, () => main());
