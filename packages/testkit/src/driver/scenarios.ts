/**
 * XPMEM's test-suite scenarios across three instances, written once over the cluster interface
 * (scenario-cluster.ts) and run on every transport: scenarios-memory.test.ts (real kernels in one
 * process on the in-memory network) and scenarios-ws.test.ts (each instance its own OS process over
 * ws on 127.0.0.1). Like the protocol's compliance suite. The tests share one cluster and run in
 * order; each cleans up after itself and the last one checks that nothing leaked anywhere.
 *
 * Everything here is behaviour a user of the driver would notice (values read, signals, error
 * codes, status) or an invariant the driver and the kernel promise at quiescence; nothing depends on
 * timing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { PERMISSION_MATRIX } from './permission-matrix.js';
import {
  expectCode,
  type InstanceStatus,
  SCENARIO_NODES,
  type ScenarioCluster,
  type ScenarioInstance,
} from './scenario-cluster.js';

/** Seed of the random-order scenario (XPMESH_SCENARIO_SEED to replay a failure). */
const DEFAULT_SEED = 20240611;

export function defineDriverScenarios(transport: string, open: () => Promise<ScenarioCluster>): void {
  describe(`driver scenarios over ${transport}`, () => {
    let cluster: ScenarioCluster | undefined;
    let A: ScenarioInstance;
    let B: ScenarioInstance;
    let C: ScenarioInstance;
    const all = () => [A, B, C];

    before(async () => {
      cluster = await open();
      [A, B, C] = cluster.nodes;
    });
    after(() => cluster?.close());

    const status = (n: ScenarioInstance): Promise<InstanceStatus> => n.status();

    /** A process on `n` with `pages` pages, word 0 of page i = base + i, exported with `mode`. */
    async function source(n: ScenarioInstance, pages: number, o: { mode?: number; base?: number } = {}) {
      const pid = await n.spawn();
      const va = await n.mmap(pid, pages * PAGE_SIZE);
      const base = o.base ?? 0x100;
      await n.writeWords(
        pid,
        va,
        Array.from({ length: pages }, (_, i) => base + i),
      );
      const segid = await n.make(pid, va, pages * PAGE_SIZE, o.mode ?? 0o600);
      return { pid, va, segid };
    }

    /** get + attach of the first `pages` pages of `segid` on `n`, by `pid` or a new process. */
    async function attach(
      n: ScenarioInstance,
      segid: string,
      access: 'r' | 'rw',
      pages: number,
      pid?: number,
    ) {
      const p = pid ?? (await n.spawn());
      const apid = await n.get(p, segid, access);
      const va = await n.attach(p, apid, 0, pages * PAGE_SIZE);
      return { pid: p, apid, va };
    }

    async function detachRelease(n: ScenarioInstance, t: { pid: number; apid: string; va: number }) {
      await n.detach(t.pid, t.va);
      await n.release(t.pid, t.apid);
    }

    /** Every instance quiescent, its driver invariants (flag iff map, pins == unpins, ...) and kernel's hold. */
    async function invariantsHold(): Promise<void> {
      for (const n of all()) {
        await n.quiesce();
        assert.deepEqual(await n.driverCheck(SCENARIO_NODES), [], `${n.name}: driver invariants`);
        assert.deepEqual(await n.kernelCheck(), [], `${n.name}: kernel invariants`);
      }
    }

    /** Poll `cond` (bounded); assert it became true. */
    async function eventually(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
      const t0 = Date.now();
      while (!(await cond())) {
        if (Date.now() - t0 > timeoutMs) assert.fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }

    test('base: read and modify through a remote attachment, both ways; detach shrinks the home map', async () => {
      const s = await source(A, 4, { base: 0x1000 });
      const t = await attach(B, s.segid, 'rw', 4);
      assert.deepEqual(await B.readWords(t.pid, t.va, 4), [0x1000, 0x1001, 0x1002, 0x1003]);
      await B.write32(t.pid, t.va + PAGE_SIZE + 8, 0xbeef);
      assert.equal(await A.read32(s.pid, s.va + PAGE_SIZE + 8), 0xbeef, 'home read recalls the remote write');
      assert.equal(await B.read32(t.pid, t.va + PAGE_SIZE + 8), 0xbeef);
      await A.write32(s.pid, s.va + PAGE_SIZE + 8, 0xcafe);
      assert.equal(await B.read32(t.pid, t.va + PAGE_SIZE + 8), 0xcafe, 'remote read sees the home write');
      assert.ok((await status(A)).rmap.entries > 0, 'the home maps the remote copies');
      await detachRelease(B, t);
      assert.equal((await status(A)).rmap.entries, 0, 'detach shrinks the home map');
      assert.ok((await A.pageStates(s.segid)).every((ps) => ps.state === 'home'));
      await A.remove(s.segid);
      await invariantsHold();
    });

    test('two attachments of one segment in one process see each other', async () => {
      const s = await source(A, 2);
      const q = await B.spawn();
      const apid = await B.get(q, s.segid, 'rw');
      const v1 = await B.attach(q, apid, 0, 2 * PAGE_SIZE);
      const v2 = await B.attach(q, apid, 0, 2 * PAGE_SIZE);
      assert.notEqual(v1, v2);
      assert.equal((await status(B)).attachments.filter((a) => a.pid === q).length, 2);
      await B.write32(q, v1 + 4, 77);
      assert.equal(await B.read32(q, v2 + 4), 77);
      await B.write32(q, v2 + PAGE_SIZE + 4, 78);
      assert.equal(await B.read32(q, v1 + PAGE_SIZE + 4), 78);
      assert.equal(await A.read32(s.pid, s.va + PAGE_SIZE + 4), 78, 'the home sees the write');
      // a byte range across the page boundary, written through one attachment, read through the other
      const bytes = Uint8Array.from(Buffer.from('0102030405060708a1a2a3a4a5a6a7a8', 'hex'));
      await B.write(q, v1 + PAGE_SIZE - 8, bytes);
      assert.deepEqual(await B.read(q, v2 + PAGE_SIZE - 8, 16), bytes);
      assert.deepEqual(await A.read(s.pid, s.va + PAGE_SIZE - 8, 16), bytes);
      await B.detach(q, v1);
      assert.equal(await B.read32(q, v2 + 4), 77, 'the other attachment still works');
      assert.deepEqual(await B.read(q, v2 + PAGE_SIZE - 8, 16), bytes);
      await B.detach(q, v2);
      await B.release(q, apid);
      await A.remove(s.segid);
      assert.equal((await status(A)).rmap.entries, 0);
      assert.equal((await status(B)).attachments.filter((a) => a.pid === q).length, 0);
      await invariantsHold();
    });

    test('two segments of one process, attached on two instances', async () => {
      const p = await A.spawn();
      const va = await A.mmap(p, 4 * PAGE_SIZE);
      await A.write32(p, va, 1);
      await A.write32(p, va + 2 * PAGE_SIZE, 3);
      const s1 = await A.make(p, va, 2 * PAGE_SIZE, 0o600);
      const s2 = await A.make(p, va + 2 * PAGE_SIZE, 2 * PAGE_SIZE, 0o600);
      assert.notEqual(s1, s2);
      const b = await attach(B, s1, 'rw', 2);
      const c = await attach(C, s2, 'rw', 2);
      assert.equal(await B.read32(b.pid, b.va), 1);
      assert.equal(await C.read32(c.pid, c.va), 3);
      await B.write32(b.pid, b.va, 11);
      await C.write32(c.pid, c.va, 33);
      assert.equal(await A.read32(p, va), 11);
      assert.equal(await A.read32(p, va + 2 * PAGE_SIZE), 33);
      // each segment's reverse-map entries belong to its own attacher
      const entries = await A.rmapEntries();
      assert.deepEqual(
        entries.filter((e) => e.segid === s1).map((e) => [e.node, e.page]),
        [['b', 0]],
      );
      assert.deepEqual(
        entries.filter((e) => e.segid === s2).map((e) => [e.node, e.page]),
        [['c', 0]],
      );
      await A.remove(s1);
      await expectCode(B.read32(b.pid, b.va), 'SIGBUS', 'segment 1 removed');
      assert.equal(await C.read32(c.pid, c.va), 33, 'segment 2 unaffected by the removal of segment 1');
      await A.remove(s2);
      await expectCode(C.read32(c.pid, c.va), 'SIGBUS', 'segment 2 removed');
      assert.equal((await status(A)).rmap.entries, 0);
      for (const [n, t] of [
        [B, b],
        [C, c],
      ] as const) {
        await detachRelease(n, t); // the home's permit died with the segment
        assert.deepEqual(
          (await status(n)).grants,
          [],
          `${n.name}: release after segment-gone drops the permit`,
        );
      }
      await invariantsHold();
    });

    test("fork then copy-on-write: attachers see the parent's new page, the child keeps its snapshot", async () => {
      const s = await source(A, 1, { base: 0x51 });
      const b = await attach(B, s.segid, 'r', 1);
      const c = await attach(C, s.segid, 'r', 1);
      assert.equal(await B.read32(b.pid, b.va), 0x51);
      assert.equal(await C.read32(c.pid, c.va), 0x51);
      const child = await A.fork(s.pid);
      await A.write32(s.pid, s.va, 0x52); // parent writes: the COW break gives the parent a new page
      assert.equal(await B.read32(b.pid, b.va), 0x52, 'attacher on b follows the parent');
      assert.equal(await C.read32(c.pid, c.va), 0x52, 'attacher on c follows the parent');
      assert.equal(await A.read32(child, s.va), 0x51, 'child keeps the old page');
      await A.write32(child, s.va, 0x53);
      assert.equal(await B.read32(b.pid, b.va), 0x52, "a child write does not reach the parent's segment");
      assert.equal(await A.read32(s.pid, s.va), 0x52);
      assert.equal(await A.read32(child, s.va), 0x53);
      await A.exit(child);
      assert.equal(await C.read32(c.pid, c.va), 0x52, "the child's exit leaves the segment alone");
      await detachRelease(B, b);
      await detachRelease(C, c);
      await A.remove(s.segid);
      await invariantsHold();
    });

    test('permission matrix (System V IPC style, checked at the home): refusals change nothing, a read-only attachment refuses writes (SIGSEGV)', async () => {
      const src = await A.spawn();
      const va = await A.mmap(src, PAGE_SIZE);
      await A.write32(src, va, 0x600d);
      const users = new Map<string, number>();
      for (const [mode, access, uid, gid, want] of PERMISSION_MATRIX) {
        const what = `mode 0${mode.toString(8)} ${access} uid ${uid} gid ${gid}`;
        const segid = await A.make(src, va, PAGE_SIZE, mode);
        const key = `${uid}:${gid}`;
        if (!users.has(key)) users.set(key, await B.spawn({ uid, gid }));
        const q = users.get(key) as number;
        const grantsBefore = (await status(B)).grants.length;
        if (want) {
          await expectCode(B.get(q, segid, access), want, what);
          assert.equal(
            (await status(B)).grants.length,
            grantsBefore,
            `${what}: refusal changes nothing at b`,
          );
          const seg = (await status(A)).segments.find((x) => x.segid === segid);
          assert.equal(seg?.permits, 0, `${what}: no permit at the home`);
        } else {
          const t = await attach(B, segid, access, 1, q);
          assert.equal(await B.read32(q, t.va), 0x600d, what);
          if (access === 'r') {
            // a read-only attachment refuses writes, and the refused write changes nothing
            await expectCode(B.write32(q, t.va, 1), 'SIGSEGV', `${what}: write`);
            assert.equal(await A.read32(src, va), 0x600d, `${what}: the refused write changed nothing`);
          } else {
            await B.write32(q, t.va + 4, mode);
            assert.equal(await A.read32(src, va + 4), mode, `${what}: the home sees the write`);
          }
          await detachRelease(B, t);
        }
        await A.remove(segid);
      }
      assert.equal((await status(A)).rmap.entries, 0);
      await invariantsHold();
    });

    test('a hole in the source is SIGBUS at the attacher; mapped pages still work', async () => {
      const p = await A.spawn();
      const va = await A.mmap(p, 3 * PAGE_SIZE);
      await A.write32(p, va, 5);
      await A.write32(p, va + 2 * PAGE_SIZE, 7);
      await A.munmap(p, va + PAGE_SIZE, PAGE_SIZE);
      const segid = await A.make(p, va, 3 * PAGE_SIZE, 0o600);
      const t = await attach(B, segid, 'rw', 3);
      assert.equal(await B.read32(t.pid, t.va), 5);
      await expectCode(B.read32(t.pid, t.va + PAGE_SIZE), 'SIGBUS', 'read of the hole');
      await expectCode(B.write32(t.pid, t.va + PAGE_SIZE, 1), 'SIGBUS', 'write of the hole');
      assert.equal(await B.read32(t.pid, t.va + 2 * PAGE_SIZE), 7);
      await B.write32(t.pid, t.va + 2 * PAGE_SIZE + 4, 8);
      assert.equal(await A.read32(p, va + 2 * PAGE_SIZE + 4), 8, 'a mapped page still works both ways');
      assert.equal(await B.read32(t.pid, t.va), 5);
      await detachRelease(B, t);
      await A.remove(segid);
      await invariantsHold();
    });

    test('source munmap, then touch: SIGBUS', async () => {
      const s = await source(A, 2);
      const t = await attach(B, s.segid, 'rw', 2);
      assert.equal(await B.read32(t.pid, t.va + PAGE_SIZE), 0x101);
      await B.write32(t.pid, t.va, 0x1234); // page 0 held for writing by b
      assert.ok((await status(A)).rmap.entries > 0);
      await A.munmap(s.pid, s.va, 2 * PAGE_SIZE);
      assert.equal((await status(A)).rmap.entries, 0, 'munmap invalidated the remote copies');
      await expectCode(B.read32(t.pid, t.va + PAGE_SIZE), 'SIGBUS', 'read after munmap');
      await expectCode(B.read32(t.pid, t.va), 'SIGBUS', 'read of the page b was writing');
      assert.equal((await status(B)).cachedPages, 0, 'b holds no copy');
      await detachRelease(B, t);
      await A.remove(s.segid);
      await invariantsHold();
    });

    test("source exit: the segment is gone, every attacher's next touch is SIGBUS", async () => {
      const s = await source(A, 1);
      const b = await attach(B, s.segid, 'rw', 1);
      const c = await attach(C, s.segid, 'rw', 1);
      await C.write32(c.pid, c.va, 9); // c holds the page dirty
      await A.exit(s.pid);
      assert.equal(
        (await status(A)).segments.find((x) => x.segid === s.segid),
        undefined,
      );
      await expectCode(B.read32(b.pid, b.va), 'SIGBUS');
      await expectCode(C.read32(c.pid, c.va), 'SIGBUS');
      await expectCode(A.remove(s.segid), 'E_NO_SEGMENT');
      await detachRelease(B, b);
      await detachRelease(C, c);
      await invariantsHold();
    });

    test('bad arguments fail with stable codes and change no state', async () => {
      const s = await source(A, 2);
      const q = await B.spawn();
      const snapshot = async () =>
        JSON.stringify({ a: await status(A), b: await status(B) }, (k, v) =>
          k === 'counters' || k === 'peers' ? undefined : v,
        );
      const before = await snapshot();
      await expectCode(A.make(s.pid, s.va + 1, PAGE_SIZE, 0o600), 'EINVAL');
      await expectCode(A.make(s.pid, s.va, 0, 0o600), 'EINVAL');
      await expectCode(A.make(s.pid, s.va, PAGE_SIZE, 0o1777), 'EINVAL');
      await expectCode(A.make(999_999, s.va, PAGE_SIZE, 0o600), 'ESRCH');
      await expectCode(A.remove('a:999'), 'E_NO_SEGMENT');
      await expectCode(A.remove(`${B.name}:1`), 'E_NO_SEGMENT');
      await expectCode(B.get(q, 'a:999', 'r'), 'E_NO_SEGMENT');
      await expectCode(B.get(q, 'garbage', 'r'), 'EINVAL');
      await expectCode(B.get(q, s.segid, 'x' as 'r'), 'EINVAL');
      await expectCode(B.attach(q, 'a:a999', 0, PAGE_SIZE), 'E_NO_PERMIT');
      await expectCode(B.detach(q, 0x1234000), 'EINVAL');
      await expectCode(B.release(q, 'a:a999'), 'E_NO_PERMIT');
      assert.equal(await snapshot(), before);
      const apid = await B.get(q, s.segid, 'r');
      const mid = await snapshot();
      await expectCode(B.attach(q, apid, 1, PAGE_SIZE), 'EINVAL');
      await expectCode(B.attach(q, apid, PAGE_SIZE, 2 * PAGE_SIZE), 'E_RANGE');
      await expectCode(B.attach(q, apid, 0, 0), 'EINVAL');
      await expectCode(B.attach(q + 1, apid, 0, PAGE_SIZE), 'E_NO_PERMIT');
      assert.equal(await snapshot(), mid);
      await B.release(q, apid);
      await A.remove(s.segid);
      await expectCode(A.remove(s.segid), 'E_NO_SEGMENT');
      await invariantsHold();
    });

    test('many-to-one writers: every increment from three instances lands exactly once', async () => {
      const s = await source(A, 2, { base: 0 });
      const b = await attach(B, s.segid, 'rw', 2);
      const c = await attach(C, s.segid, 'rw', 2);
      const N = 25;
      await Promise.all([
        B.incr(b.pid, b.va + 16, N),
        C.incr(c.pid, c.va + 16, N),
        A.incr(s.pid, s.va + 16, N),
        B.incr(b.pid, b.va + PAGE_SIZE, N),
      ]);
      assert.equal(await A.read32(s.pid, s.va + 16), 3 * N);
      assert.equal(await C.read32(c.pid, c.va + 16), 3 * N);
      assert.equal(await C.read32(c.pid, c.va + PAGE_SIZE), 1 + N, 'page 1 word 0 started at 1');
      await detachRelease(B, b);
      await detachRelease(C, c);
      await A.remove(s.segid);
      await invariantsHold();
    });

    test('same-instance attachment maps the source frames directly and stays coherent with a remote writer', async () => {
      const s = await source(A, 2, { base: 0x10 });
      const local = await attach(A, s.segid, 'rw', 2);
      const remote = await attach(B, s.segid, 'rw', 2);
      assert.equal(await A.read32(local.pid, local.va), 0x10);
      const pfn = await A.pfnOf(local.pid, local.va);
      assert.notEqual(pfn, null);
      assert.equal(pfn, await A.pfnOf(s.pid, s.va), 'local attach maps the source frame itself');
      await B.write32(remote.pid, remote.va, 0x20); // remote write: the local attacher's PTE is zapped
      assert.equal(await A.read32(local.pid, local.va), 0x20, 'local read recalls the remote writer');
      await A.write32(local.pid, local.va + 4, 0x21); // local write invalidates the remote reader
      assert.equal(await B.read32(remote.pid, remote.va + 4), 0x21);
      assert.equal(await A.read32(s.pid, s.va + 4), 0x21);
      await A.write32(s.pid, s.va + PAGE_SIZE, 0x30);
      assert.equal(await A.read32(local.pid, local.va + PAGE_SIZE), 0x30);
      assert.equal(await B.read32(remote.pid, remote.va + PAGE_SIZE), 0x30);
      await A.detach(local.pid, local.va);
      await A.remove(s.segid);
      await expectCode(B.read32(remote.pid, remote.va), 'SIGBUS');
      await detachRelease(B, remote);
      await A.release(local.pid, local.apid);
      await invariantsHold();
    });

    test('exit releases the permits a process holds, local and remote, with its attachments', async () => {
      // XPMEM semantics: permits belong to the process. A remote attacher that exits (with a dirty
      // page) and a local getter that never attached leave nothing behind: no grant, no permit at the
      // home, no reverse-map entry, and the dirty data is home.
      const s = await source(A, 2, { mode: 0o644, base: 0x700 });
      const remote = await attach(B, s.segid, 'rw', 2);
      await B.write32(remote.pid, remote.va + PAGE_SIZE, 0x7ff); // b holds page 1 dirty
      const local = await A.spawn();
      await A.get(local, s.segid, 'r'); // a permit, never attached
      const permits = async () => (await status(A)).segments.find((x) => x.segid === s.segid)?.permits;
      assert.equal(await permits(), 2);
      await B.exit(remote.pid);
      await A.exit(local);
      await eventually(async () => (await permits()) === 0, 'the home drops both permits');
      assert.deepEqual(
        (await status(B)).grants.filter((g) => g.segid === s.segid),
        [],
        'no grant left at the attacher',
      );
      assert.deepEqual(
        (await status(A)).grants.filter((g) => g.segid === s.segid),
        [],
        'no grant left at the home',
      );
      assert.equal((await status(A)).rmap.entries, 0);
      assert.equal(
        await A.read32(s.pid, s.va + PAGE_SIZE),
        0x7ff,
        "the exiting attacher's dirty page came home",
      );
      await A.remove(s.segid);
      await invariantsHold();
    });

    const PAGES = 64;
    for (const n of [1, 4, 10]) {
      test(`${n} attacher process(es) on b and c × ${PAGES} pages: all read every stamp, one write per page, all see it`, async () => {
        const stamp = (i: number) => (0x5a000000 | (n << 16) | i) >>> 0;
        const s = await source(A, PAGES, { base: stamp(0), mode: 0o666 });
        const atts = await Promise.all(
          Array.from({ length: n }, async (_, k) => {
            const node = k % 2 === 0 ? B : C;
            return { node, k, ...(await attach(node, s.segid, 'rw', PAGES)) };
          }),
        );
        const expected = Array.from({ length: PAGES }, (_, i) => stamp(i));
        await Promise.all(
          atts.map(async (a) =>
            assert.deepEqual(
              await a.node.readWords(a.pid, a.va, PAGES),
              expected,
              `attacher ${a.k} on ${a.node.name}: every page's stamp`,
            ),
          ),
        );
        // page i is written once, by attacher i % n (at word 1), all writers at the same time
        const written = (i: number) => (0x7b000000 | ((i % n) << 8) | i) >>> 0;
        await Promise.all(
          atts.map((a) =>
            a.node.writeWords(
              a.pid,
              a.va + a.k * PAGE_SIZE + 4,
              Array.from({ length: Math.ceil((PAGES - a.k) / n) }, (_, j) => written(a.k + j * n)),
              n * PAGE_SIZE,
            ),
          ),
        );
        const rewritten = Array.from({ length: PAGES }, (_, i) => written(i));
        assert.deepEqual(await A.readWords(s.pid, s.va + 4, PAGES), rewritten, 'the home sees every write');
        await Promise.all(
          atts.map(async (a) => {
            assert.deepEqual(
              await a.node.readWords(a.pid, a.va + 4, PAGES),
              rewritten,
              `attacher ${a.k} on ${a.node.name} sees every write`,
            );
            assert.deepEqual(
              await a.node.readWords(a.pid, a.va, PAGES),
              expected,
              `attacher ${a.k} on ${a.node.name}: the stamps are intact`,
            );
          }),
        );
        for (const a of atts) {
          await detachRelease(a.node, a);
          await a.node.exit(a.pid);
        }
        assert.equal((await status(A)).rmap.entries, 0, 'detach empties the home map');
        await A.remove(s.segid);
        await A.exit(s.pid);
        await invariantsHold();
      });
    }

    test('random order: seeded interleaving of reads and writes by five processes on three instances, against a sequential model', async (t) => {
      const seed = Number(process.env.XPMESH_SCENARIO_SEED ?? DEFAULT_SEED);
      t.diagnostic(`seed ${seed} (XPMESH_SCENARIO_SEED to replay)`);
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
        { name: 'a:source', node: A, pid: s.pid, va: s.va },
        { name: 'a:local', node: A, pid: local.pid, va: local.va },
        { name: 'b:1', node: B, pid: b1.pid, va: b1.va },
        { name: 'b:2', node: B, pid: b2.pid, va: b2.va },
        { name: 'c:1', node: C, pid: c1.pid, va: c1.va },
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
          await a.node.write32(a.pid, addr, v); // completes before the next operation is issued
          model[page][word] = v;
          writes++;
        } else assert.equal(await a.node.read32(a.pid, addr), model[page][word], `${where}: read`);
      }
      const now = (await status(A)).counters;
      const delta = (k: keyof typeof now) => (now[k] as number) - (c0[k] as number);
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
            await a.node.readWords(a.pid, a.va + page * PAGE_SIZE, WORDS, 4),
            model[page],
            `final values seen by ${a.name}, page ${page}`,
          );
      for (const [n, att] of [
        [A, local],
        [B, b1],
        [B, b2],
        [C, c1],
      ] as const)
        await detachRelease(n, att);
      assert.equal((await status(A)).rmap.entries, 0);
      await A.remove(s.segid);
      await invariantsHold();
    });

    test('unload: segments are withdrawn (attachers get SIGBUS), notifiers unregistered; load again works', async () => {
      const s = await source(A, 1, { base: 0x1000 });
      const t = await attach(B, s.segid, 'r', 1);
      assert.equal(await B.read32(t.pid, t.va), 0x1000);
      assert.equal((await status(A)).kernel.rmapNotifiers, 1, "the driver's rmap notifier is registered");
      await A.unload();
      assert.equal((await status(A)).kernel.rmapNotifiers, 0, 'the rmap notifier is unregistered');
      assert.deepEqual((await status(A)).segments, []);
      await expectCode(B.read32(t.pid, t.va), 'SIGBUS');
      await expectCode(A.make(s.pid, s.va, PAGE_SIZE, 0o600), 'E_NOT_LOADED');
      await A.load();
      const segid = await A.make(s.pid, s.va, PAGE_SIZE, 0o600);
      const t2 = await attach(B, segid, 'r', 1);
      assert.equal(await B.read32(t2.pid, t2.va), 0x1000);
      await detachRelease(B, t2);
      await detachRelease(B, t);
      await A.remove(segid);
      await invariantsHold();
    });

    test('leak check: after detach, release, remove and exit everywhere, nothing is pinned, mapped or exported', async () => {
      for (const n of all()) await n.exitAll();
      for (const n of all()) {
        await n.quiesce();
        const st = await status(n);
        assert.deepEqual(st.attachments, [], `${n.name}: no attachment left`);
        assert.deepEqual(st.grants, [], `${n.name}: no permit left`);
        assert.deepEqual(st.segments, [], `${n.name}: no segment left`);
        assert.equal(st.counters.pins, st.counters.unpins, `${n.name}: driver pins == unpins`);
        assert.equal(st.rmap.entries, 0, `${n.name}: reverse map empty`);
        assert.equal(st.rmap.frames, 0, `${n.name}: no exported frame in the map`);
        assert.deepEqual(await n.rmapEntries(), [], `${n.name}: no rmap entry`);
        assert.deepEqual(await n.exportedFrames(), [], `${n.name}: no PG_external_rmap frame`);
        assert.equal(st.cachedPages, 0, `${n.name}: no cached remote page left`);
        assert.equal(st.kernel.driverFrames, 0, `${n.name}: no driver frame left`);
        assert.equal(st.kernel.pins, 0, `${n.name}: no pinned frame in the kernel`);
        assert.equal(st.kernel.processes, 0, `${n.name}: every process exited`);
        assert.equal(st.counters.lostDirtyPages, 0, `${n.name}: no dirty page lost`);
        assert.deepEqual(st.fences, [], `${n.name}: nobody fenced`);
        assert.deepEqual(await n.driverCheck(SCENARIO_NODES), [], `${n.name}: driver invariants`);
        assert.deepEqual(await n.kernelCheck(), [], `${n.name}: kernel invariants`);
      }
    });

    test('an instance dies holding the only dirty copy of a page: it is fenced, the page reverts, nothing of it is left', async () => {
      // After the leak check (which asserts that nobody was fenced): c is dead for good from here.
      const s = await source(A, 2, { base: 0x100 });
      const b = await attach(B, s.segid, 'r', 2);
      assert.equal(await B.read32(b.pid, b.va + PAGE_SIZE), 0x101);
      const c = await attach(C, s.segid, 'rw', 1);
      await C.write32(c.pid, c.va, 0xc0ffee); // c holds page 0 dirty, the only copy of that write
      await cluster?.kill(C.name);
      // the home notices (closed socket or silent heartbeats), fences c, and reverts the page
      assert.equal(await A.read32(s.pid, s.va), 0x100, 'the page reverted to its last home version');
      assert.equal(await B.read32(b.pid, b.va), 0x100, 'a surviving attacher reads the reverted page');
      assert.equal(await B.read32(b.pid, b.va + PAGE_SIZE), 0x101, 'pages c never held are untouched');
      await A.quiesce();
      const st = await status(A);
      assert.equal(st.counters.lostDirtyPages, 1, 'the lost write is counted');
      assert.equal(st.lost.length, 1, 'and reported (lost-dirty event)');
      assert.ok(st.fences.length >= 1, 'c was fenced');
      assert.ok(
        (await A.rmapEntries()).every((e) => e.node !== C.name),
        'no reverse-map entry left for the dead instance',
      );
      await detachRelease(B, b);
      await A.remove(s.segid);
      for (const n of [A, B]) {
        await n.quiesce();
        assert.deepEqual(await n.driverCheck(['a', 'b']), [], `${n.name}: driver invariants without c`);
        assert.deepEqual(await n.kernelCheck(), [], `${n.name}: kernel invariants`);
      }
    });
  });
}
