/**
 * Local cluster launcher: N instances as separate OS processes on 127.0.0.1 (`xpmesh cluster`,
 * the demo, the tests). Each child is `xpmesh node` with free ports; the children are tied to the
 * launcher by an IPC channel, so they shut down even if the launcher is killed outright.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdminClient } from './admin-client.js';

export const MAIN_JS = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export interface ClusterOptions {
  nodes: number;
  host?: string;
  frames?: number;
  logLevel?: string;
  clusterKey?: string;
  adminToken?: string;
  heartbeatMs?: number;
  missedBeats?: number;
  ackTimeoutMs?: number;
  /** Where each node's stdout/stderr go: inherited, or one file per node in logDir, or dropped. */
  output?: 'inherit' | 'files' | 'ignore';
  logDir?: string;
  /** Extra flags for every node. */
  extraArgs?: string[];
  readyTimeoutMs?: number;
}

export interface LaunchedNode {
  readonly id: string;
  readonly pid: number;
  readonly adminUrl: string;
  readonly peerPort: number;
  readonly child: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<number | string>;
}

/** Reserve `n` distinct free TCP ports on host (all held open together, then released). */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, host, () => resolve());
      });
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

export class LocalCluster {
  constructor(
    readonly nodes: LaunchedNode[],
    readonly clusterKey: string,
    readonly adminToken: string | undefined,
  ) {}

  client(i: number): AdminClient {
    return new AdminClient(this.nodes[i].adminUrl, this.adminToken);
  }

  /** Send `signal` to one node (by index) and wait (bounded) for it to exit. */
  async kill(i: number, signal: NodeJS.Signals = 'SIGKILL', deadlineMs = 10_000): Promise<number | string> {
    const n = this.nodes[i];
    if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill(signal);
    return withDeadline(n.exited, deadlineMs, `node ${n.id} (pid ${n.pid}) did not exit after ${signal}`);
  }

  /** SIGTERM every node; SIGKILL any still alive after the deadline. Returns each exit status. */
  async stop(deadlineMs = 10_000): Promise<Array<number | string>> {
    for (const n of this.nodes)
      if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const n of this.nodes)
        if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGKILL');
    }, deadlineMs);
    try {
      return await Promise.all(this.nodes.map((n) => n.exited));
    } finally {
      clearTimeout(timer);
    }
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(what)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Start the cluster and wait until every node's admin API is healthy. */
export async function launchCluster(opts: ClusterOptions): Promise<LocalCluster> {
  const host = opts.host ?? '127.0.0.1';
  const n = opts.nodes;
  const ports = await freePorts(2 * n, host);
  const clusterKey = opts.clusterKey ?? randomBytes(24).toString('base64url');
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
  const peerPorts = ports.slice(0, n);
  const adminPorts = ports.slice(n);
  const output = opts.output ?? 'ignore';
  if (output === 'files') mkdirSync(opts.logDir ?? '.', { recursive: true });

  const nodes: LaunchedNode[] = [];
  const cluster = new LocalCluster(nodes, clusterKey, opts.adminToken);
  try {
    for (let i = 0; i < n; i++) {
      const args = [
        MAIN_JS,
        'node',
        '--id',
        ids[i],
        '--listen-host',
        host,
        '--listen-port',
        String(peerPorts[i]),
        '--peers',
        peerPorts
          .map((p, j) => (j === i ? '' : `${host}:${p}`))
          .filter(Boolean)
          .join(','),
        '--admin-host',
        host,
        '--admin-port',
        String(adminPorts[i]),
        '--frames',
        String(opts.frames ?? 1024),
        '--log-level',
        opts.logLevel ?? 'info',
      ];
      if (opts.heartbeatMs !== undefined) args.push('--heartbeat-ms', String(opts.heartbeatMs));
      if (opts.missedBeats !== undefined) args.push('--missed-beats', String(opts.missedBeats));
      if (opts.ackTimeoutMs !== undefined) args.push('--ack-timeout-ms', String(opts.ackTimeoutMs));
      args.push(...(opts.extraArgs ?? []));
      // Secrets travel by environment, not argv (argv is visible in ps).
      const env: Record<string, string | undefined> = { ...process.env, XPMESH_CLUSTER_KEY: clusterKey };
      delete env.XPMESH_ADMIN_TOKEN;
      if (opts.adminToken) env.XPMESH_ADMIN_TOKEN = opts.adminToken;
      const child = spawn(process.execPath, args, {
        env,
        stdio: [
          'ignore',
          output === 'inherit' ? 'inherit' : 'pipe',
          output === 'inherit' ? 'inherit' : 'pipe',
          'ipc',
        ],
      });
      if (output === 'files') {
        const file = createWriteStream(join(opts.logDir ?? '.', `${ids[i]}.log`));
        child.stdout?.pipe(file);
        child.stderr?.pipe(file);
      } else if (output === 'ignore') {
        child.stdout?.resume();
        child.stderr?.resume();
      }
      const exited = new Promise<number | string>((resolve) => {
        child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
      });
      child.once('error', () => {});
      if (child.pid === undefined) throw new Error(`cannot start node ${ids[i]}`);
      nodes.push({
        id: ids[i],
        pid: child.pid,
        adminUrl: `http://${host}:${adminPorts[i]}`,
        peerPort: peerPorts[i],
        child,
        exited,
      });
    }
    const deadline = opts.readyTimeoutMs ?? 20_000;
    await Promise.all(
      nodes.map((node) =>
        Promise.race([
          new AdminClient(node.adminUrl).waitHealthy(deadline),
          node.exited.then((code) => {
            throw new Error(`node ${node.id} exited during start-up (${code})`);
          }),
        ]),
      ),
    );
    return cluster;
  } catch (err) {
    await cluster.stop(3000);
    throw err;
  }
}
