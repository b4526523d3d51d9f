/** `xpmesh cluster --nodes N`: N instances as separate OS processes on 127.0.0.1. */
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import { type Env, EXIT_OK, type Io, intFlag, parse, str, UsageError } from './usage.js';

/** `--nodes`: bounds and default. */
export const CLUSTER_NODES = { min: 1, max: 16, default: 3 } as const;
/** `--frames` default: frames per instance. */
export const CLUSTER_FRAMES = 1024;

export const CLUSTER_HELP = `usage: xpmesh cluster [--nodes N] [--frames F] [--log-level L] [--logs DIR] [--quiet]
                      [--json] [--ports-file FILE] [--cluster-key K] [--print-key]

Starts N xpmesh instances (n1..nN) as separate OS processes on 127.0.0.1 with free ports, all
peers of each other, and prints each instance's admin URL. Ctrl-C or SIGTERM stops them all
cleanly (SIGKILL after 10 s) and leaves no process behind.

  --nodes N        number of instances, ${CLUSTER_NODES.min}-${CLUSTER_NODES.max} [${CLUSTER_NODES.default}]
  --frames F       frames per instance [${CLUSTER_FRAMES}]
  --log-level L    the instances' log level [info]
  --logs DIR       write each instance's JSON log to DIR/<id>.log instead of this terminal
  --quiet          discard the instances' logs
  --admin-token T  require this bearer token for admin operations (or XPMESH_ADMIN_TOKEN)
  --cluster-key K  the key peers authenticate with (or XPMESH_CLUSTER_KEY; at least 16
                   characters) [random per run]; give it so that another instance can join
  --print-key      include the cluster key in the output (prose, --json and --ports-file)
  --json           print the cluster as one JSON object on stdout instead of prose:
                   {"nodes":[{"id","pid","adminUrl","peerUrl","peerHost","peerPort"}],"viewUrl",
                    "clusterKey"?}  (clusterKey only with --print-key or --cluster-key)
  --ports-file F   also write that JSON object to F (mode 0600) once every node is healthy;
                   a script can wait for F to appear instead of parsing output

Then, in another terminal:  xpmesh ctl --url <admin URL> status`;

export async function runCluster(argv: string[], env: Env, io: Io): Promise<number> {
  const p = parse(argv, {
    nodes: { type: 'string', short: 'n' },
    frames: { type: 'string' },
    'log-level': { type: 'string' },
    logs: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    'admin-token': { type: 'string' },
    'cluster-key': { type: 'string' },
    'print-key': { type: 'boolean' },
    json: { type: 'boolean' },
    'ports-file': { type: 'string' },
  });
  if (p.help) {
    io.out(CLUSTER_HELP);
    return EXIT_OK;
  }
  const nodes = intFlag(p, 'nodes', CLUSTER_NODES.default, CLUSTER_NODES.min, CLUSTER_NODES.max);
  const frames = intFlag(p, 'frames', CLUSTER_FRAMES, 16, 1 << 20);
  const logDir = str(p, 'logs');
  const givenKey = str(p, 'cluster-key') ?? (env.XPMESH_CLUSTER_KEY || undefined);
  if (givenKey !== undefined && givenKey.length < MIN_KEY_CHARS)
    throw new UsageError(`--cluster-key (XPMESH_CLUSTER_KEY) must be at least ${MIN_KEY_CHARS} characters`);
  const json = p.values.json === true;
  const portsFile = str(p, 'ports-file');
  const cluster = await launchCluster({
    clusterKey: givenKey,
    nodes,
    frames,
    logLevel: str(p, 'log-level') ?? 'info',
    output: p.values.quiet ? 'ignore' : logDir ? 'files' : 'inherit',
    logDir,
    adminToken: str(p, 'admin-token') ?? env.XPMESH_ADMIN_TOKEN,
  });
  // The signal handlers go in before anything says "up": whoever reads that line may signal at
  // once, and a SIGTERM that arrives before a listener exists kills the process outright (Node
  // installs its OS-level handler only with the first listener), leaving the instances to the
  // IPC-disconnect path instead of a clean stop.
  const done = new Promise<number>((resolve) => {
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

  const described = describeCluster(cluster, p.values['print-key'] === true || givenKey !== undefined);
  if (portsFile !== undefined) writePortsFile(portsFile, `${JSON.stringify(described)}\n`);
  if (json) io.out(JSON.stringify(described));
  else {
    for (const n of described.nodes) io.out(`${n.id}  pid ${n.pid}  admin ${n.adminUrl}  peer ${n.peerUrl}`);
    io.out(`live view: ${described.viewUrl}`);
    if (described.clusterKey !== undefined) io.out(`cluster key: ${described.clusterKey}`);
    io.out(`cluster of ${nodes} up; Ctrl-C or SIGTERM stops it`);
  }
  return done;
}

/** Shortest cluster key `xpmesh cluster` accepts (a human-typed secret shorter than this is a guess away). */
export const MIN_KEY_CHARS = 16;

/** What `xpmesh cluster --json` prints and `--ports-file` holds. */
export interface ClusterDescription {
  nodes: Array<{
    id: string;
    pid: number;
    adminUrl: string;
    peerUrl: string;
    peerHost: string;
    peerPort: number;
  }>;
  viewUrl: string;
  clusterKey?: string;
}

export function describeCluster(cluster: LocalCluster, withKey: boolean): ClusterDescription {
  const nodes = cluster.nodes.map((n) => {
    const peerHost = new URL(n.adminUrl).hostname;
    return {
      id: n.id,
      pid: n.pid,
      adminUrl: n.adminUrl,
      peerUrl: `ws://${peerHost}:${n.peerPort}/`,
      peerHost,
      peerPort: n.peerPort,
    };
  });
  const viewUrl = `${nodes[0].adminUrl}/view?nodes=${nodes.map((n) => n.adminUrl).join(',')}`;
  return withKey ? { nodes, viewUrl, clusterKey: cluster.clusterKey } : { nodes, viewUrl };
}

/**
 * The ports file appears whole or not at all (a script polling for it never reads half of it), and
 * is mode 0600 even when an older file was there (it may hold the cluster key): written to a new
 * file beside it, then renamed over it.
 */
export function writePortsFile(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
