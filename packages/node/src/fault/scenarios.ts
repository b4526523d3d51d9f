/**
 * The fault scenarios (BRIEF §5 under real faults). Each builds its own lab (netns.ts), drives the
 * instances through the controller, injects one fault from the root namespace, and records checks
 * instead of stopping at the first failure, so that a report lists every assertion that failed with
 * its evidence. A scenario proves:
 *
 *   - no operation waits past its deadline (admin calls return within a bound derived from the
 *     request / ack deadlines and the lease wait, with ≥ 3× slack: no speed targets);
 *   - the dead or cut-off instance is fenced by its peers within the heartbeat timeout (+ slack);
 *   - no reverse-map entry at the home points at the fenced instance (GET /pages);
 *   - the survivors' data is intact; the dirty-page policy holds (a page whose only dirty copy died
 *     reverts to the last written-back version, and the loss is counted);
 *   - the healed instance comes back as a new session with a higher epoch, and nothing it wrote
 *     through its old mapping becomes visible at the home;
 *   - at quiescence: the kernel's invariants hold (admin `check`), pins == unpins, the reverse map
 *     and the attachers' page caches are empty.
 *
 * Timing a fault to land inside a protocol exchange is done with one-way cuts, not races: cut the
 * direction the reply (or ack) travels, then start the exchange: the request arrives, the answer
 * is lost.
 */

import { PAGE_SIZE } from '@xpmesh/protocol/base';
import type { CallResult, InstanceStatus, Observation } from './controller.js';
import {
  type boundsOf,
  DEFAULT_TIMINGS,
  Lab,
  type LabOptions,
  type NodeTimings,
  now,
  sleep,
} from './netns.js';
import type { FaultWindow, LoadConfig, LoadSummary } from './workload.js';

export interface Check {
  name: string;
  ok: boolean;
  evidence?: unknown;
}

export interface ScenarioResult {
  name: string;
  title: string;
  ok: boolean;
  ms: number;
  checks: Check[];
  notes: Array<{ t: number; msg: string; data?: unknown }>;
  error?: string;
  /** Lab directory with the instances' logs (kept when the scenario failed). */
  logDir?: string;
  /** Warnings and errors from the instances' logs (when the scenario failed). */
  logTails?: Record<string, string[]>;
  faults?: Lab['faults'];
  setupMs?: Record<string, number>;
}

export type Bounds = ReturnType<typeof boundsOf>;

export class ScenarioContext {
  readonly checks: Check[] = [];
  readonly notes: ScenarioResult['notes'] = [];
  /** Processes to end at quiescence, per node. */
  readonly procs: Array<{ node: string; pid: number }> = [];
  constructor(
    readonly lab: Lab,
    readonly verbose: boolean,
    /** Overrides for the background workload of the load scenarios. */
    readonly load: Partial<LoadConfig> = {},
  ) {}

  get ctl() {
    return this.lab.ctl;
  }
  get b(): Bounds {
    return this.lab.bounds;
  }
  get t(): NodeTimings {
    return this.lab.timings;
  }

  check(name: string, ok: boolean, evidence?: unknown): boolean {
    this.checks.push({ name, ok, evidence });
    if (this.verbose)
      process.stderr.write(
        `    ${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : ` ${JSON.stringify(evidence)?.slice(0, 2000)}`}\n`,
      );
    return ok;
  }

  note(msg: string, data?: unknown): void {
    this.notes.push({ t: now(), msg, data });
    if (this.verbose)
      process.stderr.write(
        `    .... ${msg}${data === undefined ? '' : ` ${JSON.stringify(data).slice(0, 300)}`}\n`,
      );
  }

  /** Generous timeout for one admin call: twice the bound, so an overrun is measured, not cut. */
  get opTimeout(): number {
    return this.b.opMs * 2;
  }

  /** An admin call that must return within the deadline bound (checked), whatever it returns. */
  async bounded<T = Record<string, unknown>>(
    label: string,
    node: string,
    op: string,
    body: object,
  ): Promise<CallResult<T>> {
    const r = await this.ctl.call<T>(node, op, body, this.opTimeout);
    this.check(`${label} returns within ${this.b.opMs} ms`, r.ms <= this.b.opMs && r.code !== 'E_DEADLINE', {
      ms: Math.round(r.ms),
      ok: r.ok,
      code: r.code,
      message: r.message,
    });
    return r;
  }

  async status(node: string): Promise<InstanceStatus> {
    return this.ctl.mustGet<InstanceStatus>(node, '/status');
  }
}

// ---- building blocks --------------------------------------------------------------------------------

function rand(): string {
  return Math.random().toString(36).slice(2, 8);
}

export interface Seg {
  node: string;
  pid: number;
  base: number;
  segid: string;
  pages: number;
  /** The text at offset 0 of each page, as written before the segment was exported. */
  pattern: string[];
}

export interface Att {
  node: string;
  pid: number;
  base: number;
  apid: string;
}

/** A home process on `node` with `pages` pages, each starting with its own pattern, exported 0666. */
export async function makeSegment(ctx: ScenarioContext, node: string, pages: number): Promise<Seg> {
  const pid = (await ctx.ctl.must<{ pid: number }>(node, 'spawn', { name: 'home' })).pid;
  ctx.procs.push({ node, pid });
  const base = (await ctx.ctl.must<{ addr: number }>(node, 'mmap', { pid, len: pages * PAGE_SIZE })).addr;
  const pattern: string[] = [];
  for (let p = 0; p < pages; p++) {
    pattern.push(`P${p}-${rand()}`);
    await ctx.ctl.must(node, 'write', { pid, addr: base + p * PAGE_SIZE, text: pattern[p] });
  }
  const segid = (
    await ctx.ctl.must<{ segid: string }>(node, 'make', {
      pid,
      addr: base,
      size: pages * PAGE_SIZE,
      mode: 0o666,
    })
  ).segid;
  return { node, pid, base, segid, pages, pattern };
}

/** A process on `node` that attaches the whole segment (read-write). */
export async function attachSegment(
  ctx: ScenarioContext,
  node: string,
  seg: Seg,
  pid?: number,
): Promise<Att> {
  const p = pid ?? (await ctx.ctl.must<{ pid: number }>(node, 'spawn', { name: 'attacher' })).pid;
  if (pid === undefined) ctx.procs.push({ node, pid: p });
  const apid = (await ctx.ctl.must<{ apid: string }>(node, 'get', { pid: p, segid: seg.segid, access: 'rw' }))
    .apid;
  const base = (
    await ctx.ctl.must<{ addr: number }>(node, 'attach', {
      pid: p,
      apid,
      offset: 0,
      size: seg.pages * PAGE_SIZE,
    })
  ).addr;
  return { node, pid: p, base, apid };
}

type ReadValue = { text: string; hex: string };

export async function readText(
  ctx: ScenarioContext,
  node: string,
  pid: number,
  addr: number,
  len = 24,
): Promise<CallResult<ReadValue>> {
  return ctx.ctl.call<ReadValue>(node, 'read', { pid, addr, len }, ctx.opTimeout);
}

/** The epoch of `peer`'s session as `observer` sees it, and the fence level. */
export async function peerEpoch(ctx: ScenarioContext, observer: string, peer: string) {
  const s = await ctx.status(observer);
  const net = s.peers.find((p) => p.node === peer);
  const drv = s.driver.peers.find((p) => p.node === peer);
  return { epoch: net?.epoch ?? -1, state: net?.state ?? 'unknown', fencedBelow: drv?.fencedBelow ?? -1 };
}

/** Wait for `observer` to fence `victim` after `after`; check it happened within the fence bound. */
export async function expectFence(
  ctx: ScenarioContext,
  observer: string,
  victim: string,
  after: number,
): Promise<Observation | undefined> {
  const bound = ctx.b.fenceMs;
  try {
    const o = await ctx.ctl.request(
      'waitFor',
      { kind: 'fence', observer, node: victim, after, timeoutMs: bound * 3 },
      bound * 3 + 10_000,
    );
    const ms = Math.round(o.t - after);
    ctx.check(
      `${observer} fences ${victim} within ${bound} ms (heartbeat ${ctx.t.heartbeatMs} × ${ctx.t.missedBeats} + slack)`,
      ms <= bound,
      { ms, why: o.why, src: o.src },
    );
    return o;
  } catch (e) {
    ctx.check(`${observer} fences ${victim} within ${bound} ms`, false, { error: (e as Error).message });
    return undefined;
  }
}

type PageView = { page: number; state: string; sharers: string[]; writer: string | null; version: number };

/** GET /pages at the home until no entry names `victim` (bounded: the lease wait comes first). */
export async function expectRmapClear(
  ctx: ScenarioContext,
  home: string,
  segid: string,
  victim: string,
  after: number,
): Promise<PageView[] | undefined> {
  const bound = ctx.b.rmapClearMs;
  let last: PageView[] | undefined;
  for (;;) {
    const r = await ctx.ctl.get<PageView[]>(home, `/pages?segid=${encodeURIComponent(segid)}`);
    if (r.ok && r.value) {
      last = r.value;
      const bad = last.filter((p) => p.sharers.includes(victim) || p.writer === victim);
      if (bad.length === 0) {
        ctx.check(`no reverse-map entry at ${home} points at fenced ${victim} (within ${bound} ms)`, true, {
          ms: Math.round(now() - after),
        });
        return last;
      }
    }
    if (now() - after > bound) {
      ctx.check(`no reverse-map entry at ${home} points at fenced ${victim} (within ${bound} ms)`, false, {
        pages: last,
        lastError: r.ok ? undefined : r.code,
      });
      return last;
    }
    await sleep(50);
  }
}

/** After a heal: every survivor sees `victim` again, in a session with a larger epoch than before. */
export async function expectRejoin(
  ctx: ScenarioContext,
  victim: string,
  before: Record<string, number>,
  survivors: string[],
): Promise<void> {
  try {
    await ctx.ctl.request(
      'waitMesh',
      { timeoutMs: ctx.b.rejoinMs, stableMs: ctx.b.meshStableMs },
      ctx.b.rejoinMs + 10_000,
    );
    ctx.check(`${victim} rejoins the mesh within ${ctx.b.rejoinMs} ms`, true);
  } catch (e) {
    ctx.check(`${victim} rejoins the mesh within ${ctx.b.rejoinMs} ms`, false, {
      error: (e as Error).message,
    });
    return;
  }
  for (const s of survivors) {
    const e = await peerEpoch(ctx, s, victim);
    ctx.check(
      `${s} sees ${victim} in a new session with a higher epoch`,
      e.state === 'up' && e.epoch > before[s] && e.fencedBelow > before[s] && e.epoch >= e.fencedBelow,
      { before: before[s], ...e },
    );
  }
}

/** Quiescence: end our processes, then every instance: check ok, pins == unpins, nothing mapped or cached. */
export async function expectQuiescence(ctx: ScenarioContext, nodes: string[]): Promise<void> {
  for (const p of [...ctx.procs].reverse()) await ctx.ctl.call(p.node, 'exit', { pid: p.pid }, 10_000);
  ctx.procs.length = 0;
  for (const node of nodes) {
    const chk = await ctx.ctl.call<{ ok: boolean; violations: string[] }>(node, 'check', {}, 10_000);
    ctx.check(
      `${node}: kernel invariants hold at quiescence (admin check)`,
      chk.ok && chk.value?.ok === true,
      chk.ok ? chk.value?.violations.slice(0, 10) : chk,
    );
    // detach messages and deferred clean-ups settle quickly; poll a little before judging
    let s: InstanceStatus | undefined;
    let clean = false;
    const end = now() + 5000;
    while (now() < end) {
      s = await ctx.status(node).catch(() => undefined);
      const c = s?.driver.counters;
      clean = !!s && c?.pins === c?.unpins && s.driver.rmap.entries === 0 && s.driver.cachedPages === 0;
      if (clean) break;
      await sleep(100);
    }
    const c = s?.driver.counters;
    ctx.check(`${node}: pinned == unpinned at quiescence`, !!c && c.pins === c.unpins, {
      pins: c?.pins,
      unpins: c?.unpins,
    });
    ctx.check(
      `${node}: reverse map and page cache empty at quiescence`,
      !!s && s.driver.rmap.entries === 0 && s.driver.cachedPages === 0,
      {
        rmapEntries: s?.driver.rmap.entries,
        cachedPages: s?.driver.cachedPages,
      },
    );
  }
}

/** Not a stale value: the read failed (SIGBUS: the copy is gone), or it returned `current`. */
function notStale(r: CallResult<ReadValue>, stale: string, current?: string): boolean {
  if (!r.ok) return true;
  const text = r.value?.text ?? '';
  if (text.startsWith(stale)) return false;
  return current === undefined || text.startsWith(current);
}

function show(r: CallResult<ReadValue>) {
  return { ok: r.ok, text: r.value?.text, code: r.code, message: r.message, ms: Math.round(r.ms) };
}

async function lostDirty(ctx: ScenarioContext, node: string): Promise<number> {
  return (await ctx.status(node)).driver.counters.lostDirtyPages ?? 0;
}

async function messageSeen(
  ctx: ScenarioContext,
  observer: string,
  msg: string,
  direction: 'in' | 'out',
  peer: string,
  after: number,
  timeoutMs = 5000,
) {
  try {
    return await ctx.ctl.request(
      'waitFor',
      { kind: 'message', observer, msg, direction, node: peer, after, timeoutMs },
      timeoutMs + 10_000,
    );
  } catch {
    return undefined;
  }
}

// ---- scenarios ------------------------------------------------------------------------------------

export interface Scenario {
  name: string;
  title: string;
  /** What passing proves (docs/reliability.md lists these). */
  proves: string;
  lab?: Partial<LabOptions>;
  run(ctx: ScenarioContext): Promise<void>;
}

const TARGETED: Partial<LabOptions> = { sse: true, messages: true };

const remoteFault: Scenario = {
  name: 'remote-fault-reply-lost',
  title: 'a remote fault whose map-ok is lost (cut home → remote, then the remote reads)',
  proves:
    'the map request reaches the home and is granted, the reply is lost; the faulting read returns within its deadline with an error (no data it never received), the home fences the remote within the heartbeat timeout and drops the grant from its reverse map; after the heal the remote is a new session, its old attachment is revoked (SIGBUS) and a new one reads the right data',
  lab: TARGETED,
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const before = { n1: (await peerEpoch(ctx, 'n1', 'n2')).epoch };
    const tCut = await ctx.lab.cutOneWay([['n1', 'n2']]);
    const r = await ctx.bounded('the remote fault during the cut', 'n2', 'read', {
      pid: a2.pid,
      addr: a2.base + PAGE_SIZE,
      len: 24,
    });
    ctx.check(
      'the remote fault fails (its reply was lost) instead of returning data',
      !r.ok,
      show(r as CallResult<ReadValue>),
    );
    const map = await messageSeen(ctx, 'n1', 'map', 'in', 'n2', tCut);
    ctx.check(
      'the map request reached the home after the cut (the fault landed during a remote fault)',
      map !== undefined,
      map,
    );
    const reply = await messageSeen(ctx, 'n1', 'map-ok', 'out', 'n2', tCut, 2000);
    ctx.note('home answered the lost map', reply ?? 'no map-ok seen (refused or fenced first)');
    await expectFence(ctx, 'n1', 'n2', tCut);
    await expectRmapClear(ctx, 'n1', seg.segid, 'n2', tCut);
    await ctx.lab.heal();
    await expectRejoin(ctx, 'n2', before, ['n1']);
    const old = await readText(ctx, 'n2', a2.pid, a2.base + PAGE_SIZE);
    ctx.check(
      'the old attachment is revoked (SIGBUS), not served from a copy',
      !old.ok && old.code === 'SIGBUS',
      show(old),
    );
    const a2b = await attachSegment(ctx, 'n2', seg, a2.pid);
    const fresh = await readText(ctx, 'n2', a2b.pid, a2b.base + PAGE_SIZE);
    ctx.check(
      'a new attachment in the new session reads the right data',
      fresh.ok && fresh.value?.text === seg.pattern[1],
      show(fresh),
    );
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

const invalidation: Scenario = {
  name: 'invalidation-ack-lost',
  title:
    'an invalidation whose ack is lost (cut remote → home, then the home reclaims a page the remote maps)',
  proves:
    "the invalidate reaches the remote and its ack is lost; the reclaim completes within its deadline without the ack because the remote is fenced, the reverse map drops it, the page's data survives the swap-out, and the remote can never read its old copy after the home wrote a new value",
  lab: TARGETED,
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const r0 = await readText(ctx, 'n2', a2.pid, a2.base + 2 * PAGE_SIZE);
    ctx.check('the remote maps page 2 (read fault)', r0.ok && r0.value?.text === seg.pattern[2], show(r0));
    const before = { n1: (await peerEpoch(ctx, 'n1', 'n2')).epoch };
    const tCut = await ctx.lab.cutOneWay([['n2', 'n1']]);
    const rc = await ctx.bounded('the reclaim during the cut', 'n1', 'reclaim', {
      pid: seg.pid,
      addr: seg.base + 2 * PAGE_SIZE,
    });
    ctx.note('reclaim outcome', rc.value ?? rc.code);
    const inv = await messageSeen(ctx, 'n2', 'invalidate', 'in', 'n1', tCut);
    ctx.check(
      'the invalidate reached the remote after the cut (the fault landed during an invalidation)',
      inv !== undefined,
      inv,
    );
    const ack = await messageSeen(ctx, 'n2', 'invalidate-ack', 'out', 'n1', tCut, 2000);
    ctx.check('the remote sent its ack (which the cut drops)', ack !== undefined, ack);
    await expectFence(ctx, 'n1', 'n2', tCut);
    await expectRmapClear(ctx, 'n1', seg.segid, 'n2', tCut);
    const home = await readText(ctx, 'n1', seg.pid, seg.base + 2 * PAGE_SIZE);
    ctx.check(
      "the page's data survives (read back at the home)",
      home.ok && home.value?.text === seg.pattern[2],
      show(home),
    );
    const newer = `H2-${Math.random().toString(36).slice(2, 8)}`;
    await ctx.bounded('a home write after the fence', 'n1', 'write', {
      pid: seg.pid,
      addr: seg.base + 2 * PAGE_SIZE,
      text: newer,
    });
    const r2 = await readText(ctx, 'n2', a2.pid, a2.base + 2 * PAGE_SIZE);
    ctx.check(
      'the fenced remote never reads its old copy after the home wrote',
      notStale(r2, seg.pattern[2], newer),
      show(r2),
    );
    await ctx.lab.heal();
    await expectRejoin(ctx, 'n2', before, ['n1']);
    const a2b = await attachSegment(ctx, 'n2', seg, a2.pid);
    const fresh = await readText(ctx, 'n2', a2b.pid, a2b.base + 2 * PAGE_SIZE);
    ctx.check(
      'after rejoining, a new attachment reads the home write',
      fresh.ok && fresh.value?.text === newer,
      show(fresh),
    );
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

const upgrade: Scenario = {
  name: 'upgrade-reader-ack-lost',
  title:
    "an upgrade whose reader's ack is lost (two remote readers; cut reader → home; the other remote writes)",
  proves:
    'the upgrade invalidates the reader, whose ack is lost; the write completes within its deadline once the reader is fenced, the directory shows the writer alone, the home sees the new data (recall), and the fenced reader never returns the old value',
  lab: TARGETED,
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const a3 = await attachSegment(ctx, 'n3', seg);
    const r2 = await readText(ctx, 'n2', a2.pid, a2.base + PAGE_SIZE);
    const r3 = await readText(ctx, 'n3', a3.pid, a3.base + PAGE_SIZE);
    ctx.check(
      'both remotes hold page 1 for reading',
      r2.ok && r3.ok && r2.value?.text === seg.pattern[1] && r3.value?.text === seg.pattern[1],
      { r2: show(r2), r3: show(r3) },
    );
    const before = { n1: (await peerEpoch(ctx, 'n1', 'n3')).epoch };
    const tCut = await ctx.lab.cutOneWay([['n3', 'n1']]);
    const data = `W2-${Math.random().toString(36).slice(2, 8)}`;
    const w = await ctx.bounded('the upgrading write during the cut', 'n2', 'write', {
      pid: a2.pid,
      addr: a2.base + PAGE_SIZE,
      text: data,
    });
    ctx.check('the upgrading write succeeds', w.ok, w);
    const inv = await messageSeen(ctx, 'n3', 'invalidate', 'in', 'n1', tCut);
    ctx.check(
      "the upgrade's invalidate reached the reader (the fault landed during an upgrade)",
      inv !== undefined,
      inv,
    );
    await expectFence(ctx, 'n1', 'n3', tCut);
    const pages = await expectRmapClear(ctx, 'n1', seg.segid, 'n3', tCut);
    const p1 = pages?.find((p) => p.page === 1);
    ctx.check('the directory shows the writer alone', p1?.writer === 'n2' && p1.sharers.length === 0, p1);
    const stale3 = await readText(ctx, 'n3', a3.pid, a3.base + PAGE_SIZE);
    ctx.check(
      'the fenced reader never returns the old value after the write',
      notStale(stale3, seg.pattern[1], data),
      show(stale3),
    );
    const home = await readText(ctx, 'n1', seg.pid, seg.base + PAGE_SIZE);
    ctx.check('the home reads the new data (recall)', home.ok && home.value?.text === data, show(home));
    await ctx.lab.heal();
    await expectRejoin(ctx, 'n3', before, ['n1']);
    const a3b = await attachSegment(ctx, 'n3', seg, a3.pid);
    const fresh = await readText(ctx, 'n3', a3b.pid, a3b.base + PAGE_SIZE);
    ctx.check(
      'after rejoining, the reader sees the new data',
      fresh.ok && fresh.value?.text === data,
      show(fresh),
    );
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

const recall: Scenario = {
  name: 'recall-writer-ack-lost',
  title:
    'a recall whose ack (with the dirty data) is lost (cut writer → home, then the home writes the page)',
  proves:
    "the recall reaches the writer and its ack with the dirty data is lost; the home's write completes within its deadline, the writer is fenced, the loss is counted (lost-dirty), the page reverts to the last written-back version plus the home's write, and the writer's lost data never shows up",
  lab: TARGETED,
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const dirty = `W2-${Math.random().toString(36).slice(2, 8)}`;
    const w2 = await ctx.bounded('the remote write', 'n2', 'write', {
      pid: a2.pid,
      addr: a2.base + 3 * PAGE_SIZE,
      text: dirty,
    });
    ctx.check('the remote holds page 3 for writing (dirty)', w2.ok, w2);
    const lostBefore = await lostDirty(ctx, 'n1');
    const before = { n1: (await peerEpoch(ctx, 'n1', 'n2')).epoch };
    const tCut = await ctx.lab.cutOneWay([['n2', 'n1']]);
    const mine = `H1-${Math.random().toString(36).slice(2, 8)}`;
    const hw = await ctx.bounded('the home write during the cut', 'n1', 'write', {
      pid: seg.pid,
      addr: seg.base + 3 * PAGE_SIZE + 2048,
      text: mine,
    });
    ctx.check('the home write succeeds', hw.ok, hw);
    const inv = await messageSeen(ctx, 'n2', 'invalidate', 'in', 'n1', tCut);
    ctx.check('the recall reached the writer (the fault landed during a recall)', inv !== undefined, inv);
    await expectFence(ctx, 'n1', 'n2', tCut);
    await expectRmapClear(ctx, 'n1', seg.segid, 'n2', tCut);
    const lost = await ctx.ctl.request('observations', { kind: 'lost-dirty', observer: 'n1', after: tCut });
    ctx.check(
      'the lost dirty page is reported (lost-dirty event)',
      lost.some((o) => o.node === 'n2' && o.data?.page === 3),
      lost,
    );
    ctx.check('the lost dirty page is counted', (await lostDirty(ctx, 'n1')) === lostBefore + 1, {
      before: lostBefore,
      after: await lostDirty(ctx, 'n1'),
    });
    const head = await readText(ctx, 'n1', seg.pid, seg.base + 3 * PAGE_SIZE);
    ctx.check(
      'the page reverted to the last written-back version (the lost write is not there)',
      head.ok && head.value?.text === seg.pattern[3],
      show(head),
    );
    const tail = await readText(ctx, 'n1', seg.pid, seg.base + 3 * PAGE_SIZE + 2048);
    ctx.check("the home's own write is there", tail.ok && tail.value?.text === mine, show(tail));
    const r2 = await readText(ctx, 'n2', a2.pid, a2.base + 3 * PAGE_SIZE);
    ctx.check(
      'the fenced writer no longer reads its lost data',
      notStale(r2, dirty, seg.pattern[3]),
      show(r2),
    );
    await ctx.lab.heal();
    await expectRejoin(ctx, 'n2', before, ['n1']);
    const again = await readText(ctx, 'n1', seg.pid, seg.base + 3 * PAGE_SIZE);
    ctx.check(
      'after the heal, the lost write still never shows up at the home',
      again.ok && again.value?.text === seg.pattern[3],
      show(again),
    );
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

const pauseStale: Scenario = {
  name: 'pause-stale-write',
  title:
    'a paused writer (SIGSTOP) is fenced; after SIGCONT its write through the old mapping is not accepted',
  proves:
    'a paused instance is fenced within the heartbeat timeout and its dirty page reverts (counted); after SIGCONT a write through its old mapping never becomes visible at the home, it comes back as a new session with a higher epoch, holds nothing in the directory until it faults again, and a write after re-attaching in the new session is visible',
  lab: TARGETED,
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const dirty = `W2-${Math.random().toString(36).slice(2, 8)}`;
    const w2 = await ctx.bounded('the remote write', 'n2', 'write', {
      pid: a2.pid,
      addr: a2.base + PAGE_SIZE,
      text: dirty,
    });
    ctx.check('the remote holds page 1 for writing (dirty)', w2.ok, w2);
    const lostBefore = await lostDirty(ctx, 'n1');
    const before = {
      n1: (await peerEpoch(ctx, 'n1', 'n2')).epoch,
      n3: (await peerEpoch(ctx, 'n3', 'n2')).epoch,
    };
    const tStop = ctx.lab.pause('n2');
    await expectFence(ctx, 'n1', 'n2', tStop);
    await expectFence(ctx, 'n3', 'n2', tStop);
    await expectRmapClear(ctx, 'n1', seg.segid, 'n2', tStop);
    const lostNow = await lostDirty(ctx, 'n1');
    ctx.check('the dirty page held by the paused instance is counted as lost', lostNow === lostBefore + 1, {
      before: lostBefore,
      after: lostNow,
    });
    const rev = await readText(ctx, 'n1', seg.pid, seg.base + PAGE_SIZE);
    ctx.check(
      'the page reverted to the last written-back version',
      rev.ok && rev.value?.text === seg.pattern[1],
      show(rev),
    );
    // The stale write is sent while the instance is stopped (its kernel queues the request), so it
    // is among the first things the instance does when it runs again.
    const staleText = `STALE-${Math.random().toString(36).slice(2, 8)}`;
    const stale = ctx.ctl.call(
      'n2',
      'write',
      { pid: a2.pid, addr: a2.base + PAGE_SIZE, text: staleText },
      ctx.opTimeout,
    );
    await sleep(300);
    ctx.lab.resume('n2');
    const sr = await stale;
    ctx.note('write through the old mapping after SIGCONT', {
      ok: sr.ok,
      code: sr.code,
      message: sr.message,
    });
    await expectRejoin(ctx, 'n2', before, ['n1', 'n3']);
    await sleep(ctx.t.heartbeatMs * 2);
    const home = await readText(ctx, 'n1', seg.pid, seg.base + PAGE_SIZE);
    ctx.check(
      'the stale write is not visible at the home',
      home.ok && home.value?.text === seg.pattern[1],
      show(home),
    );
    const pages = await ctx.ctl.mustGet<PageView[]>('n1', `/pages?segid=${encodeURIComponent(seg.segid)}`);
    ctx.check(
      'the resumed instance holds nothing in the directory before it faults again',
      pages.every((p) => !p.sharers.includes('n2') && p.writer !== 'n2'),
      pages,
    );
    const old = await readText(ctx, 'n2', a2.pid, a2.base + PAGE_SIZE);
    ctx.check('its old attachment is revoked', !old.ok, show(old));
    const a2b = await attachSegment(ctx, 'n2', seg, a2.pid);
    const fresh = `NEW-${Math.random().toString(36).slice(2, 8)}`;
    const nw = await ctx.bounded('a write in the new session', 'n2', 'write', {
      pid: a2b.pid,
      addr: a2b.base + PAGE_SIZE,
      text: fresh,
    });
    ctx.check('a write in the new session succeeds', nw.ok, nw);
    const seen = await readText(ctx, 'n1', seg.pid, seg.base + PAGE_SIZE);
    ctx.check(
      'a write made after re-faulting in the new session is visible at the home',
      seen.ok && seen.value?.text === fresh,
      show(seen),
    );
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

const crash: Scenario = {
  name: 'crash-without-fin',
  title: 'a writer crashes without FIN (link down, then SIGKILL) and restarts',
  proves:
    "a crashed instance is fenced by every survivor within the heartbeat timeout (detected by missed heartbeats: no FIN or RST reached anyone), its dirty page reverts and is counted, the survivors' data is intact and they keep working; the restarted instance joins with a higher epoch and reads the survivors' data",
  lab: TARGETED,
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const a3 = await attachSegment(ctx, 'n3', seg);
    const dirty = `W2-${Math.random().toString(36).slice(2, 8)}`;
    ctx.check(
      'the victim holds page 1 for writing',
      (
        await ctx.ctl.call(
          'n2',
          'write',
          { pid: a2.pid, addr: a2.base + PAGE_SIZE, text: dirty },
          ctx.opTimeout,
        )
      ).ok,
    );
    const r3 = await readText(ctx, 'n3', a3.pid, a3.base + 2 * PAGE_SIZE);
    ctx.check('a survivor holds page 2 for reading', r3.ok && r3.value?.text === seg.pattern[2], show(r3));
    const lostBefore = await lostDirty(ctx, 'n1');
    const before = {
      n1: (await peerEpoch(ctx, 'n1', 'n2')).epoch,
      n3: (await peerEpoch(ctx, 'n3', 'n2')).epoch,
    };
    const tCrash = await ctx.lab.crash('n2');
    ctx.procs.splice(0, ctx.procs.length, ...ctx.procs.filter((p) => p.node !== 'n2'));
    for (const s of ['n1', 'n3']) {
      const f = await expectFence(ctx, s, 'n2', tCrash);
      if (f)
        ctx.check(
          `${s} detected the crash by missed heartbeats (no FIN/RST)`,
          /HEARTBEAT|heartbeat/.test(f.why ?? ''),
          f.why,
        );
    }
    await expectRmapClear(ctx, 'n1', seg.segid, 'n2', tCrash);
    ctx.check(
      'the dirty page of the crashed instance is counted as lost',
      (await lostDirty(ctx, 'n1')) === lostBefore + 1,
    );
    const h1 = await readText(ctx, 'n1', seg.pid, seg.base + PAGE_SIZE);
    ctx.check(
      'its page reverted to the last written-back version',
      h1.ok && h1.value?.text === seg.pattern[1],
      show(h1),
    );
    const s3 = await readText(ctx, 'n3', a3.pid, a3.base + 2 * PAGE_SIZE);
    ctx.check("a survivor's data is intact", s3.ok && s3.value?.text === seg.pattern[2], show(s3));
    const w3 = `W3-${Math.random().toString(36).slice(2, 8)}`;
    await ctx.bounded('a survivor write while the victim is dead', 'n3', 'write', {
      pid: a3.pid,
      addr: a3.base + 3 * PAGE_SIZE,
      text: w3,
    });
    const h3 = await readText(ctx, 'n1', seg.pid, seg.base + 3 * PAGE_SIZE);
    ctx.check(
      'survivors keep working (the home reads the survivor write)',
      h3.ok && h3.value?.text === w3,
      show(h3),
    );
    await ctx.lab.restart('n2');
    await expectRejoin(ctx, 'n2', before, ['n1', 'n3']);
    const a2b = await attachSegment(ctx, 'n2', seg);
    const n2p1 = await readText(ctx, 'n2', a2b.pid, a2b.base + PAGE_SIZE);
    const n2p3 = await readText(ctx, 'n2', a2b.pid, a2b.base + 3 * PAGE_SIZE);
    ctx.check(
      "the restarted instance reads the survivors' data",
      n2p1.value?.text === seg.pattern[1] && n2p3.value?.text === w3,
      { p1: show(n2p1), p3: show(n2p3) },
    );
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

const lease: Scenario = {
  name: 'fenced-reader-lease',
  title:
    'a reader cut off from its home (home → reader cut) is fenced on the ack deadline while it is still alive',
  proves:
    'the home fences a reader that misses the ack deadline of an upgrade although the reader still believes its session alive; once the write completes, the reader must not return the old value (its lease on the copy has run out before the home moved on)',
  // The ack deadline is shorter than the heartbeat timeout, so the home fences the reader before the
  // reader can notice anything.
  lab: { ...TARGETED, heartbeatMs: 250, missedBeats: 4, ackTimeoutMs: 300 },
  async run(ctx) {
    const seg = await makeSegment(ctx, 'n1', 4);
    const a2 = await attachSegment(ctx, 'n2', seg);
    const a3 = await attachSegment(ctx, 'n3', seg);
    const r2 = await readText(ctx, 'n2', a2.pid, a2.base + PAGE_SIZE);
    const r3 = await readText(ctx, 'n3', a3.pid, a3.base + PAGE_SIZE);
    ctx.check('both remotes hold page 1 for reading', r2.ok && r3.ok && r3.value?.text === seg.pattern[1], {
      r2: show(r2),
      r3: show(r3),
    });
    const before = { n1: (await peerEpoch(ctx, 'n1', 'n3')).epoch };
    const tCut = await ctx.lab.cutOneWay([['n1', 'n3']]);
    const data = `W2-${Math.random().toString(36).slice(2, 8)}`;
    const w = await ctx.bounded('the upgrading write while the reader is cut off', 'n2', 'write', {
      pid: a2.pid,
      addr: a2.base + PAGE_SIZE,
      text: data,
    });
    ctx.check('the write succeeds', w.ok, w);
    const fence = await expectFence(ctx, 'n1', 'n3', tCut);
    ctx.note('fence of the reader', fence);
    // Read at the cut-off reader right after the write completed, and keep reading until it notices.
    const reads: Array<ReturnType<typeof show> & { afterWriteMs: number }> = [];
    const end = now() + ctx.b.heartbeatTimeoutMs * 3;
    while (now() < end) {
      const r = await readText(ctx, 'n3', a3.pid, a3.base + PAGE_SIZE);
      reads.push({ ...show(r), afterWriteMs: Math.round(r.t0 - w.t1) });
      if (!r.ok) break;
      await sleep(20);
    }
    const stale = reads.filter((r) => r.ok && r.text === seg.pattern[1]);
    ctx.note('reads at the cut-off reader after the write completed', {
      writeCompletedAfterCutMs: Math.round(w.t1 - tCut),
      reads,
    });
    ctx.check(
      'after the write completed, the fenced reader never returns the old value',
      stale.length === 0,
      {
        writeCompletedAfterCutMs: Math.round(w.t1 - tCut),
        staleReads: stale.length,
        reads: reads.slice(0, 10),
      },
    );
    await ctx.lab.heal();
    await expectRejoin(ctx, 'n3', before, ['n1']);
    await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
  },
};

// ---- faults under a background load ----------------------------------------------------------------

export type FaultKind = 'partition' | 'one-way' | 'link-down' | 'crash' | 'pause';

/** Inject a fault on `victim`; returns the time it took effect and how to heal it. */
export async function inject(
  lab: Lab,
  kind: FaultKind,
  victim: string,
): Promise<{ t: number; heal: () => Promise<number> }> {
  switch (kind) {
    case 'partition':
      return { t: await lab.isolate(victim, 'both'), heal: () => lab.heal() };
    case 'one-way':
      return { t: await lab.isolate(victim, 'out'), heal: () => lab.heal() };
    case 'link-down':
      return { t: await lab.linkDown(victim), heal: () => lab.linkUp(victim) };
    case 'crash':
      return { t: await lab.crash(victim), heal: () => lab.restart(victim) };
    case 'pause':
      return { t: lab.pause(victim), heal: async () => lab.resume(victim) };
  }
}

/**
 * The scenarios' background load: the engine's defaults (LOAD_DEFAULTS), without forced reclaims, so
 * that each scenario's fault lands where it is aimed (`XPMESH_FAULT_RECLAIM_MS` turns them on; the
 * fault paths of reclaim are covered by invalidation-ack-lost, and the soak keeps reclaims on).
 */
export const LOAD_FOR_SCENARIOS: Partial<LoadConfig> = { reclaimEveryMs: 0 };

function underLoad(kind: FaultKind, how: string): Scenario {
  return {
    name: `load-${kind}`,
    title: `${how} of a remote instance under a background load`,
    proves: `under a read/write load on all three instances, ${how} of one attacher: it is fenced by both survivors within the heartbeat timeout, the home's reverse map drops it, the survivors keep completing operations and no call to them waits past its deadline; after the heal it rejoins with a higher epoch and works again; the recorded history is linearizable (survivors strict, the fenced session's unobserved writes indeterminate) and at quiescence invariants hold, pins == unpins, nothing stays mapped`,
    lab: { sse: false, pollMs: 50 },
    async run(ctx) {
      const b = ctx.b;
      const victim = 'n2';
      const survivors = ['n1', 'n3'];
      const started = await ctx.ctl.request('load.start', {
        ...LOAD_FOR_SCENARIOS,
        ...ctx.load,
        nodes: ['n1', 'n2', 'n3'],
        home: 'n1',
        callBoundMs: b.opMs,
        callTimeoutMs: b.opMs * 3,
      });
      const t0 = now();
      const warm = await ctx.ctl.request(
        'load.progress',
        { nodes: ['n1', 'n2', 'n3'], after: t0, minOps: 50, timeoutMs: 30_000 },
        40_000,
      );
      ctx.check('the load runs on every instance before the fault', warm.ok, warm.opsByNode);
      const before = {
        n1: (await peerEpoch(ctx, 'n1', victim)).epoch,
        n3: (await peerEpoch(ctx, 'n3', victim)).epoch,
      };
      const lostBefore = await lostDirty(ctx, 'n1');
      const fault = await inject(ctx.lab, kind, victim);
      const fences: number[] = [];
      for (const s of survivors) {
        const f = await expectFence(ctx, s, victim, fault.t);
        if (f) fences.push(f.t);
      }
      await expectRmapClear(ctx, 'n1', started.segid, victim, fault.t);
      const after = Math.max(fault.t, ...fences);
      const going = await ctx.ctl.request(
        'load.progress',
        { nodes: survivors, after, minOps: 20, timeoutMs: 30_000 },
        40_000,
      );
      ctx.check(
        'the survivors keep completing operations while the victim is fenced',
        going.ok,
        going.opsByNode,
      );
      const tHeal = await fault.heal();
      await expectRejoin(ctx, victim, before, survivors);
      const back = await ctx.ctl.request(
        'load.progress',
        { nodes: [victim], after: tHeal, minOps: 20, timeoutMs: 30_000 },
        40_000,
      );
      ctx.check(
        'the healed instance works again (new attachment, operations complete)',
        back.ok,
        back.opsByNode,
      );
      const windows: FaultWindow[] = [{ node: victim, from: fault.t, to: now() }];
      const s: LoadSummary = await ctx.ctl.request('load.stop', { windows }, 300_000);
      const lostAfter = await lostDirty(ctx, 'n1');
      ctx.note('load summary', {
        ops: s.ops.total,
        byNode: s.ops.byNode,
        errors: s.ops.errors,
        chunks: s.chunks,
        incarnations: s.incarnations,
        generations: s.generations,
        reclaims: s.reclaims,
        history: { ...s.history, failedRounds: undefined },
        lostDirtyPages: lostAfter - lostBefore,
        excusedSlowCalls: s.deadlines.excused,
      });
      ctx.check(
        'the recorded history is linearizable',
        s.history.ok && s.history.checkedOps > 0,
        s.history.failedRounds,
      );
      ctx.check(
        'no call to an instance outside its fault window waited past its deadline',
        s.deadlines.slow.length === 0,
        s.deadlines.slow.slice(0, 10),
      );
      ctx.check(
        "at quiescence the home's directory is empty",
        s.quiescence.pagesCleared && s.quiescence.attachersExited && s.quiescence.homeExited,
        s.quiescence,
      );
      await expectQuiescence(ctx, ['n1', 'n2', 'n3']);
    },
  };
}

export const SCENARIOS: Scenario[] = [
  remoteFault,
  invalidation,
  upgrade,
  recall,
  pauseStale,
  crash,
  lease,
  underLoad('partition', 'a partition (both ways)'),
  underLoad('one-way', 'a one-way partition (its frames dropped)'),
  underLoad('link-down', 'a link down'),
  underLoad('crash', 'a crash without FIN and a restart'),
  underLoad('pause', 'a pause (SIGSTOP, then SIGCONT)'),
];

/** Build the scenario's lab, run it, tear everything down; never throws. */
export async function runScenario(
  s: Scenario,
  o: {
    timings?: Partial<NodeTimings>;
    keepLogs?: 'always' | 'on-failure' | 'never';
    verbose?: boolean;
    load?: Partial<LoadConfig>;
  } = {},
): Promise<ScenarioResult> {
  const t0 = now();
  const result: ScenarioResult = { name: s.name, title: s.title, ok: false, ms: 0, checks: [], notes: [] };
  let lab: Lab | undefined;
  let ctx: ScenarioContext | undefined;
  try {
    lab = await Lab.create({ ...DEFAULT_TIMINGS, ...o.timings, nodes: 3, ...s.lab });
    result.setupMs = lab.setupMs;
    ctx = new ScenarioContext(lab, o.verbose ?? false, o.load);
    await s.run(ctx);
  } catch (e) {
    result.error = (e as Error).stack ?? String(e);
  } finally {
    if (ctx) {
      result.checks = ctx.checks;
      result.notes = ctx.notes;
    }
    result.ok = !result.error && result.checks.length > 0 && result.checks.every((c) => c.ok);
    if (lab) {
      result.faults = lab.faults;
      const keep = o.keepLogs === 'always' || (o.keepLogs !== 'never' && !result.ok);
      if (!result.ok) {
        result.logTails = {};
        for (const n of lab.nodes) result.logTails[n.id] = lab.tail(n.id, 25, /"level":(4|5|6)0/);
      }
      await lab.destroy({ keepLogs: keep }).catch(() => undefined);
      if (keep) result.logDir = lab.dir;
    }
    result.ms = Math.round(now() - t0);
  }
  return result;
}

/** One line per check, for reports. */
export function formatResult(r: ScenarioResult): string {
  const lines = [`${r.ok ? 'PASS' : 'FAIL'} ${r.name} (${(r.ms / 1000).toFixed(1)} s): ${r.title}`];
  for (const c of r.checks)
    lines.push(
      `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}${c.ok ? '' : `\n         evidence: ${JSON.stringify(c.evidence)?.slice(0, 3000)}`}`,
    );
  if (r.error) lines.push(`  ERROR ${r.error}`);
  if (r.logDir) lines.push(`  logs: ${r.logDir}`);
  return lines.join('\n');
}
