/**
 * XPMEM's "1..N peers × many pages" and "random order" scenarios, sized for CI: one home and up to
 * 10 attaching instances (real kernels on the in-memory network); every peer reads every page, writes
 * its own slice, and the home sees every write; then operations on several segments run in a
 * seeded random order against a model. Leak check at the end.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import {
  checkDriver,
  checkExportedFrames,
  checkKernel,
  expectCode,
  makeCluster,
  PROT_RW,
  type Proc,
} from './cluster.js';

for (const peers of [1, 4, 10]) {
  test(`${peers} peer(s) × 32 pages: all read, each writes its slice, the home sees every write`, async () => {
    const names = ['h', ...Array.from({ length: peers }, (_, i) => `p${i}`)];
    const c = await makeCluster({ names, frames: 1024, prefault: 8 });
    try {
      const [H, ...P] = c.nodes;
      const PAGES = 32;
      const src = await H.kernel.spawn({ catchSignals: true });
      const va = await src.mmap(PAGES * PAGE_SIZE, PROT_RW);
      for (let i = 0; i < PAGES; i++) await src.write32(va + i * PAGE_SIZE, i);
      const segid = await H.driver.make(src.pid, va, PAGES * PAGE_SIZE, 0o666);
      const atts = await Promise.all(
        P.map(async (n) => {
          const q = await n.kernel.spawn({ catchSignals: true });
          const apid = await n.driver.get(q.pid, segid, 'rw');
          return { n, q, apid, va: await n.driver.attach(q.pid, apid, 0, PAGES * PAGE_SIZE) };
        }),
      );
      const m = c.sent.length;
      await Promise.all(
        atts.map(async (a) => {
          for (let i = 0; i < PAGES; i++) assert.equal(await a.q.read32(a.va + i * PAGE_SIZE), i);
        }),
      );
      // prefault 8: 32 pages take at most 4 map requests per peer (fewer when the attach prefaulted)
      assert.ok(
        c.sent.slice(m).filter((x) => x.type === 'map').length <= 4 * peers,
        'prefault batches the faults',
      );
      await Promise.all(
        atts.map(async (a, k) => {
          for (let i = k % PAGES; i < PAGES; i += peers)
            await a.q.write32(a.va + i * PAGE_SIZE + 4 * (1 + (k % 8)), 1000 + k);
        }),
      );
      for (let k = 0; k < peers; k++) {
        for (let i = k % PAGES; i < PAGES; i += peers)
          assert.equal(await src.read32(va + i * PAGE_SIZE + 4 * (1 + (k % 8))), 1000 + k);
      }
      for (const a of atts) {
        await a.n.driver.detach(a.q.pid, a.va);
        await a.n.driver.release(a.q.pid, a.apid);
      }
      assert.equal(H.driver.status().rmap.entries, 0);
      await H.driver.remove(segid);
      for (const a of atts) await a.q.exit(0);
      await src.exit(0);
      for (const n of c.nodes) {
        checkDriver(n, new Set(names));
        checkExportedFrames(n, 1024);
        await checkKernel(n.kernel);
      }
    } finally {
      await c.close();
    }
  });
}

test('random order: make / get / attach / write / read / detach / release / remove against a model', async () => {
  const c = await makeCluster();
  try {
    const [A, B, C] = c.nodes;
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const src = await A.kernel.spawn({ catchSignals: true });
    const segs: Array<{ segid: string; va: number; model: number[]; live: boolean }> = [];
    for (let s = 0; s < 4; s++) {
      const va = await src.mmap(4 * PAGE_SIZE, PROT_RW);
      segs.push({
        segid: await A.driver.make(src.pid, va, 4 * PAGE_SIZE, 0o600),
        va,
        model: [0, 0, 0, 0],
        live: true,
      });
    }
    const users: Proc[] = [
      await B.kernel.spawn({ catchSignals: true }),
      await C.kernel.spawn({ catchSignals: true }),
    ];
    const nodesOf = [B, C];
    type Att = { u: number; seg: number; apid: string; va: number | null };
    const atts: Att[] = [];
    for (let step = 0; step < 150; step++) {
      const u = rnd(2);
      const n = nodesOf[u];
      const q = users[u];
      const si = rnd(segs.length);
      const seg = segs[si];
      const mine = atts.filter((a) => a.u === u && a.seg === si);
      switch (rnd(7)) {
        case 0: {
          if (!seg.live) {
            await expectCode(n.driver.get(q.pid, seg.segid, 'rw'), 'E_NO_SEGMENT');
            break;
          }
          atts.push({ u, seg: si, apid: await n.driver.get(q.pid, seg.segid, 'rw'), va: null });
          break;
        }
        case 1: {
          const a = mine.find((x) => x.va === null);
          if (!a) break;
          if (!seg.live) break;
          a.va = await n.driver.attach(q.pid, a.apid, 0, 4 * PAGE_SIZE);
          break;
        }
        case 2:
        case 3: {
          const a = mine.find((x) => x.va !== null);
          if (!a || a.va === null) break;
          const p = rnd(4);
          if (!seg.live) {
            await expectCode(q.read32(a.va + p * PAGE_SIZE), 'SIGBUS');
            break;
          }
          if (rnd(2)) {
            const v = step * 10 + p;
            await q.write32(a.va + p * PAGE_SIZE, v);
            seg.model[p] = v;
          } else assert.equal(await q.read32(a.va + p * PAGE_SIZE), seg.model[p], `step ${step}`);
          break;
        }
        case 4: {
          const a = mine.find((x) => x.va !== null);
          if (!a || a.va === null) break;
          await n.driver.detach(q.pid, a.va);
          a.va = null;
          break;
        }
        case 5: {
          const a = mine[0];
          if (!a) break;
          await n.driver.release(q.pid, a.apid);
          atts.splice(atts.indexOf(a), 1);
          await expectCode(n.driver.attach(q.pid, a.apid, 0, PAGE_SIZE), 'E_NO_PERMIT');
          break;
        }
        case 6: {
          if (rnd(4) !== 0) {
            // the home reads through the source: sees the model
            if (seg.live)
              assert.equal(await src.read32(seg.va + (step % 4) * PAGE_SIZE), seg.model[step % 4]);
            break;
          }
          if (seg.live) {
            await A.driver.remove(seg.segid);
            seg.live = false;
          } else await expectCode(A.driver.remove(seg.segid), 'E_NO_SEGMENT');
          break;
        }
      }
    }
    for (const a of atts) {
      const n = nodesOf[a.u];
      if (a.va !== null) await n.driver.detach(users[a.u].pid, a.va);
      await n.driver.release(users[a.u].pid, a.apid);
    }
    for (const s of segs) if (s.live) await A.driver.remove(s.segid);
    for (const u of users) await u.exit(0);
    await src.exit(0);
    for (const n of c.nodes) {
      assert.equal(n.driver.status().rmap.entries, 0);
      assert.equal(n.driver.status().cachedPages, 0);
      assert.equal(n.driver.status().attachments.length, 0);
      checkDriver(n, new Set(['a', 'b', 'c']));
      await checkKernel(n.kernel);
    }
  } finally {
    await c.close();
  }
});
