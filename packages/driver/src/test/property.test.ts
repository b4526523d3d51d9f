/**
 * Property test: random schedules of reads, writes, reclaims, migrations, forks, attacher exits and
 * instance deaths (partition → fence → heal → new session) over three real instances on the
 * in-memory network with injected delay and jitter. After every step: the BRIEF §5 invariants the
 * driver can see (flag iff reverse map, single writer, no entry for a fenced session, nothing in
 * flight, pins == unpins at quiescence, kernel.check()). At the end of a run: per-address
 * linearizability of the recorded reads and writes.
 *
 * Excluded from the history, by design (docs/driver.md, "Failures"): reads served by an instance
 * while it is partitioned (it cannot know yet), and pages whose only dirty copy died with a fenced
 * instance (they revert to the last written-back data, counted in lostDirtyPages).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import type { LinkFaults } from '@xpmesh/protocol';
import fc from 'fast-check';
import {
  type Cluster,
  checkDriver,
  checkKernel,
  type Inst,
  makeCluster,
  PROT_RW,
  type Proc,
  quiesce,
  until,
} from './cluster.js';

const PAGES = 3;
const WORDS = 2; // words per page used by the schedule

type Op =
  | { k: 'read'; node: number; page: number; word: number; par: boolean }
  | { k: 'write'; node: number; page: number; word: number; par: boolean }
  | { k: 'reclaim'; page: number; par: boolean }
  | { k: 'migrate'; page: number; par: boolean }
  | { k: 'fork'; par: boolean }
  | { k: 'respawn'; node: number; par: boolean }
  | { k: 'death'; node: number; par: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      k: fc.constant('read' as const),
      node: fc.nat(2),
      page: fc.nat(PAGES - 1),
      word: fc.nat(WORDS - 1),
      par: fc.boolean(),
    }),
  },
  {
    weight: 8,
    arbitrary: fc.record({
      k: fc.constant('write' as const),
      node: fc.nat(2),
      page: fc.nat(PAGES - 1),
      word: fc.nat(WORDS - 1),
      par: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('reclaim' as const),
      page: fc.nat(PAGES - 1),
      par: fc.constant(false),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('migrate' as const),
      page: fc.nat(PAGES - 1),
      par: fc.constant(false),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('fork' as const), par: fc.constant(false) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('respawn' as const),
      node: fc.integer({ min: 1, max: 2 }),
      par: fc.constant(false),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('death' as const),
      node: fc.integer({ min: 1, max: 2 }),
      par: fc.constant(false),
    }),
  },
);

interface Event {
  addr: number;
  kind: 'r' | 'w';
  value: number;
  start: number;
  end: number;
}

let c: Cluster;
let nodes: Inst[];
let clock = 0;
let run = 0;
const tick = () => ++clock;

let diag: (s: string) => void = () => undefined;

async function withCluster(
  faults: LinkFaults,
  requestTimeoutMs: number,
  fn: () => Promise<void>,
): Promise<void> {
  c = await makeCluster({ ackTimeoutMs: 300, heartbeatMs: 60, missedBeats: 4, requestTimeoutMs, faults });
  nodes = c.nodes;
  try {
    await fn();
    const k = c.nodes[0].driver.status().counters;
    const f = c.sw.stats;
    diag(
      `home counters: maps ${k.mapsGranted}, invalidations ${k.invalidationsSent}/${k.invalidationsAcked}, ` +
        `upgrades ${k.upgrades}, recalls ${k.recalls}, fences ${k.fences}, lostDirty ${k.lostDirtyPages}, ` +
        `refusals ${k.reclaimRefusals}; frames dropped ${f.framesDropped}`,
    );
  } finally {
    await c.close();
  }
}

function property(numRuns: number, seed: number) {
  return fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 28 }), async (ops) => {
      try {
        await runSchedule(ops);
      } catch (e) {
        console.error(`schedule failed: ${(e as Error).stack ?? e}`);
        throw e;
      }
    }),
    {
      seed: Number(process.env.XPMEM_SEED ?? seed),
      numRuns: Number(process.env.XPMEM_RUNS ?? numRuns),
      endOnFailure: true,
    },
  );
}

/** Per address: every read returns the initial value or a write not strictly followed by another
 * write that completed before the read started, and that began before the read ended. */
function checkLinearizable(history: Event[], initial: Map<number, number>): void {
  const byAddr = new Map<number, Event[]>();
  for (const e of history) {
    const l = byAddr.get(e.addr) ?? [];
    byAddr.set(e.addr, l);
    l.push(e);
  }
  for (const [addr, evs] of byAddr) {
    const writes = evs.filter((e) => e.kind === 'w');
    for (const r of evs.filter((e) => e.kind === 'r')) {
      const candidates = [{ value: initial.get(addr) ?? 0, start: -1, end: -1 }, ...writes];
      const ok = candidates.some(
        (w) =>
          w.value === r.value &&
          w.start < r.end &&
          !writes.some((w2) => w2 !== w && w2.start > w.end && w2.end < r.start),
      );
      assert.ok(
        ok,
        `addr ${addr}: read ${r.value} at [${r.start},${r.end}] is not linearizable; writes ${JSON.stringify(writes)}`,
      );
    }
  }
}

test(
  'random schedules (delay + jitter) keep the invariants and per-address linearizability',
  { timeout: 120_000 },
  (t) =>
    withCluster({ delayMs: 0, jitterMs: 2 }, 2000, () => {
      diag = (x) => t.diagnostic(x);
      return property(25, 20261124);
    }),
);

test(
  'random schedules with 1% dropped frames: fencing keeps the invariants; no wait hangs',
  { timeout: 120_000 },
  (t) =>
    withCluster({ delayMs: 0, jitterMs: 2, drop: 0.01 }, 400, () => {
      diag = (x) => t.diagnostic(x);
      return property(10, 7);
    }),
);

test(
  'random schedules with reordered frames (no FIFO on a link): grant ids keep map-ok and invalidate apart',
  { timeout: 120_000 },
  (t) =>
    withCluster({ delayMs: 0, jitterMs: 3, reorder: true }, 2000, () => {
      diag = (x) => t.diagnostic(x);
      return property(12, 4242);
    }),
);

async function runSchedule(ops: Op[]): Promise<void> {
  run++;
  const [A, B, C] = nodes;
  const home = await A.kernel.spawn({ catchSignals: true });
  const va = await home.mmap(PAGES * PAGE_SIZE, PROT_RW);
  const initial = new Map<number, number>();
  for (let p = 0; p < PAGES; p++) {
    for (let w = 0; w < WORDS; w++) {
      await home.write32(va + p * PAGE_SIZE + w * 4, 1000 * run + p * 10 + w);
      initial.set(p * PAGE_SIZE + w * 4, 1000 * run + p * 10 + w);
    }
  }
  const segid = await A.driver.make(home.pid, va, PAGES * PAGE_SIZE, 0o600);
  const att: Array<{ q: Proc; va: number } | null> = [{ q: home, va }, null, null];
  const spawnAttacher = async (i: number) => {
    const n = nodes[i];
    const q = await n.kernel.spawn({ catchSignals: true });
    const apid = await n.driver.get(q.pid, segid, 'rw');
    att[i] = { q, va: await n.driver.attach(q.pid, apid, 0, PAGES * PAGE_SIZE) };
  };
  await spawnAttacher(1).catch(() => undefined);
  await spawnAttacher(2).catch(() => undefined);
  const history: Event[] = [];
  const tainted = new Set<number>(); // pages whose dirty copy died
  const lost = (e: { segid: string; page: number }) => {
    if (e.segid === segid) tainted.add(e.page);
  };
  A.driver.events.on('lost-dirty', lost);
  // a fenced instance cannot know at once: its further reads are not history until it re-attaches
  const fenced = new Set<number>();
  const onFence = (e: { node: string }) => {
    const i = nodes.findIndex((n) => n.name === e.node);
    if (i > 0) {
      fenced.add(i);
      if (att[i]) extra.push(att[i]!.q);
      att[i] = null;
    }
  };
  A.driver.events.on('fence', onFence);
  const extra: Proc[] = [];
  let value = 1_000_000 * run;
  const exec = async (op: Op): Promise<void> => {
    switch (op.k) {
      case 'read':
      case 'write': {
        const a = att[op.node];
        if (!a) return;
        const off = op.page * PAGE_SIZE + op.word * 4;
        const start = tick();
        try {
          if (op.k === 'read') {
            const v = await a.q.read32(a.va + off);
            if (!tainted.has(op.page)) history.push({ addr: off, kind: 'r', value: v, start, end: tick() });
          } else {
            const v = ++value;
            await a.q.write32(a.va + off, v);
            history.push({ addr: off, kind: 'w', value: v, start, end: tick() });
          }
        } catch (e) {
          // a failed write may or may not have landed: keep it as a write with an open end
          if (op.k === 'write')
            history.push({ addr: off, kind: 'w', value, start, end: Number.MAX_SAFE_INTEGER });
          assert.ok(['SIGBUS', 'ESRCH'].includes((e as { code?: string }).code ?? ''), String(e));
        }
        return;
      }
      case 'reclaim':
      case 'migrate': {
        const pfn = A.kernel.pfnOf(home.pid, va + op.page * PAGE_SIZE);
        if (pfn === undefined || pfn === null || pfn < 0) return;
        const f = op.k === 'reclaim' ? A.kernel.reclaimPage(pfn) : A.kernel.migratePage(pfn);
        await f.catch(() => undefined);
        return;
      }
      case 'fork': {
        const child = await home.fork();
        extra.push(child);
        return;
      }
      case 'respawn': {
        const a = att[op.node];
        if (a) await a.q.exit(0);
        att[op.node] = null;
        const n = nodes[op.node];
        await until(
          () =>
            A.net.sessions().some((s) => s.node === n.name) && n.net.sessions().some((s) => s.node === 'a'),
          'up before respawn',
          15_000,
        );
        fenced.delete(op.node);
        await spawnAttacher(op.node).catch(() => undefined);
        if (fenced.has(op.node) && att[op.node]) {
          extra.push(att[op.node]!.q);
          att[op.node] = null;
        }
        return;
      }
      case 'death': {
        const n = nodes[op.node];
        const a = att[op.node];
        att[op.node] = null; // its reads are not in the history while it cannot know
        c.sw.partition('a', n.name);
        await until(() => !A.net.sessions().some((s) => s.node === n.name), 'home sees death', 10_000);
        await until(() => !n.net.sessions().some((s) => s.node === 'a'), 'peer sees death', 10_000);
        if (a) await a.q.exit(0);
        c.sw.heal('a', n.name);
        await until(
          () =>
            A.net.sessions().some((s) => s.node === n.name) && n.net.sessions().some((s) => s.node === 'a'),
          'rejoin',
          15_000,
        );
        await spawnAttacher(op.node).catch(() => undefined); // a dropped get: the node stays out
        return;
      }
    }
  };
  try {
    for (let i = 0; i < ops.length; ) {
      const batch = [ops[i++]];
      while (i < ops.length && ops[i].par && batch.length < 3) batch.push(ops[i++]);
      await Promise.all(batch.map(exec));
      // invariants after every step (fences finish in the background once a lease ran out)
      await quiesce(A);
      const live = new Set(
        nodes.filter((n) => A.net.sessions().some((s) => s.node === n.name) || n === A).map((n) => n.name),
      );
      checkDriver(A, live);
      for (const ps of A.driver.pageStates(segid)) {
        if (ps.writer) assert.deepEqual(ps.sharers, [], `page ${ps.page}: single writer`);
        assert.notEqual(ps.state, 'invalidating');
      }
      for (const n of nodes) await checkKernel(n.kernel);
    }
    // final reads through the home: every address holds its latest value
    for (let p = 0; p < PAGES; p++) {
      for (let w = 0; w < WORDS; w++) {
        const start = tick();
        const v = await home.read32(va + p * PAGE_SIZE + w * 4);
        if (!tainted.has(p))
          history.push({ addr: p * PAGE_SIZE + w * 4, kind: 'r', value: v, start, end: tick() });
      }
    }
    checkLinearizable(history, initial);
  } finally {
    A.driver.events.off('lost-dirty', lost);
    A.driver.events.off('fence', onFence);
    for (const x of extra) await x.exit(0).catch(() => undefined);
    for (const a of att) if (a && a.q !== home) await a.q.exit(0);
    await A.driver.remove(segid).catch(() => undefined);
    await home.exit(0);
  }
  for (const n of nodes) {
    assert.equal(n.driver.status().rmap.entries, 0, `${n.name}: map empty after the run`);
    checkDriver(n, new Set(['a', 'b', 'c']));
    await checkKernel(n.kernel);
  }
  void B;
  void C;
}
