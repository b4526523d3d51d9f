/**
 * The command-line plumbing the bounded fault tools share (soak.ts, fuzz.ts): option parsing with a
 * usage text, integer options with bounds, the JSON summary on stdout (and --json FILE), and the
 * entry point. Bad arguments exit 2.
 */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { type ParseArgsConfig, parseArgs } from 'node:util';

export type ToolValues = Record<string, string | boolean | undefined>;

/** Parsed options, or the exit code when there is nothing to run (--help: 0, bad options: 2). */
export function parseToolArgs(
  argv: string[],
  options: ParseArgsConfig['options'],
  help: string,
): ToolValues | number {
  let v: ToolValues;
  try {
    v = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } } })
      .values as ToolValues;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${help}\n`);
    return 2;
  }
  if (v.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  return v;
}

/** An integer option in min..max (decimal digits only), `def` when absent; throws a usage error. */
export function intOption(v: ToolValues, name: string, def: number, min: number, max: number): number {
  const s = v[name];
  if (s === undefined) return def;
  const n = Number(s);
  if (typeof s !== 'string' || !/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new Error(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

/** An integer option's flag, default and bounds (a tool's option table: help, parser and docs). */
export interface IntOptionSpec {
  readonly flag: string;
  readonly def: number;
  readonly min: number;
  readonly max: number;
}

/** intOption for an entry of an option table. */
export function intOptionOf(v: ToolValues, o: IntOptionSpec): number {
  return intOption(v, o.flag, o.def, o.min, o.max);
}

/** Print the summary (stdout, and `json` if given); the exit code: 0 ok, 1 not ok, 2 skipped. */
export function finishTool(summary: Record<string, unknown>, json: string | undefined): number {
  const text = JSON.stringify(summary, null, 2);
  process.stdout.write(`${text}\n`);
  if (json) writeFileSync(json, `${text}\n`);
  if (summary.skipped) return 2;
  return summary.ok ? 0 : 1;
}

/** Run `main` when `metaUrl` is the script node was started with; exit with its code. */
export function runIfMain(metaUrl: string, main: () => Promise<number>): void {
  if (!process.argv[1] || metaUrl !== pathToFileURL(process.argv[1]).href) return;
  main().then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
