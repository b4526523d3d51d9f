/**
 * XPMEM's test-suite scenarios across separate instances: three real kernels on the in-memory
 * network, each with the driver loaded.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import {
  type Cluster,
  checkDriver,
  checkExportedFrames,
  checkKernel,
  expectCode,
  type Inst,
  makeCluster,
  PROT_RW,
  type Proc,
} from './cluster.js';
import { PERMISSION_MATRIX } from './permission-matrix.js';

let c: Cluster;
let A: Inst;
let B: Inst;
let C: Inst;
const procs: Proc[] = [];

before(async () => {
  c = await makeCluster();
  [A, B, C] = c.nodes;
});
after(async () => {
  await c?.close();
});

async function spawn(n: Inst, uid = 1000, gid = 1000): Promise<Proc> {
  const p = await n.kernel.spawn({ uid, gid, catchSignals: true });
  procs.push(p);
  return p;
}

/** A source process on `n` with `pages` pages, word 0 of page i = base + i, exported with `mode`. */
async function source(n: Inst, pages: number, mode = 0o600, base = 0x1000) {
  const p = await spawn(n);
  const va = await p.mmap(pages * PAGE_SIZE, PROT_RW);
  for (let i = 0; i < pages; i++) await p.write32(va + i * PAGE_SIZE, base + i);
  const segid = await n.driver.make(p.pid, va, pages * PAGE_SIZE, mode);
  return { p, va, segid };
}

async function attach(n: Inst, segid: string, access: 'r' | 'rw', pages: number, offset = 0, p?: Proc) {
  const q = p ?? (await spawn(n));
  const apid = await n.driver.get(q.pid, segid, access);
  const va = await n.driver.attach(q.pid, apid, offset, pages * PAGE_SIZE);
  return { q, apid, va };
}

test('base: read and modify through a remote attachment; the home sees the write', async () => {
  const s = await source(A, 4);
  const t = await attach(B, s.segid, 'rw', 4);
  for (let i = 0; i < 4; i++) assert.equal(await t.q.read32(t.va + i * PAGE_SIZE), 0x1000 + i);
  await t.q.write32(t.va + PAGE_SIZE + 8, 0xbeef);
  assert.equal(await s.p.read32(s.va + PAGE_SIZE + 8), 0xbeef, 'home read recalls the remote write');
  assert.equal(await t.q.read32(t.va + PAGE_SIZE + 8), 0xbeef);
  await s.p.write32(s.va + PAGE_SIZE + 8, 0xcafe);
  assert.equal(await t.q.read32(t.va + PAGE_SIZE + 8), 0xcafe, 'remote read sees the home write');
  await B.driver.detach(t.q.pid, t.va);
  await B.driver.release(t.q.pid, t.apid);
  assert.equal(A.driver.status().rmap.entries, 0, 'detach shrinks the home map');
  assert.ok(A.driver.pageStates(s.segid).every((ps) => ps.state === 'home'));
  checkExportedFrames(A, 2048);
  await A.driver.remove(s.segid);
});

test('two attachments of one segment in one process see each other', async () => {
  const s = await source(A, 2);
  const q = await spawn(B);
  const apid = await B.driver.get(q.pid, s.segid, 'rw');
  const v1 = await B.driver.attach(q.pid, apid, 0, 2 * PAGE_SIZE);
  const v2 = await B.driver.attach(q.pid, apid, 0, 2 * PAGE_SIZE);
  assert.notEqual(v1, v2);
  await q.write32(v1 + 4, 77);
  assert.equal(await q.read32(v2 + 4), 77);
  await q.write32(v2 + PAGE_SIZE + 4, 78);
  assert.equal(await q.read32(v1 + PAGE_SIZE + 4), 78);
  assert.equal(await s.p.read32(s.va + PAGE_SIZE + 4), 78);
  await B.driver.detach(q.pid, v1);
  assert.equal(await q.read32(v2 + 4), 77, 'the other attachment still works');
  await B.driver.detach(q.pid, v2);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(s.segid);
  assert.equal(A.driver.status().rmap.entries, 0);
});

test('two segments of one process, attached on two instances', async () => {
  const p = await spawn(A);
  const va = await p.mmap(4 * PAGE_SIZE, PROT_RW);
  await p.write32(va, 1);
  await p.write32(va + 2 * PAGE_SIZE, 3);
  const s1 = await A.driver.make(p.pid, va, 2 * PAGE_SIZE, 0o600);
  const s2 = await A.driver.make(p.pid, va + 2 * PAGE_SIZE, 2 * PAGE_SIZE, 0o600);
  assert.notEqual(s1, s2);
  const b = await attach(B, s1, 'rw', 2);
  const cc = await attach(C, s2, 'rw', 2);
  assert.equal(await b.q.read32(b.va), 1);
  assert.equal(await cc.q.read32(cc.va), 3);
  await b.q.write32(b.va, 11);
  await cc.q.write32(cc.va, 33);
  assert.equal(await p.read32(va), 11);
  assert.equal(await p.read32(va + 2 * PAGE_SIZE), 33);
  await A.driver.remove(s1);
  await A.driver.remove(s2);
});

test("fork then copy-on-write: attachers see the parent's new page", async () => {
  const s = await source(A, 1, 0o600, 0x51);
  const t = await attach(B, s.segid, 'r', 1);
  assert.equal(await t.q.read32(t.va), 0x51);
  const child = await s.p.fork();
  procs.push(child);
  await s.p.write32(s.va, 0x52); // parent writes: COW break gives the parent a new page
  assert.equal(await t.q.read32(t.va), 0x52, 'attacher follows the parent');
  assert.equal(await child.read32(s.va), 0x51, 'child keeps the old page');
  await child.write32(s.va, 0x53);
  assert.equal(await t.q.read32(t.va), 0x52, "a child write does not reach the parent's segment");
  await child.exit(0);
  await A.driver.remove(s.segid);
});

test('permission matrix (System V IPC style, checked at the home)', async () => {
  const cases = PERMISSION_MATRIX;
  for (const [mode, access, uid, gid, want] of cases) {
    const s = await source(A, 1, mode);
    const q = await spawn(B, uid, gid);
    const before = B.driver.status().grants.length;
    if (want) {
      await expectCode(B.driver.get(q.pid, s.segid, access), want);
      assert.equal(B.driver.status().grants.length, before, 'refusal changes nothing');
    } else {
      const apid = await B.driver.get(q.pid, s.segid, access);
      await B.driver.release(q.pid, apid);
    }
    await A.driver.remove(s.segid);
  }
});

test('a read-only attachment refuses writes (SIGSEGV)', async () => {
  const s = await source(A, 1);
  const t = await attach(B, s.segid, 'r', 1);
  assert.equal(await t.q.read32(t.va), 0x1000);
  await expectCode(t.q.write32(t.va, 1), 'SIGSEGV');
  await A.driver.remove(s.segid);
});

test('a hole in the source is SIGBUS at the attacher; mapped pages work', async () => {
  const p = await spawn(A);
  const va = await p.mmap(3 * PAGE_SIZE, PROT_RW);
  await p.write32(va, 5);
  await p.write32(va + 2 * PAGE_SIZE, 7);
  await p.munmap(va + PAGE_SIZE, PAGE_SIZE);
  const segid = await A.driver.make(p.pid, va, 3 * PAGE_SIZE, 0o600);
  const t = await attach(B, segid, 'rw', 3);
  assert.equal(await t.q.read32(t.va), 5);
  await expectCode(t.q.read32(t.va + PAGE_SIZE), 'SIGBUS');
  assert.equal(await t.q.read32(t.va + 2 * PAGE_SIZE), 7);
  await A.driver.remove(segid);
});

test('source munmap, then touch: SIGBUS', async () => {
  const s = await source(A, 2);
  const t = await attach(B, s.segid, 'rw', 2);
  assert.equal(await t.q.read32(t.va + PAGE_SIZE), 0x1001);
  await s.p.munmap(s.va, 2 * PAGE_SIZE);
  assert.equal(A.driver.status().rmap.entries, 0, 'munmap invalidated the remote copy');
  await expectCode(t.q.read32(t.va + PAGE_SIZE), 'SIGBUS');
  await A.driver.remove(s.segid);
});

test("source exit: segment-gone, the attacher's next touch is SIGBUS", async () => {
  const s = await source(A, 1);
  const t = await attach(C, s.segid, 'rw', 1);
  await t.q.write32(t.va, 9);
  await s.p.exit(0);
  assert.equal(
    A.driver.status().segments.find((x) => x.segid === s.segid),
    undefined,
  );
  await expectCode(t.q.read32(t.va), 'SIGBUS');
  await expectCode(A.driver.remove(s.segid), 'E_NO_SEGMENT');
  await C.driver.detach(t.q.pid, t.va);
});

test('bad arguments fail with stable codes and change no state', async () => {
  const s = await source(A, 2);
  const q = await spawn(B);
  const snapshot = () =>
    JSON.stringify({ a: A.driver.status(), b: B.driver.status() }, (k, v) =>
      k === 'counters' || k === 'peers' ? undefined : v,
    );
  const before = snapshot();
  await expectCode(A.driver.make(s.p.pid, s.va + 1, PAGE_SIZE, 0o600), 'EINVAL');
  await expectCode(A.driver.make(s.p.pid, s.va, 0, 0o600), 'EINVAL');
  await expectCode(A.driver.make(s.p.pid, s.va, PAGE_SIZE, 0o1777), 'EINVAL');
  await expectCode(A.driver.make(999_999, s.va, PAGE_SIZE, 0o600), 'ESRCH');
  await expectCode(A.driver.remove('a:999'), 'E_NO_SEGMENT');
  await expectCode(A.driver.remove(`${B.name}:1`), 'E_NO_SEGMENT');
  await expectCode(B.driver.get(q.pid, 'a:999', 'r'), 'E_NO_SEGMENT');
  await expectCode(B.driver.get(q.pid, 'garbage', 'r'), 'EINVAL');
  await expectCode(B.driver.get(q.pid, s.segid, 'x' as 'r'), 'EINVAL');
  await expectCode(B.driver.attach(q.pid, 'a:a999', 0, PAGE_SIZE), 'E_NO_PERMIT');
  await expectCode(B.driver.detach(q.pid, 0x1234000), 'EINVAL');
  await expectCode(B.driver.release(q.pid, 'a:a999'), 'E_NO_PERMIT');
  assert.equal(snapshot(), before);
  const apid = await B.driver.get(q.pid, s.segid, 'r');
  const mid = snapshot();
  await expectCode(B.driver.attach(q.pid, apid, 1, PAGE_SIZE), 'EINVAL');
  await expectCode(B.driver.attach(q.pid, apid, PAGE_SIZE, 2 * PAGE_SIZE), 'E_RANGE');
  await expectCode(B.driver.attach(q.pid, apid, 0, 0), 'EINVAL');
  await expectCode(B.driver.attach(q.pid + 1, apid, 0, PAGE_SIZE), 'E_NO_PERMIT');
  assert.equal(snapshot(), mid);
  await B.driver.release(q.pid, apid);
  await A.driver.remove(s.segid);
  await expectCode(A.driver.remove(s.segid), 'E_NO_SEGMENT');
});

test('many-to-one writers: every increment from two instances lands exactly once', async () => {
  const s = await source(A, 2, 0o600, 0);
  const tb = await attach(B, s.segid, 'rw', 2);
  const tc = await attach(C, s.segid, 'rw', 2);
  const N = 25;
  const inc = async (q: Proc, addr: number) => {
    for (let i = 0; i < N; i++) {
      for (;;) {
        const v = await q.read32(addr);
        if ((await q.cas32(addr, v, v + 1)) === v) break;
      }
    }
  };
  await Promise.all([
    inc(tb.q, tb.va + 16),
    inc(tc.q, tc.va + 16),
    inc(s.p, s.va + 16),
    inc(tb.q, tb.va + PAGE_SIZE),
  ]);
  assert.equal(await s.p.read32(s.va + 16), 3 * N);
  assert.equal(await tc.q.read32(tc.va + PAGE_SIZE), 1 + N, 'page 1 word 0 started at 1');
  await A.driver.remove(s.segid);
});

test('same-instance attachment maps the source frames directly and stays coherent with a remote writer', async () => {
  const s = await source(A, 2, 0o600, 0x10);
  const local = await attach(A, s.segid, 'rw', 2);
  const remote = await attach(B, s.segid, 'rw', 2);
  assert.equal(await local.q.read32(local.va), 0x10);
  const pfnLocal = A.kernel.pfnOf(local.q.pid, local.va);
  assert.equal(pfnLocal, A.kernel.pfnOf(s.p.pid, s.va), 'local attach maps the source frame itself');
  await remote.q.write32(remote.va, 0x20); // remote write: the local attacher's PTE is zapped
  assert.equal(await local.q.read32(local.va), 0x20, 'local read recalls the remote writer');
  await local.q.write32(local.va + 4, 0x21); // local write invalidates the remote reader
  assert.equal(await remote.q.read32(remote.va + 4), 0x21);
  assert.equal(await s.p.read32(s.va + 4), 0x21);
  await s.p.write32(s.va + PAGE_SIZE, 0x30);
  assert.equal(await local.q.read32(local.va + PAGE_SIZE), 0x30);
  assert.equal(await remote.q.read32(remote.va + PAGE_SIZE), 0x30);
  await A.driver.detach(local.q.pid, local.va);
  await A.driver.remove(s.segid);
  await expectCode(remote.q.read32(remote.va), 'SIGBUS');
});

test('unload: segments are withdrawn (attachers get SIGBUS), notifiers unregistered; load again works', async () => {
  const s = await source(A, 1);
  const t = await attach(B, s.segid, 'r', 1);
  assert.equal(await t.q.read32(t.va), 0x1000);
  const registered = () => A.kernel.stats().rmapNotifiers.registered;
  assert.equal(registered(), 1);
  await A.driver.unload();
  assert.equal(registered(), 0, 'the rmap notifier is unregistered');
  assert.equal(A.driver.status().segments.length, 0);
  await expectCode(t.q.read32(t.va), 'SIGBUS');
  await expectCode(A.driver.make(s.p.pid, s.va, PAGE_SIZE, 0o600), 'E_NOT_LOADED');
  await A.kernel.loadModule(A.driver);
  const segid = await A.driver.make(s.p.pid, s.va, PAGE_SIZE, 0o600);
  const t2 = await attach(B, segid, 'r', 1);
  assert.equal(await t2.q.read32(t2.va), 0x1000);
  await A.driver.remove(segid);
});

test('exit releases the permits a process holds, local and remote, with its attachments', async () => {
  // XPMEM semantics: permits belong to the process. A remote attacher that exits (with a dirty page)
  // and a local getter that never attached leave nothing behind: no grant, no permit at the home,
  // no reverse-map entry, and the dirty data is home.
  const { p, va, segid } = await source(A, 2, 0o644, 0x700);
  const { q: remote, va: rva } = await attach(B, segid, 'rw', 2);
  await remote.write32(rva + PAGE_SIZE, 0x7ff); // B holds page 1 dirty
  const local = await spawn(A);
  await A.driver.get(local.pid, segid, 'r'); // a permit, never attached
  const seg = A.driver.status().segments.find((s) => s.segid === segid);
  assert.equal(seg?.permits, 2);
  await remote.exit(0);
  await local.exit(0);
  await until(
    () => (A.driver.status().segments.find((s) => s.segid === segid)?.permits ?? -1) === 0,
    'the home drops both permits',
  );
  assert.equal(
    A.driver.status().segments.find((s) => s.segid === segid)?.permits,
    0,
    'the home dropped both permits',
  );
  assert.deepEqual(
    B.driver.status().grants.filter((g) => g.segid === segid),
    [],
    'no grant left at the attacher',
  );
  assert.deepEqual(
    A.driver.status().grants.filter((g) => g.segid === segid),
    [],
    'no grant left at the home',
  );
  assert.equal(A.driver.status().rmap.entries, 0);
  assert.equal(await p.read32(va + PAGE_SIZE), 0x7ff, "the exiting attacher's dirty page came home");
  await A.driver.remove(segid);
});

test('leak check: after detach, release, remove and exit, nothing is pinned or exported', async () => {
  for (const p of procs) await p.exit(0);
  for (const n of c.nodes) {
    await until(() => n.driver.status().attachments.length === 0 || true, 'settle');
    checkDriver(n, new Set(c.nodes.map((x) => x.name)));
    checkExportedFrames(n, 2048);
    assert.equal(n.driver.status().rmap.entries, 0, `${n.name}: reverse map empty`);
    assert.equal(n.driver.status().cachedPages, 0, `${n.name}: no cached remote page left`);
    await checkKernel(n.kernel);
  }
});

async function until(cond: () => boolean, _what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
}
