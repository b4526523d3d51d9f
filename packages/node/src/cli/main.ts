#!/usr/bin/env node
import { runLoadCli } from '../load/cli.js';
/**
 * `xpmesh`: the one command-line entry point. The only place that reads process.env.
 * Exit codes: 0 success, 1 failure, 2 bad usage.
 */
import { runCluster } from './cluster.js';
import { runCtl } from './ctl.js';
import { runDemo } from './demo.js';
import { runNode } from './node.js';
import { EXIT_FAIL, EXIT_USAGE, stdio, UsageError } from './usage.js';

const HELP = `usage: xpmesh <command> [options]     (xpmesh <command> --help for details)

xpmesh simulates Linux instances that share memory across machines (an XPmem-like driver).

commands:
  demo      run the narrated scenario on a local 3-instance cluster (or --connect to running ones)
  cluster   start N instances as local processes and print their admin URLs
  node      run one instance (configuration from flags or XPMESH_* variables)
  ctl       operate a running instance through its admin API
  load      run a workload against a cluster and check its history (xpmesh load --help)`;

const COMMANDS = {
  node: runNode,
  cluster: runCluster,
  demo: runDemo,
  ctl: runCtl,
  load: (argv: string[]) => runLoadCli(argv),
} as const;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    stdio.out(HELP);
    return command === undefined ? EXIT_USAGE : 0;
  }
  const run = COMMANDS[command as keyof typeof COMMANDS];
  if (!run)
    throw new UsageError(`unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(', ')})`);
  return run(rest, process.env, stdio);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    if (err instanceof UsageError) {
      // One line for a one-line message (every configuration error): what is wrong, and where help is.
      const msg = err.message;
      stdio.err(msg.includes('\n') ? `xpmesh: ${msg}` : `xpmesh: ${msg} (see xpmesh --help)`);
      process.exitCode = EXIT_USAGE;
    } else {
      stdio.err(`xpmesh: ${(err as Error)?.stack ?? String(err)}`);
      process.exitCode = EXIT_FAIL;
    }
  },
);
