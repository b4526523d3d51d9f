/**
 * `xpmesh check-history FILE`: the offline history check. Reads a history file (the JSON lines
 * `xpmesh load --history` writes, or any tool's, docs/load.md "History files") and runs the same
 * checker, with the same clock slack, as the live run: the verdict is the same.
 * Exit codes: 0 linearizable, 1 violated or incomplete, 2 bad usage or a malformed file.
 */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { checkHistory } from './history.js';
import { HistoryFileError, readHistoryFile } from './history-file.js';
import { CLOCK_SLACK_MS, historyVerdict } from './report.js';

export const CHECK_HISTORY_HELP = `usage: xpmesh check-history FILE [options]

Checks a recorded history (JSON lines: a header line, then one operation per line, see
docs/load.md "History files") for per-address linearizability, with the checker \`xpmesh load\`
runs live: the same file gives the same verdict.

options:
  --slack-ms MS          clock slack (ms) to widen every interval by   [the file's clockSlackMs, else ${CLOCK_SLACK_MS}]
  --max-violations N     violations to list                           [20]
  --json                 print the result as JSON on stdout
  -h, --help             this help

exit code: 0 linearizable, 1 violated or incomplete (lost chunks), 2 bad usage or a malformed file.`;

export interface CheckIo {
  out(s: string): void;
  err(s: string): void;
}

const defaultIo: CheckIo = {
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
};

export async function runCheckHistoryCli(argv: string[], io: CheckIo = defaultIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        'slack-ms': { type: 'string' },
        'max-violations': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    io.err(`xpmesh check-history: ${(e as Error).message}\nrun \`xpmesh check-history --help\` for usage`);
    return 2;
  }
  if (values.help) {
    io.out(CHECK_HISTORY_HELP);
    return 0;
  }
  const usage = (m: string) => {
    io.err(`xpmesh check-history: ${m}\nrun \`xpmesh check-history --help\` for usage`);
    return 2;
  };
  if (positionals.length !== 1) return usage('give exactly one history file');
  const file = positionals[0];
  if (!existsSync(file)) return usage(`no such file: ${file}`);
  const slackArg = values['slack-ms'] as string | undefined;
  if (slackArg !== undefined && !(/^\d+(\.\d+)?$/.test(slackArg) && Number(slackArg) <= 1000))
    return usage('--slack-ms must be a number of ms in 0..1000');
  const maxArg = (values['max-violations'] as string | undefined) ?? '20';
  if (!/^\d+$/.test(maxArg) || Number(maxArg) < 1 || Number(maxArg) > 10_000)
    return usage('--max-violations must be an integer in 1..10000');
  let h: Awaited<ReturnType<typeof readHistoryFile>>;
  try {
    h = await readHistoryFile(file);
  } catch (e) {
    if (e instanceof HistoryFileError) {
      io.err(`xpmesh check-history: ${e.code}: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const slack = slackArg !== undefined ? Number(slackArg) : (h.meta?.clockSlackMs ?? CLOCK_SLACK_MS);
  const r = checkHistory(h.ops, Number(maxArg), slack, h.lost);
  if (values.json)
    io.out(JSON.stringify({ file, workload: h.meta?.workload, clockSlackMs: slack, ...r }, null, 2));
  else {
    io.out(
      `${file}: ${h.meta?.workload ? `${h.meta.workload}: ` : ''}${historyVerdict(r)}  (clock slack ${slack} ms)`,
    );
    for (const v of r.violations) io.out(`  ✘ ${v.rule}: ${v.message}`);
    if (r.incomplete) io.out(`  ⚠ ${r.incomplete.rule}: ${r.incomplete.message}`);
  }
  return r.ok ? 0 : 1;
}
