/**
 * Device entries do not pin a page: reclaim and migration unmap them (the 2008 design: reclaim →
 * local rmap walk → rmap notifier → driver invalidates remotes, brings a remote writer's data home
 * → swap out / copy). The test plays the driver: a device for the home PTE's device entries, a
 * global rmap notifier with its own reverse map, and a per-mm notifier that records the order.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Pfn, PROT_READ, PROT_WRITE } from '../api.js';
import type { Kernel } from '../index.js';
import type { Process } from '../process.js';
import { pageOf, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;
const A = 0x41;
const B = 0x42;

interface RmapCall {
  pfn: Pfn;
  reason: string;
  locked: boolean;
  homeMapped: boolean;
  deviceFlag: boolean;
  violations: string[];
}

/** A test driver exporting one page of `p` at `addr` to a pretend remote instance. */
async function fakeXpmem(k: Kernel, p: Process, addr: number) {
  const log: string[] = [];
  const calls: RmapCall[] = [];
  const exported = new Set<Pfn>();
  /** What the pretend remote holds: nothing, a read copy, or the page for writing (with data). */
  let remote: { mode: 'none' } | { mode: 'read' } | { mode: 'write'; data: Uint8Array } = { mode: 'none' };
  let fail = false;
  const devFaults: Array<{ write: boolean }> = [];

  const dev = k.api.registerDevice({
    fault: async (f) => {
      devFaults.push({ write: f.write });
      const pfn = k.pfnOf(p.pid, f.address);
      if (pfn === undefined) return;
      if (remote.mode === 'write') {
        await k.api.lockPage(pfn);
        k.api.writePageData(pfn, remote.data); // recall: the writer's data comes home
        k.api.setPageDirty(pfn);
        k.api.unlockPage(pfn);
      }
      remote = { mode: 'none' };
      exported.delete(pfn);
      await k.api.lockPage(pfn);
      if (k.api.pageExported(pfn)) k.api.unexportPage(pfn);
      k.api.unlockPage(pfn);
      k.api.clearDeviceEntry(f.mm, f.address);
    },
  });

  const rmapReg = k.api.rmapNotifierRegister({
    invalidatePage: async (pfn, reason) => {
      log.push(`rmap:${reason}`);
      calls.push({
        pfn,
        reason,
        locked: k.api.pageInfo(pfn).flags.includes('locked'),
        homeMapped: k.pfnOf(p.pid, addr) === pfn,
        deviceFlag: k.api.pageInfo(pfn).flags.includes('device'),
        violations: k.violations({ quiescent: false }),
      });
      await new Promise((r) => setTimeout(r, 2)); // "send invalidations, wait for acks"
      if (fail) return { ok: false, reason: 'remote did not ack' };
      let dirty = false;
      if (remote.mode === 'write') {
        k.api.writePageData(pfn, remote.data); // dirty data from the ack goes INTO THE FRAME
        dirty = true;
      }
      if (reason !== 'clean') {
        remote = { mode: 'none' };
        exported.delete(pfn);
      }
      return { ok: true, dirty };
    },
    isExported: (pfn) => exported.has(pfn),
  });

  const mmReg = k.api.mmuNotifierRegister(p.mm, {
    invalidateRangeStart: (r) => {
      log.push(`start:${r.event}`);
      return undefined;
    },
    invalidateRangeEnd: (r) => {
      log.push(`end:${r.event}`);
    },
  });

  return {
    dev,
    log,
    calls,
    devFaults,
    exported,
    setFail(v: boolean) {
      fail = v;
    },
    /** Grant the remote a read copy ('readonly' home entry) or the page for writing ('none'). */
    async grant(mode: 'read' | 'write', data?: Uint8Array): Promise<Pfn> {
      const pfn = await k.api.getUserPage(p.mm, addr, { write: mode === 'write' });
      await k.api.lockPage(pfn);
      k.api.exportPage(pfn); // before the driver's own reverse map
      exported.add(pfn);
      k.api.unlockPage(pfn);
      remote = mode === 'write' ? { mode: 'write', data: data ?? pageOf(0) } : { mode: 'read' };
      await k.api.setDeviceEntry(p.mm, addr, dev, mode === 'write' ? 'none' : 'readonly');
      k.api.putPage(pfn);
      return pfn;
    },
    async unload() {
      await mmReg.unregister();
      await rmapReg.unregister();
    },
  };
}

async function setup(k: Kernel) {
  const p = await k.spawn();
  const a = await p.mmap(4096, RW);
  await p.write(a, pageOf(A));
  const d = await fakeXpmem(k, p, a);
  return { p, a, d };
}

const flagsOf = (k: Kernel, pfn: Pfn) => k.pageInfo(pfn).flags;

test("reclaim of a page with a 'readonly' device entry: local walk, then rmap notifier once, swap-out; data reads back", () =>
  withKernel({}, async (k) => {
    const { p, a, d } = await setup(k);
    const pfn = await d.grant('read');
    assert.ok(flagsOf(k, pfn).includes('device'));
    assert.equal(await p.read32(a), 0x41414141, 'reads proceed locally in readonly mode');
    k.check();
    d.log.length = 0;
    const swapOuts = k.stats().counters.swapOuts;

    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.deepEqual(
      d.log,
      ['start:reclaim', 'end:reclaim', 'rmap:reclaim'],
      'rmap notifier after the local walk',
    );
    assert.equal(d.calls.length, 1);
    const c = d.calls[0]!;
    assert.equal(c.reason, 'reclaim');
    assert.ok(c.locked, 'page lock held during the rmap notifier');
    assert.ok(!c.homeMapped, 'the device entry was unmapped before the notifier ran');
    assert.ok(!c.deviceFlag, 'device accounting updated with the PTE');
    assert.deepEqual(c.violations, [], 'check() exact mid-reclaim');
    assert.equal(k.pfnOf(p.pid, a), undefined, 'home PTE is a swap entry');
    assert.equal(k.stats().counters.swapOuts, swapOuts + 1);
    assert.ok(flagsOf(k, pfn).includes('free'));
    k.check();

    k.api.clearDeviceEntry(p.mm, a); // no device entry any more: a no-op
    k.check();
    assert.ok(
      (await p.read(a, 4096)).every((x) => x === A),
      'data reads back on fault',
    );
    const np = k.pfnOf(p.pid, a)!;
    assert.ok(!flagsOf(k, np).includes('device'), 'swapped-in page has a normal PTE');
    assert.ok(!flagsOf(k, np).includes('external_rmap'));
    assert.deepEqual(d.devFaults, [], 'the device was never asked');
    await p.write32(a, 7);
    assert.equal(await p.read32(a), 7);
    assert.deepEqual(d.devFaults, []);
    k.check();
    await d.unload();
  }));

test("reclaim of a page with a 'none' device entry: the notifier writes the remote data into the frame; swap-in reads it", () =>
  withKernel({}, async (k) => {
    const { p, a, d } = await setup(k);
    const pfn = await d.grant('write', pageOf(B));
    assert.ok(flagsOf(k, pfn).includes('device'));
    assert.ok(k.pageInfo(pfn).flags.includes('external_rmap'));
    k.check();
    d.log.length = 0;

    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.deepEqual(d.log, ['start:reclaim', 'end:reclaim', 'rmap:reclaim']);
    assert.equal(d.calls.length, 1);
    assert.ok(d.calls[0]!.locked);
    assert.ok(!d.calls[0]!.homeMapped);
    assert.deepEqual(d.calls[0]!.violations, []);
    assert.equal(k.pfnOf(p.pid, a), undefined);
    k.check();

    assert.ok(
      (await p.read(a, 4096)).every((x) => x === B),
      "the process reads the remote writer's NEW data",
    );
    assert.deepEqual(d.devFaults, [], 'no device fault: the page came home through reclaim');
    const np = k.pfnOf(p.pid, a)!;
    assert.ok(!flagsOf(k, np).includes('device'));
    k.api.clearDeviceEntry(p.mm, a); // stays a no-op on a normal PTE
    assert.equal(await p.read32(a), 0x42424242);
    k.check();
    await d.unload();
  }));

test('rmap notifier failure: page kept, the DEVICE entry restored (mode, owner, accounting), flag kept, counted', () =>
  withKernel({}, async (k) => {
    const { p, a, d } = await setup(k);
    const pfn = await d.grant('write', pageOf(B));
    d.setFail(true);
    assert.equal(await k.reclaimPage(pfn), 'external_failed');
    assert.equal(k.pfnOf(p.pid, a), pfn, 'same frame mapped again');
    assert.ok(flagsOf(k, pfn).includes('device'), 'device entry restored');
    assert.ok(flagsOf(k, pfn).includes('external_rmap'), 'flag kept');
    assert.equal(k.stats().counters.reclaim.external_failed, 1);
    assert.equal(k.stats().rmapNotifiers.failures, 1);
    k.check();

    assert.equal(await k.migratePage(pfn), 'external_failed');
    assert.equal(k.pfnOf(p.pid, a), pfn);
    assert.ok(flagsOf(k, pfn).includes('device'));
    assert.equal(k.stats().rmapNotifiers.failures, 2);
    k.check();

    // Still a 'none' entry of our device: an access faults into it, which recalls the data.
    assert.deepEqual(d.devFaults, []);
    assert.equal(await p.read32(a), 0x42424242);
    assert.deepEqual(d.devFaults, [{ write: false }]);
    assert.ok(!flagsOf(k, pfn).includes('device'));
    k.check();

    // 'readonly' entry, failure: restored as readonly (reads proceed without a device fault).
    d.setFail(false);
    await d.grant('read');
    d.setFail(true);
    assert.equal(await k.reclaimPage(pfn), 'external_failed');
    assert.ok(flagsOf(k, pfn).includes('device'));
    assert.equal(await p.read32(a), 0x42424242);
    assert.equal(d.devFaults.length, 1, 'readonly restored: reads do not fault');
    k.check();
    d.setFail(false);
    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.equal(await p.read32(a), 0x42424242);
    k.check();
    await d.unload();
  }));

test("migration of pages with 'readonly' and 'none' device entries: copy after the notifier", () =>
  withKernel({}, async (k) => {
    const { p, a, d } = await setup(k);
    // readonly
    const pfn = await d.grant('read');
    d.log.length = 0;
    const np = await k.migratePage(pfn);
    assert.equal(typeof np, 'number');
    assert.deepEqual(d.log, ['start:migrate', 'end:migrate', 'rmap:migrate']);
    assert.equal(d.calls.at(-1)!.reason, 'migrate');
    assert.ok(d.calls.at(-1)!.locked);
    assert.ok(!d.calls.at(-1)!.homeMapped);
    assert.deepEqual(d.calls.at(-1)!.violations, [], 'check() exact mid-migration');
    assert.equal(k.pfnOf(p.pid, a), np);
    assert.ok(!flagsOf(k, np as Pfn).includes('device'), 'normal PTE after migration');
    assert.ok(!flagsOf(k, np as Pfn).includes('external_rmap'));
    assert.ok(flagsOf(k, pfn).includes('free'));
    k.check();
    assert.ok((await p.read(a, 4096)).every((x) => x === A));
    k.check();

    // none: the remote writer's data is written into the old frame by the notifier, then copied.
    const pfn2 = await d.grant('write', pageOf(B));
    assert.equal(pfn2, np);
    d.log.length = 0;
    const np2 = await k.migratePage(pfn2);
    assert.equal(typeof np2, 'number');
    assert.deepEqual(d.log, ['start:migrate', 'end:migrate', 'rmap:migrate']);
    assert.equal(k.pfnOf(p.pid, a), np2);
    assert.ok(!flagsOf(k, np2 as Pfn).includes('device'));
    assert.ok(flagsOf(k, np2 as Pfn).includes('dirty'), 'remote dirt reported → dirty');
    k.check();
    assert.ok(
      (await p.read(a, 4096)).every((x) => x === B),
      'the NEW data moved with the page',
    );
    await p.write32(a, 9); // read-only PTE after migration: the write fault reuses the page
    assert.equal(k.pfnOf(p.pid, a), np2);
    assert.equal(await p.read32(a), 9);
    assert.deepEqual(d.devFaults, []);
    k.api.clearDeviceEntry(p.mm, a);
    k.check();
    await d.unload();
  }));

test("a 'none' device entry on a page without PG_external_rmap stays unevictable; 'readonly' does not", () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write(a, pageOf(A));
    const dev = k.api.registerDevice({
      fault: async (f) => {
        k.api.clearDeviceEntry(f.mm, f.address);
      },
    });
    const pfn = await k.api.setDeviceEntry(p.mm, a, dev, 'none');
    assert.equal(await k.reclaimPage(pfn), 'unevictable', 'nobody would bring the data home');
    assert.equal(await k.migratePage(pfn), 'unevictable');
    k.check();
    await k.api.setDeviceEntry(p.mm, a, dev, 'readonly');
    k.check();
    assert.equal(await k.reclaimPage(pfn), 'reclaimed', 'readonly: the frame is current');
    k.check();
    assert.ok((await p.read(a, 4096)).every((x) => x === A));
    k.check();
    // PG_driver frames stay unevictable.
    const df = k.api.allocPage();
    assert.equal(await k.reclaimPage(df), 'unevictable');
    assert.equal(await k.migratePage(df), 'unevictable');
    k.api.putPage(df);
    k.check();
  }));

test('pageMkclean leaves device entries alone; the clean callback collects remote dirt', () =>
  withKernel({}, async (k) => {
    const { p, a, d } = await setup(k);
    const pfn = await d.grant('read');
    const r = await k.pageMkclean(pfn);
    assert.equal(r.clean, true);
    assert.ok(flagsOf(k, pfn).includes('device'), "'readonly' entry kept");
    assert.equal(await p.read32(a), 0x41414141);
    assert.equal(d.calls.at(-1)!.reason, 'clean');
    k.check();

    await p.write32(a, 5); // device fault: the test driver takes the page back
    await d.grant('write', pageOf(B));
    const r2 = await k.pageMkclean(pfn);
    assert.deepEqual(r2, { dirty: true, clean: true });
    assert.ok(flagsOf(k, pfn).includes('device'), "'none' entry kept");
    assert.ok(flagsOf(k, pfn).includes('external_rmap'));
    k.check();
    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.equal(await p.read32(a), 0x42424242);
    k.check();
    await d.unload();
  }));
