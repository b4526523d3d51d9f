/**
 * A background workload that survives faults. It runs in the controller (inside a test namespace)
 * and drives the load program (load/program.ts, through the admin `run` operation, so every access
 * goes through a process's page table and takes real remote faults, upgrades, invalidations and
 * recalls) in short chunks on every instance, with forced reclaims at the home. Unlike `xpmesh
 * load`, it keeps going when an instance is cut off, paused, or crashes: a chunk that fails is
 * recorded as lost, an attachment that turns SIGBUS is replaced (a new *incarnation*), a process
 * that vanished is re-spawned, and a home that lost its segment (crash) gets a new one (a new
 * *generation*, with its own addresses).
 *
 * History rules under faults (BRIEF §5.4 for the survivors; the documented dirty-page policy for
 * the fenced instance). A write through an incarnation whose session the home fenced (the home's
 * fencedBelow for that instance moved past the session epoch the incarnation was attached in) may
 * have been lost with a dirty page:
 *   - if some OTHER instance read its value, it reached the home and stays an ordinary write;
 *   - otherwise it is indeterminate (it may never take effect: response = +∞), and reads of it by
 *     its own instance are dropped (they saw a local copy the policy allows to vanish).
 * Every other operation is checked as recorded. A chunk whose result never came back (crash,
 * deadline) is "lost": reads of values it wrote get a synthesized indeterminate write (invoked when
 * the chunk was sent). With these rules a history is linearizable exactly when the survivors saw a
 * single-copy register and no write of a fenced session became visible after the home moved on.
 */

import { PAGE_SIZE } from '@xpmesh/protocol/base';
import { checkHistory, type HistoryOp, type Violation } from '../load/history.js';
import { type LoadProgramArgs, type LoadProgramResult, MAX_SEQ } from '../load/program.js';
import { touchedPages } from '../load/workloads.js';
import type { CallResult, InstanceStatus, Observation } from './controller.js';

const WORDS_PER_PAGE = 1024;
const PROGRAM = 'load/program.js';
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LoadConfig {
  /** Instances taking part (ids); `home` exports the segment. */
  nodes: string[];
  home: string;
  procsPerNode: number;
  /** Pages touched, size of the segment, words per page per round. */
  pages: number;
  segmentPages: number;
  wordsPerPage: number;
  writeFraction: number;
  /** One `run` of the load program: at most chunkMs and chunkOps; pauseMs between chunks. */
  chunkMs: number;
  chunkOps: number;
  pauseMs: number;
  /** Forced reclaim of a touched page at the home every … ms (0: none). */
  reclaimEveryMs: number;
  /** A call to an instance under no fault must return within this (plus chunkMs for `run`). */
  callBoundMs: number;
  /** Give up waiting for a call after this; the chunk is then lost. */
  callTimeoutMs: number;
  /** Move to fresh words every … ms so that histories stay small (0: one round). */
  roundMs: number;
  seed: number;
  /** Clock uncertainty between processes, for the history check. */
  slackMs: number;
}

export const LOAD_DEFAULTS: Omit<LoadConfig, 'nodes' | 'home'> = {
  procsPerNode: 1,
  pages: 8,
  segmentPages: 16,
  wordsPerPage: 2,
  writeFraction: 0.3,
  chunkMs: 100,
  chunkOps: 200,
  pauseMs: 10,
  reclaimEveryMs: 100,
  callBoundMs: 15_000,
  callTimeoutMs: 60_000,
  roundMs: 0,
  seed: 1,
  slackMs: 1,
};

export interface EnginePorts {
  call(node: string, op: string, body: object, timeoutMs: number): Promise<CallResult>;
  get(node: string, path: string, timeoutMs: number): Promise<CallResult>;
  status(node: string): Promise<InstanceStatus | undefined>;
  /** OS pid of the instance's current process (undefined: gone, or not seen yet). */
  osPid(node: string): number | undefined;
  fencesOf(node: string): Observation[];
  log(msg: string, data?: unknown): void;
}

/** A fault on `node` between from and to: its own calls may wait meanwhile. */
export interface FaultWindow {
  node: string;
  from: number;
  to: number;
}

export interface ProgressQuery {
  nodes: string[];
  after: number;
  minOps: number;
  timeoutMs: number;
}

export interface SlowCall {
  node: string;
  op: string;
  t0: number;
  t1: number;
  ms: number;
  boundMs: number;
  code?: string;
}

export interface RoundCheck {
  generation: number;
  round: number;
  ok: boolean;
  ops: number;
  reads: number;
  writes: number;
  droppedReads: number;
  indeterminateWrites: number;
  syntheticWrites: number;
  lostChunks: number;
  violations: Array<{ rule: Violation['rule']; message: string }>;
  /** For the first violation: every operation on its address around it, and the forced reclaims of its page. */
  evidence?: { address: number; page: number; word: number; ops: string[]; reclaims: string[] };
}

export interface LoadSummary {
  generations: number;
  segids: string[];
  elapsedMs: number;
  ops: {
    total: number;
    reads: number;
    writes: number;
    byNode: Record<string, number>;
    errors: Record<string, number>;
    errorSamples: string[];
  };
  chunks: { ok: number; lost: number };
  incarnations: number;
  reclaims: Record<string, number>;
  history: {
    ok: boolean;
    rounds: number;
    checkedOps: number;
    droppedReads: number;
    indeterminateWrites: number;
    syntheticWrites: number;
    /** Rounds that failed, and how many of them had a forced reclaim of the violating page nearby. */
    failedCount: number;
    failedWithReclaimNearby: number;
    failedRounds: RoundCheck[];
  };
  deadlines: { calls: number; slow: SlowCall[]; excused: number };
  quiescence: { attachersExited: boolean; pagesCleared: boolean; pages: unknown; homeExited: boolean };
}

interface Generation {
  n: number;
  segid: string;
  pid: number;
  base: number;
  homeOsPid: number;
}

interface Incarnation {
  id: number;
  slot: number;
  node: string;
  gen: number;
  /** The instance's session epoch at the home when it attached (undefined: on the home instance). */
  epoch: number | undefined;
  homeOsPid: number;
  createdTs: number;
}

interface Slot {
  index: number;
  node: string;
  name: string;
  home: boolean;
  pid?: number;
  /** OS pid of the instance process `pid` lives in (a restarted instance reuses small pids). */
  osPid?: number;
  apid?: string;
  base?: number;
  inc?: Incarnation;
  needsSetup: boolean;
  seq: number;
  chunk: number;
}

interface TaggedOp extends HistoryOp {
  inc: number;
}

interface LostChunk {
  slot: number;
  inc: number;
  node: string;
  seqFrom: number;
  seqTo: number;
  t0: number;
}

interface RoundData {
  gen: number;
  round: number;
  ops: TaggedOp[];
  lost: LostChunk[];
  inflight: number;
}

export class LoadEngine {
  readonly cfg: LoadConfig;
  private stopping = false;
  private gen: Generation | undefined;
  private genCount = 0;
  private readonly segids: string[] = [];
  private rebuilding: Promise<void> | undefined;
  private round = 0;
  private readonly maxRounds: number;
  private readonly slots: Slot[] = [];
  private readonly incs = new Map<number, Incarnation>();
  private incSeq = 0;
  private readonly rounds = new Map<string, RoundData>();
  private readonly checks: RoundCheck[] = [];
  private readonly chunkLog: Array<{ node: string; t: number; n: number }> = [];
  private readonly slow: SlowCall[] = [];
  private calls = 0;
  private readonly errors: Record<string, number> = {};
  private readonly errorSamples: string[] = [];
  private readonly reclaims: Record<string, number> = {};
  /** Recent forced reclaims (evidence for violations): page, gen, t0, t1, outcome. */
  private readonly reclaimLog: Array<{ gen: number; page: number; t0: number; t1: number; outcome: string }> =
    [];
  private readonly totals = { ops: 0, reads: 0, writes: 0, okChunks: 0, lostChunks: 0 };
  private readonly byNode: Record<string, number> = {};
  private loops: Promise<void>[] = [];
  private roundTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private keys: Array<{ i: number; page: number; w: number }> = [];

  constructor(
    cfg: Partial<LoadConfig> & { nodes: string[]; home: string },
    private readonly ports: EnginePorts,
  ) {
    this.cfg = { ...LOAD_DEFAULTS, ...cfg };
    if (!this.cfg.nodes.includes(this.cfg.home)) throw new Error('the home must be one of the nodes');
    this.maxRounds = Math.floor(WORDS_PER_PAGE / this.cfg.wordsPerPage);
    const pages = touchedPages(this.cfg.pages, this.cfg.segmentPages);
    for (const page of pages)
      for (let w = 0; w < this.cfg.wordsPerPage; w++) this.keys.push({ i: this.keys.length, page, w });
    if (this.keys.length >= 1000) throw new Error('at most 999 words per round');
    for (const node of this.cfg.nodes) {
      for (let j = 0; j < this.cfg.procsPerNode; j++) {
        this.slots.push({
          index: this.slots.length,
          node,
          name: `${node}/p${j}`,
          home: node === this.cfg.home && j === 0,
          needsSetup: true,
          seq: 0,
          chunk: 0,
        });
      }
    }
  }

  // ---- calls with deadline accounting -----------------------------------------------------------

  private async call<T = Record<string, unknown>>(
    node: string,
    op: string,
    body: object,
    extraBoundMs = 0,
  ): Promise<CallResult<T>> {
    const r = (await this.ports.call(node, op, body, this.cfg.callTimeoutMs)) as CallResult<T>;
    this.calls++;
    const boundMs = this.cfg.callBoundMs + extraBoundMs;
    if (r.ms > boundMs || r.code === 'E_DEADLINE')
      this.slow.push({ node, op, t0: r.t0, t1: r.t1, ms: Math.round(r.ms), boundMs, code: r.code });
    return r;
  }

  private error(code: string, sample?: string): void {
    this.errors[code] = (this.errors[code] ?? 0) + 1;
    if (sample && this.errorSamples.length < 20) this.errorSamples.push(sample);
  }

  // ---- generations: the home process and its segment ----------------------------------------------

  private async buildGeneration(): Promise<Generation | undefined> {
    const home = this.cfg.home;
    const size = this.cfg.segmentPages * PAGE_SIZE;
    const os0 = (await this.ports.status(home))?.pid;
    if (os0 === undefined || this.ports.osPid(home) !== os0) return undefined;
    const sp = await this.call<{ pid: number }>(home, 'spawn', { name: 'fault-home' });
    if (!sp.ok || !sp.value) return undefined;
    const pid = sp.value.pid;
    const fail = async (what: string, r: CallResult) => {
      this.ports.log(`generation: ${what} failed`, { code: r.code, message: r.message });
      await this.call(home, 'exit', { pid });
      return undefined;
    };
    const mm = await this.call<{ addr: number }>(home, 'mmap', { pid, len: size });
    if (!mm.ok || !mm.value) return fail('mmap', mm);
    const mk = await this.call<{ segid: string }>(home, 'make', {
      pid,
      addr: mm.value.addr,
      size,
      mode: 0o666,
    });
    if (!mk.ok || !mk.value) return fail('make', mk);
    const st = await this.ports.status(home);
    if (!st || st.pid !== os0) return fail('status', mk);
    const g: Generation = {
      n: ++this.genCount,
      segid: mk.value.segid,
      pid,
      base: mm.value.addr,
      homeOsPid: st.pid,
    };
    this.segids.push(g.segid);
    this.ports.log('generation up', g);
    return g;
  }

  private rebuild(): Promise<void> {
    if (this.rebuilding) return this.rebuilding;
    this.gen = undefined;
    this.rebuilding = (async () => {
      while (!this.stopping) {
        const g = await this.buildGeneration().catch((e) => {
          this.ports.log(`generation: ${(e as Error).message}`);
          return undefined;
        });
        if (g) {
          this.gen = g;
          return;
        }
        await sleep(300);
      }
    })().finally(() => {
      this.rebuilding = undefined;
    });
    return this.rebuilding;
  }

  // ---- attachments: incarnations ------------------------------------------------------------------

  private newInc(s: Slot, g: Generation, epoch: number | undefined): Incarnation {
    const inc: Incarnation = {
      id: ++this.incSeq,
      slot: s.index,
      node: s.node,
      gen: g.n,
      epoch,
      homeOsPid: g.homeOsPid,
      createdTs: now(),
    };
    this.incs.set(inc.id, inc);
    return inc;
  }

  /** The instance's session epoch at the home right now (undefined: no session up). */
  private async epochAtHome(node: string, g: Generation): Promise<number | undefined> {
    const st = await this.ports.status(this.cfg.home);
    if (!st || st.pid !== g.homeOsPid) return undefined;
    const p = st.peers.find((x) => x.node === node);
    return p && p.state === 'up' ? p.epoch : undefined;
  }

  private async setupAttacher(s: Slot, g: Generation): Promise<boolean> {
    s.inc = undefined;
    if (s.pid !== undefined && s.base !== undefined) {
      await this.call(s.node, 'detach', { pid: s.pid, addr: s.base });
      s.base = undefined;
    }
    if (s.pid !== undefined && s.apid !== undefined) {
      await this.call(s.node, 'release', { pid: s.pid, apid: s.apid });
      s.apid = undefined;
    }
    if (s.pid === undefined) {
      const os0 = (await this.ports.status(s.node))?.pid;
      if (os0 === undefined || this.ports.osPid(s.node) !== os0) return false;
      const sp = await this.call<{ pid: number }>(s.node, 'spawn', {
        name: `fault-${s.name.replace('/', '-')}`,
      });
      if (!sp.ok || !sp.value) return false;
      if ((await this.ports.status(s.node))?.pid !== os0) return false; // restarted meanwhile
      s.pid = sp.value.pid;
      s.osPid = os0;
    }
    const remote = s.node !== this.cfg.home;
    const e1 = remote ? await this.epochAtHome(s.node, g) : undefined;
    if (remote && e1 === undefined) return false;
    const gr = await this.call<{ apid: string }>(s.node, 'get', { pid: s.pid, segid: g.segid, access: 'rw' });
    if (!gr.ok || !gr.value) {
      if (gr.code === 'ESRCH') s.pid = undefined;
      return false;
    }
    s.apid = gr.value.apid;
    const at = await this.call<{ addr: number }>(s.node, 'attach', {
      pid: s.pid,
      apid: s.apid,
      offset: 0,
      size: this.cfg.segmentPages * PAGE_SIZE,
    });
    if (!at.ok || !at.value) {
      if (at.code === 'ESRCH') s.pid = undefined;
      return false;
    }
    s.base = at.value.addr;
    if (remote) {
      // attached within one session? (else the next setup detaches and tries again)
      const e2 = await this.epochAtHome(s.node, g);
      if (e2 !== e1) return false;
    } else if ((await this.ports.status(this.cfg.home))?.pid !== g.homeOsPid) {
      return false; // the home restarted meanwhile: this may be a new segment with the same segid
    }
    if (this.gen !== g) return false;
    s.inc = this.newInc(s, g, e1);
    s.needsSetup = false;
    return true;
  }

  // ---- chunks -------------------------------------------------------------------------------------

  private roundData(g: number, round: number): RoundData {
    const key = `${g}:${round}`;
    let rd = this.rounds.get(key);
    if (!rd) {
      rd = { gen: g, round, ops: [], lost: [], inflight: 0 };
      this.rounds.set(key, rd);
    }
    return rd;
  }

  private keysOf(g: Generation, round: number) {
    const r = round % this.maxRounds;
    return this.keys.map((k) => ({
      address: g.n * 1_000_000 + round * 1000 + k.i,
      page: k.page,
      word: r * this.cfg.wordsPerPage + k.w,
    }));
  }

  private seedOf(slot: number, chunk: number): number {
    return (
      (Math.imul(this.cfg.seed ^ 0x9e3779b9, 2654435761) ^
        Math.imul(slot + 1, 0x85ebca6b) ^
        Math.imul(chunk + 1, 0xc2b2ae35)) >>>
      0
    );
  }

  private async runChunk(
    s: Slot,
    g: Generation,
    o: { readOnly?: boolean; maxOps?: number; durationMs?: number } = {},
  ): Promise<void> {
    const inc = s.inc!;
    const base = s.base!;
    const round = this.round;
    const rd = this.roundData(g.n, round);
    const keys = this.keysOf(g, round);
    const all = keys.map((_, i) => i);
    const maxOps = o.maxOps ?? this.cfg.chunkOps;
    const canWrite = !o.readOnly && s.seq + maxOps < MAX_SEQ;
    const args: LoadProgramArgs = {
      proc: s.index,
      seed: this.seedOf(s.index, s.chunk++),
      vaddrs: keys.map((k) => base + k.page * PAGE_SIZE + k.word * 4),
      keys: keys.map((k) => k.address),
      readable: all,
      writable: canWrite ? all : [],
      writeFraction: canWrite ? this.cfg.writeFraction : 0,
      maxOps,
      durationMs: o.durationMs ?? this.cfg.chunkMs,
      seqBase: s.seq,
    };
    rd.inflight++;
    const t0 = now();
    let r: CallResult<{ result: LoadProgramResult }>;
    try {
      r = await this.call<{ result: LoadProgramResult }>(
        s.node,
        'run',
        { pid: s.pid, module: PROGRAM, export: 'loadProgram', args },
        args.durationMs,
      );
    } finally {
      rd.inflight--;
    }
    if (!r.ok || !r.value) {
      this.totals.lostChunks++;
      this.error(`run:${r.code}`, `${s.name} run: ${r.code} ${r.message ?? ''}`.slice(0, 200));
      rd.lost.push({ slot: s.index, inc: inc.id, node: s.node, seqFrom: s.seq, seqTo: s.seq + maxOps, t0 });
      s.seq += maxOps;
      if (r.code === 'ESRCH') s.pid = undefined;
      s.needsSetup = true;
      if (s.home && r.code === 'ESRCH') void this.rebuild();
      if (r.code === 'E_CONNECT' || r.code === 'E_DEADLINE' || r.code === 'E_SHUTTING_DOWN') await sleep(200);
      return;
    }
    const res = r.value.result;
    this.totals.okChunks++;
    s.seq = Math.max(s.seq, res.seq);
    const who = `${s.name}#${inc.id}`;
    let n = 0;
    for (let i = 0; i < res.kinds.length; i++) {
      const kind = res.kinds[i] as 'r' | 'w';
      rd.ops.push({
        process: who,
        address: res.keys[i],
        kind,
        value: res.values[i],
        invokeTs: res.invoke[i],
        responseTs: res.response[i],
        inc: inc.id,
      });
      if (kind === 'r') this.totals.reads++;
      else this.totals.writes++;
      n++;
    }
    this.totals.ops += n;
    this.byNode[s.node] = (this.byNode[s.node] ?? 0) + n;
    if (n > 0) this.chunkLog.push({ node: s.node, t: res.invoke[0], n });
    const errs = Object.entries(res.errors);
    for (const [code, c] of errs) {
      this.errors[code] = (this.errors[code] ?? 0) + c;
      for (const e of res.errorSamples)
        if (this.errorSamples.length < 20) this.errorSamples.push(`${s.name}: ${e}`);
    }
    // a refused access: the attachment may be gone (fenced, segment gone); start a new incarnation
    if (errs.length > 0 && !s.home) s.needsSetup = true;
  }

  private async driveSlot(s: Slot): Promise<void> {
    let backoff = 50;
    while (!this.stopping) {
      const g = this.gen;
      if (!g) {
        await sleep(50);
        continue;
      }
      const os = this.ports.osPid(s.node);
      if (os === undefined) {
        await sleep(100); // the instance is down, or not seen since it came back
        continue;
      }
      if (this.ports.osPid(this.cfg.home) !== g.homeOsPid) {
        // the home restarted (or is down): its segment died with it; a new one has the same segid
        if (this.ports.osPid(this.cfg.home) !== undefined) void this.rebuild();
        await sleep(50);
        continue;
      }
      if (!s.home && s.pid !== undefined && s.osPid !== os) {
        s.pid = undefined; // the process died with the instance
        s.base = undefined;
        s.apid = undefined;
        s.needsSetup = true;
      }
      if (s.home) {
        if (!s.inc || s.inc.gen !== g.n) {
          s.pid = g.pid;
          s.osPid = g.homeOsPid;
          s.base = g.base;
          s.inc = this.newInc(s, g, undefined);
          s.needsSetup = false;
        }
      } else if (s.needsSetup || !s.inc || s.inc.gen !== g.n) {
        if (!(await this.setupAttacher(s, g))) {
          await sleep(backoff);
          backoff = Math.min(1000, backoff * 2);
          continue;
        }
        backoff = 50;
      }
      await this.runChunk(s, g);
      if (this.cfg.pauseMs > 0) await sleep(this.cfg.pauseMs);
    }
  }

  private async reclaimLoop(): Promise<void> {
    let x = this.cfg.seed >>> 0 || 1;
    const rnd = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 4294967296;
    };
    const pages = touchedPages(this.cfg.pages, this.cfg.segmentPages);
    while (!this.stopping) {
      await sleep(this.cfg.reclaimEveryMs);
      const g = this.gen;
      if (!g || this.stopping || this.ports.osPid(this.cfg.home) !== g.homeOsPid) continue;
      const page = pages[Math.floor(rnd() * pages.length)];
      const r = await this.call<{ outcome: string }>(this.cfg.home, 'reclaim', {
        pid: g.pid,
        addr: g.base + page * PAGE_SIZE,
      });
      const outcome = r.ok ? String(r.value?.outcome) : `error:${r.code}`;
      this.reclaims[outcome] = (this.reclaims[outcome] ?? 0) + 1;
      this.reclaimLog.push({ gen: g.n, page, t0: r.t0, t1: r.t1, outcome });
      if (this.reclaimLog.length > 20_000) this.reclaimLog.splice(0, 5000);
    }
  }

  // ---- the history check --------------------------------------------------------------------------

  /** Was this incarnation's session fenced by its home (so a dirty page of it may be lost)? */
  private tainted(inc: Incarnation): boolean {
    if (inc.epoch === undefined) return false;
    const epoch = inc.epoch;
    return this.ports
      .fencesOf(inc.node)
      .some(
        (o) =>
          o.observer === this.cfg.home &&
          (o.observerPid === inc.homeOsPid || o.observerPid === 0) &&
          o.epoch !== undefined &&
          o.epoch >= epoch,
      );
  }

  private checkRound(rd: RoundData): RoundCheck {
    const info = new Map<number, IncInfo | undefined>();
    const incOf = (id: number) => {
      if (!info.has(id)) {
        const inc = this.incs.get(id);
        info.set(id, inc ? { node: inc.node, tainted: this.tainted(inc) } : undefined);
      }
      return info.get(id);
    };
    const lost = rd.lost.map((l) => ({ ...l, name: this.slots[l.slot]?.name ?? String(l.slot) }));
    const c = checkFaultHistory(rd.ops, lost, incOf, this.cfg.slackMs);
    return {
      generation: rd.gen,
      round: rd.round,
      ok: c.result.ok,
      ops: c.result.ops,
      reads: c.result.reads,
      writes: c.result.writes,
      droppedReads: c.droppedReads,
      indeterminateWrites: c.indeterminateWrites,
      syntheticWrites: c.syntheticWrites,
      lostChunks: rd.lost.length,
      violations: c.result.violations
        .slice(0, 5)
        .map((v) => ({ rule: v.rule, message: v.message.slice(0, 1200) })),
      evidence: c.result.ok ? undefined : this.explain(rd, c.result.violations[0]),
    };
  }

  private explain(rd: RoundData, v: Violation | undefined): RoundCheck['evidence'] {
    if (!v) return undefined;
    const ts = v.ops.flatMap((o) => [o.invokeTs, o.responseTs]).filter((x) => Number.isFinite(x));
    const lo = Math.min(...ts) - 30;
    const hi = Math.max(...ts) + 30;
    const k = this.keys[v.address % 1000];
    const iso = (t: number) => new Date(t).toISOString().slice(11, 23) + (t % 1).toFixed(3).slice(1);
    const ops = rd.ops
      .filter((o) => o.address === v.address && o.responseTs >= lo && o.invokeTs <= hi)
      .sort((a, b) => a.invokeTs - b.invokeTs)
      .slice(0, 80)
      .map((o) => `${iso(o.invokeTs)} .. ${iso(o.responseTs)} ${o.process} ${o.kind} ${o.value}`);
    const reclaims = this.reclaimLog
      .filter((r) => r.gen === rd.gen && r.page === k?.page && r.t1 >= lo - 100 && r.t0 <= hi)
      .map((r) => `${iso(r.t0)} .. ${iso(r.t1)} reclaim page ${r.page}: ${r.outcome}`);
    return {
      address: v.address,
      page: k?.page ?? -1,
      word: k ? (rd.round % this.maxRounds) * this.cfg.wordsPerPage + k.w : -1,
      ops,
      reclaims,
    };
  }

  /** Check (and free) every round that is over and has no chunk in flight. */
  checkFinishedRounds(all = false): RoundCheck[] {
    const out: RoundCheck[] = [];
    for (const [key, rd] of [...this.rounds]) {
      const current = this.gen !== undefined && rd.gen === this.gen.n && rd.round === this.round;
      if (rd.inflight > 0 || (current && !all)) continue;
      this.rounds.delete(key);
      const c = this.checkRound(rd);
      if (!c.ok) this.ports.log('history violation', c.violations);
      this.checks.push(c);
      out.push(c);
    }
    return out;
  }

  // ---- start / progress / stop --------------------------------------------------------------------

  async start(): Promise<{ segid: string }> {
    this.startedAt = now();
    const g = await this.buildGeneration();
    if (!g)
      throw Object.assign(new Error('cannot create the shared segment at the home'), { code: 'E_SETUP' });
    this.gen = g;
    this.loops = this.slots.map((s) => this.driveSlot(s));
    if (this.cfg.reclaimEveryMs > 0) this.loops.push(this.reclaimLoop());
    if (this.cfg.roundMs > 0) {
      this.roundTimer = setInterval(() => {
        if (this.round + 1 < this.maxRounds) this.round++;
      }, this.cfg.roundMs);
    }
    return { segid: g.segid };
  }

  /** Wait until each of `nodes` completed ≥ minOps operations invoked after `after`. */
  async progress(q: ProgressQuery): Promise<{ ok: boolean; opsByNode: Record<string, number> }> {
    const end = now() + q.timeoutMs;
    for (;;) {
      const opsByNode: Record<string, number> = {};
      for (const n of q.nodes) opsByNode[n] = 0;
      for (const c of this.chunkLog) if (c.t >= q.after && c.node in opsByNode) opsByNode[c.node] += c.n;
      const ok = q.nodes.every((n) => opsByNode[n] >= q.minOps);
      if (ok || now() > end) return { ok, opsByNode };
      await sleep(50);
    }
  }

  async stop(windows: FaultWindow[]): Promise<LoadSummary> {
    this.stopping = true;
    if (this.roundTimer) clearInterval(this.roundTimer);
    await Promise.allSettled(this.loops);
    // The survivors' data: the home process reads every word of the current round last.
    const g = this.gen;
    const homeSlot = this.slots.find((s) => s.home);
    if (
      g &&
      homeSlot?.inc &&
      homeSlot.inc.gen === g.n &&
      homeSlot.pid === g.pid &&
      this.ports.osPid(this.cfg.home) === g.homeOsPid
    ) {
      await this.runChunk(homeSlot, g, { readOnly: true, maxOps: this.keys.length * 4, durationMs: 2000 });
    }
    // every fence so far must be observed before the last rounds are judged
    await Promise.all(this.cfg.nodes.map((n) => this.ports.status(n)));
    this.checkFinishedRounds(true);
    // Quiescence: every attacher exits, the home's directory empties, then the home exits.
    let attachersExited = true;
    for (const s of this.slots) {
      if (s.home || s.pid === undefined || s.osPid !== this.ports.osPid(s.node)) continue;
      const r = await this.call(s.node, 'exit', { pid: s.pid });
      if (!r.ok && r.code !== 'ESRCH') attachersExited = false;
      s.pid = undefined;
    }
    let pages: unknown;
    let pagesCleared = false;
    let homeExited = false;
    if (g) {
      const end = now() + 10_000;
      while (now() < end) {
        const r = await this.ports.get(this.cfg.home, `/pages?segid=${encodeURIComponent(g.segid)}`, 5000);
        const p = r.value;
        pages = r.ok ? p : `${r.code}: ${r.message}`;
        if (
          Array.isArray(p) &&
          p.every(
            (x: { sharers?: string[]; writer?: string | null }) =>
              (x.sharers?.length ?? 0) === 0 && !x.writer,
          )
        ) {
          pagesCleared = true;
          break;
        }
        await sleep(100);
      }
      if (this.ports.osPid(this.cfg.home) === g.homeOsPid) {
        const r = await this.call(this.cfg.home, 'exit', { pid: g.pid });
        homeExited = r.ok;
      }
    }
    const excused = (c: SlowCall) => windows.some((w) => w.node === c.node && c.t0 <= w.to && c.t1 >= w.from);
    const slow = this.slow.filter((c) => !excused(c));
    let checkedOps = 0;
    let droppedReads = 0;
    let indeterminateWrites = 0;
    let syntheticWrites = 0;
    for (const c of this.checks) {
      checkedOps += c.ops;
      droppedReads += c.droppedReads;
      indeterminateWrites += c.indeterminateWrites;
      syntheticWrites += c.syntheticWrites;
    }
    return {
      generations: this.genCount,
      segids: this.segids,
      elapsedMs: Math.round(now() - this.startedAt),
      ops: {
        total: this.totals.ops,
        reads: this.totals.reads,
        writes: this.totals.writes,
        byNode: this.byNode,
        errors: this.errors,
        errorSamples: this.errorSamples,
      },
      chunks: { ok: this.totals.okChunks, lost: this.totals.lostChunks },
      incarnations: this.incs.size,
      reclaims: this.reclaims,
      history: {
        ok: this.checks.every((c) => c.ok),
        rounds: this.checks.length,
        checkedOps,
        droppedReads,
        indeterminateWrites,
        syntheticWrites,
        failedCount: this.checks.filter((c) => !c.ok).length,
        failedWithReclaimNearby: this.checks.filter((c) => !c.ok && (c.evidence?.reclaims.length ?? 0) > 0)
          .length,
        failedRounds: this.checks.filter((c) => !c.ok).slice(0, 5),
      },
      deadlines: { calls: this.calls, slow: slow.slice(0, 50), excused: this.slow.length - slow.length },
      quiescence: { attachersExited, pagesCleared, pages, homeExited },
    };
  }
}

// ---- the history rules, as a pure function -----------------------------------------------------------

export interface RecordedOp extends HistoryOp {
  /** The incarnation (attachment) it went through. */
  inc: number;
}

export interface IncInfo {
  node: string;
  /** The home fenced the session this incarnation was attached in (a dirty page may be lost). */
  tainted: boolean;
}

export interface LostChunkInfo {
  /** Slot index: the high bits of the values it wrote (value = slot << 20 | seq). */
  slot: number;
  inc: number;
  node: string;
  name: string;
  /** It may have written seqFrom+1 .. seqTo. */
  seqFrom: number;
  seqTo: number;
  /** When it was sent. */
  t0: number;
}

/**
 * Check a recorded history under the fault rules of this file's header: a tainted incarnation's
 * write that no other instance read is indeterminate (response +∞) and its own instance's reads of
 * it are dropped; a value read but written by a lost chunk gets an indeterminate write invoked when
 * the chunk was sent; everything else is checked as recorded (history.ts).
 */
export function checkFaultHistory(
  recorded: RecordedOp[],
  lost: LostChunkInfo[],
  incOf: (id: number) => IncInfo | undefined,
  slackMs: number,
  maxViolations = 10,
): {
  result: ReturnType<typeof checkHistory>;
  droppedReads: number;
  indeterminateWrites: number;
  syntheticWrites: number;
} {
  const nodeOf = (id: number) => incOf(id)?.node ?? '?';
  const tainted = (id: number) => incOf(id)?.tainted ?? true;
  interface W {
    op: HistoryOp;
    inc: number;
    node: string;
    synthetic: boolean;
  }
  const writes = new Map<number, W>();
  for (const op of recorded)
    if (op.kind === 'w') writes.set(op.value, { op, inc: op.inc, node: nodeOf(op.inc), synthetic: false });
  let syntheticWrites = 0;
  for (const op of recorded) {
    if (op.kind !== 'r' || op.value === 0 || writes.has(op.value)) continue;
    const slot = op.value >>> 20;
    const seq = op.value & MAX_SEQ;
    const lc = lost.find((l) => l.slot === slot && seq > l.seqFrom && seq <= l.seqTo);
    if (!lc) continue; // an unknown value: the checker reports it
    const w: HistoryOp = {
      process: `${lc.name}#${lc.inc} (lost chunk)`,
      address: op.address,
      kind: 'w',
      value: op.value,
      invokeTs: lc.t0,
      responseTs: Number.POSITIVE_INFINITY,
    };
    writes.set(op.value, { op: w, inc: lc.inc, node: lc.node, synthetic: true });
    syntheticWrites++;
  }
  const readByOthers = new Set<number>();
  for (const op of recorded) {
    if (op.kind !== 'r') continue;
    const w = writes.get(op.value);
    if (w && w.node !== nodeOf(op.inc)) readByOthers.add(op.value);
  }
  const ops: HistoryOp[] = [];
  const plain = (o: HistoryOp): HistoryOp => ({
    process: o.process,
    address: o.address,
    kind: o.kind,
    value: o.value,
    invokeTs: o.invokeTs,
    responseTs: o.responseTs,
  });
  let droppedReads = 0;
  let indeterminateWrites = 0;
  for (const w of writes.values()) {
    if (!w.synthetic && tainted(w.inc) && !readByOthers.has(w.op.value)) {
      indeterminateWrites++;
      ops.push({ ...plain(w.op), responseTs: Number.POSITIVE_INFINITY });
    } else ops.push(plain(w.op));
  }
  for (const op of recorded) {
    if (op.kind !== 'r') continue;
    const w = writes.get(op.value);
    if (w && w.node === nodeOf(op.inc) && tainted(w.inc) && !readByOthers.has(op.value)) {
      droppedReads++;
      continue;
    }
    ops.push(plain(op));
  }
  return {
    result: checkHistory(ops, maxViolations, slackMs),
    droppedReads,
    indeterminateWrites,
    syntheticWrites,
  };
}
