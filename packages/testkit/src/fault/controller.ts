/**
 * The test controller. It runs INSIDE a network namespace attached to the lab's bridge
 * (`ip netns exec xpm<pid><seq>c node dist/fault/controller.js`), so every connection to a test
 * address starts in a test namespace (the traffic rule of ../shared/TESTING-HOSTS.md). The
 * orchestrator in the root namespace drives it over stdin/stdout, one JSON object per line:
 *
 *   → {"id": 1, "cmd": "call", "args": {"node": "n1", "op": "read", "body": {...}, "timeoutMs": 5000}}
 *   ← {"id": 1, "ok": true, "value": {...}}          or   {"id": 1, "ok": false, "error": {code, message}}
 *
 * What it does for the orchestrator: admin calls with their own deadline and timing (every call
 * returns a CallResult, failures included), GETs of /status, /pages, /metrics; a fence watcher that
 * polls every instance's /status and records fences (fencedBelow moves) and peer sessions (state,
 * epoch) with the time it saw them; optionally the instances' /events streams (fence, lost-dirty,
 * peer, and protocol messages); and the background workload (workload.ts). Diagnostics go to stderr.
 * It exits when stdin closes.
 */
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import {
  type FaultWindow,
  type LoadConfig,
  LoadEngine,
  type LoadSummary,
  type ProgressQuery,
  type RoundCheck,
} from './workload.js';

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface NodeRef {
  id: string;
  url: string;
}

/** The outcome of one admin call, measured here (t0/t1 on the shared clock). */
export interface CallResult<T = unknown> {
  ok: boolean;
  value?: T;
  /** Error code: the instance's (`SIGBUS`, `E_TIMEOUT`, …) or ours: E_CONNECT, E_DEADLINE (no answer in time). */
  code?: string;
  message?: string;
  status?: number;
  t0: number;
  t1: number;
  ms: number;
}

/** Something the controller saw happen at an instance (the observer). */
export interface Observation {
  kind: 'fence' | 'peer' | 'lost-dirty' | 'message' | 'restart';
  /** The instance that reported it. */
  observer: string;
  /** OS pid of the observer's process (tells restarts apart); 0 when unknown (SSE). */
  observerPid: number;
  /** fence: the fenced instance; peer: the peer; lost-dirty: the instance that held the page. */
  node?: string;
  /** fence: the fenced session's epoch (poll: fencedBelow - 1); peer: the peer's session epoch. */
  epoch?: number;
  state?: string;
  why?: string;
  t: number;
  src: 'sse' | 'poll';
  data?: Record<string, unknown>;
}

export interface ObservationQuery {
  kind?: Observation['kind'];
  observer?: string;
  node?: string;
  after?: number;
  /** For messages: the message type (map, map-ok, invalidate, …) and direction. */
  msg?: string;
  direction?: 'in' | 'out';
}

interface PeerNetStatus {
  node: string;
  epoch: number;
  state: string;
  lastSeenMs: number | null;
}
interface DriverPeerStatus {
  node: string;
  epoch: number;
  state: string;
  fencedBelow: number;
}
export interface InstanceStatus {
  node: string;
  pid: number;
  peers: PeerNetStatus[];
  driver: {
    peers: DriverPeerStatus[];
    counters: Record<string, number>;
    rmap: { entries: number; frames: number };
    cachedPages: number;
    attachments: unknown[];
    segments: Array<{ segid: string }>;
  };
  memory: Record<string, unknown>;
  processes: Array<{ pid: number }>;
}

/** The commands, as [args, result] pairs (the orchestrator's ControllerClient is typed by this). */
export interface ControllerCommands {
  ping: [Record<string, never>, { pid: number; t: number }];
  init: [{ nodes: NodeRef[]; token: string; pollMs: number; sse: boolean; messages: boolean }, { ok: true }];
  call: [{ node: string; op: string; body: object; timeoutMs: number }, CallResult];
  get: [{ node: string; path: string; timeoutMs: number }, CallResult];
  resubscribe: [{ node: string }, { ok: true }];
  /** The orchestrator killed `node`: forget its process (pids of a restarted instance start at 1 again). */
  nodeGone: [{ node: string }, { ok: true }];
  observations: [ObservationQuery, Observation[]];
  waitFor: [ObservationQuery & { timeoutMs: number }, Observation];
  /**
   * Wait until every pair of `nodes` has a session up, and the sessions stayed the same for
   * `stableMs` (a restarted instance's new session can be up at one end a moment before it replaces
   * the old incarnation's session at the other; duplicate dials never replace a session).
   */
  waitMesh: [
    { nodes?: string[]; timeoutMs: number; stableMs?: number },
    Record<string, Record<string, number>>,
  ];
  'load.start': [Partial<LoadConfig> & { nodes: string[]; home: string }, { segid: string }];
  'load.progress': [ProgressQuery, { ok: boolean; opsByNode: Record<string, number> }];
  /** Check the rounds that are over (call it when no fault is active: fences are all observed). */
  'load.checkpoint': [Record<string, never>, { rounds: number; failed: RoundCheck[]; ops: number }];
  'load.stop': [{ windows: FaultWindow[] }, LoadSummary];
  shutdown: [Record<string, never>, { ok: true }];
}

// ---- admin calls ----------------------------------------------------------------------------------

export class Admin {
  constructor(
    readonly base: string,
    private readonly token: string,
  ) {}

  private async request<T>(
    method: string,
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<CallResult<T>> {
    const t0 = now();
    const done = (r: Omit<CallResult<T>, 't0' | 't1' | 'ms'>): CallResult<T> => {
      const t1 = now();
      return { ...r, t0, t1, ms: t1 - t0 };
    };
    try {
      const res = await fetch(this.base + path, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      const json = (res.headers.get('content-type') ?? '').includes('json') && text !== '';
      const value = json ? JSON.parse(text) : text;
      if (!res.ok) {
        const e = (value ?? {}) as { code?: string; message?: string };
        return done({
          ok: false,
          code: e.code ?? `HTTP_${res.status}`,
          message: e.message ?? String(text).slice(0, 300),
          status: res.status,
        });
      }
      return done({ ok: true, value: value as T, status: res.status });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const timeout = e.name === 'TimeoutError' || e.name === 'AbortError';
      return done({
        ok: false,
        code: timeout ? 'E_DEADLINE' : 'E_CONNECT',
        message: `${method} ${path}: ${e.cause?.code ?? e.message}`,
      });
    }
  }

  op<T = Record<string, unknown>>(name: string, body: object, timeoutMs: number): Promise<CallResult<T>> {
    return this.request<T>('POST', `/ops/${name}`, body, timeoutMs);
  }

  get<T = unknown>(path: string, timeoutMs: number): Promise<CallResult<T>> {
    return this.request<T>('GET', path, undefined, timeoutMs);
  }
}

// ---- the controller ---------------------------------------------------------------------------------

const MAX_OBSERVATIONS = 50_000;
const MAX_MESSAGES = 20_000;

export class Controller {
  readonly admins = new Map<string, Admin>();
  private nodes: NodeRef[] = [];
  private readonly observations: Observation[] = [];
  private readonly messages: Observation[] = [];
  private readonly waiters = new Set<{ q: ObservationQuery; resolve(o: Observation): void }>();
  private readonly lastStatus = new Map<string, InstanceStatus>();
  /** OS pid of each instance's current process; undefined while it is known to be gone. */
  private readonly osPids = new Map<string, number | undefined>();
  private readonly gonePid = new Map<string, number>();
  private readonly fenced = new Map<string, Map<string, number>>();
  private readonly peerSeen = new Map<string, Map<string, string>>();
  private readonly polling = new Set<string>();
  private readonly streams = new Map<string, AbortController>();
  private pollTimer: NodeJS.Timeout | undefined;
  private sse = false;
  private wantMessages = false;
  private load: LoadEngine | undefined;
  private closing = false;

  log(msg: string, data?: unknown): void {
    process.stderr.write(
      `${new Date().toISOString()} controller: ${msg}${data === undefined ? '' : ` ${JSON.stringify(data)}`}\n`,
    );
  }

  admin(node: string): Admin {
    const a = this.admins.get(node);
    if (!a) throw Object.assign(new Error(`unknown node ${node}`), { code: 'E_NODE' });
    return a;
  }

  init(a: ControllerCommands['init'][0]): void {
    this.nodes = a.nodes;
    for (const n of a.nodes) this.admins.set(n.id, new Admin(n.url, a.token));
    this.sse = a.sse;
    this.wantMessages = a.messages;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = setInterval(
      () => {
        for (const n of this.nodes) void this.poll(n.id);
      },
      Math.max(10, a.pollMs),
    );
    if (this.sse) for (const n of this.nodes) this.subscribe(n.id);
  }

  // ---- observations ---------------------------------------------------------------------------

  private matches(o: Observation, q: ObservationQuery): boolean {
    if (q.kind && o.kind !== q.kind) return false;
    if (q.observer && o.observer !== q.observer) return false;
    if (q.node && o.node !== q.node) return false;
    if (q.after !== undefined && o.t < q.after) return false;
    if (q.msg && o.data?.msg !== q.msg) return false;
    if (q.direction && o.data?.direction !== q.direction) return false;
    return true;
  }

  private observe(o: Observation): void {
    const list = o.kind === 'message' ? this.messages : this.observations;
    list.push(o);
    if (list.length > (o.kind === 'message' ? MAX_MESSAGES : MAX_OBSERVATIONS))
      list.splice(0, list.length >> 2);
    for (const w of [...this.waiters]) {
      if (this.matches(o, w.q)) {
        this.waiters.delete(w);
        w.resolve(o);
      }
    }
  }

  query(q: ObservationQuery): Observation[] {
    const list =
      q.kind === 'message'
        ? this.messages
        : q.kind
          ? this.observations
          : [...this.observations, ...this.messages];
    return list.filter((o) => this.matches(o, q)).sort((a, b) => a.t - b.t);
  }

  /** Fences of `node` observed anywhere (the workload's history rules use them). */
  fencesOf(node: string): Observation[] {
    return this.observations.filter((o) => o.kind === 'fence' && o.node === node);
  }

  waitFor(q: ObservationQuery & { timeoutMs: number }): Promise<Observation> {
    const have = this.query(q);
    if (have.length) return Promise.resolve(have[0]);
    return new Promise((resolve, reject) => {
      const w = {
        q,
        resolve: (o: Observation) => {
          clearTimeout(timer);
          resolve(o);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(
          Object.assign(new Error(`nothing matching ${JSON.stringify(q)} within ${q.timeoutMs} ms`), {
            code: 'E_TIMEOUT',
          }),
        );
      }, q.timeoutMs);
      this.waiters.add(w);
    });
  }

  // ---- the fence watcher: /status polling -----------------------------------------------------

  private async poll(node: string): Promise<void> {
    if (this.polling.has(node) || this.closing) return;
    this.polling.add(node);
    try {
      const r = await this.admin(node).get<InstanceStatus>('/status', 2000);
      if (!r.ok || !r.value) return;
      this.noteStatus(node, r.value, r.t1);
    } finally {
      this.polling.delete(node);
    }
  }

  /** The OS pid of `node`'s current process, as last seen (undefined: gone or not seen yet). */
  osPid(node: string): number | undefined {
    return this.osPids.get(node);
  }

  nodeGone(node: string): void {
    const pid = this.osPids.get(node) ?? this.lastStatus.get(node)?.pid;
    if (pid !== undefined) this.gonePid.set(node, pid);
    this.osPids.set(node, undefined);
  }

  private noteStatus(node: string, s: InstanceStatus, t: number): void {
    // an answer of the old process that was in flight when it was killed changes nothing
    if (this.gonePid.get(node) === s.pid) return;
    this.gonePid.delete(node);
    this.osPids.set(node, s.pid);
    const prev = this.lastStatus.get(node);
    this.lastStatus.set(node, s);
    if (prev && prev.pid !== s.pid) {
      this.fenced.delete(node);
      this.peerSeen.delete(node);
      this.observe({
        kind: 'restart',
        observer: node,
        observerPid: s.pid,
        t,
        src: 'poll',
        data: { before: prev.pid },
      });
    }
    const fenced = this.fenced.get(node) ?? new Map<string, number>();
    this.fenced.set(node, fenced);
    for (const p of s.driver?.peers ?? []) {
      const before = fenced.get(p.node);
      fenced.set(p.node, p.fencedBelow);
      // The first sight of a peer records its fence level without an event; later moves are fences.
      if (before !== undefined && p.fencedBelow > before)
        this.observe({
          kind: 'fence',
          observer: node,
          observerPid: s.pid,
          node: p.node,
          epoch: p.fencedBelow - 1,
          t,
          src: 'poll',
        });
    }
    const seen = this.peerSeen.get(node) ?? new Map<string, string>();
    this.peerSeen.set(node, seen);
    for (const p of s.peers ?? []) {
      const key = `${p.state}@${p.epoch}`;
      if (seen.get(p.node) === key) continue;
      seen.set(p.node, key);
      this.observe({
        kind: 'peer',
        observer: node,
        observerPid: s.pid,
        node: p.node,
        epoch: p.epoch,
        state: p.state,
        t,
        src: 'poll',
      });
    }
  }

  /** The latest /status of a node (fresh if `fresh`). */
  async status(node: string, fresh = true, timeoutMs = 3000): Promise<InstanceStatus | undefined> {
    if (fresh) {
      const r = await this.admin(node).get<InstanceStatus>('/status', timeoutMs);
      if (r.ok && r.value) {
        this.noteStatus(node, r.value, r.t1);
        return r.value;
      }
      return undefined;
    }
    return this.lastStatus.get(node);
  }

  // ---- /events ----------------------------------------------------------------------------------

  subscribe(node: string): void {
    if (!this.sse) return;
    this.streams.get(node)?.abort();
    const ctl = new AbortController();
    this.streams.set(node, ctl);
    void this.stream(node, ctl);
  }

  private async stream(node: string, ctl: AbortController): Promise<void> {
    const a = this.admin(node);
    while (!ctl.signal.aborted && !this.closing) {
      try {
        const res = await fetch(`${a.base}/events`, { signal: ctl.signal });
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            this.onSse(node, block);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted || this.closing) return;
        this.log(`events of ${node}: ${(e as Error).message}; re-subscribing`);
      }
      await sleep(200);
    }
  }

  private onSse(node: string, block: string): void {
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    if (data === '' || event === 'page-state' || event === 'process' || event === 'log') return;
    if (event === 'message' && !this.wantMessages) return;
    let d: Record<string, unknown>;
    try {
      d = JSON.parse(data);
    } catch {
      return;
    }
    const t = now();
    const observerPid = this.lastStatus.get(node)?.pid ?? 0;
    switch (event) {
      case 'fence':
        this.observe({
          kind: 'fence',
          observer: node,
          observerPid,
          node: String(d.node),
          epoch: Number(d.epoch),
          why: String(d.why ?? ''),
          t,
          src: 'sse',
        });
        return;
      case 'lost-dirty':
        this.observe({
          kind: 'lost-dirty',
          observer: node,
          observerPid,
          node: String(d.node ?? d.peer),
          t,
          src: 'sse',
          data: d,
        });
        return;
      case 'peer':
        this.observe({
          kind: 'peer',
          observer: node,
          observerPid,
          node: String(d.peer),
          epoch: Number(d.epoch),
          state: String(d.state),
          why: d.why === undefined ? undefined : String(d.why),
          t,
          src: 'sse',
        });
        return;
      case 'message':
        this.observe({
          kind: 'message',
          observer: node,
          observerPid,
          node: String(d.peer),
          t,
          src: 'sse',
          data: d,
        });
        return;
    }
  }

  // ---- mesh -------------------------------------------------------------------------------------

  /** Wait until each of `nodes` has had the same session up with each other one for `stableMs`. */
  async waitMesh(
    nodes: string[] | undefined,
    timeoutMs: number,
    stableMs = 0,
  ): Promise<Record<string, Record<string, number>>> {
    const end = now() + timeoutMs;
    let since = 0;
    let sig = '';
    for (;;) {
      const epochs = await this.meshOnce(nodes, Math.max(0, end - now()));
      const s = JSON.stringify(epochs);
      if (s !== sig) {
        sig = s;
        since = now();
      }
      if (now() - since >= stableMs) return epochs;
      if (now() > end)
        throw Object.assign(new Error(`mesh not stable for ${stableMs} ms within ${timeoutMs} ms`), {
          code: 'E_TIMEOUT',
        });
      await sleep(100);
    }
  }

  /** Wait until each of `nodes` has a session up with each other one; returns the epochs seen. */
  private async meshOnce(
    nodes: string[] | undefined,
    timeoutMs: number,
  ): Promise<Record<string, Record<string, number>>> {
    const ids = nodes ?? this.nodes.map((n) => n.id);
    const end = now() + timeoutMs;
    let last = '';
    for (;;) {
      const epochs: Record<string, Record<string, number>> = {};
      let missing = '';
      for (const id of ids) {
        const s = await this.status(id, true, 2000);
        if (!s) {
          missing = `${id}: no /status`;
          break;
        }
        epochs[id] = {};
        for (const o of ids) {
          if (o === id) continue;
          const p = s.peers.find((x) => x.node === o);
          if (p?.state !== 'up') {
            missing = `${id} has no session with ${o} (${p?.state ?? 'unknown'})`;
            break;
          }
          epochs[id][o] = p.epoch;
        }
        if (missing) break;
      }
      if (!missing) return epochs;
      last = missing;
      if (now() > end)
        throw Object.assign(new Error(`mesh not up after ${timeoutMs} ms: ${last}`), { code: 'E_TIMEOUT' });
      await sleep(100);
    }
  }

  // ---- commands -----------------------------------------------------------------------------------

  async handle(cmd: string, raw: unknown): Promise<unknown> {
    const args = raw as Record<string, unknown>;
    switch (cmd) {
      case 'ping':
        return { pid: process.pid, t: now() };
      case 'init':
        this.init(raw as ControllerCommands['init'][0]);
        return { ok: true };
      case 'call': {
        const a = raw as ControllerCommands['call'][0];
        return this.admin(a.node).op(a.op, a.body ?? {}, a.timeoutMs ?? 10_000);
      }
      case 'get': {
        const a = raw as ControllerCommands['get'][0];
        const r = await this.admin(a.node).get(a.path, a.timeoutMs ?? 5000);
        if (r.ok && a.path === '/status') this.noteStatus(a.node, r.value as InstanceStatus, r.t1);
        return r;
      }
      case 'resubscribe':
        this.subscribe(String(args.node));
        return { ok: true };
      case 'nodeGone':
        this.nodeGone(String(args.node));
        return { ok: true };
      case 'observations':
        return this.query(raw as ObservationQuery);
      case 'waitFor':
        return this.waitFor(raw as ControllerCommands['waitFor'][0]);
      case 'waitMesh': {
        const a = raw as ControllerCommands['waitMesh'][0];
        return this.waitMesh(a.nodes, a.timeoutMs, a.stableMs);
      }
      case 'load.start': {
        if (this.load) throw Object.assign(new Error('a workload is running'), { code: 'E_STATE' });
        this.load = new LoadEngine(raw as ControllerCommands['load.start'][0], {
          call: (node, op, body, timeoutMs) => this.admin(node).op(op, body, timeoutMs),
          get: (node, path, timeoutMs) => this.admin(node).get(path, timeoutMs),
          status: (node) => this.status(node, true, 2000),
          osPid: (node) => this.osPid(node),
          fencesOf: (node) => this.fencesOf(node),
          log: (m, d) => this.log(m, d),
        });
        return this.load.start();
      }
      case 'load.progress':
        if (!this.load) throw Object.assign(new Error('no workload'), { code: 'E_STATE' });
        return this.load.progress(raw as ProgressQuery);
      case 'load.checkpoint': {
        if (!this.load) throw Object.assign(new Error('no workload'), { code: 'E_STATE' });
        for (const n of this.nodes) await this.status(n.id, true, 2000);
        const checked = this.load.checkFinishedRounds();
        return {
          rounds: checked.length,
          failed: checked.filter((c) => !c.ok),
          ops: checked.reduce((a, c) => a + c.ops, 0),
        };
      }
      case 'load.stop': {
        if (!this.load) throw Object.assign(new Error('no workload'), { code: 'E_STATE' });
        const l = this.load;
        this.load = undefined;
        return l.stop((raw as ControllerCommands['load.stop'][0]).windows ?? []);
      }
      case 'shutdown':
        this.close();
        setImmediate(() => process.exit(0));
        return { ok: true };
      default:
        throw Object.assign(new Error(`unknown command ${cmd}`), { code: 'E_COMMAND' });
    }
  }

  close(): void {
    this.closing = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    for (const s of this.streams.values()) s.abort();
  }
}

export function main(): void {
  const c = new Controller();
  const out = (o: unknown) =>
    process.stdout.write(
      `${JSON.stringify(o, (_k, v) => (v === Number.POSITIVE_INFINITY ? 'Infinity' : v))}\n`,
    );
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let m: { id: number; cmd: string; args?: Record<string, unknown> };
    try {
      m = JSON.parse(line);
    } catch {
      c.log(`bad input line: ${line.slice(0, 200)}`);
      return;
    }
    c.handle(m.cmd, m.args ?? {}).then(
      (value) => out({ id: m.id, ok: true, value }),
      (e) =>
        out({
          id: m.id,
          ok: false,
          error: {
            code: (e as { code?: string }).code ?? 'E_CONTROLLER',
            message: String((e as Error).message ?? e),
          },
        }),
    );
  });
  rl.on('close', () => {
    c.close();
    setTimeout(() => process.exit(0), 100).unref();
  });
  process.on('uncaughtException', (e) => {
    c.log(`uncaught: ${(e as Error).stack ?? e}`);
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
