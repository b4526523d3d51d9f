/**
 * `xpmesh load`: run a workload against a local cluster it starts (default) or given instances
 * (--connect), with live progress, a summary table, an optional JSON and HTML report, and a
 * history check whose failure makes the exit code non-zero; thresholds; comparison of reports.
 * Exit codes: 0 ok, 1 the history check (or the run) failed, 2 bad arguments, 99 a threshold was
 * crossed (the histories being fine).
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { AdminClient } from '../daemon/admin-client.js';
import { parseDnsConnect, resolveConnect } from '../daemon/discover.js';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import {
  CompareError,
  compareFiles,
  compareHtml,
  compareHtmlFragment,
  compareReports,
  compareText,
  readReports,
} from './compare.js';
import { writeHistoryFile } from './history-file.js';
import { MAX_PROCS } from './program.js';
import { buildReport, CLOCK_SLACK_MS, htmlReport, type LoadReport, textReport } from './report.js';
import { type LoadModel, type LoadOptions, type Progress, runWorkload, type Stage } from './runner.js';
import { evaluateThresholds, parseThreshold, type Threshold, ThresholdError } from './thresholds.js';
import type { WorkloadModule } from './workload-api.js';
import {
  BUILTIN_WORKLOADS,
  builtinWorkload,
  isModulePath,
  loadWorkloadModule,
  makePlan,
  touchedPages,
  WORKLOAD_HELP,
  WORKLOADS,
  WorkloadError,
} from './workloads.js';

export const LIMITS = {
  maxDurationMs: 600_000,
  maxOps: 10_000_000,
  maxInstances: 16,
  maxPages: 1 << 20,
  maxRate: 1_000_000,
  maxStages: 100,
  maxThresholds: 100,
  maxConfigBytes: 256 * 1024,
} as const;

/** Defaults of the options (the help, the parser and docs/load.md read them here). */
export const LOAD_DEFAULTS = {
  instances: 3,
  procs: 2,
  pages: 16,
  durationMs: 3000,
  /** --duration when --ops is given: the op count is meant to end the run. */
  durationWithOpsMs: 120_000,
  ops: 2_000_000,
  seed: 1,
  /** --frames: max(this, 4 × segment pages). */
  minFrames: 8192,
} as const;

/** Exit codes: k6's for crossed thresholds. */
export const EXIT = { ok: 0, failed: 1, usage: 2, thresholds: 99 } as const;

export const LOAD_HELP = `usage: xpmesh load [options]
       xpmesh load --compare OLD.json NEW.json [--html FILE] [--json FILE]

Drives a workload through processes of several instances sharing one exported segment, then
checks the recorded history (every read returns the latest completed write) and prints a report.
The accesses run inside the processes (worker threads) through their page tables, so remote
faults, upgrades, invalidations and recalls happen for real.

workloads (--workload NAME, "all" to run each in turn, or a module of your own: ./my-workload.js):
${WORKLOADS.map((w) => `  ${w.padEnd(14)} ${WORKLOAD_HELP[w]}`).join('\n')}

options:
  --workload W        a built-in above, all, or a path to a workload module   [mixed]
  --instances N       instances of the local cluster (1..${LIMITS.maxInstances})             [${LOAD_DEFAULTS.instances}]
  --procs N           processes per instance                              [${LOAD_DEFAULTS.procs}]
  --pages N           pages the workload touches                          [${LOAD_DEFAULTS.pages}]
  --segment-pages N   size of the exported segment in pages (>= pages)    [= pages]
  --duration MS       run time per workload (hard cap ${LIMITS.maxDurationMs})            [${LOAD_DEFAULTS.durationMs}]
  --ops N             total operations cap (hard cap ${LIMITS.maxOps})          [${LOAD_DEFAULTS.ops}]
  --seed N            seed: fixes each process's sequence of operations  [${LOAD_DEFAULTS.seed}]
  --rate R            open model: R calls of op per second over all processes, due whether or
                      not the last one ended; latency counts from when a call was due
  --stage DUR:TARGET  ramp linearly to TARGET over DUR (e.g. 2s:500; repeatable): the rate with
                      --rate (which is then the start rate), else the number of active processes
                      (starting at 1); the stages replace --duration
  --threshold EXPR    pass/fail criterion, e.g. 'p99<5ms' 'errors==0' 'history==ok' (repeatable);
                      exit ${EXIT.thresholds} when one is crossed
  --config FILE       JSON object of these options (e.g. {"threshold": ["p99<5ms"], "rate": 500});
                      flags given on the command line win
  --frames N          frames per instance of the local cluster           [${LOAD_DEFAULTS.minFrames}]
  --connect URLS      use running instances (admin URLs, comma-separated; the first is the home),
                      or dns:NAME:PORT: every address of NAME (with --instances N: wait for N,
                      use the first N; waits up to 60 s)
  --token T           admin bearer token (or XPMESH_ADMIN_TOKEN)
  --logs DIR          keep the local cluster's logs in DIR (default: a temp dir)
  --json FILE         write the full report as JSON (an array with --workload all)
  --html FILE         write a self-contained HTML report (the last workload with --workload all)
  --history FILE      write the raw history as JSON lines (FILE.<workload>.jsonl with several)
  --baseline FILE     compare this run with an earlier JSON report (text and HTML)
  --compare           compare two JSON reports given as arguments, then exit
  --quiet             no progress output
  -h, --help          this help

exit code: 0 when every history check passed and every threshold held, 1 when a history check
failed, a history was incomplete (a run call failed and its operations were lost) or the run
broke, ${EXIT.thresholds} when the histories were fine but a threshold was crossed, 2 on bad usage.`;

class Usage extends Error {}

function int(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (!/^\d+$/.test(v)) throw new Usage(`--${name} must be a non-negative integer, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw new Usage(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** `2s:500`, `500ms:4`, `1m:100`, `1500:10` (ms). */
export function parseStage(v: string): Stage {
  const m = /^\s*(\d+(?:\.\d+)?)(ms|s|m)?\s*:\s*(\d+(?:\.\d+)?)\s*$/.exec(v);
  if (!m) throw new Usage(`--stage "${v}": expected DURATION:TARGET, e.g. 2s:500`);
  const durationMs = Math.round(
    Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000 } as Record<string, number>)[m[2] ?? 'ms'],
  );
  if (durationMs < 1 || durationMs > LIMITS.maxDurationMs)
    throw new Usage(`--stage "${v}": duration must be 1 ms..${LIMITS.maxDurationMs / 1000} s`);
  return { durationMs, target: Number(m[3]) };
}

const OPTIONS = {
  workload: { type: 'string' },
  instances: { type: 'string' },
  procs: { type: 'string' },
  pages: { type: 'string' },
  'segment-pages': { type: 'string' },
  duration: { type: 'string' },
  ops: { type: 'string' },
  seed: { type: 'string' },
  rate: { type: 'string' },
  stage: { type: 'string', multiple: true },
  threshold: { type: 'string', multiple: true },
  config: { type: 'string' },
  frames: { type: 'string' },
  connect: { type: 'string' },
  token: { type: 'string' },
  logs: { type: 'string' },
  json: { type: 'string' },
  html: { type: 'string' },
  history: { type: 'string' },
  baseline: { type: 'string' },
  compare: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = Record<string, string | boolean | string[] | undefined>;

/** Options from a --config file: the same names as the flags; the command line wins. */
export function readConfig(file: string): Values {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Usage(`--config: cannot read ${file}: ${(e as Error).message}`);
  }
  if (text.length > LIMITS.maxConfigBytes)
    throw new Usage(`--config: ${file} is larger than ${LIMITS.maxConfigBytes} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Usage(`--config: ${file} is not JSON: ${(e as Error).message}`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new Usage(`--config: ${file} must hold a JSON object`);
  const out: Values = {};
  for (const [k, raw] of Object.entries(v as Record<string, unknown>)) {
    const def = (OPTIONS as Record<string, { type: string; multiple?: boolean }>)[k];
    if (!def || k === 'config' || k === 'help' || k === 'compare')
      throw new Usage(`--config: unknown option "${k}" in ${file}`);
    if (def.type === 'boolean') {
      if (typeof raw !== 'boolean') throw new Usage(`--config: "${k}" must be true or false`);
      out[k] = raw;
    } else if (def.multiple) {
      const list = Array.isArray(raw) ? raw : [raw];
      if (!list.every((x) => typeof x === 'string' || typeof x === 'number'))
        throw new Usage(`--config: "${k}" must be a string or a list of strings`);
      out[k] = list.map(String);
    } else {
      if (typeof raw !== 'string' && typeof raw !== 'number')
        throw new Usage(`--config: "${k}" must be a string or a number`);
      out[k] = String(raw);
    }
  }
  return out;
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

/** `--history h.jsonl` with several workloads: h.<workload>.jsonl. */
export function historyFileFor(file: string, workload: string, several: boolean): string {
  if (!several) return file;
  const ext = extname(file);
  return `${file.slice(0, file.length - ext.length)}.${workload}${ext || '.jsonl'}`;
}

export async function runLoadCli(argv: string[], io: LoadCliIo = defaultIo): Promise<number> {
  let values: Values;
  let positionals: string[];
  const usage = (m: string) => {
    io.err(`xpmesh load: ${m}\nrun \`xpmesh load --help\` for usage`);
    return EXIT.usage;
  };
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: OPTIONS,
    }));
  } catch (err) {
    return usage((err as Error).message);
  }
  if (values.help) {
    io.out(LOAD_HELP);
    return EXIT.ok;
  }
  if (values.compare) return runCompare(positionals, values, io, usage);
  if (positionals.length) return usage(`unexpected argument "${positionals[0]}"`);
  let workloads: Array<{ module: WorkloadModule; source: string }>;
  let opts: Omit<LoadOptions, 'workload'>;
  let instances: number;
  let urls: string[] | undefined;
  let frames: number;
  let thresholds: Threshold[];
  let baseline: LoadReport[] | undefined;
  let dnsWant: number | undefined;
  try {
    if (typeof values.config === 'string') values = { ...readConfig(values.config), ...definedOnly(values) };
    const s = (k: string) => values[k] as string | undefined;
    const w = s('workload') ?? 'mixed';
    if (w === 'all') workloads = BUILTIN_WORKLOADS.map((m) => ({ module: m, source: m.name }));
    else if (builtinWorkload(w)) workloads = [{ module: builtinWorkload(w)!, source: w }];
    else if (isModulePath(w)) {
      if (!existsSync(w)) throw new Usage(`--workload: no such module file: ${w}`);
      workloads = [{ module: await loadWorkloadModule(w), source: w }];
    } else
      throw new Usage(
        `--workload must be one of ${WORKLOADS.join(', ')}, all, or a module path (./x.js); got "${w}"`,
      );
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
        s('instances') !== undefined
          ? int(s('instances'), 'instances', LOAD_DEFAULTS.instances, 1, LIMITS.maxInstances)
          : 0;
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
    instances =
      urls?.length ?? int(s('instances'), 'instances', LOAD_DEFAULTS.instances, 1, LIMITS.maxInstances);
    const procsPerInstance = int(s('procs'), 'procs', LOAD_DEFAULTS.procs, 1, 256);
    const nProcs = instances * procsPerInstance;
    if (nProcs > MAX_PROCS) throw new Usage(`at most ${MAX_PROCS} processes in all`);
    const pages = int(s('pages'), 'pages', LOAD_DEFAULTS.pages, 1, LIMITS.maxPages);
    const segmentPages = int(s('segment-pages'), 'segment-pages', pages, 1, LIMITS.maxPages);
    if (segmentPages < pages) throw new Usage('--segment-pages must be >= --pages');
    frames = int(s('frames'), 'frames', Math.max(LOAD_DEFAULTS.minFrames, 4 * segmentPages), 64, 1 << 22);
    const stages = ((values.stage as string[] | undefined) ?? []).map(parseStage);
    if (stages.length > LIMITS.maxStages) throw new Usage(`at most ${LIMITS.maxStages} stages`);
    const stageMs = stages.reduce((a, st) => a + st.durationMs, 0);
    if (stageMs > LIMITS.maxDurationMs)
      throw new Usage(`the stages last ${stageMs} ms (at most ${LIMITS.maxDurationMs})`);
    if (stages.length && s('duration') !== undefined) throw new Usage('give --duration or --stage, not both');
    const durationMs = stages.length
      ? stageMs
      : int(
          s('duration'),
          'duration',
          s('ops') !== undefined ? LOAD_DEFAULTS.durationWithOpsMs : LOAD_DEFAULTS.durationMs,
          1,
          LIMITS.maxDurationMs,
        );
    const maxOps = int(s('ops'), 'ops', LOAD_DEFAULTS.ops, 1, LIMITS.maxOps);
    const seed = int(s('seed'), 'seed', LOAD_DEFAULTS.seed, 0, 2 ** 32 - 1);
    let model: LoadModel;
    const rateArg = s('rate');
    if (rateArg !== undefined) {
      if (!/^\d+(\.\d+)?$/.test(rateArg))
        throw new Usage(`--rate must be a number of ops/s, got "${rateArg}"`);
      const rate = Number(rateArg);
      if (rate > LIMITS.maxRate) throw new Usage(`--rate must be at most ${LIMITS.maxRate}`);
      if (rate === 0 && !stages.length) throw new Usage('--rate 0 needs --stage to ramp from');
      for (const st of stages)
        if (st.target > LIMITS.maxRate)
          throw new Usage(`--stage target ${st.target} ops/s is above ${LIMITS.maxRate}`);
      model = { kind: 'open', rate, ...(stages.length ? { stages } : {}) };
    } else {
      for (const st of stages)
        if (!Number.isInteger(st.target) || st.target > nProcs)
          throw new Usage(
            `--stage target ${st.target}: without --rate a target is a number of processes (at most ${nProcs}: --instances × --procs)`,
          );
      model = { kind: 'closed', ...(stages.length ? { stages } : {}) };
    }
    const ts = (values.threshold as string[] | undefined) ?? [];
    if (ts.length > LIMITS.maxThresholds) throw new Usage(`at most ${LIMITS.maxThresholds} thresholds`);
    thresholds = ts.map((t) => {
      try {
        return parseThreshold(t);
      } catch (e) {
        if (e instanceof ThresholdError) throw new Usage(e.message);
        throw e;
      }
    });
    const b = s('baseline');
    if (b !== undefined) baseline = readReports(b);
    opts = { procsPerInstance, pages, segmentPages, durationMs, maxOps, seed, model };
    // A plan that cannot work is a usage error, found before any instance is started.
    for (const { module } of workloads)
      makePlan(module, {
        procs: nProcs,
        instances,
        pages,
        segmentPages,
        touchedPages: touchedPages(pages, segmentPages),
        seed,
      });
  } catch (err) {
    if (err instanceof Usage || err instanceof WorkloadError || err instanceof CompareError)
      return usage(err.message);
    throw err;
  }
  const s = (k: string) => values[k] as string | undefined;
  const token = s('token') ?? process.env.XPMESH_ADMIN_TOKEN;
  let cluster: LocalCluster | undefined;
  const reports: LoadReport[] = [];
  const several = workloads.length > 1;
  let broke = false;
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
    for (const { module, source } of workloads) {
      const o: LoadOptions = {
        ...opts,
        workload: module,
        workloadSource: source,
        onProgress: values.quiet ? undefined : progressPrinter(io, opts, module.name),
      };
      const startedAt = new Date();
      const run = await runWorkload(clients, o);
      (o.onProgress as ProgressSink | undefined)?.done?.();
      const report = buildReport(o, run, { mode: cluster ? 'local' : 'connect', urls }, startedAt);
      if (thresholds.length) report.thresholds = evaluateThresholds(report, thresholds);
      reports.push(report);
      const hist = s('history');
      if (hist) {
        const file = historyFileFor(hist, module.name, several);
        writeHistoryFile(
          file,
          {
            workload: module.name,
            clockSlackMs: CLOCK_SLACK_MS,
            startedAt: report.startedAt,
            model: report.params.model.kind,
          },
          run.history,
          run.lostChunks,
        );
        if (!values.quiet) io.out(`history: ${run.history.length} operation(s) written to ${file}`);
      }
      io.out('');
      io.out(textReport(report));
      const base = baseline?.find((r) => r.workload === report.workload);
      if (base) {
        io.out('');
        io.out(compareText([compareReports(base, report)], 'baseline', 'this run'));
      }
    }
  } catch (err) {
    io.err(`xpmesh load: the run failed: ${(err as Error)?.stack ?? String(err)}`);
    broke = true;
  } finally {
    if (cluster) await cluster.stop(10_000);
    const jsonFile = s('json');
    if (jsonFile && reports.length)
      writeFileSync(jsonFile, `${JSON.stringify(several ? reports : reports[0], null, 2)}\n`);
    const htmlFile = s('html');
    if (htmlFile && reports.length) {
      const last = reports[reports.length - 1];
      const base = baseline?.find((r) => r.workload === last.workload);
      writeFileSync(
        htmlFile,
        htmlReport(
          last,
          base ? `<div id="comparison">${compareHtmlFragment([compareReports(base, last)])}</div>` : '',
        ),
      );
    }
  }
  if (broke) return EXIT.failed;
  const violated = reports.filter((r) => !r.ok && r.history.verdict !== 'incomplete');
  const incomplete = reports.filter((r) => !r.ok && r.history.verdict === 'incomplete');
  if (violated.length)
    io.err(`xpmesh load: history check FAILED for ${violated.map((r) => r.workload).join(', ')}`);
  if (incomplete.length)
    io.err(
      `xpmesh load: history INCOMPLETE for ${incomplete.map((r) => r.workload).join(', ')}: ` +
        'operations were lost (failed run calls), so linearizability could not be checked; no violation among the recorded ones',
    );
  const crossed = reports.flatMap((r) =>
    (r.thresholds ?? []).filter((t) => !t.ok).map((t) => `${r.workload}: ${t.expr}`),
  );
  if (crossed.length) io.err(`xpmesh load: threshold(s) crossed: ${crossed.join('; ')}`);
  if (violated.length || incomplete.length) return EXIT.failed;
  if (crossed.length) return EXIT.thresholds;
  return EXIT.ok;
}

function definedOnly(v: Values): Values {
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));
}

function runCompare(
  positionals: string[],
  values: Values,
  io: LoadCliIo,
  usage: (m: string) => number,
): number {
  if (positionals.length !== 2) return usage('--compare takes two JSON reports: --compare OLD.json NEW.json');
  const [a, b] = positionals;
  let cs: ReturnType<typeof compareFiles>;
  try {
    cs = compareFiles(a, b);
  } catch (e) {
    if (e instanceof CompareError) return usage(e.message);
    throw e;
  }
  io.out(compareText(cs, basename(a), basename(b)));
  if (typeof values.json === 'string') writeFileSync(values.json, `${JSON.stringify(cs, null, 2)}\n`);
  if (typeof values.html === 'string') writeFileSync(values.html, compareHtml(cs, basename(a), basename(b)));
  return EXIT.ok;
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
