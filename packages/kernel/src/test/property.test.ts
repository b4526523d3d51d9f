/**
 * Property test: random operation sequences over several processes (spawn, fork, exit, mmap,
 * munmap, mprotect, write, read, reclaim, migration, shrink) against a model of what every process
 * must read back; kernel.check() after every step.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { PROT_NONE, PROT_READ, PROT_WRITE } from '../api.js';
import { createKernel, type Process } from '../index.js';

interface Region {
  start: number;
  pages: number;
  prot: number[]; // per page
  data: number[]; // per page: expected word at offset 0
}
interface ModelProc {
  p: Process;
  regions: Region[];
}

type Op =
  | { t: 'spawn' }
  | { t: 'fork'; i: number }
  | { t: 'exit'; i: number }
  | { t: 'mmap'; i: number; pages: number }
  | { t: 'munmap'; i: number; r: number; off: number; len: number }
  | { t: 'mprotect'; i: number; r: number; off: number; len: number; prot: number }
  | { t: 'write'; i: number; r: number; page: number; v: number }
  | { t: 'read'; i: number; r: number; page: number }
  | { t: 'reclaim'; i: number; r: number; page: number }
  | { t: 'migrate'; i: number; r: number; page: number }
  | { t: 'shrink'; n: number };

const idx = fc.nat(7);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ t: 'spawn' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('fork' as const), i: idx }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('exit' as const), i: idx }) },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('mmap' as const), i: idx, pages: fc.integer({ min: 1, max: 4 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('munmap' as const),
      i: idx,
      r: idx,
      off: idx,
      len: fc.integer({ min: 1, max: 3 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('mprotect' as const),
      i: idx,
      r: idx,
      off: idx,
      len: fc.integer({ min: 1, max: 3 }),
      prot: fc.constantFrom(PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('write' as const),
      i: idx,
      r: idx,
      page: idx,
      v: fc.integer({ min: 1, max: 1e9 }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('read' as const), i: idx, r: idx, page: idx }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('reclaim' as const), i: idx, r: idx, page: idx }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('migrate' as const), i: idx, r: idx, page: idx }) },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant('shrink' as const), n: fc.integer({ min: 1, max: 16 }) }),
  },
);

async function expectSignal(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: { code?: string }) => e.code === 'SIGSEGV');
}

test('random operation sequences keep every invariant and every written value', {
  timeout: 150_000,
}, async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
      const k = await createKernel({
        name: 'prop',
        frames: 96,
        swapSlots: 256,
        watermarks: { min: 4, low: 8, high: 12 },
      });
      const procs: ModelProc[] = [];
      try {
        procs.push({ p: await k.spawn({ catchSignals: true }), regions: [] });
        for (const op of ops) {
          const pick = (i: number) => (procs.length ? procs[i % procs.length] : undefined);
          const region = (mp: ModelProc, r: number) =>
            mp.regions.length ? mp.regions[r % mp.regions.length] : undefined;
          switch (op.t) {
            case 'spawn':
              if (procs.length < 3) procs.push({ p: await k.spawn({ catchSignals: true }), regions: [] });
              break;
            case 'fork': {
              const mp = pick(op.i);
              if (!mp || procs.length >= 3) break;
              const c = await mp.p.fork();
              procs.push({
                p: c,
                regions: mp.regions.map((r) => ({ ...r, prot: [...r.prot], data: [...r.data] })),
              });
              break;
            }
            case 'exit': {
              const mp = pick(op.i);
              if (!mp) break;
              await mp.p.exit();
              procs.splice(procs.indexOf(mp), 1);
              break;
            }
            case 'mmap': {
              const mp = pick(op.i);
              if (!mp) break;
              const start = await mp.p.mmap(op.pages * 4096, PROT_READ | PROT_WRITE);
              mp.regions.push({
                start,
                pages: op.pages,
                prot: Array(op.pages).fill(PROT_READ | PROT_WRITE),
                data: Array(op.pages).fill(0),
              });
              break;
            }
            case 'munmap': {
              const mp = pick(op.i);
              const rg = mp && region(mp, op.r);
              if (!mp || !rg) break;
              const off = op.off % rg.pages;
              const len = Math.min(op.len, rg.pages - off);
              await mp.p.munmap(rg.start + off * 4096, len * 4096);
              mp.regions.splice(mp.regions.indexOf(rg), 1);
              const mk = (s: number, n: number): Region => ({
                start: rg.start + s * 4096,
                pages: n,
                prot: rg.prot.slice(s, s + n),
                data: rg.data.slice(s, s + n),
              });
              if (off > 0) mp.regions.push(mk(0, off));
              if (off + len < rg.pages) mp.regions.push(mk(off + len, rg.pages - off - len));
              break;
            }
            case 'mprotect': {
              const mp = pick(op.i);
              const rg = mp && region(mp, op.r);
              if (!mp || !rg) break;
              const off = op.off % rg.pages;
              const len = Math.min(op.len, rg.pages - off);
              await mp.p.mprotect(rg.start + off * 4096, len * 4096, op.prot);
              for (let j = off; j < off + len; j++) rg.prot[j] = op.prot;
              break;
            }
            case 'write': {
              const mp = pick(op.i);
              const rg = mp && region(mp, op.r);
              if (!mp || !rg) break;
              const pg = op.page % rg.pages;
              const addr = rg.start + pg * 4096;
              if (rg.prot[pg] & PROT_WRITE) {
                await mp.p.write32(addr, op.v);
                rg.data[pg] = op.v;
              } else await expectSignal(mp.p.write32(addr, op.v));
              break;
            }
            case 'read': {
              const mp = pick(op.i);
              const rg = mp && region(mp, op.r);
              if (!mp || !rg) break;
              const pg = op.page % rg.pages;
              const addr = rg.start + pg * 4096;
              if (rg.prot[pg] & PROT_READ) assert.equal(await mp.p.read32(addr), rg.data[pg]);
              else await expectSignal(mp.p.read32(addr));
              break;
            }
            case 'reclaim':
            case 'migrate': {
              const mp = pick(op.i);
              const rg = mp && region(mp, op.r);
              if (!mp || !rg) break;
              const pfn = k.pfnOf(mp.p.pid, rg.start + (op.page % rg.pages) * 4096);
              if (pfn === undefined) break;
              const res = op.t === 'reclaim' ? await k.reclaimPage(pfn) : await k.migratePage(pfn);
              assert.ok(
                res === 'reclaimed' || typeof res === 'number',
                `${op.t} of an ordinary page: ${res}`,
              );
              break;
            }
            case 'shrink':
              await k.shrink(op.n);
              break;
          }
          await k.idle();
          k.check();
        }
        // Final read-back of everything through every process.
        for (const mp of procs) {
          for (const rg of mp.regions) {
            for (let j = 0; j < rg.pages; j++) {
              if (rg.prot[j] & PROT_READ) assert.equal(await mp.p.read32(rg.start + j * 4096), rg.data[j]);
            }
          }
        }
        k.check();
      } finally {
        await k.close();
      }
    }),
    { numRuns: 60, seed: 20261124, endOnFailure: true, includeErrorInReport: true },
  );
});

test('concurrent storms (ops in flight together) keep every invariant', { timeout: 150_000 }, async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(opArb, { minLength: 2, maxLength: 5 }), { minLength: 3, maxLength: 10 }),
      async (batches) => {
        const k = await createKernel({
          name: 'storm',
          frames: 128,
          swapSlots: 256,
          watermarks: { min: 4, low: 8, high: 12 },
        });
        const procs: Process[] = [await k.spawn({ catchSignals: true })];
        const regions = new Map<Process, number[]>();
        const ok = (e: unknown) => {
          const c = (e as { code?: string }).code;
          if (!['SIGSEGV', 'ESRCH', 'EINVAL', 'ENOMEM'].includes(String(c))) throw e;
        };
        try {
          for (const batch of batches) {
            await Promise.all(
              batch.map(async (op) => {
                const p = procs.length ? procs[('i' in op ? op.i : 0) % procs.length] : undefined;
                const rs = p ? (regions.get(p) ?? []) : [];
                const addr =
                  rs.length && 'r' in op
                    ? rs[op.r % rs.length] + (('page' in op ? op.page : 0) % 2) * 4096
                    : 0;
                try {
                  switch (op.t) {
                    case 'spawn':
                      if (procs.length < 3) procs.push(await k.spawn({ catchSignals: true }));
                      break;
                    case 'fork':
                      if (p && procs.length < 3) {
                        const c = await p.fork();
                        procs.push(c);
                        regions.set(c, [...rs]);
                      }
                      break;
                    case 'exit':
                      if (p && procs.length > 1) {
                        procs.splice(procs.indexOf(p), 1);
                        await p.exit();
                      }
                      break;
                    case 'mmap':
                      if (p) regions.set(p, [...rs, await p.mmap(2 * 4096, PROT_READ | PROT_WRITE)]);
                      break;
                    case 'munmap':
                      if (p && addr) await p.munmap(addr, 4096);
                      break;
                    case 'mprotect':
                      if (p && addr) await p.mprotect(addr, 4096, op.prot);
                      break;
                    case 'write':
                      if (p && addr) await p.write32(addr, op.v);
                      break;
                    case 'read':
                      if (p && addr) await p.read32(addr);
                      break;
                    case 'reclaim':
                    case 'migrate': {
                      const pfn = p && addr ? k.pfnOf(p.pid, addr) : undefined;
                      if (pfn !== undefined)
                        await (op.t === 'reclaim' ? k.reclaimPage(pfn) : k.migratePage(pfn));
                      break;
                    }
                    case 'shrink':
                      await k.shrink(op.n);
                      break;
                  }
                } catch (e) {
                  ok(e);
                }
              }),
            );
            await k.idle();
            k.check();
          }
        } finally {
          await k.close();
        }
      },
    ),
    { numRuns: 40, seed: 424242, endOnFailure: true, includeErrorInReport: true },
  );
});
