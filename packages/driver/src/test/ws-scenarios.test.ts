/**
 * XPMEM's test-suite scenarios across separate OS processes over ws on 127.0.0.1 (the in-memory,
 * one-process versions are in xpmem-scenarios.test.ts and peers.test.ts; base read-modify,
 * many-to-one writers, source exit and SIGKILL are in ws.test.ts): two attachments of one segment,
 * two segments, fork then COW, the permission matrix, hole → SIGBUS, source munmap → SIGBUS,
 * 1..10 attacher processes × 64 pages, a seeded random interleaving against a sequential model, and
 * a leak check at the end. Each instance (kernel + driver + ws PeerNetwork) is its own Node process
 * (ws-instance.js), driven over IPC (ws-harness.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { PERMISSION_MATRIX } from './permission-matrix.js';
import {
  attach,
  expectCode,
  type Remote,
  type RmapEntryView,
  type Status,
  source,
  wsCluster,
} from './ws-harness.js';

const cluster = wsCluster(['a', 'b', 'c']);
const [A, B, C] = cluster.nodes;
const all = () => [A, B, C];
const LIVE = ['a', 'b', 'c'];

// Nothing here needs a death noticed fast: tolerate scheduling stalls of a loaded 2-core CI machine
// (3 s without heartbeats) rather than fence a live instance. The leak check asserts nobody was fenced.
before(() => cluster.start({ missedBeats: 30, ackTimeoutMs: 3000, leaseMs: 2000 }));
after(() => cluster.close());

const read32 = (r: Remote, pid: number, addr: number) => r.call<number>('read32', { pid, addr });
const write32 = (r: Remote, pid: number, addr: number, value: number) =>
  r.call('write32', { pid, addr, value });
const status = (r: Remote) => r.call<Status>('status');

/** Every instance quiescent, its driver invariants (flag iff map, pins == unpins, ...) and kernel's hold. */
async function invariantsHold(): Promise<void> {
  for (const r of all()) {
    await r.call('quiesce');
    assert.deepEqual(await r.call('driverCheck', { live: LIVE }), [], `${r.name}: driver invariants`);
    assert.deepEqual(await r.call('check'), [], `${r.name}: kernel invariants`);
  }
}

test('two attachments of one segment in one process see each other', async () => {
  const s = await source(A, 2);
  const q = await B.call<number>('spawn');
  const apid = await B.call<string>('get', { pid: q, segid: s.segid, access: 'rw' });
  const v1 = await B.call<number>('attach', { pid: q, apid, offset: 0, size: 2 * PAGE_SIZE });
  const v2 = await B.call<number>('attach', { pid: q, apid, offset: 0, size: 2 * PAGE_SIZE });
  assert.notEqual(v1, v2);
  assert.equal((await status(B)).attachments.filter((a) => a.pid === q).length, 2);
  await write32(B, q, v1 + 4, 77);
  assert.equal(await read32(B, q, v2 + 4), 77);
  await write32(B, q, v2 + PAGE_SIZE + 4, 78);
  assert.equal(await read32(B, q, v1 + PAGE_SIZE + 4), 78);
  assert.equal(await read32(A, s.pid, s.va + PAGE_SIZE + 4), 78, 'the home sees the write');
  // a byte range across the page boundary, written through one attachment, read through the other
  const bytes = '0102030405060708a1a2a3a4a5a6a7a8';
  await B.call('write', { pid: q, addr: v1 + PAGE_SIZE - 8, hex: bytes });
  assert.equal(await B.call('read', { pid: q, addr: v2 + PAGE_SIZE - 8, len: 16 }), bytes);
  assert.equal(await A.call('read', { pid: s.pid, addr: s.va + PAGE_SIZE - 8, len: 16 }), bytes);
  await B.call('detach', { pid: q, va: v1 });
  assert.equal(await read32(B, q, v2 + 4), 77, 'the other attachment still works');
  assert.equal(await B.call('read', { pid: q, addr: v2 + PAGE_SIZE - 8, len: 16 }), bytes);
  await B.call('detach', { pid: q, va: v2 });
  await B.call('release', { pid: q, apid });
  await A.call('remove', { segid: s.segid });
  assert.equal((await status(A)).rmap.entries, 0);
  assert.equal((await status(B)).attachments.filter((a) => a.pid === q).length, 0);
  await invariantsHold();
});

test('two segments of one process, attached on two instances', async () => {
  const p = await A.call<number>('spawn');
  const va = await A.call<number>('mmap', { pid: p, len: 4 * PAGE_SIZE });
  await write32(A, p, va, 1);
  await write32(A, p, va + 2 * PAGE_SIZE, 3);
  const s1 = await A.call<string>('make', { pid: p, va, size: 2 * PAGE_SIZE, mode: 0o600 });
  const s2 = await A.call<string>('make', {
    pid: p,
    va: va + 2 * PAGE_SIZE,
    size: 2 * PAGE_SIZE,
    mode: 0o600,
  });
  assert.notEqual(s1, s2);
  const b = await attach(B, s1, 'rw', 2);
  const c = await attach(C, s2, 'rw', 2);
  assert.equal(await read32(B, b.pid, b.va), 1);
  assert.equal(await read32(C, c.pid, c.va), 3);
  await write32(B, b.pid, b.va, 11);
  await write32(C, c.pid, c.va, 33);
  assert.equal(await read32(A, p, va), 11);
  assert.equal(await read32(A, p, va + 2 * PAGE_SIZE), 33);
  // each segment's reverse-map entries belong to its own attacher
  const entries = await A.call<RmapEntryView[]>('rmapEntries');
  assert.deepEqual(
    entries.filter((e) => e.segid === s1).map((e) => [e.node, e.page]),
    [['b', 0]],
  );
  assert.deepEqual(
    entries.filter((e) => e.segid === s2).map((e) => [e.node, e.page]),
    [['c', 0]],
  );
  await A.call('remove', { segid: s1 });
  await expectCode(read32(B, b.pid, b.va), 'SIGBUS', 'segment 1 removed');
  assert.equal(await read32(C, c.pid, c.va), 33, 'segment 2 unaffected by the removal of segment 1');
  await A.call('remove', { segid: s2 });
  await expectCode(read32(C, c.pid, c.va), 'SIGBUS', 'segment 2 removed');
  assert.equal((await status(A)).rmap.entries, 0);
  for (const [r, t] of [
    [B, b],
    [C, c],
  ] as const) {
    await r.call('detach', { pid: t.pid, va: t.va });
    await r.call('release', { pid: t.pid, apid: t.apid }); // the home's permit died with the segment
    assert.deepEqual((await status(r)).grants, [], `${r.name}: release after segment-gone drops the permit`);
  }
  await invariantsHold();
});

test("fork then copy-on-write: attachers see the parent's new page, the child keeps its snapshot", async () => {
  const s = await source(A, 1, { base: 0x51 });
  const b = await attach(B, s.segid, 'r', 1);
  const c = await attach(C, s.segid, 'r', 1);
  assert.equal(await read32(B, b.pid, b.va), 0x51);
  assert.equal(await read32(C, c.pid, c.va), 0x51);
  const child = await A.call<number>('fork', { pid: s.pid });
  await write32(A, s.pid, s.va, 0x52); // parent writes: the COW break gives the parent a new page
  assert.equal(await read32(B, b.pid, b.va), 0x52, 'attacher on b follows the parent');
  assert.equal(await read32(C, c.pid, c.va), 0x52, 'attacher on c follows the parent');
  assert.equal(await read32(A, child, s.va), 0x51, 'child keeps the old page');
  await write32(A, child, s.va, 0x53);
  assert.equal(await read32(B, b.pid, b.va), 0x52, "a child write does not reach the parent's segment");
  assert.equal(await read32(A, s.pid, s.va), 0x52);
  assert.equal(await read32(A, child, s.va), 0x53);
  await A.call('exit', { pid: child });
  assert.equal(await read32(C, c.pid, c.va), 0x52, "the child's exit leaves the segment alone");
  for (const [r, t] of [
    [B, b],
    [C, c],
  ] as const) {
    await r.call('detach', { pid: t.pid, va: t.va });
    await r.call('release', { pid: t.pid, apid: t.apid });
  }
  await A.call('remove', { segid: s.segid });
  await invariantsHold();
});

test('permission matrix (System V IPC style, checked at the home); refusals change nothing', async () => {
  const cases = PERMISSION_MATRIX;
  const src = await A.call<number>('spawn');
  const va = await A.call<number>('mmap', { pid: src, len: PAGE_SIZE });
  await write32(A, src, va, 0x600d);
  const users = new Map<string, number>();
  for (const [mode, access, uid, gid, want] of cases) {
    const what = `mode 0${mode.toString(8)} ${access} uid ${uid} gid ${gid}`;
    const segid = await A.call<string>('make', { pid: src, va, size: PAGE_SIZE, mode });
    const key = `${uid}:${gid}`;
    if (!users.has(key)) users.set(key, await B.call<number>('spawn', { uid, gid }));
    const q = users.get(key)!;
    const grantsBefore = (await status(B)).grants.length;
    if (want) {
      await expectCode(B.call('get', { pid: q, segid, access }), want, what);
      assert.equal((await status(B)).grants.length, grantsBefore, `${what}: refusal changes nothing at b`);
      const seg = (await status(A)).segments.find((x) => x.segid === segid);
      assert.equal(seg?.permits, 0, `${what}: no permit at the home`);
    } else {
      const t = await attach(B, segid, access, 1, q);
      assert.equal(await read32(B, q, t.va), 0x600d, what);
      if (access === 'r') await expectCode(write32(B, q, t.va, 1), 'SIGSEGV', `${what}: write`);
      else {
        await write32(B, q, t.va + 4, mode);
        assert.equal(await read32(A, src, va + 4), mode, `${what}: the home sees the write`);
      }
      await B.call('detach', { pid: q, va: t.va });
      await B.call('release', { pid: q, apid: t.apid });
    }
    await A.call('remove', { segid });
  }
  assert.equal((await status(A)).rmap.entries, 0);
  await invariantsHold();
});

test('a hole in the source is SIGBUS at the attacher; mapped pages still work', async () => {
  const p = await A.call<number>('spawn');
  const va = await A.call<number>('mmap', { pid: p, len: 3 * PAGE_SIZE });
  await write32(A, p, va, 5);
  await write32(A, p, va + 2 * PAGE_SIZE, 7);
  await A.call('munmap', { pid: p, addr: va + PAGE_SIZE, len: PAGE_SIZE });
  const segid = await A.call<string>('make', { pid: p, va, size: 3 * PAGE_SIZE, mode: 0o600 });
  const t = await attach(B, segid, 'rw', 3);
  assert.equal(await read32(B, t.pid, t.va), 5);
  await expectCode(read32(B, t.pid, t.va + PAGE_SIZE), 'SIGBUS', 'read of the hole');
  await expectCode(write32(B, t.pid, t.va + PAGE_SIZE, 1), 'SIGBUS', 'write of the hole');
  assert.equal(await read32(B, t.pid, t.va + 2 * PAGE_SIZE), 7);
  await write32(B, t.pid, t.va + 2 * PAGE_SIZE + 4, 8);
  assert.equal(await read32(A, p, va + 2 * PAGE_SIZE + 4), 8, 'a mapped page still works both ways');
  assert.equal(await read32(B, t.pid, t.va), 5);
  await B.call('detach', { pid: t.pid, va: t.va });
  await B.call('release', { pid: t.pid, apid: t.apid });
  await A.call('remove', { segid });
  await invariantsHold();
});

test('source munmap, then touch: SIGBUS', async () => {
  const s = await source(A, 2);
  const t = await attach(B, s.segid, 'rw', 2);
  assert.equal(await read32(B, t.pid, t.va + PAGE_SIZE), 0x101);
  await write32(B, t.pid, t.va, 0x1234); // page 0 held for writing by b
  assert.ok((await status(A)).rmap.entries > 0);
  await A.call('munmap', { pid: s.pid, addr: s.va, len: 2 * PAGE_SIZE });
  assert.equal((await status(A)).rmap.entries, 0, 'munmap invalidated the remote copies');
  await expectCode(read32(B, t.pid, t.va + PAGE_SIZE), 'SIGBUS', 'read after munmap');
  await expectCode(read32(B, t.pid, t.va), 'SIGBUS', 'read of the page b was writing');
  assert.equal((await status(B)).cachedPages, 0, 'b holds no copy');
  await B.call('detach', { pid: t.pid, va: t.va });
  await B.call('release', { pid: t.pid, apid: t.apid });
  await A.call('remove', { segid: s.segid });
  await invariantsHold();
});

const PAGES = 64;
for (const n of [1, 4, 10]) {
  test(`${n} attacher process(es) on b and c × ${PAGES} pages: all read every stamp, one write per page, all see it`, async () => {
    const stamp = (i: number) => (0x5a000000 | (n << 16) | i) >>> 0;
    const s = await source(A, PAGES, { base: stamp(0), mode: 0o666 });
    const atts = await Promise.all(
      Array.from({ length: n }, async (_, k) => {
        const r = k % 2 === 0 ? B : C;
        return { r, k, ...(await attach(r, s.segid, 'rw', PAGES)) };
      }),
    );
    const expected = Array.from({ length: PAGES }, (_, i) => stamp(i));
    await Promise.all(
      atts.map(async (a) =>
        assert.deepEqual(
          await a.r.call('readWords', { pid: a.pid, addr: a.va, count: PAGES }),
          expected,
          `attacher ${a.k} on ${a.r.name}: every page's stamp`,
        ),
      ),
    );
    // page i is written once, by attacher i % n (at word 1), all writers at the same time
    const written = (i: number) => (0x7b000000 | ((i % n) << 8) | i) >>> 0;
    await Promise.all(
      atts.map((a) =>
        a.r.call('writeWords', {
          pid: a.pid,
          addr: a.va + a.k * PAGE_SIZE + 4,
          stride: n * PAGE_SIZE,
          values: Array.from({ length: Math.ceil((PAGES - a.k) / n) }, (_, j) => written(a.k + j * n)),
        }),
      ),
    );
    const rewritten = Array.from({ length: PAGES }, (_, i) => written(i));
    assert.deepEqual(
      await A.call('readWords', { pid: s.pid, addr: s.va + 4, count: PAGES }),
      rewritten,
      'the home sees every write',
    );
    await Promise.all(
      atts.map(async (a) => {
        assert.deepEqual(
          await a.r.call('readWords', { pid: a.pid, addr: a.va + 4, count: PAGES }),
          rewritten,
          `attacher ${a.k} on ${a.r.name} sees every write`,
        );
        assert.deepEqual(
          await a.r.call('readWords', { pid: a.pid, addr: a.va, count: PAGES }),
          expected,
          `attacher ${a.k} on ${a.r.name}: the stamps are intact`,
        );
      }),
    );
    for (const a of atts) {
      await a.r.call('detach', { pid: a.pid, va: a.va });
      await a.r.call('release', { pid: a.pid, apid: a.apid });
      await a.r.call('exit', { pid: a.pid });
    }
    assert.equal((await status(A)).rmap.entries, 0, 'detach empties the home map');
    await A.call('remove', { segid: s.segid });
    await A.call('exit', { pid: s.pid });
    await invariantsHold();
  });
}

test('random order: seeded interleaving of reads and writes by five processes on three instances, against a sequential model', async (t) => {
  const seed = Number(process.env.XPMESH_WS_SEED ?? 20240611);
  t.diagnostic(`seed ${seed} (XPMESH_WS_SEED to replay)`);
  let x = seed >>> 0 || 1;
  const rnd = (m: number) => {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % m;
  };
  const NPAGES = 3;
  const WORDS = 2;
  const s = await source(A, NPAGES, { base: 0 });
  const local = await attach(A, s.segid, 'rw', NPAGES); // same-instance attacher
  const b1 = await attach(B, s.segid, 'rw', NPAGES);
  const b2 = await attach(B, s.segid, 'rw', NPAGES);
  const c1 = await attach(C, s.segid, 'rw', NPAGES);
  const actors = [
    { name: 'a:source', r: A, pid: s.pid, va: s.va },
    { name: 'a:local', r: A, pid: local.pid, va: local.va },
    { name: 'b:1', r: B, pid: b1.pid, va: b1.va },
    { name: 'b:2', r: B, pid: b2.pid, va: b2.va },
    { name: 'c:1', r: C, pid: c1.pid, va: c1.va },
  ];
  // the model: word 0 of page i starts at i (source base 0), every other word at 0
  const model = Array.from({ length: NPAGES }, (_, i) =>
    Array.from({ length: WORDS }, (_, w) => (w ? 0 : i)),
  );
  const STEPS = 300;
  const c0 = (await status(A)).counters;
  let writes = 0;
  for (let step = 0; step < STEPS; step++) {
    const a = actors[rnd(actors.length)];
    const page = rnd(NPAGES);
    const word = rnd(WORDS);
    const addr = a.va + page * PAGE_SIZE + 4 * word;
    const where = `seed ${seed} step ${step}: ${a.name} page ${page} word ${word}`;
    if (rnd(2)) {
      const v = (0x10000 + step * 8 + actors.indexOf(a)) >>> 0;
      await write32(a.r, a.pid, addr, v); // completes before the next operation is issued
      model[page][word] = v;
      writes++;
    } else assert.equal(await read32(a.r, a.pid, addr), model[page][word], `${where}: read`);
  }
  const now = (await status(A)).counters;
  const delta = (k: string) => (now[k] as number) - (c0[k] as number);
  t.diagnostic(
    `${writes} writes, ${STEPS - writes} reads; at the home: ${delta('mapsGranted')} grants, ` +
      `${delta('invalidationsSent')} invalidations, ${delta('recalls')} recalls, ${delta('homeFaults')} home faults`,
  );
  assert.ok(
    delta('invalidationsSent') > 0 && delta('mapsGranted') > 0,
    'the interleaving moved pages around',
  );
  for (const a of actors)
    for (let page = 0; page < NPAGES; page++)
      assert.deepEqual(
        await a.r.call('readWords', { pid: a.pid, addr: a.va + page * PAGE_SIZE, count: WORDS, stride: 4 }),
        model[page],
        `final values seen by ${a.name}, page ${page}`,
      );
  for (const [r, att] of [
    [A, local],
    [B, b1],
    [B, b2],
    [C, c1],
  ] as const) {
    await r.call('detach', { pid: att.pid, va: att.va });
    await r.call('release', { pid: att.pid, apid: att.apid });
  }
  assert.equal((await status(A)).rmap.entries, 0);
  await A.call('remove', { segid: s.segid });
  await invariantsHold();
});

test('leak check: after detach, release, remove and exit everywhere, nothing is pinned, mapped or exported', async () => {
  for (const r of all()) await r.call('exitAll');
  for (const r of all()) {
    await r.call('quiesce');
    const st = await status(r);
    assert.deepEqual(st.attachments, [], `${r.name}: no attachment left`);
    assert.deepEqual(st.grants, [], `${r.name}: no permit left`);
    assert.deepEqual(st.segments, [], `${r.name}: no segment left`);
    assert.equal(st.counters.pins, st.counters.unpins, `${r.name}: driver pins == unpins`);
    assert.equal(st.rmap.entries, 0, `${r.name}: reverse map empty`);
    assert.equal(st.rmap.frames, 0, `${r.name}: no exported frame in the map`);
    assert.deepEqual(await r.call('rmapEntries'), [], `${r.name}: no rmap entry`);
    assert.deepEqual(await r.call('exportedFrames'), [], `${r.name}: no PG_external_rmap frame`);
    assert.equal(st.cachedPages, 0, `${r.name}: no cached remote page left`);
    assert.equal(st.kernel.driverFrames, 0, `${r.name}: no driver frame left`);
    assert.equal(st.kernel.pins, 0, `${r.name}: no pinned frame in the kernel`);
    assert.equal(st.kernel.processes, 0, `${r.name}: every process exited`);
    assert.equal(st.counters.lostDirtyPages, 0, `${r.name}: no dirty page lost`);
    assert.deepEqual(st.fences, [], `${r.name}: nobody fenced`);
    assert.deepEqual(await r.call('driverCheck', { live: LIVE }), [], `${r.name}: driver invariants`);
    assert.deepEqual(await r.call('check'), [], `${r.name}: kernel invariants`);
  }
});
