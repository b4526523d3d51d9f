/**
 * The TLB-shootdown proof: processes hammer pages whose every word carries (page index, version)
 * while the kernel reclaims (swaps out) and migrates those very pages underneath them. A frame
 * reused, copied or written out while a process was still inside an access through a stale PTE
 * would show up as a torn page (mixed versions) or a foreign stamp (another page's index).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_READ, PROT_WRITE } from '../api.js';
import type { Process } from '../index.js';
import { PROGRAMS, rng, withKernel } from './helpers.js';

const PAGES = 24;

async function stampPages(p: Process, base: number): Promise<void> {
  const buf = new Uint8Array(4096);
  const w = new Uint32Array(buf.buffer);
  for (let i = 0; i < PAGES; i++) {
    w.fill((i << 20) >>> 0);
    await p.write(base + i * 4096, buf);
  }
}

test(
  'stamp test: no torn or foreign page while reclaim and migration run under the processes',
  { timeout: 120_000 },
  () =>
    withKernel({ frames: 1024, swapSlots: 1024 }, async (k) => {
      const procs = [await k.spawn(), await k.spawn()];
      const bases: number[] = [];
      for (const p of procs) {
        const b = await p.mmap(PAGES * 4096, PROT_READ | PROT_WRITE);
        await stampPages(p, b);
        bases.push(b);
      }
      const runs = procs.map((p, i) =>
        p.run<{ reads: number; writes: number; errors: string[] }>(PROGRAMS, 'stampHammer', {
          base: bases[i],
          pages: PAGES,
          iters: 40_000,
          seed: 17 + i,
          writeEvery: i === 0 ? 5 : 0,
        }),
      );
      let done = false;
      const all = Promise.all(runs).finally(() => {
        done = true;
      });
      const r = rng(99);
      let reclaimed = 0;
      let migrated = 0;
      let steps = 0;
      while (!done && steps < 20_000) {
        steps++;
        const i = Math.floor(r() * procs.length);
        const va = bases[i] + Math.floor(r() * PAGES) * 4096;
        const pfn = k.pfnOf(procs[i].pid, va);
        if (pfn === undefined) {
          await new Promise((res) => setImmediate(res));
          continue;
        }
        if (r() < 0.5) {
          if ((await k.reclaimPage(pfn)) === 'reclaimed') reclaimed++;
        } else if (typeof (await k.migratePage(pfn)) === 'number') migrated++;
      }
      const results = await all;
      for (const res of results) assert.deepEqual(res.errors, []);
      assert.ok(results[0].writes > 0 && results[1].reads > 0);
      assert.ok(reclaimed > 20, `reclaimed ${reclaimed}`);
      assert.ok(migrated > 20, `migrated ${migrated}`);
      k.check();
      // Every page still carries its own stamp after the storm.
      for (let i = 0; i < procs.length; i++) {
        assert.deepEqual(await procs[i].run(PROGRAMS, 'stampVerify', { base: bases[i], pages: PAGES }), []);
      }
      const s = k.stats().counters;
      console.log(
        `stamp: ${results[0].reads + results[1].reads} reads, ${results[0].writes} writes, ${reclaimed} reclaimed, ` +
          `${migrated} migrated, ${s.shootdownWaits} shootdown waits, ${s.swapIns} swap-ins`,
      );
    }),
);

test(
  'stamp test with fork: the child keeps its snapshot while the parent writes (COW) under reclaim and migration',
  { timeout: 120_000 },
  () =>
    withKernel({ frames: 1024, swapSlots: 1024 }, async (k) => {
      const parent = await k.spawn();
      const base = await parent.mmap(PAGES * 4096, PROT_READ | PROT_WRITE);
      await stampPages(parent, base);
      const child = await parent.fork();
      const procs = [parent, child];
      const runs = procs.map((p, i) =>
        p.run<{ reads: number; writes: number; errors: string[] }>(PROGRAMS, 'stampHammer', {
          base,
          pages: PAGES,
          iters: 30_000,
          seed: 5 + i,
          writeEvery: i === 0 ? 3 : 0, // the child only reads: it must see version 0 everywhere, forever
        }),
      );
      let done = false;
      const all = Promise.all(runs).finally(() => {
        done = true;
      });
      const r = rng(7);
      let ops = 0;
      while (!done && ops < 20_000) {
        ops++;
        const p = procs[Math.floor(r() * 2)];
        const pfn = k.pfnOf(p.pid, base + Math.floor(r() * PAGES) * 4096);
        if (pfn === undefined) {
          await new Promise((res) => setImmediate(res));
          continue;
        }
        if (r() < 0.5) await k.reclaimPage(pfn);
        else await k.migratePage(pfn);
      }
      const results = await all;
      for (const res of results) assert.deepEqual(res.errors, []);
      // Sharing was broken under the writer: by a COW fault, or — when reclaim had moved the shared
      // page to swap first (1 run in 4 reclaims every page before the parent's first write) — by the
      // swap-in, which gives each process its own copy. Either way the child's snapshot held (above).
      const c = k.stats().counters;
      assert.ok(c.cowFaults + c.cowReuse + c.swapIns > 0, JSON.stringify(c));
      k.check();
    }),
);
