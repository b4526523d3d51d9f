/**
 * Real hosts and real faults on one machine (../shared/TESTING-HOSTS.md). A {@link Lab} runs every
 * xpmesh instance in its own network namespace on a private bridge, plus one more namespace for the
 * test's controller (controller.ts), and injects faults from the root namespace:
 *
 *   partition (both ways or one way)  an nft bridge-family table in the root namespace: a set of
 *                                     (in-port . out-port) pairs whose frames are dropped
 *   link down / up                    ip link set <host veth> down / up
 *   crash without FIN                 link down first, then SIGKILL (no FIN, no RST reaches anyone)
 *   pause / resume                    SIGSTOP / SIGCONT
 *
 * The traffic rule: this module (the orchestrator, root namespace) NEVER opens a socket to a test
 * address. Everything that talks to an instance (admin calls, /status, /events, the workload) runs
 * inside the controller namespace and is driven over the controller's stdin/stdout (JSON lines).
 * Partitions only ever name instance ports, never the controller's, so controller <-> instance
 * traffic is never cut (link down and crash cut it for the victim, by nature).
 *
 * Names carry this process's pid and a per-lab sequence letter, so concurrent runs cannot collide:
 * namespaces xpm<pid><seq><h>, bridge xpb<pid><seq>, host-side veths xpv<pid><seq><h>, nft table
 * `bridge xpf<pid><seq>` (h = instance number 1..9, or c for the controller; all ≤ 15 chars).
 * Everything a lab creates is recorded before it is created and removed by destroy(), and also, in
 * one synchronous sweep, when the process exits for any reason (exit, SIGINT, SIGTERM, SIGHUP,
 * an uncaught error).
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CallResult, ControllerCommands } from './controller.js';

/** The `xpmesh` CLI of @xpmesh/node (the product the harness runs as each host's instance). */
export const MAIN_JS = join(
  dirname(createRequire(import.meta.url).resolve('@xpmesh/node/package.json')),
  'dist/cli/main.js',
);
export const CONTROLLER_JS = fileURLToPath(new URL('./controller.js', import.meta.url));

/** One clock for orchestrator, controller and instances: ms since the epoch, sub-ms precision. */
export const now = (): number => performance.timeOrigin + performance.now();
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const TOOL_PATH = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
const ENV = { ...process.env, PATH: `${TOOL_PATH.join(':')}:${process.env.PATH ?? ''}` };
const PEER_PORT = 7400;
const ADMIN_PORT = 7500;
const SUBNET = '10.77.0';
const CONTROLLER_IP = `${SUBNET}.2`;
const MAX_NODES = 9;

// ---- timing -------------------------------------------------------------------------------------

export interface NodeTimings {
  heartbeatMs: number;
  missedBeats: number;
  requestTimeoutMs: number;
  ackTimeoutMs: number;
  /** --lease-ms; undefined = the daemon's default (heartbeat-ms × missed-beats). */
  leaseMs?: number;
}

export const DEFAULT_TIMINGS: NodeTimings = {
  heartbeatMs: 200,
  missedBeats: 3,
  requestTimeoutMs: 2000,
  ackTimeoutMs: 1000,
};

/**
 * Bounds derived from the configured deadlines, with at least 3× slack (CI is a noisy 2-core VM):
 * nothing here is a speed target, only "did not wait past its deadline".
 */
export function boundsOf(t: NodeTimings) {
  const heartbeatTimeoutMs = t.heartbeatMs * t.missedBeats;
  const leaseMs = t.leaseMs ?? heartbeatTimeoutMs;
  const leaseWaitMs = leaseMs + Math.max(50, leaseMs / 10);
  return {
    heartbeatTimeoutMs,
    leaseWaitMs,
    /** A dead or cut-off instance is fenced by its peers within this (detection can take one interval more). */
    fenceMs: 3 * (heartbeatTimeoutMs + t.heartbeatMs) + 1000,
    /** One admin operation that may wait on a peer: its request and ack deadlines plus a lease wait. */
    opMs: 3 * (t.requestTimeoutMs + t.ackTimeoutMs + leaseWaitMs) + 2000,
    /** The fenced instance's reverse-map entries are gone (after the lease wait). */
    rmapClearMs: 3 * (heartbeatTimeoutMs + t.heartbeatMs + leaseWaitMs) + 2000,
    /** A healed instance is back (reconnect backoff is capped at 5 s, plus the handshake). */
    rejoinMs: 20_000,
    /**
     * Sessions unchanged this long: the mesh has settled. A session that is up is never replaced by
     * a crossing or duplicate dial (docs/protocol.md §7); this covers the one message between a
     * restarted instance's new session coming up at one end and replacing the old one at the other.
     */
    meshStableMs: 2 * t.heartbeatMs,
  };
}

// ---- shell --------------------------------------------------------------------------------------

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly stderr: string,
    readonly status: number | null,
  ) {
    super(`${command} failed (${status}): ${stderr.trim().slice(0, 500)}`);
    this.name = 'CommandError';
  }
}

/** Run a tool (ip, nft), async; rejects with its stderr. */
export function run(cmd: string, args: string[], input?: string, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { env: ENV, timeout: timeoutMs, maxBuffer: 4 << 20 },
      (err, out, errOut) => {
        if (err)
          reject(
            new CommandError(
              `${cmd} ${args.join(' ')}`,
              String(errOut || err.message),
              (err as { code?: number }).code ?? null,
            ),
          );
        else resolve(String(out));
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Synchronous variant for probes and the exit-time sweep. */
export function runSync(
  cmd: string,
  args: string[],
  input?: string,
): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { env: ENV, input, encoding: 'utf8', timeout: 15_000 });
  return { ok: r.status === 0, out: r.stdout ?? '', err: r.stderr || (r.error ? String(r.error) : '') };
}

// ---- capability probe ---------------------------------------------------------------------------

export interface Capability {
  ok: boolean;
  /** Why not, when !ok. */
  reason?: string;
}

/**
 * Can this process build labs? Needs Linux, root, iproute2 with `ip netns`, veth and bridge links,
 * and nftables with the bridge family. Creates and removes one of each (named with our pid).
 */
export function probeCapabilities(): Capability {
  if (process.platform !== 'linux') return { ok: false, reason: `not Linux (${process.platform})` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0)
    return { ok: false, reason: 'not root (network namespaces, veths and nft need CAP_NET_ADMIN)' };
  if (!runSync('ip', ['-V']).ok)
    return { ok: false, reason: 'iproute2 `ip` not found (apt-get install -y iproute2)' };
  if (!runSync('nft', ['--version']).ok)
    return { ok: false, reason: '`nft` not found (apt-get install -y nftables)' };
  const t = `${process.pid}z`;
  const ns = `xpm${t}1`;
  const br = `xpb${t}`;
  const veth = `xpv${t}1`;
  const table = `xpf${t}`;
  const steps: Array<[string, string[], string]> = [
    ['ip', ['netns', 'add', ns], '`ip netns add` failed'],
    ['ip', ['link', 'add', br, 'type', 'bridge'], 'cannot create a bridge'],
    [
      'ip',
      ['link', 'add', veth, 'type', 'veth', 'peer', 'name', `xpq${t}1`, 'netns', ns],
      'cannot create a veth pair',
    ],
    ['nft', ['add', 'table', 'bridge', table], 'nft bridge family unavailable'],
  ];
  try {
    for (const [cmd, args, what] of steps) {
      const r = runSync(cmd, args);
      if (!r.ok) return { ok: false, reason: `${what}: ${r.err.trim()}` };
    }
    return { ok: true };
  } finally {
    runSync('nft', ['delete', 'table', 'bridge', table]);
    runSync('ip', ['link', 'del', veth]);
    runSync('ip', ['link', 'del', br]);
    runSync('ip', ['netns', 'del', ns]);
  }
}

// ---- leftovers ----------------------------------------------------------------------------------

const OUR_NAME = /^xp[mbvqf](\d+)([a-z]+)/;

/** Namespaces, links and nft tables of labs of this process (or of `pid`) that still exist. */
export function leftovers(pid = process.pid): string[] {
  const mine = (name: string) => {
    const m = OUR_NAME.exec(name);
    return m !== null && Number(m[1]) === pid;
  };
  const out: string[] = [];
  for (const line of runSync('ip', ['netns', 'list']).out.split('\n')) {
    const name = line.split(' ')[0];
    if (name && mine(name)) out.push(`netns ${name}`);
  }
  for (const line of runSync('ip', ['-o', 'link', 'show']).out.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && mine(m[1])) out.push(`link ${m[1]}`);
  }
  for (const line of runSync('nft', ['list', 'tables']).out.split('\n')) {
    const m = /^table\s+(\S+)\s+(\S+)/.exec(line.trim());
    if (m && mine(m[2])) out.push(`nft ${m[1]} ${m[2]}`);
  }
  try {
    for (const name of runSync('ls', ['/etc/netns']).out.split('\n'))
      if (name && mine(name)) out.push(`/etc/netns/${name}`);
  } catch {
    // no /etc/netns
  }
  return out;
}

/**
 * Remove what labs of DEAD processes left behind (a run that was SIGKILLed had no chance to clean
 * up). Only names of our own pattern whose pid is not alive are touched.
 */
export function sweepOrphans(): string[] {
  const removed: string[] = [];
  const dead = (name: string) => {
    const m = OUR_NAME.exec(name);
    if (!m) return false;
    const pid = Number(m[1]);
    if (pid === process.pid) return false;
    try {
      process.kill(pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH';
    }
  };
  for (const line of runSync('nft', ['list', 'tables']).out.split('\n')) {
    const m = /^table\s+bridge\s+(\S+)/.exec(line.trim());
    if (m && dead(m[1]) && runSync('nft', ['delete', 'table', 'bridge', m[1]]).ok)
      removed.push(`nft ${m[1]}`);
  }
  for (const line of runSync('ip', ['netns', 'list']).out.split('\n')) {
    const name = line.split(' ')[0];
    if (!name || !dead(name)) continue;
    for (const p of runSync('ip', ['netns', 'pids', name]).out.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {}
    }
    if (runSync('ip', ['netns', 'del', name]).ok) removed.push(`netns ${name}`);
    rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
  }
  for (const line of runSync('ip', ['-o', 'link', 'show']).out.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && dead(m[1]) && runSync('ip', ['link', 'del', m[1]]).ok) removed.push(`link ${m[1]}`);
  }
  return removed;
}

// ---- exit-time clean-up -------------------------------------------------------------------------

const liveLabs = new Set<Lab>();
let handlersInstalled = false;

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  // 'exit' runs on every way out (process.exit, an uncaught error, the end of the event loop);
  // only synchronous work is possible there, which is why destroySync exists.
  process.on('exit', () => {
    for (const lab of [...liveLabs]) lab.destroySync();
  });
  const signals: Array<[NodeJS.Signals, number]> = [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ];
  for (const [sig, code] of signals) {
    process.on(sig, () => {
      for (const lab of [...liveLabs]) lab.destroySync();
      process.exit(code);
    });
  }
}

// ---- the controller, seen from the orchestrator ----------------------------------------------

/** JSON-lines RPC with the controller process (it runs inside the controller namespace). */
export class ControllerClient {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }
  >();
  private closedWith: Error | undefined;
  readonly exited: Promise<number | string>;

  constructor(readonly child: ChildProcess) {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => this.onLine(line));
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.fail(new Error(`controller exited (${code ?? signal})`));
        resolve(code ?? signal ?? 'unknown');
      });
    });
    child.once('error', (e) => this.fail(e));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private onLine(line: string): void {
    let msg: { id?: number; ok?: boolean; value?: unknown; error?: { code: string; message: string } };
    try {
      msg = JSON.parse(line);
    } catch {
      return; // not ours
    }
    const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
    if (!p || msg.id === undefined) return;
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.value);
    else {
      const e = new Error(
        `${msg.error?.code ?? 'E_CONTROLLER'}: ${msg.error?.message ?? 'failed'}`,
      ) as Error & { code?: string };
      e.code = msg.error?.code;
      p.reject(e);
    }
  }

  private fail(e: Error): void {
    this.closedWith ??= e;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(e);
      this.pending.delete(id);
    }
  }

  /** Send a command; rejects on the controller's error or after timeoutMs. */
  request<C extends keyof ControllerCommands>(
    cmd: C,
    args: ControllerCommands[C][0],
    timeoutMs = 120_000,
  ): Promise<ControllerCommands[C][1]> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`controller command ${cmd} got no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.stdin!.write(`${JSON.stringify({ id, cmd, args })}\n`);
    });
  }

  /** An admin operation on `node`, executed by the controller; never rejects (see CallResult). */
  call<T = Record<string, unknown>>(
    node: string,
    op: string,
    body: object,
    timeoutMs: number,
  ): Promise<CallResult<T>> {
    return this.request('call', { node, op, body, timeoutMs }, timeoutMs + 30_000) as Promise<CallResult<T>>;
  }

  /** A GET on `node` (JSON), executed by the controller; never rejects. */
  get<T = unknown>(node: string, path: string, timeoutMs = 5000): Promise<CallResult<T>> {
    return this.request('get', { node, path, timeoutMs }, timeoutMs + 30_000) as Promise<CallResult<T>>;
  }

  /** Like call/get but throws unless the result is ok. */
  async must<T = Record<string, unknown>>(
    node: string,
    op: string,
    body: object,
    timeoutMs = 10_000,
  ): Promise<T> {
    const r = await this.call<T>(node, op, body, timeoutMs);
    if (!r.ok) throw new Error(`${node} ${op} ${JSON.stringify(body)}: ${r.code} ${r.message}`);
    return r.value as T;
  }

  async mustGet<T = unknown>(node: string, path: string, timeoutMs = 5000): Promise<T> {
    const r = await this.get<T>(node, path, timeoutMs);
    if (!r.ok) throw new Error(`${node} GET ${path}: ${r.code} ${r.message}`);
    return r.value as T;
  }

  /** Ask the controller to stop; kill it if it does not. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      this.child.stdin?.end(`${JSON.stringify({ id: 0, cmd: 'shutdown', args: {} })}\n`);
    } catch {}
    const t = setTimeout(() => {
      try {
        this.child.kill('SIGKILL');
      } catch {}
    }, 2000);
    await this.exited;
    clearTimeout(t);
  }
}

// ---- the lab ------------------------------------------------------------------------------------

export interface LabOptions extends NodeTimings {
  nodes: number;
  frames?: number;
  logLevel?: string;
  /** Where logs and swap files go (default: a fresh temp dir, removed by destroy unless kept). */
  dir?: string;
  extraArgs?: string[];
  /** Admin /status poll interval of the controller's fence watcher (ms). */
  pollMs?: number;
  /** Subscribe to every instance's /events (fence, lost-dirty, peer; and messages if `messages`). */
  sse?: boolean;
  messages?: boolean;
}

export interface NodeHost {
  readonly index: number;
  readonly id: string;
  readonly ns: string;
  readonly veth: string;
  readonly ip: string;
  readonly adminUrl: string;
  proc?: { child: ChildProcess; pid: number; exited: Promise<number | string>; startedAt: number };
  starts: number;
  linkUp: boolean;
  paused: boolean;
  logs: string[];
}

export interface FaultRecord {
  t: number;
  kind: string;
  target: string;
  detail?: string;
}

let labSeq = 0;
function seqName(n: number): string {
  let s = '';
  let x = n;
  do {
    s = String.fromCharCode(97 + (x % 26)) + s;
    x = Math.floor(x / 26) - 1;
  } while (x >= 0);
  return s;
}

export class Lab {
  readonly tag: string;
  readonly dir: string;
  readonly bridge: string;
  readonly table: string;
  readonly nodes: NodeHost[] = [];
  readonly controllerNs: string;
  readonly controllerVeth: string;
  readonly clusterKey = randomBytes(24).toString('base64url');
  readonly adminToken = randomBytes(18).toString('base64url');
  readonly faults: FaultRecord[] = [];
  ctl!: ControllerClient;
  /** How long the set-up took, by phase (ms). */
  setupMs: Record<string, number> = {};
  private readonly created = {
    netns: [] as string[],
    links: [] as string[],
    table: false,
    etc: [] as string[],
  };
  private readonly cut = new Set<string>();
  private destroyed = false;
  private readonly ownDir: boolean;

  private constructor(readonly opts: LabOptions) {
    if (opts.nodes < 1 || opts.nodes > MAX_NODES) throw new Error(`1..${MAX_NODES} nodes`);
    this.tag = `${process.pid}${seqName(labSeq++)}`;
    this.ownDir = opts.dir === undefined;
    this.dir = opts.dir ?? mkdtempSync(join(tmpdir(), `xpmesh-lab-${this.tag}-`));
    mkdirSync(this.dir, { recursive: true });
    this.bridge = `xpb${this.tag}`;
    this.table = `xpf${this.tag}`;
    this.controllerNs = `xpm${this.tag}c`;
    this.controllerVeth = `xpv${this.tag}c`;
    for (let i = 1; i <= opts.nodes; i++) {
      const ip = `${SUBNET}.${10 + i}`;
      this.nodes.push({
        index: i - 1,
        id: `n${i}`,
        ns: `xpm${this.tag}${i}`,
        veth: `xpv${this.tag}${i}`,
        ip,
        adminUrl: `http://${ip}:${ADMIN_PORT}`,
        starts: 0,
        linkUp: true,
        paused: false,
        logs: [],
      });
    }
    for (const n of [this.controllerVeth, ...this.nodes.map((x) => x.veth), this.bridge, this.controllerNs])
      if (n.length > 15) throw new Error(`interface name ${n} longer than 15 characters`);
  }

  /** Build the hosts, start the controller and every instance, wait until the mesh is up. */
  static async create(opts: LabOptions): Promise<Lab> {
    installHandlers();
    const lab = new Lab(opts);
    liveLabs.add(lab);
    try {
      const t0 = now();
      await lab.build();
      const t1 = now();
      await lab.startController();
      const t2 = now();
      for (const n of lab.nodes) await lab.startNode(n.index);
      await lab.ctl.request('init', {
        nodes: lab.nodes.map((n) => ({ id: n.id, url: n.adminUrl })),
        token: lab.adminToken,
        pollMs: opts.pollMs ?? 50,
        sse: opts.sse ?? false,
        messages: opts.messages ?? false,
      });
      const t3 = now();
      await lab.ctl.request('waitMesh', { timeoutMs: 30_000, stableMs: lab.bounds.meshStableMs }, 40_000);
      lab.setupMs = { build: t1 - t0, controller: t2 - t1, nodes: t3 - t2, mesh: now() - t3 };
      return lab;
    } catch (e) {
      await lab.destroy({ keepLogs: true });
      throw e;
    }
  }

  node(id: string | number): NodeHost {
    const n = typeof id === 'number' ? this.nodes[id] : this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  get timings(): NodeTimings {
    return this.opts;
  }

  get bounds() {
    return boundsOf(this.opts);
  }

  private hostsFile(): string {
    const lines = ['127.0.0.1 localhost', `${CONTROLLER_IP} controller`];
    for (const n of this.nodes) lines.push(`${n.ip} ${n.id} node${n.index + 1}`);
    return `${lines.join('\n')}\n`;
  }

  private async addHost(ns: string, veth: string, ip: string): Promise<void> {
    this.created.netns.push(ns);
    await run('ip', ['netns', 'add', ns]);
    this.created.etc.push(ns);
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(`/etc/netns/${ns}/hosts`, this.hostsFile());
    const peer = `xpq${veth.slice(3)}`;
    this.created.links.push(veth);
    await run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', peer, 'netns', ns]);
    await run('ip', ['-n', ns, 'link', 'set', peer, 'name', 'eth0']);
    await run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['link', 'set', veth, 'master', this.bridge]);
    await run('ip', ['link', 'set', veth, 'up']);
  }

  private async build(): Promise<void> {
    this.created.links.push(this.bridge);
    await run('ip', ['link', 'add', this.bridge, 'type', 'bridge']);
    // Our bridge only: keep the host's iptables (e.g. docker's FORWARD DROP) out of bridged traffic
    // when br_netfilter is loaded. Older kernels lack the options; then nothing changes.
    await run('ip', [
      'link',
      'set',
      this.bridge,
      'type',
      'bridge',
      'nf_call_iptables',
      '0',
      'nf_call_ip6tables',
      '0',
      'nf_call_arptables',
      '0',
    ]).catch(() => undefined);
    await run('ip', ['link', 'set', this.bridge, 'up']);
    this.created.table = true;
    await run(
      'nft',
      ['-f', '-'],
      [
        `table bridge ${this.table} {`,
        '  set cut { type ifname . ifname; }',
        '  chain forward { type filter hook forward priority 0; policy accept; iifname . oifname @cut counter drop; }',
        '}',
      ].join('\n'),
    );
    await this.addHost(this.controllerNs, this.controllerVeth, CONTROLLER_IP);
    for (const n of this.nodes) await this.addHost(n.ns, n.veth, n.ip);
    // Static neighbour entries: a one-way cut must stay one-way (ARP replies would be cut too).
    const hosts = [
      { ns: this.controllerNs, ip: CONTROLLER_IP },
      ...this.nodes.map((n) => ({ ns: n.ns, ip: n.ip })),
    ];
    const macs = new Map<string, string>();
    for (const h of hosts) {
      const info = JSON.parse(await run('ip', ['-n', h.ns, '-j', 'link', 'show', 'eth0'])) as Array<{
        address: string;
      }>;
      macs.set(h.ip, info[0].address);
    }
    for (const h of hosts)
      for (const o of hosts)
        if (o !== h)
          await run('ip', [
            '-n',
            h.ns,
            'neigh',
            'replace',
            o.ip,
            'lladdr',
            macs.get(o.ip)!,
            'dev',
            'eth0',
            'nud',
            'permanent',
          ]);
  }

  private async startController(): Promise<void> {
    const errLog = join(this.dir, 'controller.log');
    const fd = openSync(errLog, 'a');
    let child: ChildProcess;
    try {
      child = spawn('ip', ['netns', 'exec', this.controllerNs, process.execPath, CONTROLLER_JS], {
        env: ENV,
        stdio: ['pipe', 'pipe', fd],
      });
    } finally {
      closeSync(fd);
    }
    this.ctl = new ControllerClient(child);
    await this.ctl.request('ping', {}, 15_000);
  }

  /** Start (or restart) instance i in its namespace. Does not wait for it: the controller does. */
  async startNode(i: number): Promise<void> {
    const n = this.nodes[i];
    if (n.proc && n.proc.child.exitCode === null && n.proc.child.signalCode === null)
      throw new Error(`${n.id} is running (pid ${n.proc.pid})`);
    n.starts++;
    const t = this.opts;
    const args = [
      MAIN_JS,
      'node',
      '--id',
      n.id,
      '--listen-host',
      n.ip,
      '--listen-port',
      String(PEER_PORT),
      '--peers',
      this.nodes
        .filter((o) => o !== n)
        .map((o) => `${o.ip}:${PEER_PORT}`)
        .join(','),
      '--admin-host',
      n.ip,
      '--admin-port',
      String(ADMIN_PORT),
      '--frames',
      String(this.opts.frames ?? 2048),
      '--swap-file',
      join(this.dir, `${n.id}-${n.starts}.swap`),
      '--heartbeat-ms',
      String(t.heartbeatMs),
      '--missed-beats',
      String(t.missedBeats),
      '--request-timeout-ms',
      String(t.requestTimeoutMs),
      '--ack-timeout-ms',
      String(t.ackTimeoutMs),
      '--shutdown-ms',
      '2000',
      '--log-level',
      this.opts.logLevel ?? 'info',
      ...(t.leaseMs !== undefined ? ['--lease-ms', String(t.leaseMs)] : []),
      ...(this.opts.extraArgs ?? []),
    ];
    const log = join(this.dir, `${n.id}.${n.starts}.log`);
    n.logs.push(log);
    const fd = openSync(log, 'a');
    let child: ChildProcess;
    try {
      // Secrets by environment, not argv. The IPC channel survives `ip netns exec` (it execs): an
      // instance shuts itself down if this process disappears without cleaning up.
      child = spawn('ip', ['netns', 'exec', n.ns, process.execPath, ...args], {
        env: { ...ENV, XPMESH_CLUSTER_KEY: this.clusterKey, XPMESH_ADMIN_TOKEN: this.adminToken },
        stdio: ['ignore', fd, fd, 'ipc'],
      });
    } finally {
      closeSync(fd);
    }
    child.once('error', () => {});
    child.channel?.unref();
    if (child.pid === undefined) throw new Error(`cannot start ${n.id}`);
    const exited = new Promise<number | string>((resolve) => {
      child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    });
    n.proc = { child, pid: child.pid, exited, startedAt: now() };
    n.paused = false;
  }

  private record(kind: string, target: string, detail?: string): number {
    const t = now();
    this.faults.push({ t, kind, target, detail });
    return t;
  }

  private async nft(lines: string[]): Promise<void> {
    if (lines.length) await run('nft', ['-f', '-'], lines.join('\n'));
  }

  private element(from: NodeHost, to: NodeHost): string {
    return `"${from.veth}" . "${to.veth}"`;
  }

  /**
   * Drop every frame from instance `from` to instance `to` (one way). Returns the time the rule is
   * in force. The controller's port is never part of a rule.
   */
  async cutOneWay(pairs: Array<[string | number, string | number]>): Promise<number> {
    const lines: string[] = [];
    const names: string[] = [];
    for (const [a, b] of pairs) {
      const from = this.node(a);
      const to = this.node(b);
      const key = `${from.id}>${to.id}`;
      if (this.cut.has(key)) continue;
      this.cut.add(key);
      names.push(key);
      lines.push(`add element bridge ${this.table} cut { ${this.element(from, to)} }`);
    }
    await this.nft(lines);
    return this.record('cut', names.join(','));
  }

  /** Cut a and b apart, both ways. */
  partition(a: string | number, b: string | number): Promise<number> {
    return this.cutOneWay([
      [a, b],
      [b, a],
    ]);
  }

  /** Cut instance x off from every other instance: 'out' (its frames), 'in' (frames to it) or 'both'. */
  isolate(x: string | number, dir: 'in' | 'out' | 'both' = 'both'): Promise<number> {
    const n = this.node(x);
    const pairs: Array<[string, string]> = [];
    for (const o of this.nodes) {
      if (o === n) continue;
      if (dir !== 'in') pairs.push([n.id, o.id]);
      if (dir !== 'out') pairs.push([o.id, n.id]);
    }
    return this.cutOneWay(pairs);
  }

  /** Remove every partition rule. */
  async heal(): Promise<number> {
    await run('nft', ['flush', 'set', 'bridge', this.table, 'cut']);
    this.cut.clear();
    return this.record('heal', '*');
  }

  /** The bridge's drop counter (frames dropped by partitions so far). */
  async droppedFrames(): Promise<number> {
    const out = await run('nft', ['list', 'chain', 'bridge', this.table, 'forward']);
    const m = /counter packets (\d+)/.exec(out);
    return m ? Number(m[1]) : 0;
  }

  async linkDown(x: string | number): Promise<number> {
    const n = this.node(x);
    await run('ip', ['link', 'set', n.veth, 'down']);
    n.linkUp = false;
    return this.record('link-down', n.id);
  }

  async linkUp(x: string | number): Promise<number> {
    const n = this.node(x);
    await run('ip', ['link', 'set', n.veth, 'up']);
    n.linkUp = true;
    return this.record('link-up', n.id);
  }

  pause(x: string | number): number {
    const n = this.node(x);
    if (!n.proc) throw new Error(`${n.id} is not running`);
    process.kill(n.proc.pid, 'SIGSTOP');
    n.paused = true;
    return this.record('pause', n.id, `pid ${n.proc.pid}`);
  }

  resume(x: string | number): number {
    const n = this.node(x);
    if (!n.proc) throw new Error(`${n.id} is not running`);
    process.kill(n.proc.pid, 'SIGCONT');
    n.paused = false;
    return this.record('resume', n.id, `pid ${n.proc.pid}`);
  }

  /**
   * Crash without FIN: take the link down first, then SIGKILL, and wait until the process is gone.
   * The link stays down (bring it up with restart) so no RST reaches a peer either. Returns the time
   * the link went down.
   */
  async crash(x: string | number): Promise<number> {
    const n = this.node(x);
    const t = await this.linkDown(n.id);
    await this.kill(n.id, 'SIGKILL');
    await this.ctl.request('nodeGone', { node: n.id });
    this.record('crash', n.id);
    return t;
  }

  /** Send a signal to instance x and wait (bounded) for it to exit. */
  async kill(x: string | number, signal: NodeJS.Signals, deadlineMs = 10_000): Promise<number | string> {
    const n = this.node(x);
    const p = n.proc;
    if (!p) return 'not running';
    if (p.child.exitCode === null && p.child.signalCode === null) {
      if (n.paused && signal !== 'SIGKILL') process.kill(p.pid, 'SIGCONT');
      process.kill(p.pid, signal);
    }
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      p.exited,
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), deadlineMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (code === 'timeout') throw new Error(`${n.id} (pid ${p.pid}) did not exit after ${signal}`);
    n.paused = false;
    return code;
  }

  /** Bring a crashed (or stopped) instance back: link up, new process with the same id. */
  async restart(x: string | number): Promise<number> {
    const n = this.node(x);
    if (!n.linkUp) await this.linkUp(n.id);
    await this.startNode(n.index);
    const t = this.record('restart', n.id, `pid ${n.proc?.pid}`);
    await this.ctl.request('resubscribe', { node: n.id });
    return t;
  }

  /** The last `lines` lines of an instance's current log (evidence for reports). */
  tail(x: string | number, lines = 40, filter?: RegExp): string[] {
    const n = this.node(x);
    const out: string[] = [];
    for (const file of n.logs) {
      try {
        out.push(
          ...readFileSync(file, 'utf8')
            .split('\n')
            .filter((l) => l && (!filter || filter.test(l))),
        );
      } catch {}
    }
    return out.slice(-lines);
  }

  /** Stop everything and remove every resource this lab created. Idempotent. */
  async destroy(o: { keepLogs?: boolean } = {}): Promise<void> {
    if (this.destroyed) return;
    try {
      await this.ctl?.close().catch(() => undefined);
      await Promise.all(
        this.nodes.map(async (n) => {
          const p = n.proc;
          if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch {}
          await Promise.race([p.exited, sleep(5000)]);
        }),
      );
    } finally {
      this.destroySync(o);
    }
  }

  /** The synchronous clean-up (also used at process exit). */
  destroySync(o: { keepLogs?: boolean } = {}): void {
    if (this.destroyed) return;
    this.destroyed = true;
    liveLabs.delete(this);
    const kill = (pid: number | undefined) => {
      if (pid === undefined || pid <= 0) return;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    };
    kill(this.ctl?.child.pid);
    for (const n of this.nodes) kill(n.proc?.pid);
    // Anything else still running in our namespaces was started by us (ip netns exec children).
    for (const ns of this.created.netns)
      for (const p of runSync('ip', ['netns', 'pids', ns]).out.split(/\s+/).filter(Boolean)) kill(Number(p));
    if (this.created.table) runSync('nft', ['delete', 'table', 'bridge', this.table]);
    for (const ns of this.created.netns) runSync('ip', ['netns', 'del', ns]);
    for (const link of this.created.links)
      if (existsSync(`/sys/class/net/${link}`)) runSync('ip', ['link', 'del', link]);
    for (const ns of this.created.etc) rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
    if (this.ownDir && !o.keepLogs) rmSync(this.dir, { recursive: true, force: true });
    else {
      // swap files are big and useless after the run; logs stay as evidence
      for (const n of this.nodes)
        for (let s = 1; s <= n.starts; s++) rmSync(join(this.dir, `${n.id}-${s}.swap`), { force: true });
    }
  }
}
