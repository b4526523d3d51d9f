/**
 * Driver benchmarks (figures, not pass/fail). Every figure is a ratio against a baseline measured in
 * the same run with the same placement, and the whole measurement is repeated ROUNDS times with the
 * baseline and the driver path alternating: a figure is the median over rounds of the per-round value.
 * The faults, invalidations and ranges sections first run WARM_ROUNDS / INV_WARM_ROUNDS /
 * RANGE_WARM_ROUNDS rounds that are not counted (JIT warm-up, see there).
 * Prints BENCH lines (scripts/bench.mjs). BENCH_QUICK=1 for a short run; BENCH_RECLAIM_PAGES sets the
 * reclaim size (default 100,000), BENCH_RECLAIM_BATCHES the shrink's batches in flight (default 1, both
 * kinds). Filters: BENCH_ONLY=faults,invalidations,ranges,reclaim,rmap (a comma
 * list of sections; default all) and BENCH_PLACEMENT=1proc or 2proc (default both).
 *
 * Placements (suffix of every name): `2proc` = every instance in its own process, as deployed (the
 * raw echo server too); `1proc` = every instance (and the echo server) in this one process.
 *
 * Baselines (raw.ts: no kernel, no driver, no protocol):
 *   hop-chain        worker traps (Atomics word + postMessage) → main → raw ws 32 B request, 4 KiB
 *                    reply → copy into shared memory → worker woken. Timed in the worker.
 *   inval-chain      raw ws 32 B round trip whose server interrupts one worker thread once (Atomics
 *                    notify and back) before it replies. Timed at the main thread.
 *   raw-ws-64-pages  raw ws round trip with a 256 KiB reply (64 pages, what a 64-page map-ok carries)
 *                    vs one with a 4 KiB reply: the transport's share of map-64-pages vs map-1-page.
 *   raw-fanout-8     a raw ws 32 B round trip to 8 echo servers at once (8 requests sent, then every
 *                    reply awaited), each server in its own process (2proc) or all in this one, vs the
 *                    same to 1 server, alternating: what fan-out 8 vs 1 costs this machine with nothing
 *                    of ours in between. No worker is interrupted (the driver's remotes interrupt none
 *                    here either: their attaching processes are outside any access window).
 * Driver paths:
 *   remote-read-fault     first read32 of a remote page (prefault 1), timed in the faulting process's
 *                         own thread (programs.ts), vs hop-chain
 *   map-1-page / map-64-pages   the map request → map-ok round trip of a 1-page and a 64-page fault
 *                         (driver 'message' latency; prefault 64 for the latter)
 *   invalidate-ack-N      a home process writes a page N remotes read: invalidate → every ack, at the
 *                         home (driver 'invalidated' event), vs inval-chain; fan-out 8 vs 1, and
 *                         fan-out 8 vs raw-fanout-8
 *   invalidate-1024-page-range  mprotect of a 1024-page range one remote holds vs a 1-page range
 *                         (its CPU figures are per single operation: the measured cost of measuring,
 *                         invalidate-range-cpu-measurement-cost, is taken off both)
 *   reclaim-*             kernel shrink of N exported pages that 2 remotes map vs N plain pages (two
 *                         home kernels in this process, their shrinks alternating in blocks)
 *   rmap-bytes-per-entry  reverse-map bytes per (page, mapper) entry at 131,072 entries
 * `*-cpu` figures: process CPU time (user + system, every thread) of BOTH ends per operation,
 * which is far less noisy than wall time on a shared VM.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ReverseMap } from '../index.js';
import {
  cpuNow,
  type Inst,
  type InstanceOptions,
  LocalInstance,
  PAGE,
  PROGRAMS,
  RemoteInstance,
} from './instance.js';
import { profileStart, profileStop } from './profile.js';
import { RawClient, REPLY_32, REPLY_64P, startRawServer, WAKE_THEN_32 } from './raw.js';

const QUICK = process.env.BENCH_QUICK === '1';
/**
 * A directory: CPU profiles (main threads, both ends) of the first separate-process fault round, and
 * of the reclaim section's middle block pair (the homes' plain and exported shrinks, each mapper's
 * exported shrink; N/10 pages each, N/4 with BENCH_QUICK).
 */
const PROFILE = process.env.BENCH_PROFILE;
const ROUNDS = QUICK ? 2 : 5;
/**
 * Rounds of the faults section run before the measured ones, exactly like them, and not counted.
 * A remote fault runs ~100 functions in two processes; V8 optimises them over the first ~1,500
 * faults, on its compiler threads (the platform workers). With one round's worth of warm-up (300
 * faults), `--trace-opt` counted 29, 29, 15, 16, 9 TurboFan compiles in the five measured fault
 * rounds (~220, ~140, ~60, ~60, ~16 ms of compile wall time) and ~100 us per fault of platform-thread
 * CPU at each end in the first two (schedstat per thread), against 3-8 compiles a round once warm
 * (what each round's forced full GC costs in recompiles, as for the hop chain): the medians measured
 * the compiler, not the fault. The hop chain gets the same warm-up.
 */
const WARM_ROUNDS = QUICK ? 1 : 5;
/**
 * The same for the invalidations section, whose rounds are 64 invalidations each (fan-out 1 and 8)
 * and whose chains reuse the same pages every round: 12 uncounted rounds (768 invalidations of each
 * kind, the chains alike) before the measured ones.
 */
const INV_WARM_ROUNDS = QUICK ? 1 : 12;
/**
 * The same for the ranges section (one 1-page and one 1024-page invalidation a round, each followed
 * by a re-read of its range): 10 uncounted rounds, both sizes alike, before the measured ones. With
 * one warm-up round, the measured rounds were still warming up both paths (their per-page loops and
 * the invalidation chain): the medians of both sizes over the first 10 rounds were well above those
 * over 40 rounds, and far noisier.
 */
const RANGE_WARM_ROUNDS = QUICK ? 0 : 10;
type Placement = '1proc' | '2proc';
const PLACEMENTS = (['2proc', '1proc'] as Placement[]).filter(
  (p) => process.env.BENCH_PLACEMENT === undefined || process.env.BENCH_PLACEMENT === p,
);
const ONLY = process.env.BENCH_ONLY?.split(',').map((x) => x.trim());
const run = (section: string) => ONLY === undefined || ONLY.includes(section);

function bench(name: string, value: number, unit: string, baseline: number | null = null) {
  const ratio = baseline ? Number((value / baseline).toFixed(3)) : null;
  console.log(
    `BENCH ${JSON.stringify({ suite: 'driver', name, value: Number(value.toFixed(2)), unit, baseline: baseline === null ? null : Number(baseline.toFixed(2)), ratio })}`,
  );
}
const pct = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
const median = (xs: number[]) => pct(xs, 0.5);

/** Per-round values of several figures; median over rounds at the end. */
class Rounds {
  private readonly v = new Map<string, number[]>();
  add(name: string, x: number) {
    if (!this.v.has(name)) this.v.set(name, []);
    this.v.get(name)!.push(x);
  }
  get(name: string): number {
    return median(this.v.get(name) ?? [Number.NaN]);
  }
}

async function spawnInst(pl: Placement, o: InstanceOptions): Promise<Inst> {
  return pl === '1proc' ? LocalInstance.create(o) : RemoteInstance.spawn(o.name, o);
}

/** Connect every pair of `a` × `b` (both directions). */
async function mesh(a: Inst[], b: Inst[]) {
  await Promise.all([
    ...a.map((x) => x.connect(b.map((y) => ({ node: y.name, url: y.address })))),
    ...b.map((y) => y.connect(a.map((x) => ({ node: x.name, url: x.address })))),
  ]);
}

/** CPU µs of this process and of `others` (children; a local instance is this process) over fn. */
async function withCpu<T>(
  others: Inst[],
  fn: () => Promise<T>,
): Promise<{ r: T; cpu: number; local: number }> {
  const remote = others.filter((x) => x instanceof RemoteInstance);
  const r0 = await Promise.all(remote.map((x) => x.cpu()));
  const l0 = cpuNow();
  const r = await fn();
  const l1 = cpuNow();
  const r1 = await Promise.all(remote.map((x) => x.cpu()));
  return { r, cpu: l1 - l0 + r1.reduce((s, v, i) => s + v - r0[i], 0), local: l1 - l0 };
}

/**
 * This process's user and system CPU (µs, every thread) and its MAIN thread's time on a CPU and
 * waiting on a run queue (ns, /proc/self/task/<pid>/schedstat; zeros where there is none): the
 * sampling profiler bills a preempted thread's waiting to the function it was in (a socket send
 * that wakes a mapper on this core, a write handed to the threadpool), these say how much it is.
 */
function sched(): { user: number; system: number; oncpu: number; runq: number } {
  const u = process.cpuUsage();
  let oncpu = 0;
  let runq = 0;
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(/\s+/);
    oncpu = Number(f[0]);
    runq = Number(f[1]);
  } catch {}
  return { user: u.user, system: u.system, oncpu, runq };
}

async function rawFor(pl: Placement, host?: RemoteInstance) {
  if (pl === '2proc') {
    const port = await host!.rawServer();
    return { client: await RawClient.connect(port), close: async () => undefined };
  }
  const srv = await startRawServer();
  return { client: await RawClient.connect(srv.port), close: () => srv.close() };
}

/** A full collection before a measured section, so garbage of the previous one is not billed to it. */
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

/**
 * n raw fan-outs (see raw-fanout-8 above): each sends a 32 B request to every server, then awaits
 * every reply; timed at this thread (µs).
 */
async function fanTimed(servers: Array<{ client: RawClient }>, n: number): Promise<number[]> {
  const lat: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await Promise.all(servers.map((x) => x.client.rt(REPLY_32)));
    lat[i] = (performance.now() - t) * 1000;
  }
  return lat;
}

/** Remote read faults (prefault 1 and 64) vs the hop chain. The attachers live in this process. */
async function faults(pl: Placement) {
  const N = QUICK ? 100 : 300; // faults per round
  const K = QUICK ? 4 : 12; // 64-page faults per round
  const seg1Pages = (ROUNDS + WARM_ROUNDS) * N;
  const seg64Pages = (ROUNDS + WARM_ROUNDS) * K * 64;
  const home = await spawnInst(pl, { name: 'h', frames: seg1Pages + seg64Pages + 2048, prefault: 1 });
  const a1 = await LocalInstance.create({ name: 'a1', frames: seg1Pages + 1024, prefault: 1 });
  const a64 = await LocalInstance.create({ name: 'a64', frames: seg64Pages + 1024, prefault: 64 });
  // the echo server lives in the home's process (2proc) or in this one (1proc)
  const raw = await rawFor(pl, home as RemoteInstance);
  const others = [home];
  try {
    await mesh([home], [a1, a64]);
    const seg1 = await home.exportSeg(seg1Pages);
    const seg64 = await home.exportSeg(seg64Pages);
    const k1 = await a1.attach(seg1, seg1Pages, 'r', false);
    const k64 = await a64.attach(seg64, seg64Pages, 'r', false);
    const att1 = a1.atts.get(k1)!;
    const att64 = a64.atts.get(k64)!;
    const mapLat = { a1: [] as number[], a64: [] as number[] };
    a1.driver.events.on('message', (m) => {
      if (m.dir === 'in' && m.type === 'map-ok' && m.latencyMs !== undefined)
        mapLat.a1.push(m.latencyMs * 1000);
    });
    a64.driver.events.on('message', (m) => {
      if (m.dir === 'in' && m.type === 'map-ok' && m.latencyMs !== undefined)
        mapLat.a64.push(m.latencyMs * 1000);
    });
    const R = new Rounds();
    // rounds 1 - WARM_ROUNDS .. 0 are the warm-up (see WARM_ROUNDS): run as the others, not counted
    for (let r = 1 - WARM_ROUNDS; r <= ROUNDS; r++) {
      const at = r + WARM_ROUNDS - 1; // this round's pages: N (K big faults) from page at * N (at * K * 64)
      const W = r >= 1 ? R : new Rounds(); // a warm-up round's figures go nowhere
      const prof = PROFILE !== undefined && r === 1;
      const profiled = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
        if (!prof) return fn();
        if (home instanceof RemoteInstance) await home.call('profile-start');
        await profileStart();
        try {
          return await fn();
        } finally {
          await profileStop(join(PROFILE!, `${what}-${pl}-attacher.cpuprofile`));
          if (home instanceof RemoteInstance)
            await home.call('profile-stop', join(PROFILE!, `${what}-${pl}-home.cpuprofile`));
        }
      };
      gc();
      const hop = await withCpu(others, () => profiled('hop-chain', () => raw.client.hopChain(N)));
      W.add('hop50', pct(hop.r, 0.5));
      W.add('hop99', pct(hop.r, 0.99));
      W.add('hopCpu', hop.cpu / N);
      const rt = await raw.client.timed(1, N);
      W.add('rt4k', pct(rt, 0.5));
      mapLat.a1.length = 0;
      gc();
      const f = await withCpu(others, () =>
        profiled('fault', () =>
          att1.q.run<number[]>(PROGRAMS, 'firstTouch', {
            addr: att1.va + at * N * PAGE,
            count: N,
            stride: 1,
          }),
        ),
      );
      W.add('fault50', pct(f.r, 0.5));
      W.add('fault99', pct(f.r, 0.99));
      W.add('faultCpu', f.cpu / N);
      W.add('map1', pct(mapLat.a1, 0.5));
      mapLat.a64.length = 0;
      gc();
      const f64 = await withCpu(others, () =>
        profiled('fault64', () =>
          att64.q.run<number[]>(PROGRAMS, 'firstTouch', {
            addr: att64.va + at * K * 64 * PAGE,
            count: K,
            stride: 64,
          }),
        ),
      );
      W.add('fault64', pct(f64.r, 0.5));
      W.add('fault64Cpu', f64.cpu / K);
      W.add('map64', pct(mapLat.a64, 0.5));
      // last in the round: its 256 KiB buffers must not be collected during the figures above
      const rt64 = await raw.client.timed(REPLY_64P, K * 4);
      W.add('rt64p', pct(rt64, 0.5));
    }
    const s = `-${pl}`;
    bench(`hop-chain-p50${s}`, R.get('hop50'), 'us');
    bench(`hop-chain-cpu${s}`, R.get('hopCpu'), 'us/op');
    bench(`raw-ws-4k-rtt-p50${s}`, R.get('rt4k'), 'us');
    // the transport's own 64-vs-1 scaling: a raw ws round trip with a 64-page reply vs a 4 KiB one
    bench(`raw-ws-64-pages-rtt-p50${s}`, R.get('rt64p'), 'us', R.get('rt4k'));
    bench(`remote-read-fault-p50${s}`, R.get('fault50'), 'us', R.get('hop50'));
    bench(`remote-read-fault-p99${s}`, R.get('fault99'), 'us', R.get('hop99'));
    bench(`remote-read-fault-cpu${s}`, R.get('faultCpu'), 'us/op', R.get('hopCpu'));
    bench(`map-1-page-p50${s}`, R.get('map1'), 'us', R.get('rt4k'));
    bench(`map-64-pages-p50${s}`, R.get('map64'), 'us', R.get('map1'));
    bench(`remote-read-fault-prefault64-p50${s}`, R.get('fault64'), 'us', R.get('fault50'));
    bench(`remote-read-fault-prefault64-cpu${s}`, R.get('fault64Cpu'), 'us/op', R.get('faultCpu'));
  } finally {
    raw.client.close();
    await raw.close();
    for (const x of [a1, a64, home]) await x.close();
  }
}

/** Invalidations: 1 and 8 remote readers vs the invalidation chain; a 1024-page range vs 1 page. */
async function invalidations(pl: Placement) {
  const M = QUICK ? 32 : 64; // pages written (= invalidations) per round
  const home = await LocalInstance.create({ name: 'h', frames: 8192, prefault: 1 });
  const remotes: Inst[] = [];
  for (let i = 1; i <= 8; i++)
    remotes.push(await spawnInst(pl, { name: `r${i}`, frames: 4096, prefault: 64 }));
  const raw = await rawFor(pl, remotes[0] as RemoteInstance);
  // the raw fan-out: one echo server per remote (in the remote's process for 2proc)
  const fanRaw = run('invalidations')
    ? await Promise.all(remotes.map((x) => rawFor(pl, x as RemoteInstance)))
    : [];
  try {
    await mesh([home], remotes);
    const R = new Rounds();
    const events: Array<{ pages: number; peers: number; ms: number; reason: string }> = [];
    home.driver.events.on('invalidated', (e) => events.push(e));
    const fans = run('invalidations') ? [1, 8] : [];
    const segs = new Map<number, { segid: string; keys: number[] }>();
    for (const fan of fans) {
      const segid = await home.exportSeg(M);
      const keys = await Promise.all(remotes.slice(0, fan).map((x) => x.attach(segid, M, 'r', true)));
      segs.set(fan, { segid, keys });
    }
    await raw.client.timed(WAKE_THEN_32, M);
    if (fanRaw.length > 0) await fanTimed(fanRaw, M);
    // rounds 1 - INV_WARM_ROUNDS .. 0 are the warm-up (see INV_WARM_ROUNDS): run as the others, not counted
    for (let r = 1 - INV_WARM_ROUNDS; fans.length > 0 && r <= ROUNDS; r++) {
      gc();
      const chain = await withCpu(remotes.slice(0, 1), () => raw.client.timed(WAKE_THEN_32, M));
      gc();
      const fan1 = await withCpu(remotes.slice(0, 1), () => fanTimed(fanRaw.slice(0, 1), M));
      gc();
      const fan8 = await withCpu(remotes, () => fanTimed(fanRaw, M));
      for (const fan of fans) {
        const { segid, keys } = segs.get(fan)!;
        const { p, va } = home.segs.get(segid)!;
        events.length = 0;
        gc();
        const w = await withCpu(remotes.slice(0, fan), async () => {
          for (let i = 0; i < M; i++) await p.write32(va + i * PAGE, (r + INV_WARM_ROUNDS) * 1000 + i);
        });
        const ms = events.filter((e) => e.reason === 'recall' && e.peers === fan).map((e) => e.ms * 1000);
        if (r > 0) {
          R.add(`inv${fan}`, pct(ms, 0.5));
          R.add(`inv${fan}Cpu`, w.cpu / M);
        }
        await Promise.all(remotes.slice(0, fan).map((x, i) => x.readAll(keys[i])));
      }
      if (r > 0) {
        R.add('chain50', pct(chain.r, 0.5));
        R.add('chainCpu', chain.cpu / M);
        R.add('rawFan1', pct(fan1.r, 0.5));
        R.add('rawFan1Cpu', fan1.cpu / M);
        R.add('rawFan8', pct(fan8.r, 0.5));
        R.add('rawFan8Cpu', fan8.cpu / M);
      }
    }
    const s = `-${pl}`;
    if (fans.length > 0) {
      bench(`inval-chain-p50${s}`, R.get('chain50'), 'us');
      bench(`inval-chain-cpu${s}`, R.get('chainCpu'), 'us/op');
      bench(`invalidate-ack-1-remote-p50${s}`, R.get('inv1'), 'us', R.get('chain50'));
      bench(`invalidate-ack-1-remote-cpu${s}`, R.get('inv1Cpu'), 'us/op', R.get('chainCpu'));
      bench(`invalidate-ack-8-remotes-p50${s}`, R.get('inv8'), 'us', R.get('chain50'));
      bench(`invalidate-fanout-8-vs-1-p50${s}`, R.get('inv8'), 'us', R.get('inv1'));
      bench(`invalidate-fanout-8-vs-1-cpu${s}`, R.get('inv8Cpu'), 'us/op', R.get('inv1Cpu'));
      // the machine's own fan-out: the raw chain to 8 servers at once vs to 1, and the driver's
      // fan-out against it (what is ours)
      bench(`raw-fanout-8-vs-1-p50${s}`, R.get('rawFan8'), 'us', R.get('rawFan1'));
      bench(`raw-fanout-8-vs-1-cpu${s}`, R.get('rawFan8Cpu'), 'us/op', R.get('rawFan1Cpu'));
      bench(`invalidate-fanout-8-vs-raw-fanout-8-p50${s}`, R.get('inv8'), 'us', R.get('rawFan8'));
      bench(`invalidate-fanout-8-vs-raw-fanout-8-cpu${s}`, R.get('inv8Cpu'), 'us/op', R.get('rawFan8Cpu'));
    }
    if (!run('ranges')) return;

    // a 1024-page range vs one page: mprotect of the source range one remote holds
    const ranges = new Map<number, { segid: string; key: number }>();
    for (const pages of [1, 1024]) {
      const segid = await home.exportSeg(pages);
      ranges.set(pages, { segid, key: await remotes[0].attach(segid, pages, 'r', true) });
    }
    const RR = new Rounds();
    // rounds -RANGE_WARM_ROUNDS .. 0 are the warm-up (see RANGE_WARM_ROUNDS): run as the others, not counted
    for (let r = -RANGE_WARM_ROUNDS; r <= ROUNDS * 2; r++) {
      for (const pages of [1, 1024]) {
        const { segid, key } = ranges.get(pages)!;
        const { p, va } = home.segs.get(segid)!;
        events.length = 0;
        // what measuring costs (process.cpuUsage ~150 µs in a many-thread process, plus the remote's
        // cpu() over IPC in 2proc): measured empty, right before, and taken off both figures, so the
        // constant does not flatter the 1024-vs-1 ratio
        const empty = await withCpu(remotes.slice(0, 1), async () => {});
        const c = await withCpu(remotes.slice(0, 1), async () => {
          await p.mprotect(va, pages * PAGE, 1);
          await p.mprotect(va, pages * PAGE, 3);
        });
        const ms = events.filter((e) => e.reason === 'protection').map((e) => e.ms * 1000);
        if (r > 0 && ms.length > 0) {
          RR.add(`range${pages}`, pct(ms, 0.5));
          RR.add(`range${pages}Cpu`, Math.max(0, c.cpu - empty.cpu));
          RR.add('measureCpu', empty.cpu);
        }
        await remotes[0].readAll(key);
      }
    }
    bench(
      `invalidate-1-page-range-p50${s}`,
      RR.get('range1'),
      'us',
      fans.length > 0 ? R.get('chain50') : null,
    );
    bench(`invalidate-1024-page-range-p50${s}`, RR.get('range1024'), 'us', RR.get('range1'));
    bench(`invalidate-1024-page-range-cpu${s}`, RR.get('range1024Cpu'), 'us/op', RR.get('range1Cpu'));
    bench(`invalidate-range-cpu-measurement-cost${s}`, RR.get('measureCpu'), 'us/op');
  } finally {
    raw.client.close();
    await raw.close();
    for (const f of fanRaw) {
      f.client.close();
      await f.close();
    }
    for (const x of [home, ...remotes]) await x.close();
  }
}

/**
 * Reclaim (kernel shrink, batches of 64) of N exported pages that 2 remote instances map (the
 * mappers in their own processes) vs N plain pages. Two home kernels in this process, each with the
 * driver loaded: `hp` holds a process's N plain pages, `h` an exported N-page segment both mappers
 * hold. Their shrinks ALTERNATE in blocks of N/BLOCKS pages (plain, exported, plain, ...), so a load
 * change on this shared machine moves both figures alike. A rate is the total pages over the total
 * time of its blocks, CPU likewise (the plain kernel's first block carries the one pass that clears
 * the young bits of its freshly written pages, as the plain figure always did: exported pages have
 * device entries in place of young PTEs). Counts the invalidate messages the home sends each mapper
 * and the rmap-notifier calls (the kernel's batches). BENCH_PROFILE profiles the middle block pair.
 */
async function reclaim() {
  const N = Number(process.env.BENCH_RECLAIM_PAGES ?? (QUICK ? 4096 : 100_000));
  const BLOCKS = QUICK ? 4 : 10;
  const S = Math.ceil(N / BLOCKS);
  /** Batches in flight (the same for both kinds). */
  const DEPTH = Number(process.env.BENCH_RECLAIM_BATCHES ?? 1);
  const opts = { frames: N + 4096, prefault: 1, swapSlots: N + 1024 };
  const hp = await LocalInstance.create({ name: 'hp', ...opts });
  const home = await LocalInstance.create({ name: 'h', ...opts });
  const mappers = [
    await RemoteInstance.spawn('m1', { name: 'm1', frames: N + 1024, prefault: 64 }),
    await RemoteInstance.spawn('m2', { name: 'm2', frames: N + 1024, prefault: 64 }),
  ];
  try {
    await mesh([home], mappers);
    // plain pages
    const p = await hp.kernel.spawn({ catchSignals: true });
    const va = await p.mmap(N * PAGE, 3);
    await p.run(PROGRAMS, 'fill', { addr: va, count: N });
    // exported pages, both mappers hold every page
    const k = home.kernel;
    const segid = await home.exportSeg(N);
    await Promise.all(mappers.map((m) => m.attach(segid, N, 'r', true)));
    const perPeer = new Map<string, number>();
    home.driver.events.on('message', (m) => {
      if (m.dir === 'out' && m.type === 'invalidate') perPeer.set(m.peer, (perPeer.get(m.peer) ?? 0) + 1);
    });
    const calls0 = k.stats().rmapNotifiers.calls;
    const writes0 = { plain: hp.kernel.stats().swap?.writes ?? 0, ex: k.stats().swap?.writes ?? 0 };
    const tot = {
      plain: { ms: 0, cpu: 0, pages: 0, outcomes: {} as Record<string, number> },
      ex: { ms: 0, cpu: 0, local: 0, pages: 0, outcomes: {} as Record<string, number> },
    };
    const sch = {
      plain: { user: 0, system: 0, oncpu: 0, runq: 0 },
      ex: { user: 0, system: 0, oncpu: 0, runq: 0 },
    };
    const addSched = (to: typeof sch.plain, a: typeof sch.plain, b: typeof sch.plain) => {
      for (const key of ['user', 'system', 'oncpu', 'runq'] as const) to[key] += b[key] - a[key];
    };
    const add = (to: Record<string, number>, from: Record<string, number>) => {
      for (const [o, n] of Object.entries(from)) to[o] = (to[o] ?? 0) + n;
    };
    for (let b = 0; b < BLOCKS; b++) {
      const prof = PROFILE !== undefined && b === Math.floor(BLOCKS / 2);
      gc();
      if (prof) await profileStart();
      let s0 = sched();
      let t0 = performance.now();
      const plain = await withCpu([], () => hp.kernel.shrink(S, { concurrency: 64, batches: DEPTH }));
      tot.plain.ms += performance.now() - t0;
      addSched(sch.plain, s0, sched());
      if (prof) await profileStop(join(PROFILE!, 'reclaim-plain-home.cpuprofile'));
      tot.plain.cpu += plain.cpu;
      tot.plain.pages += plain.r.reclaimed;
      add(tot.plain.outcomes, plain.r.outcomes);
      gc();
      if (prof) {
        for (const m of mappers) await m.call('profile-start');
        await profileStart();
      }
      s0 = sched();
      t0 = performance.now();
      const ex = await withCpu(mappers, () => k.shrink(S, { concurrency: 64, batches: DEPTH }));
      tot.ex.ms += performance.now() - t0;
      addSched(sch.ex, s0, sched());
      if (prof) {
        await profileStop(join(PROFILE!, 'reclaim-exported-home.cpuprofile'));
        for (const m of mappers)
          await m.call('profile-stop', join(PROFILE!, `reclaim-exported-${m.name}.cpuprofile`));
        console.log(
          `reclaim: profiled block ${b}: ${plain.r.reclaimed} plain, ${ex.r.reclaimed} exported pages`,
        );
      }
      tot.ex.cpu += ex.cpu;
      tot.ex.local += ex.local;
      tot.ex.pages += ex.r.reclaimed;
      add(tot.ex.outcomes, ex.r.outcomes);
    }
    await p.exit(0);
    const plainRate = tot.plain.pages / (tot.plain.ms / 1000);
    const exRate = tot.ex.pages / (tot.ex.ms / 1000);
    const plainCpu = tot.plain.cpu / Math.max(1, tot.plain.pages);
    const calls = k.stats().rmapNotifiers.calls - calls0;
    const inv = Math.max(...mappers.map((m) => perPeer.get(m.name) ?? 0));
    const swapWrites = {
      plain: (hp.kernel.stats().swap?.writes ?? 0) - writes0.plain,
      exported: (k.stats().swap?.writes ?? 0) - writes0.ex,
    };
    console.log(
      `reclaim: ${N} pages in ${BLOCKS} alternating blocks, batches of 64, ${DEPTH} in flight; plain ${JSON.stringify(tot.plain.outcomes)}; exported ${JSON.stringify(tot.ex.outcomes)}; ${calls} rmap-notifier calls; invalidates per mapper ${JSON.stringify(Object.fromEntries(perPeer))}; pages written to swap ${JSON.stringify(swapWrites)}`,
    );
    const per = (x: typeof sch.plain, pages: number, wall: number) =>
      `user ${(x.user / pages).toFixed(1)} + system ${(x.system / pages).toFixed(1)} us/page (all threads); main thread on a CPU ${(x.oncpu / 1000 / pages).toFixed(1)}, waiting on a run queue ${(x.runq / 1000 / pages).toFixed(1)}, wall ${((wall * 1000) / pages).toFixed(1)} us/page`;
    console.log(`reclaim: home, plain: ${per(sch.plain, Math.max(1, tot.plain.pages), tot.plain.ms)}`);
    console.log(`reclaim: home, exported: ${per(sch.ex, Math.max(1, tot.ex.pages), tot.ex.ms)}`);
    bench('reclaim-plain-pages-per-s', plainRate, 'pages/s');
    bench('reclaim-exported-2-mappers-pages-per-s', exRate, 'pages/s', plainRate);
    bench('reclaim-plain-cpu', plainCpu, 'us/page');
    bench('reclaim-exported-2-mappers-cpu', tot.ex.cpu / Math.max(1, tot.ex.pages), 'us/page', plainCpu);
    // the split: the home (this process, all its threads) against the plain run's, and each mapper
    bench('reclaim-exported-home-cpu', tot.ex.local / Math.max(1, tot.ex.pages), 'us/page', plainCpu);
    bench(
      'reclaim-exported-per-mapper-cpu',
      (tot.ex.cpu - tot.ex.local) / mappers.length / Math.max(1, tot.ex.pages),
      'us/page',
    );
    bench('reclaim-pages-per-rmap-notifier-call', tot.ex.pages / Math.max(1, calls), 'pages');
    bench('reclaim-invalidates-per-mapper-per-notifier-call', inv / Math.max(1, calls), 'msgs');
    bench('reclaim-invalidates-per-mapper-per-1000-pages', (inv * 1000) / Math.max(1, tot.ex.pages), 'msgs');
  } finally {
    for (const x of [hp, home, ...mappers]) await x.close();
  }
}

async function main() {
  for (const pl of PLACEMENTS) {
    if (run('faults')) {
      console.log(`placement ${pl}: faults`);
      await faults(pl);
    }
    if (run('invalidations') || run('ranges')) {
      console.log(`placement ${pl}: invalidations`);
      await invalidations(pl);
    }
  }
  if (run('reclaim')) {
    console.log('reclaim (separate processes)');
    await reclaim();
  }
  // 65,536 exported frames, each mapped by 2 instances (131,072 entries), then by 1
  for (const mappers of run('rmap') ? [2, 1] : []) {
    const r = new ReverseMap();
    const frames = 65536;
    for (let m = 1; m <= mappers; m++) for (let f = 0; f < frames; f++) r.add(f, m, 1, f, 1, 1, false);
    bench(`rmap-bytes-per-entry${mappers === 1 ? '-1-mapper' : ''}`, r.bytes() / r.size, 'B', 24);
  }
}

await main();
process.exit(0);
