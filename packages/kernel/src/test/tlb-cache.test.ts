/**
 * The process's software TLB (access.ts, "Software TLB") against the shootdown: a process reads one
 * word in a tight loop through read32 (TLB hits, no window) while the kernel moves the page away —
 * migration, a driver zap, a 'none' device entry — and, once the call has returned, POISONS the old
 * frame (as a reuse would). The process must never read the poison: the shootdown's TLB generation
 * move must have dropped the cached translation. Each scenario also runs with that move skipped
 * (fault injection `skipTlbInvalidate`: the window wait still happens) and must then see the poison,
 * which proves the test catches a TLB the flush does not invalidate.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Pfn, PROT_READ, PROT_WRITE } from '../api.js';
import { type Kernel, PAGE_SIZE as PAGE, type Process } from '../index.js';
import type { Kernel as KernelState } from '../kernel.js';
import { pageReferenced } from '../reclaim.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const GOOD = 0x600d600d;
const POISON = 0x0badf00d;
const STOP = 0x5709;
const ROUNDS = 40;
/** Reads per batch of the spinning program (nothing but reads within a batch). */
const BATCH = 20_000;

const state = (k: Kernel) => (k as unknown as { k: KernelState }).k;

/** Every word of frame `pfn` := v (straight into physical memory, as a reuse of the frame would). */
function fill(k: Kernel, pfn: Pfn, v: number): void {
  const words = state(k).phys.words;
  for (let i = 0; i < 1024; i++) Atomics.store(words, pfn * 1024 + i, v);
}

interface Scenario {
  /** The address the process spins on (holding GOOD); `ctr` is a separate ordinary page. */
  addr: number;
  ctr: number;
  /** Move the page away; resolve (after the kernel call returned) with the frame it no longer maps. */
  move(): Promise<Pfn>;
  /** After the poisoning: give the frame back if the scenario owns it. */
  release(old: Pfn): void;
  /** The frame `addr` maps now (to write STOP into). */
  current(): Pfn;
}

type SpinResult = { reads: number; bad: number; firstBad: number; stopped: boolean };

async function spin(k: Kernel, p: Process, s: Scenario, inject: boolean): Promise<SpinResult> {
  state(k).faultInjection.skipTlbInvalidate = inject;
  try {
    const ctrWords = state(k).phys.words;
    const ctrIndex = () => k.pfnOf(p.pid, s.ctr)! * 1024;
    let done = false;
    const run = p
      .run<SpinResult>(PROGRAMS, 'tlbSpin', {
        addr: s.addr,
        ctr: s.ctr,
        good: GOOD,
        stop: STOP,
        max: 200_000_000,
        maxBad: 64,
        batch: BATCH,
      })
      .finally(() => {
        done = true;
      });
    /** Wait (bounded) until the process has done `n` more reads than now, or the run ended. */
    const progress = async (n: number) => {
      const from = Atomics.load(ctrWords, ctrIndex());
      const deadline = Date.now() + 20_000;
      while (!done && Atomics.load(ctrWords, ctrIndex()) < from + n) {
        assert.ok(Date.now() < deadline, 'the spinning process made no progress');
        await new Promise((r) => setImmediate(r));
      }
    };
    await progress(2 * BATCH); // spinning on TLB hits
    for (let i = 0; i < ROUNDS && !done; i++) {
      const old = await s.move();
      fill(k, old, POISON); // the call returned: the old frame is the kernel's to reuse
      await progress(2 * BATCH); // a whole batch of reads after the poisoning
      s.release(old);
    }
    if (!done) fill(k, s.current(), STOP);
    const r = await run;
    return r;
  } finally {
    state(k).faultInjection.skipTlbInvalidate = false;
  }
}

function check(r: SpinResult, inject: boolean, what: string): void {
  if (inject) {
    assert.ok(r.bad > 0, `${what}: without the TLB generation move the stale frame must be read`);
    assert.equal(r.firstBad, POISON, `${what}: the stale read returns the poison`);
  } else {
    assert.equal(r.bad, 0, `${what}: read 0x${r.firstBad.toString(16)} after the call returned`);
    assert.ok(r.stopped, `${what}: the loop saw STOP in the current frame`);
  }
}

for (const inject of [false, true]) {
  const tag = inject ? ' (generation move skipped: must fail)' : '';

  test(`read32 through the TLB never sees a migrated page's old frame${tag}`, { timeout: 120_000 }, () =>
    withKernel({ frames: 256 }, async (k) => {
      const p = await k.spawn();
      const a = await p.mmap(2 * PAGE, RW);
      await p.write32(a, GOOD);
      await p.write32(a + PAGE, 0);
      let migrated = 0;
      const r = await spin(
        k,
        p,
        {
          addr: a,
          ctr: a + PAGE,
          move: async () => {
            const old = k.pfnOf(p.pid, a)!;
            const moved = await k.migratePage(old);
            assert.equal(typeof moved, 'number', `migratePage: ${String(moved)}`);
            migrated++;
            return old;
          },
          release: () => {},
          current: () => k.pfnOf(p.pid, a)!,
        },
        inject,
      );
      check(r, inject, 'migration');
      assert.ok(migrated > 0);
      // poisoned frames are free ones: allocation zeroes them again
      k.check();
    }),
  );

  test(`read32 through the TLB never sees a zapped driver frame${tag}`, { timeout: 120_000 }, () =>
    withKernel({ frames: 256 }, async (k) => {
      const p = await k.spawn();
      const ctr = await p.mmap(PAGE, RW);
      await p.write32(ctr, 0);
      const good = () => k.api.allocPage(new Uint8Array(new Uint32Array(1024).fill(GOOD).buffer));
      let cur = good();
      const base = k.api.mmapDriver(p.mm, PAGE, PROT_READ, {
        fault: async (f) => {
          k.api.installPte(f.mm, f.address, cur, { write: false });
        },
        close: () => {},
      });
      assert.ok(k.api.installPte(p.mm, base, cur, { write: false }));
      const r = await spin(
        k,
        p,
        {
          addr: base,
          ctr,
          move: async () => {
            const old = cur;
            cur = good(); // what the next fault installs
            const zapped = await k.api.zapDriverRange(p.mm, base, base + PAGE);
            assert.deepEqual(
              zapped.map((z) => z.pfn),
              [old],
            );
            return old;
          },
          release: (old) => k.api.putPage(old),
          current: () => cur,
        },
        inject,
      );
      check(r, inject, 'zap');
      await k.api.zapDriverRange(p.mm, base, base + PAGE);
      k.api.putPage(cur);
      k.check();
    }),
  );

  test(
    `read32 through the TLB faults into the device after setDeviceEntries 'none'${tag}`,
    { timeout: 120_000 },
    () =>
      withKernel({ frames: 256 }, async (k) => {
        const p = await k.spawn();
        const a = await p.mmap(2 * PAGE, RW);
        await p.write32(a, GOOD);
        await p.write32(a + PAGE, 0);
        const dev = k.api.registerDevice({
          fault: async (f) => {
            fill(k, k.pfnOf(p.pid, a)!, GOOD); // the device brings the data home
            k.api.clearDeviceEntry(f.mm, f.address);
          },
        });
        const r = await spin(
          k,
          p,
          {
            addr: a,
            ctr: a + PAGE,
            move: async () => {
              const [pfn] = await k.api.setDeviceEntries(p.mm, a, 1, dev, 'none');
              assert.ok(pfn !== null && pfn !== undefined);
              return pfn;
            },
            release: () => {},
            current: () => k.pfnOf(p.pid, a)!,
          },
          inject,
        );
        check(r, inject, 'device entry');
        k.check();
      }),
  );
}

test('readInto across many pages: runs of consecutive frames, scattered frames and mid-range faults all read right', () =>
  withKernel({ frames: 512, swapSlots: 256 }, async (k) => {
    const p = await k.spawn();
    const pages = 40;
    const a = await p.mmap(pages * PAGE, RW);
    const expect = new Uint8Array(pages * PAGE);
    const order = [...Array(pages).keys()];
    // pages 0..19 in order (consecutive frames), 20..39 interleaved with a second mapping (scattered)
    const other = await p.mmap(pages * PAGE, RW);
    for (const i of order) {
      const page = new Uint8Array(PAGE).fill((i * 7 + 1) & 0xff);
      page[0] = i;
      expect.set(page, i * PAGE);
      await p.write(a + i * PAGE, page);
      if (i >= 20) await p.write32(other + i * PAGE, 1);
    }
    // some pages swapped out (faults in the middle of a window's run), some never... all touched
    for (const i of [3, 17, 18, 31])
      assert.equal(await k.reclaimPage(k.pfnOf(p.pid, a + i * PAGE)!), 'reclaimed');
    const from = 100;
    const got = await p.read(a + from, pages * PAGE - from - 50);
    assert.deepEqual(got, expect.subarray(from, pages * PAGE - 50));
    for (const i of [3, 17, 18, 31]) assert.ok(k.pfnOf(p.pid, a + i * PAGE) !== undefined, 'faulted back in');
    k.check();
  }));

test('a young bit cleared by page_referenced is set again by the next read32 (the clear drops the TLB entry)', () =>
  withKernel({ frames: 256 }, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(PAGE, RW);
    await p.write32(a, 7);
    const pfn = k.pfnOf(p.pid, a)!;
    assert.equal(await p.read32(a), 7); // cached in the TLB
    assert.equal(await p.read32(a), 7); // a hit
    assert.equal(pageReferenced(state(k), pfn), true);
    assert.equal(pageReferenced(state(k), pfn), false, 'no access since the clear');
    assert.equal(await p.read32(a), 7);
    assert.equal(pageReferenced(state(k), pfn), true, 'the read after the clear set the young bit again');
    k.check();
  }));
