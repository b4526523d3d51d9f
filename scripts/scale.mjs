#!/usr/bin/env node
// Scale runs of issue 6 (documented in docs/load.md, "Scale runs"; not part of CI). Every run starts
// its own local instances on 127.0.0.1 with the daemon's launcher, is bounded in count and time,
// and prints one JSON object (also written with --json FILE).
//
//   node scripts/scale.mjs boot    [--frames 1048576] [--repeat 3]          (b) start-up, RSS, heap
//   node scripts/scale.mjs reclaim [--pages 100000] [--frames 1048576] [--concurrency 1]
//                                  [--attachers 2] [--prefault 63] [--profile DIR]   (c)
//   node scripts/scale.mjs load    [--instances 8] [--duration 2000] [--workloads mixed,ping-pong]  (a)
//   node scripts/scale.mjs lru     [--pages 100000,250000]                  shrink() vs the old LRU loop
//   node scripts/scale.mjs profile FILE.cpuprofile [--from US --to US]      top self time of a profile
//
// Build first (`npx tsc -b`). Options: --json FILE, --logs DIR, --max-ms (a hard cap on the whole
// run, default 1,200,000), --wait-quiet (first wait, up to 10 min, until the machine is < 25% busy;
// every report records how busy it was: machine.busyBefore).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const root = new URL('..', import.meta.url).pathname;
const dist = join(root, 'packages/node/dist');
const { launchCluster, MAIN_JS } = await import(join(dist, 'daemon/launcher.js'));
const { AdminClient } = await import(join(dist, 'daemon/admin-client.js'));
const { waitMesh } = await import(join(dist, 'load/runner.js'));
const { bucketPercentiles, diffBuckets, snapshot } = await import(join(dist, 'load/stats.js'));

const PAGE = 4096;
const SCALE_PROGRAM = 'load/scale-program.js';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowUs = () => Number(process.hrtime.bigint() / 1000n); // CLOCK_MONOTONIC, as V8's profiler
const mib = (bytes) => Math.round((bytes / 2 ** 20) * 10) / 10;
const r2 = (x) => Math.round(x * 100) / 100;
const log = (...a) => console.error(`[scale ${new Date().toISOString().slice(11, 19)}]`, ...a);

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    frames: { type: 'string' },
    repeat: { type: 'string' },
    pages: { type: 'string' },
    concurrency: { type: 'string' },
    attachers: { type: 'string' },
    prefault: { type: 'string' },
    'budget-ms': { type: 'string' },
    profile: { type: 'string' },
    instances: { type: 'string' },
    procs: { type: 'string' },
    duration: { type: 'string' },
    workloads: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    json: { type: 'string' },
    logs: { type: 'string' },
    'max-ms': { type: 'string' },
    'wait-quiet': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});
const int = (name, def, min, max) => {
  const v = opt[name];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`--${name} must be an integer in [${min}, ${max}]`);
    process.exit(2);
  }
  return n;
};
const maxMs = int('max-ms', 1_200_000, 1000, 3_600_000);
const hardStop = setTimeout(() => {
  console.error(`scale: over --max-ms ${maxMs}; giving up`);
  process.exit(1);
}, maxMs);
hardStop.unref();

// ---- process measurements (/proc) ------------------------------------------------------------

/** VmRSS, VmHWM, RssAnon, RssFile, RssShmem, VmSize of a process, in MiB. */
function procMemory(pid) {
  const out = {};
  try {
    for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const m = /^(VmRSS|VmHWM|VmSize|RssAnon|RssFile|RssShmem|Threads):\s+(\d+)/.exec(line);
      if (m) out[m[1]] = m[1] === 'Threads' ? Number(m[2]) : Math.round(Number(m[2]) / 102.4) / 10;
    }
  } catch {
    // gone
  }
  return out;
}

/** User + system CPU seconds of a process (all threads). */
function procCpu(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return Number.NaN;
  }
}

/** Fraction of all CPUs busy (anything on the machine) over `ms`, from /proc/stat. */
async function machineBusy(ms = 2000) {
  const sample = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0);
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  const a = sample();
  await sleep(ms);
  const b = sample();
  return r2(1 - (b.idle - a.idle) / Math.max(1, b.total - a.total));
}

/**
 * The machine, and how busy it was just before the run (other work on a shared machine skews
 * the figures). With --wait-quiet, first wait (up to 10 min) until it is under 25% busy.
 */
async function machine() {
  let busy = await machineBusy();
  if (opt['wait-quiet']) {
    const end = Date.now() + 600_000;
    while (busy > 0.25 && Date.now() < end) {
      log(`machine ${Math.round(busy * 100)}% busy: waiting`);
      await sleep(10_000);
      busy = await machineBusy();
    }
  }
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    date: new Date().toISOString(),
    busyBefore: busy,
    loadavg: loadavg().map(r2),
  };
}

// ---- CPU profiles ------------------------------------------------------------------------------

/** Which package / layer a profile frame belongs to. */
function layerOf(url, name) {
  if (!url) return name.startsWith('(') ? name : '(native)';
  if (url.includes('/packages/driver/')) return 'driver';
  if (url.includes('/packages/protocol/')) return 'protocol';
  if (url.includes('/packages/node/dist/kernel/')) return 'kernel';
  if (url.includes('/packages/node/dist/daemon/')) return 'daemon';
  if (url.includes('/packages/node/dist/')) return 'node (other)';
  if (url.includes('/node_modules/')) return `npm:${url.split('/node_modules/').pop().split('/')[0]}`;
  if (url.startsWith('node:')) return 'node core';
  return 'other';
}

/**
 * Self time per function (and per layer) of one .cpuprofile, optionally only samples in
 * [fromUs, toUs] (the profile's clock is CLOCK_MONOTONIC in us, like process.hrtime).
 */
export function summariseProfile(file, fromUs = -Infinity, toUs = Infinity, top = 15) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const layers = new Map();
  let t = p.startTime;
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const dt = p.timeDeltas[i + 1] ?? 0; // the time this sample stands for
    const n = byId.get(p.samples[i]);
    if (!n) continue;
    const cf = n.callFrame;
    const file = cf.url ? cf.url.replace(/^file:\/\//, '').replace(root, '') : '';
    const key = `${cf.functionName || '(anonymous)'} ${file}${file ? `:${cf.lineNumber + 1}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    const layer = layerOf(cf.url, cf.functionName);
    layers.set(layer, (layers.get(layer) ?? 0) + dt);
    total += dt;
  }
  const pct = (v) => Math.round((1000 * v) / Math.max(1, total)) / 10;
  const rank = (m) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => ({ name: k, ms: Math.round(v / 1000), pct: pct(v) }));
  return {
    file: file.replace(root, ''),
    sampledMs: Math.round(total / 1000),
    topSelf: rank(self),
    byLayer: rank(layers),
  };
}

/** The main-thread profile of each process, by pid (written by scripts/cpu-profile-preload.mjs). */
function profilesByPid(dir) {
  const out = new Map();
  for (const f of readdirSync(dir)) {
    const m = /^(\d+)\.cpuprofile$/.exec(f);
    if (m) out.set(Number(m[1]), join(dir, f));
  }
  return out;
}

// ---- (b) boot ----------------------------------------------------------------------------------

/** ms between two pino log lines of a node's log ("starting" → "ready"), or null. */
function logSpan(file, fromMsg, toMsg) {
  const at = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /"time":"([^"]+)".*"msg":"([^"]+)"/.exec(line);
    if (m && (m[2] === fromMsg || m[2] === toMsg) && at[m[2]] === undefined) at[m[2]] = Date.parse(m[1]);
  }
  return at[fromMsg] !== undefined && at[toMsg] !== undefined ? at[toMsg] - at[fromMsg] : null;
}

async function bootOne(frames, logDir) {
  const t0 = performance.now();
  const spawnedAt = Date.now();
  const cluster = await launchCluster({ nodes: 1, frames, output: 'files', logDir, readyTimeoutMs: 120_000 });
  const healthyMs = performance.now() - t0;
  try {
    const node = cluster.nodes[0];
    const c = new AdminClient(node.adminUrl, undefined, 60_000);
    await sleep(500); // let start-up garbage settle
    const rss = procMemory(node.pid);
    // A pressure call on an idle instance reclaims nothing and reports the instance's memoryUsage().
    const p = await c.op('pressure', { pages: 1 });
    const status = await c.get('/status');
    const logFile = join(logDir, `${node.id}.log`);
    let spawnToReadyMs = null;
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      const m = /"time":"([^"]+)".*"msg":"ready"/.exec(line);
      if (m) spawnToReadyMs = Date.parse(m[1]) - spawnedAt;
    }
    return {
      frames,
      physMemMiB: mib(frames * PAGE),
      descriptorsMiB: mib(frames * 16),
      spawnToReadyMs,
      bootMs: logSpan(logFile, 'starting', 'ready'),
      spawnToHealthyMs: Math.round(healthyMs),
      proc: rss,
      memoryUsageMiB: Object.fromEntries(Object.entries(p.memory).map(([k, v]) => [k, mib(v)])),
      freeFrames: status.memory.freeFrames,
    };
  } finally {
    await cluster.stop(30_000);
  }
}

async function kernelBoot(frames) {
  const { createKernel } = await import(join(dist, 'kernel/index.js'));
  const before = process.memoryUsage();
  const t0 = performance.now();
  const k = await createKernel({ name: `boot-${frames}`, frames });
  const ms = performance.now() - t0;
  const after = process.memoryUsage();
  await k.close();
  return {
    frames,
    createKernelMs: r2(ms),
    rssDeltaMiB: mib(after.rss - before.rss),
    arrayBuffersDeltaMiB: mib(after.arrayBuffers - before.arrayBuffers),
  };
}

async function runBoot() {
  const m = await machine();
  const frames = int('frames', 1_048_576, 16, 1_048_576);
  const logDir = opt.logs ?? mkdtempSync(join(tmpdir(), 'xpmesh-scale-boot-'));
  const sizes = [...new Set([4096, 262_144, frames])];
  const repeat = int('repeat', 3, 1, 10);
  const instances = [];
  for (let i = 0; i < repeat; i++) {
    for (const f of sizes) {
      log(`boot: one instance with ${f} frames (${i + 1}/${repeat})`);
      instances.push(await bootOne(f, logDir));
    }
  }
  const kernels = [];
  for (const f of sizes) kernels.push(await kernelBoot(f));
  return { run: 'boot', machine: m, logDir, instances, kernelOnly: kernels, loadavgEnd: loadavg().map(r2) };
}

// ---- (c) reclaim 100k exported pages under attachers ----------------------------------------

async function runProgram(client, pid, exportName, base, first, count, durationMs) {
  const r = await client.op('run', {
    pid,
    module: SCALE_PROGRAM,
    export: exportName,
    args: { base, first, count, durationMs },
  });
  return r.result;
}

/** Touch [0, pages) in chunks; returns totals. */
async function touchAll(client, pid, exportName, base, pages, chunk, deadline) {
  const tot = { touched: 0, wrong: 0, samples: [], errors: {}, ms: 0 };
  for (let first = 0; first < pages; first += chunk) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const count = Math.min(chunk, pages - first);
    const r = await runProgram(client, pid, exportName, base + first * PAGE, first, count, left);
    tot.touched += r.touched;
    tot.wrong += r.wrong;
    tot.samples.push(...r.samples.slice(0, 5 - tot.samples.length));
    for (const [k, v] of Object.entries(r.errors)) tot.errors[k] = (tot.errors[k] ?? 0) + v;
    tot.ms += r.ms;
    if (r.touched < count) break;
  }
  return tot;
}

const rmapOf = (status) => status.driver?.rmap ?? {};

async function instanceState(client, pid) {
  const [s, snap] = await Promise.all([client.get('/status'), snapshot(client)]);
  return {
    node: s.node,
    proc: procMemory(pid),
    cpuS: procCpu(pid),
    freeFrames: s.memory.freeFrames,
    lruPages: s.memory.lruPages,
    swap: s.memory.swap,
    rmap: rmapOf(s),
    cachedPages: s.driver?.cachedPages,
    counters: snap.counters,
    byType: snap.byType,
    messages: snap.messages,
    bytes: snap.bytes,
    reclaimCounters: s.memory.counters?.reclaim,
  };
}

/** What the report keeps of an instance's state (the counters only feed the differences). */
const slim = ({ node, proc, cpuS, freeFrames, lruPages, swap, rmap, cachedPages }) => ({
  node,
  proc,
  cpuS,
  freeFrames,
  lruPages,
  swap,
  rmap,
  cachedPages,
});

function diffCounters(a, b) {
  const out = {};
  for (const k of new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])) {
    const d = (b?.[k] ?? 0) - (a?.[k] ?? 0);
    if (d) out[k] = d;
  }
  return out;
}

function diffTypes(a, b) {
  const out = {};
  for (const [t, v] of Object.entries(b ?? {})) {
    const msgs = v.msgs - (a?.[t]?.msgs ?? 0);
    const bytes = v.bytes - (a?.[t]?.bytes ?? 0);
    if (msgs) out[t] = { msgs, bytes };
  }
  return out;
}

async function runReclaim() {
  const m = await machine();
  const pages = int('pages', 100_000, 1, 262_144);
  const frames = int('frames', 1_048_576, 1024, 1_048_576);
  const concurrency = int('concurrency', 1, 1, 64);
  const nAttachers = int('attachers', 2, 1, 8);
  const prefault = int('prefault', 63, 0, 63);
  const budgetMs = int('budget-ms', 10_000, 100, 15_000);
  if (frames < pages * 1.1 + 1024) throw new Error('--frames must leave room for the segment and the copies');
  const logDir = opt.logs ?? mkdtempSync(join(tmpdir(), 'xpmesh-scale-reclaim-'));
  const profileDir = opt.profile;
  const deadline = Date.now() + maxMs - 60_000;
  const savedNodeOptions = process.env.NODE_OPTIONS;
  if (profileDir) {
    // --cpu-prof is not allowed in NODE_OPTIONS: a preloaded module runs the profiler instead.
    mkdirSync(profileDir, { recursive: true });
    const preload = new URL('./cpu-profile-preload.mjs', import.meta.url).href;
    process.env.NODE_OPTIONS = `${savedNodeOptions ?? ''} --import ${preload}`.trim();
    process.env.XPMESH_CPU_PROFILE_DIR = profileDir;
  }
  log(
    `reclaim: ${1 + nAttachers} instances, ${frames} frames each, ${pages}-page segment; logs in ${logDir}`,
  );
  const t0 = performance.now();
  const cluster = await launchCluster({
    nodes: 1 + nAttachers,
    frames,
    output: 'files',
    logDir,
    readyTimeoutMs: 120_000,
    extraArgs: ['--prefault', String(prefault), '--shutdown-ms', '60000'],
  });
  const startMs = performance.now() - t0;
  if (profileDir) {
    if (savedNodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = savedNodeOptions;
    delete process.env.XPMESH_CPU_PROFILE_DIR;
  }
  const clients = cluster.nodes.map((n) => new AdminClient(n.adminUrl, undefined, 600_000));
  const pids = cluster.nodes.map((n) => n.pid);
  const phases = {};
  const result = {
    run: 'reclaim',
    machine: m,
    logDir,
    profileDir,
    params: { pages, frames, concurrency, attachers: nAttachers, prefault, budgetMs },
  };
  try {
    await waitMesh(clients, 60_000);
    result.startMs = Math.round(startMs);
    result.afterBoot = (await Promise.all(clients.map((c, i) => instanceState(c, pids[i])))).map(slim);
    const [home, ...att] = clients;
    const size = pages * PAGE;

    // set-up: the home stamps every page and exports the range; the attachers attach it
    let t = performance.now();
    const hpid = (await home.op('spawn', { name: 'scale-home' })).pid;
    const hbase = (await home.op('mmap', { pid: hpid, len: size })).addr;
    const stamp = await touchAll(home, hpid, 'stampPages', hbase, pages, 50_000, deadline);
    phases.stampMs = Math.round(performance.now() - t);
    if (stamp.touched !== pages) throw new Error(`home stamped ${stamp.touched} of ${pages} pages`);
    t = performance.now();
    const segid = (await home.op('make', { pid: hpid, addr: hbase, size, mode: 0o666 })).segid;
    const apids = [];
    const bases = [];
    const apProcs = [];
    for (const c of att) {
      const pid = (await c.op('spawn', { name: 'scale-attacher' })).pid;
      const apid = (await c.op('get', { pid, segid, access: 'r' })).apid;
      bases.push((await c.op('attach', { pid, apid, offset: 0, size })).addr);
      apids.push(apid);
      apProcs.push(pid);
    }
    phases.makeAttachMs = Math.round(performance.now() - t);

    // fault-in: every attacher reads every page (remote read faults), at the same time
    log(`reclaim: ${nAttachers} attacher(s) fault in ${pages} pages each`);
    const faultFrom = nowUs();
    const attSnap0 = await Promise.all(att.map((c) => snapshot(c)));
    t = performance.now();
    const faults = await Promise.all(
      att.map((c, i) => touchAll(c, apProcs[i], 'readPages', bases[i], pages, 25_000, deadline)),
    );
    phases.faultInMs = Math.round(performance.now() - t);
    const faultTo = nowUs();
    const attSnap1 = await Promise.all(att.map((c) => snapshot(c)));
    for (const [i, f] of faults.entries())
      if (f.touched !== pages || f.wrong) throw new Error(`attacher ${i + 1}: ${JSON.stringify(f)}`);
    result.faultIn = faults.map((f, i) => ({
      pages: f.touched,
      wrong: f.wrong,
      programMs: Math.round(f.ms),
      pagesPerS: Math.round(f.touched / (f.ms / 1000)),
      mapRequests: (attSnap1[i].byType.map?.msgs ?? 0) - (attSnap0[i].byType.map?.msgs ?? 0),
      remoteFaultLatencyUs: bucketPercentiles(diffBuckets(attSnap1[i].fault, attSnap0[i].fault)),
    }));
    const beforeReclaim = await Promise.all(clients.map((c, i) => instanceState(c, pids[i])));
    result.beforeReclaim = beforeReclaim.map(slim);
    const exported0 = beforeReclaim[0].rmap.pages;

    // pressure until every exported page is reclaimed (bounded: calls, time)
    log(
      `reclaim: pressure on the home until ${exported0} exported pages are reclaimed (concurrency ${concurrency})`,
    );
    const calls = [];
    const pressureFrom = nowUs();
    const homeSnap0 = await snapshot(home);
    t = performance.now();
    let reclaimed = 0;
    for (let n = 0; n < 10_000 && reclaimed < pages && Date.now() < deadline; n++) {
      const want = Math.min(pages - reclaimed, 20_000);
      const r = await home.op('pressure', { pages: want, budgetMs, concurrency });
      calls.push({
        reclaimed: r.reclaimed,
        scanned: r.scanned,
        ms: Math.round(r.ms),
        stoppedBy: r.stoppedBy,
        outcomes: r.outcomes,
        heapUsedMiB: mib(r.memory.heapUsed),
        rssMiB: mib(r.memory.rss),
      });
      reclaimed += r.reclaimed;
      log(`  pressure: +${r.reclaimed} (${reclaimed}/${pages}) in ${Math.round(r.ms)} ms, ${r.stoppedBy}`);
      if (r.reclaimed === 0 && r.stoppedBy !== 'deadline') break;
    }
    const pressureMs = performance.now() - t;
    const pressureTo = nowUs();
    const homeSnap1 = await snapshot(home);
    const afterReclaim = await Promise.all(clients.map((c, i) => instanceState(c, pids[i])));
    result.afterReclaim = afterReclaim.map(slim);
    const h0 = beforeReclaim[0];
    const h1 = afterReclaim[0];
    const exportedReclaimed = exported0 - h1.rmap.pages;
    const homeCounters = diffCounters(h0.counters, h1.counters);
    const homeMsgs = diffTypes(h0.byType, h1.byType);
    const attMsgs = afterReclaim.slice(1).map((a, i) => diffTypes(beforeReclaim[i + 1].byType, a.byType));
    result.reclaim = {
      pressureCalls: calls.length,
      reclaimed,
      exportedBefore: exported0,
      exportedAfter: h1.rmap.pages,
      exportedReclaimed,
      rmapEntriesBefore: h0.rmap.entries,
      rmapEntriesAfter: h1.rmap.entries,
      wallMs: Math.round(pressureMs),
      pagesPerS: Math.round(reclaimed / (pressureMs / 1000)),
      msPerPage: r2(pressureMs / Math.max(1, reclaimed)),
      invalidationsSent: homeCounters.invalidationsSent ?? 0,
      invalidationsAcked: homeCounters.invalidationsAcked ?? 0,
      invalidateMsgsOut: homeMsgs.invalidate?.msgs ?? 0,
      invalidateAckMsgsOut: attMsgs.reduce((s, m) => s + (m['invalidate-ack']?.msgs ?? 0), 0),
      homeMessagesOut: homeMsgs,
      attacherMessagesOut: attMsgs,
      homeCounters,
      swapWrites: (h1.swap?.writes ?? 0) - (h0.swap?.writes ?? 0),
      kernelReclaimOutcomes: diffCounters(h0.reclaimCounters, h1.reclaimCounters),
      cpuSeconds: afterReclaim.map((a, i) => ({ node: a.node, cpuS: r2(a.cpuS - beforeReclaim[i].cpuS) })),
      homeCpuMsPerPage: r2(((h1.cpuS - h0.cpuS) * 1000) / Math.max(1, reclaimed)),
      attacherCpuMsPerPage: afterReclaim
        .slice(1)
        .map((a, i) => r2(((a.cpuS - beforeReclaim[i + 1].cpuS) * 1000) / Math.max(1, reclaimed))),
      invalidationLatencyUs: bucketPercentiles(diffBuckets(homeSnap1.invalidation, homeSnap0.invalidation)),
      calls,
    };
    result.driverRmap = {
      entriesAtPeak: h0.rmap.entries,
      bytesAtPeak: h0.rmap.bytes,
      bytesPerEntryAllocated: r2(h0.rmap.bytesPerEntry ?? 0),
      bytesAfter: h1.rmap.bytes,
    };

    // integrity: the attachers re-read a sample (remote faults → swap-in at the home)
    const sample = Math.min(pages, 2000);
    t = performance.now();
    const reread = await Promise.all(
      att.map((c, i) => touchAll(c, apProcs[i], 'readPages', bases[i], sample, sample, deadline)),
    );
    result.reread = {
      pages: sample,
      ms: Math.round(performance.now() - t),
      wrong: reread.map((r) => r.wrong),
      errors: reread.map((r) => r.errors),
    };
    result.checks = await Promise.all(
      clients.map((c) => c.op('check', {}).then((r) => ({ ok: r.ok, violations: r.violations.slice(0, 5) }))),
    );

    // tear-down: attachers exit (detach), then the home
    t = performance.now();
    for (const [i, c] of att.entries())
      await c.op('exit', { pid: apProcs[i] }).catch((e) => log(`exit: ${e.message}`));
    await home.op('exit', { pid: hpid }).catch((e) => log(`exit: ${e.message}`));
    phases.teardownMs = Math.round(performance.now() - t);
    result.phases = phases;
    result.windowsUs = { faultIn: [faultFrom, faultTo], pressure: [pressureFrom, pressureTo] };
  } finally {
    const codes = await cluster.stop(90_000);
    result.exitCodes = codes;
    result.loadavgEnd = loadavg().map(r2);
  }
  if (profileDir) {
    await sleep(500);
    const byPid = profilesByPid(profileDir);
    result.profiles = {};
    for (const [i, n] of cluster.nodes.entries()) {
      const f = byPid.get(n.pid);
      if (!f) continue;
      const w = result.windowsUs;
      result.profiles[n.id] = {
        faultIn: w ? summariseProfile(f, ...w.faultIn, 12) : undefined,
        pressure: w ? summariseProfile(f, ...w.pressure, 15) : undefined,
        role: i === 0 ? 'home' : 'attacher',
      };
    }
  }
  return result;
}

// ---- the LRU scan alone: shrink() vs the loop it replaced ----------------------------------------

/**
 * The shrink loop before the live LRU iterator (kept here only as the baseline of `lru`): it took
 * the head with `lru.values().next()` on every step.
 */
async function headTakingShrink(k, reclaimPage, nr) {
  const res = { scanned: 0, reclaimed: 0 };
  const budget = k.lru.size * 2 + 8;
  while (res.reclaimed < nr && res.scanned < budget && k.lru.size > 0) {
    const pfn = k.lru.values().next().value;
    k.lru.delete(pfn);
    k.lru.add(pfn);
    res.scanned++;
    if ((await reclaimPage(k, pfn, { force: false, blockable: true })) === 'reclaimed') res.reclaimed++;
  }
  return res;
}

/** One kernel in this process, N stamped pages on its LRU, one full shrink; both loops. */
async function runLru() {
  const m = await machine();
  const { createKernel } = await import(join(dist, 'kernel/index.js'));
  const { reclaimPage, shrink } = await import(join(dist, 'kernel/reclaim.js'));
  const sizes = (opt.pages ?? '100000,250000').split(',').map(Number);
  const runs = [];
  for (const n of sizes) {
    if (!Number.isInteger(n) || n < 1 || n > 800_000) throw new Error('--pages: 1..800000 each');
    for (const variant of ['live-iterator', 'head-taking']) {
      log(`lru: ${n} pages, ${variant}`);
      const kern = await createKernel({ name: 'lru', frames: n + 5120 });
      try {
        const p = await kern.spawn();
        const a = await p.mmap(n * PAGE, 3);
        const args = { base: a, first: 0, count: n, durationMs: 600_000 };
        const st = await p.run(join(dist, SCALE_PROGRAM), 'stampPages', args);
        const k = kern.k;
        const lruPages = k.lru.size;
        const t0 = performance.now();
        const r =
          variant === 'live-iterator' ? await shrink(k, n, true) : await headTakingShrink(k, reclaimPage, n);
        const ms = performance.now() - t0;
        runs.push({
          variant,
          pages: n,
          stamped: st.touched,
          lruPages,
          scanned: r.scanned,
          reclaimed: r.reclaimed,
          ms: Math.round(ms),
          usPerScanned: r2((ms * 1000) / Math.max(1, r.scanned)),
        });
      } finally {
        await kern.close();
      }
    }
  }
  return { run: 'lru', machine: m, runs, loadavgEnd: loadavg().map(r2) };
}

// ---- (a) xpmesh load with 8 instances -----------------------------------------------------------

async function runLoad() {
  const m = await machine();
  const instances = int('instances', 8, 1, 16);
  const procs = int('procs', 1, 1, 16);
  const duration = int('duration', 2000, 100, 60_000);
  const workloads = (opt.workloads ?? 'mixed,ping-pong,read-mostly,reclaim-storm').split(',');
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-scale-load-'));
  const runs = [];
  for (const w of workloads) {
    const json = join(dir, `${w}.json`);
    const args = [
      MAIN_JS,
      'load',
      '--workload',
      w,
      '--instances',
      String(instances),
      '--procs',
      String(procs),
      '--duration',
      String(duration),
      '--seed',
      '1',
      '--json',
      json,
      '--quiet',
      '--logs',
      join(dir, w),
    ];
    log(`load: xpmesh ${args.slice(1).join(' ')}`);
    const t0 = performance.now();
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: duration + 180_000 });
    const wallMs = Math.round(performance.now() - t0);
    let rep;
    try {
      rep = JSON.parse(readFileSync(json, 'utf8'));
    } catch {
      runs.push({ workload: w, exit: r.status, wallMs, error: (r.stderr ?? '').slice(-2000) });
      continue;
    }
    runs.push({
      workload: w,
      command: `xpmesh ${args.slice(1, 12).join(' ')}`,
      exit: r.status,
      wallMs,
      processes: instances * procs,
      ops: rep.ops.total,
      opsPerSec: Math.round(rep.ops.opsPerSec),
      opP50Us: rep.opLatencyUs.all.p50,
      opP99Us: rep.opLatencyUs.all.p99,
      remoteFaultP50Us: rep.remoteFaultLatencyUs.p50,
      remoteFaultP99Us: rep.remoteFaultLatencyUs.p99,
      invalidationP50Us: rep.invalidationLatencyUs.p50,
      msgsPerOp: rep.messages.perOp,
      upgrades: rep.upgrades,
      recalls: rep.recalls,
      reclaims: rep.events.reclaims,
      historyOk: rep.history.ok,
      violations: rep.history.violations.length,
      invariantsOk: rep.invariants.every((x) => x.ok),
      errors: rep.errors.total,
    });
  }
  return {
    run: 'load',
    machine: m,
    loadavgEnd: loadavg().map(r2),
    instances,
    procsPerInstance: procs,
    durationMs: duration,
    reportsDir: dir,
    runs,
  };
}

// ---- main --------------------------------------------------------------------------------------

/** The comment block at the top of this file. */
const HELP = (() => {
  const lines = readFileSync(new URL(import.meta.url), 'utf8')
    .split('\n')
    .slice(1);
  const end = lines.findIndex((l) => !l.startsWith('//'));
  return lines
    .slice(0, end)
    .map((l) => l.slice(3))
    .join('\n');
})();

const cmd = positionals[0];
if (opt.help || !cmd) {
  console.log(HELP);
  process.exit(cmd ? 0 : 2);
}
let out;
if (cmd === 'boot') out = await runBoot();
else if (cmd === 'reclaim') out = await runReclaim();
else if (cmd === 'load') out = await runLoad();
else if (cmd === 'lru') out = await runLru();
else if (cmd === 'profile') {
  if (!positionals[1]) {
    console.error('profile needs a .cpuprofile file');
    process.exit(2);
  }
  out = summariseProfile(
    positionals[1],
    opt.from ? Number(opt.from) : -Infinity,
    opt.to ? Number(opt.to) : Infinity,
    25,
  );
} else {
  console.error(`unknown run "${cmd}" (boot, reclaim, load, lru, profile)`);
  process.exit(2);
}
const text = JSON.stringify(out, null, 2);
console.log(text);
if (opt.json) writeFileSync(opt.json, `${text}\n`);
process.exit(0);
