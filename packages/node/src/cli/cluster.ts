/** `xpmesh cluster --nodes N`: N instances as separate OS processes on 127.0.0.1. */
import { launchCluster } from '../daemon/launcher.js';
import { type Env, EXIT_OK, type Io, intFlag, parse, str } from './usage.js';

export const CLUSTER_HELP = `usage: xpmesh cluster [--nodes N] [--frames F] [--log-level L] [--logs DIR] [--quiet]

Starts N xpmesh instances (n1..nN) as separate OS processes on 127.0.0.1 with free ports, all
peers of each other, and prints each instance's admin URL. Ctrl-C or SIGTERM stops them all
cleanly (SIGKILL after 10 s) and leaves no process behind.

  --nodes N        number of instances, 1-16 [3]
  --frames F       frames per instance [1024]
  --log-level L    the instances' log level [info]
  --logs DIR       write each instance's JSON log to DIR/<id>.log instead of this terminal
  --quiet          discard the instances' logs
  --admin-token T  require this bearer token for admin operations (or XPMESH_ADMIN_TOKEN)

Then, in another terminal:  xpmesh ctl --url <admin URL> status`;

export async function runCluster(argv: string[], env: Env, io: Io): Promise<number> {
  const p = parse(argv, {
    nodes: { type: 'string', short: 'n' },
    frames: { type: 'string' },
    'log-level': { type: 'string' },
    logs: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    'admin-token': { type: 'string' },
  });
  if (p.help) {
    io.out(CLUSTER_HELP);
    return EXIT_OK;
  }
  const nodes = intFlag(p, 'nodes', 3, 1, 16);
  const frames = intFlag(p, 'frames', 1024, 16, 1 << 20);
  const logDir = str(p, 'logs');
  const cluster = await launchCluster({
    nodes,
    frames,
    logLevel: str(p, 'log-level') ?? 'info',
    output: p.values.quiet ? 'ignore' : logDir ? 'files' : 'inherit',
    logDir,
    adminToken: str(p, 'admin-token') ?? env.XPMESH_ADMIN_TOKEN,
  });
  for (const n of cluster.nodes)
    io.out(`${n.id}  pid ${n.pid}  admin ${n.adminUrl}  peer port ${n.peerPort}`);
  const viewNodes = cluster.nodes.map((n) => n.adminUrl).join(',');
  io.out(`live view: ${cluster.nodes[0].adminUrl}/view?nodes=${viewNodes}`);
  io.out(`cluster of ${nodes} up; Ctrl-C or SIGTERM stops it`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (why: string) => {
      if (stopping) return;
      stopping = true;
      io.err(`${why}: stopping ${nodes} instances`);
      const codes = await cluster.stop(10_000);
      for (const [i, c] of codes.entries()) io.err(`${cluster.nodes[i].id} exited: ${c}`);
      resolve(codes.every((c) => c === 0) ? EXIT_OK : 1);
    };
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
    for (const n of cluster.nodes) {
      n.exited.then((code) => {
        if (!stopping) io.err(`${n.id} (pid ${n.pid}) exited unexpectedly: ${code}`);
      });
    }
  });
}
