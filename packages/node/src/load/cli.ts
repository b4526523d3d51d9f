/**
 * `xpmesh load`: run a workload against a local cluster it starts (default) or given instances
 * (--connect), with live progress, a summary table, an optional JSON and HTML report, and a
 * history check whose failure makes the exit code non-zero.
 * Exit codes: 0 ok, 1 the history check (or the run) failed, 2 bad arguments.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { AdminClient } from '../daemon/admin-client.js';
import { parseDnsConnect, resolveConnect } from '../daemon/discover.js';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import { MAX_PROCS } from './program.js';
import { buildReport, htmlReport, type LoadReport, textReport } from './report.js';
import { type LoadOptions, type Progress, runWorkload } from './runner.js';
import { WORKLOAD_HELP, WORKLOADS, type Workload } from './workloads.js';

export const LIMITS = {
  maxDurationMs: 600_000,
  maxOps: 10_000_000,
  maxInstances: 16,
  maxPages: 1 << 20,
} as const;

export const LOAD_HELP = `usage: xpmesh load [options]

Drives a workload through processes of several instances sharing one exported segment, then
checks the recorded history (every read returns the latest completed write) and prints a report.
The accesses run inside the processes (worker threads) through their page tables, so remote
faults, upgrades, invalidations and recalls happen for real.

workloads (--workload, or "all" to run each in turn):
${WORKLOADS.map((w) => `  ${w.padEnd(14)} ${WORKLOAD_HELP[w]}`).join('\n')}

options:
  --workload W        one of the above, or all                            [mixed]
  --instances N       instances of the local cluster (1..${LIMITS.maxInstances})             [3]
  --procs N           processes per instance                              [2]
  --pages N           pages the workload touches                          [16]
  --segment-pages N   size of the exported segment in pages (>= pages)    [= pages]
  --duration MS       run time per workload (hard cap ${LIMITS.maxDurationMs})            [3000]
  --ops N             total operations cap (hard cap ${LIMITS.maxOps})          [2000000]
  --seed N            seed: fixes each process's sequence of operations  [1]
  --frames N          frames per instance of the local cluster           [8192]
  --connect URLS      use running instances (admin URLs, comma-separated; the first is the home),
                      or dns:NAME:PORT: every address of NAME (with --instances N: wait for N,
                      use the first N; waits up to 60 s)
  --token T           admin bearer token (or XPMESH_ADMIN_TOKEN)
  --logs DIR          keep the local cluster's logs in DIR (default: a temp dir)
  --json FILE         write the full report as JSON (an array with --workload all)
  --html FILE         write a self-contained HTML report (the last workload with --workload all)
  --quiet             no progress output
  -h, --help          this help

exit code: 0 when every history check passed, 1 when one failed, a history was incomplete (a run
call failed and its operations were lost) or the run broke, 2 on bad usage.`;

class Usage extends Error {}

function int(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (!/^\d+$/.test(v)) throw new Usage(`--${name} must be a non-negative integer, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw new Usage(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export interface LoadCliIo {
  out(s: string): void;
  err(s: string): void;
  isTTY: boolean;
}

const defaultIo: LoadCliIo = {
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
  isTTY: process.stdout.isTTY === true,
};

export async function runLoadCli(argv: string[], io: LoadCliIo = defaultIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        workload: { type: 'string' },
        instances: { type: 'string' },
        procs: { type: 'string' },
        pages: { type: 'string' },
        'segment-pages': { type: 'string' },
        duration: { type: 'string' },
        ops: { type: 'string' },
        seed: { type: 'string' },
        frames: { type: 'string' },
        connect: { type: 'string' },
        token: { type: 'string' },
        logs: { type: 'string' },
        json: { type: 'string' },
        html: { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    io.err(`xpmesh load: ${(err as Error).message}\nrun \`xpmesh load --help\` for usage`);
    return 2;
  }
  if (values.help) {
    io.out(LOAD_HELP);
    return 0;
  }
  const s = (k: string) => values[k] as string | undefined;
  let workloads: Workload[];
  let opts: Omit<LoadOptions, 'workload'>;
  let instances: number;
  let urls: string[] | undefined;
  let frames: number;
  let dnsWant: number | undefined;
  try {
    const w = s('workload') ?? 'mixed';
    if (w === 'all') workloads = [...WORKLOADS];
    else if ((WORKLOADS as readonly string[]).includes(w)) workloads = [w as Workload];
    else throw new Usage(`--workload must be one of ${WORKLOADS.join(', ')}, all; got "${w}"`);
    const connect = s('connect');
    let dns: ReturnType<typeof parseDnsConnect>;
    try {
      dns = connect !== undefined ? parseDnsConnect(connect) : undefined;
    } catch (err) {
      throw new Usage((err as Error).message);
    }
    if (connect !== undefined && dns) {
      // resolved below, before the run: every address, or the first --instances N once N resolve
      dnsWant =
        s('instances') !== undefined ? int(s('instances'), 'instances', 3, 1, LIMITS.maxInstances) : 0;
      urls = Array.from({ length: dnsWant || 1 }, () => 'dns');
    } else if (connect !== undefined) {
      urls = connect
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean);
      if (urls.length === 0) throw new Usage('--connect needs at least one admin URL');
      for (const u of urls)
        if (!/^https?:\/\/[^/]+/.test(u)) throw new Usage(`--connect: "${u}" is not an http URL`);
      if (s('instances') !== undefined) throw new Usage('give --instances or --connect, not both');
    }
    instances = urls?.length ?? int(s('instances'), 'instances', 3, 1, LIMITS.maxInstances);
    const procsPerInstance = int(s('procs'), 'procs', 2, 1, 256);
    if (instances * procsPerInstance > MAX_PROCS) throw new Usage(`at most ${MAX_PROCS} processes in all`);
    const pages = int(s('pages'), 'pages', 16, 1, LIMITS.maxPages);
    const segmentPages = int(s('segment-pages'), 'segment-pages', pages, 1, LIMITS.maxPages);
    if (segmentPages < pages) throw new Usage('--segment-pages must be >= --pages');
    frames = int(s('frames'), 'frames', Math.max(8192, 4 * segmentPages), 64, 1 << 22);
    const durationMs = int(
      s('duration'),
      'duration',
      s('ops') !== undefined ? 120_000 : 3000,
      1,
      LIMITS.maxDurationMs,
    );
    const maxOps = int(s('ops'), 'ops', 2_000_000, 1, LIMITS.maxOps);
    const seed = int(s('seed'), 'seed', 1, 0, 2 ** 32 - 1);
    opts = { procsPerInstance, pages, segmentPages, durationMs, maxOps, seed };
  } catch (err) {
    if (err instanceof Usage) {
      io.err(`xpmesh load: ${err.message}\nrun \`xpmesh load --help\` for usage`);
      return 2;
    }
    throw err;
  }
  const token = s('token') ?? process.env.XPMESH_ADMIN_TOKEN;
  let cluster: LocalCluster | undefined;
  const reports: LoadReport[] = [];
  try {
    if (dnsWant !== undefined) {
      urls = (await resolveConnect(s('connect') ?? '', { min: dnsWant || 1, waitMs: 60_000 })).slice(
        0,
        Math.min(dnsWant || LIMITS.maxInstances, Math.floor(MAX_PROCS / opts.procsPerInstance)),
      );
      if (!values.quiet) io.out(`--connect ${s('connect')}: ${urls.join(', ')}`);
    }
    if (!urls) {
      const logDir = s('logs') ?? mkdtempSync(join(tmpdir(), 'xpmesh-load-'));
      if (!values.quiet)
        io.out(
          `Starting a local cluster of ${instances} instance(s) (${frames} frames each); logs in ${logDir}`,
        );
      cluster = await launchCluster({ nodes: instances, frames, output: 'files', logDir, adminToken: token });
      urls = cluster.nodes.map((n) => n.adminUrl);
    }
    const clients = urls.map((u) => new AdminClient(u, token, 120_000));
    for (const workload of workloads) {
      const o: LoadOptions = {
        ...opts,
        workload,
        onProgress: values.quiet ? undefined : progressPrinter(io, opts, workload),
      };
      const startedAt = new Date();
      const run = await runWorkload(clients, o);
      (o.onProgress as ProgressSink | undefined)?.done?.();
      const report = buildReport(o, run, { mode: cluster ? 'local' : 'connect', urls }, startedAt);
      reports.push(report);
      io.out('');
      io.out(textReport(report));
    }
  } catch (err) {
    io.err(`xpmesh load: the run failed: ${(err as Error)?.stack ?? String(err)}`);
    return 1;
  } finally {
    if (cluster) await cluster.stop(10_000);
    const jsonFile = s('json');
    if (jsonFile && reports.length)
      writeFileSync(jsonFile, `${JSON.stringify(workloads.length === 1 ? reports[0] : reports, null, 2)}\n`);
    const htmlFile = s('html');
    if (htmlFile && reports.length) writeFileSync(htmlFile, htmlReport(reports[reports.length - 1]));
  }
  const violated = reports.filter((r) => !r.ok && r.history.verdict !== 'incomplete');
  const incomplete = reports.filter((r) => !r.ok && r.history.verdict === 'incomplete');
  if (violated.length)
    io.err(`xpmesh load: history check FAILED for ${violated.map((r) => r.workload).join(', ')}`);
  if (incomplete.length)
    io.err(
      `xpmesh load: history INCOMPLETE for ${incomplete.map((r) => r.workload).join(', ')}: ` +
        'operations were lost (failed run calls), so linearizability could not be checked; no violation among the recorded ones',
    );
  if (violated.length || incomplete.length) return 1;
  return 0;
}

type ProgressSink = ((p: Progress) => void) & { done?: () => void };

/** A live bar with ops/s on a TTY; a plain line per second otherwise. */
function progressPrinter(io: LoadCliIo, opts: Omit<LoadOptions, 'workload'>, workload: string): ProgressSink {
  const frac = (p: Progress) => Math.min(1, Math.max(p.elapsedMs / opts.durationMs, p.ops / opts.maxOps));
  if (io.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${workload.padEnd(13)} {bar} {percentage}% | {ops} ops | {rate} ops/s | {errors} errors`,
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(1000, 0, { ops: 0, rate: 0, errors: 0 });
    const sink: ProgressSink = (p) =>
      bar.update(Math.round(frac(p) * 1000), { ops: p.ops, rate: Math.round(p.opsPerSec), errors: p.errors });
    sink.done = () => bar.stop();
    return sink;
  }
  let last = 0;
  return (p) => {
    if (p.elapsedMs - last < 1000 && p.opsPerSec !== 0) return;
    last = p.elapsedMs;
    io.out(
      `${workload}: ${(frac(p) * 100).toFixed(0)}%  ${p.ops} ops  ${Math.round(p.opsPerSec)} ops/s  ${p.errors} errors`,
    );
  };
}
