#!/usr/bin/env node
/**
 * `xpmesh`: the one command-line entry point. The only place that reads process.env.
 * Exit codes: 0 success, 1 failure, 2 bad usage.
 *
 * Each command's module is imported only when that command runs, so `xpmesh ctl` (an HTTP client)
 * never loads the kernel, the driver or the load tester: a ctl call starts in the time Node takes
 * to start (the `ctl start` test checks which modules a ctl call loads).
 */
import { type Env, EXIT_FAIL, EXIT_USAGE, type Io, stdio, UsageError } from './usage.js';

const HELP = `usage: xpmesh <command> [options]     (xpmesh <command> --help for details)

xpmesh simulates Linux instances that share memory across machines (an XPmem-like driver).

commands:
  demo      run the narrated scenario on a local 3-instance cluster (or --connect to running ones)
  cluster   start N instances as local processes and print their admin URLs
  node      run one instance (configuration from flags or XPMESH_* variables)
  ctl       operate a running instance through its admin API
  load      run a workload against a cluster and check its history (xpmesh load --help)
  check-history  check a recorded history file for linearizability (xpmesh check-history --help)
  conformance  check any home implementation against docs/protocol.md over the wire`;

type Command = (argv: string[], env: Env, io: Io) => Promise<number>;
const COMMANDS: Record<string, () => Promise<Command>> = {
  node: async () => (await import('./node.js')).runNode,
  cluster: async () => (await import('./cluster.js')).runCluster,
  demo: async () => (await import('./demo.js')).runDemo,
  ctl: async () => (await import('./ctl.js')).runCtl,
  conformance: async () => (await import('./conformance.js')).runConformance,
  load: async () => {
    const { runLoadCli } = await import('../load/cli.js');
    return (argv: string[]) => runLoadCli(argv);
  },
  'check-history': async () => {
    const { runCheckHistoryCli } = await import('../load/check-history.js');
    return (argv: string[]) => runCheckHistoryCli(argv);
  },
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    stdio.out(HELP);
    return command === undefined ? EXIT_USAGE : 0;
  }
  const load = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!load)
    throw new UsageError(`unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(', ')})`);
  return (await load())(rest, process.env, stdio);
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
