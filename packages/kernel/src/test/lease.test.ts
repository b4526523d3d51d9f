/**
 * Driver API additions: leased PTEs (remote copies usable only while their lease is valid, checked by
 * the process itself), munmapDriver (xpmem_detach) and deviceEntryAt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type DriverFault, type MmHandle, type Pfn, PROT_READ, PROT_WRITE } from '../api.js';
import type { Kernel } from '../index.js';
import { PROGRAMS, pageOf, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;

/** A driver frame filled with `byte`. */
function driverFrame(k: Kernel, byte: number): Pfn {
  const pfn = k.api.allocPage();
  k.api.writePageData(pfn, pageOf(byte));
  return pfn;
}

/** A driver VMA whose fault op counts faults and runs the current handler. */
function driverVma(k: Kernel, mm: MmHandle, pages: number) {
  const st = {
    faults: [] as DriverFault[],
    closes: [] as Array<[number, number]>,
    onFault: async (_f: DriverFault): Promise<void> => {},
    base: 0,
  };
  st.base = k.api.mmapDriver(mm, pages * 4096, RW, {
    fault: async (f) => {
      st.faults.push(f);
      await st.onFault(f);
    },
    close: (_mm, s, e) => void st.closes.push([s, e]),
  });
  return st;
}

test('lease API: slots, validation, leaseValid follows setLease', () =>
  withKernel({}, async (k) => {
    assert.equal(k.api.leaseSlots, 256);
    for (const bad of [0, 256, -1, 1.5, Number.NaN])
      assert.throws(() => k.api.setLease(bad, 1000), { code: 'EINVAL' });
    assert.throws(() => k.api.leaseValid(0), { code: 'EINVAL' });
    assert.throws(() => k.api.setLease(1, Number.NaN), { code: 'EINVAL' });
    assert.equal(k.api.leaseValid(1), false, 'a slot starts expired');
    k.api.setLease(1, 10_000);
    assert.equal(k.api.leaseValid(1), true);
    assert.equal(k.api.leaseValid(2), false, 'slots are independent');
    k.api.setLease(1, 0);
    assert.equal(k.api.leaseValid(1), false);
    k.api.setLease(255, Number.POSITIVE_INFINITY);
    assert.equal(k.api.leaseValid(255), true);
    k.api.setLease(255, -5);
    assert.equal(k.api.leaseValid(255), false);
  }));

test('a leased PTE is used while its lease is valid; after expiry the access faults into the driver until renewed', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const d = driverVma(k, p.mm, 3);
    const base = d.base;
    const f1 = driverFrame(k, 0x11);
    const f2 = driverFrame(k, 0x22);
    const slot = 7;
    k.api.setLease(slot, 10_000);
    assert.ok(k.api.installPte(p.mm, base, f1, { write: false, lease: slot }));
    assert.ok(k.api.installPte(p.mm, base + 4096, f2, { write: false })); // not leased
    assert.ok(k.api.installPte(p.mm, base + 8192, f1, { write: false })); // same frame, not leased
    k.check();

    assert.equal(await p.read32(base), 0x11111111);
    assert.ok((await p.read(base, 4096)).every((x) => x === 0x11));
    assert.equal(d.faults.length, 0, 'valid lease: no fault');

    k.api.setLease(slot, 0);
    assert.equal(k.api.leaseValid(slot), false);
    assert.equal(await p.read32(base + 4096), 0x22222222, 'an entry without a lease is unaffected');
    assert.equal(await p.read32(base + 8192), 0x11111111, 'the same frame mapped without a lease too');
    assert.equal(d.faults.length, 0);

    d.onFault = async (f) => {
      assert.equal(f.address, base);
      assert.equal(f.write, false);
      assert.equal(k.api.leaseValid(slot), false, 'the fault op runs with the lease expired');
      k.api.setLease(slot, 10_000); // renewed: the access retries and succeeds
    };
    assert.equal(await p.read32(base), 0x11111111);
    assert.equal(d.faults.length, 1, 'exactly one fault, on the present but expired entry');
    assert.equal(k.stats().counters.leaseFaults, 1);
    assert.equal(await p.read32(base), 0x11111111);
    assert.equal(d.faults.length, 1, 'renewed: no further fault');

    // A fault op that returns without renewing: the access faults again (here twice more).
    k.api.setLease(slot, 0);
    let n = 0;
    d.onFault = async () => {
      if (++n === 3) k.api.setLease(slot, 10_000);
    };
    assert.ok((await p.read(base, 8)).every((x) => x === 0x11));
    assert.equal(d.faults.length, 4);
    assert.equal(k.stats().counters.leaseFaults, 4);
    k.check();

    const zapped = await k.api.zapDriverRange(p.mm, base, base + 3 * 4096);
    assert.equal(zapped.length, 3);
    k.api.putPage(f1);
    k.api.putPage(f2);
    k.check();
    assert.equal(k.stats().driverFrames, 0);
  }));

test('installPte with a lease: bad slot or a process page is EINVAL; a same-frame install sets the lease bit and keeps it', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 5);
    const d = driverVma(k, p.mm, 2);
    const base = d.base;
    const f = driverFrame(k, 0x33);
    for (const bad of [0, 256, 2.5])
      assert.throws(() => k.api.installPte(p.mm, base, f, { write: false, lease: bad }), { code: 'EINVAL' });
    const anon = await k.api.getUserPage(p.mm, a, { write: false });
    assert.throws(() => k.api.installPte(p.mm, base, anon, { write: false, lease: 1 }), { code: 'EINVAL' });
    k.api.putPage(anon);
    k.check();

    // Installed without a lease, then again with one: the entry becomes leased (slot 9 is expired).
    assert.ok(k.api.installPte(p.mm, base, f, { write: false }));
    assert.equal(await p.read32(base), 0x33333333);
    assert.ok(k.api.installPte(p.mm, base, f, { write: false, lease: 9 }));
    d.onFault = async () => k.api.setLease(9, 10_000);
    assert.equal(await p.read32(base), 0x33333333);
    assert.equal(d.faults.length, 1, 'the same-frame install made the entry leased');

    // Again without a lease (a write upgrade): the lease bit stays.
    assert.ok(k.api.installPte(p.mm, base, f, { write: true }));
    k.api.setLease(9, 0);
    d.onFault = async () => k.api.setLease(9, 10_000);
    await p.write32(base, 0x44);
    assert.equal(d.faults.length, 2, 'still leased after an install without a lease');
    assert.equal(d.faults[1].write, true);
    assert.equal(await p.read32(base), 0x44);

    // The slot belongs to the frame: another leased install of it moves its entries to that slot.
    k.api.setLease(10, 10_000);
    assert.ok(k.api.installPte(p.mm, base + 4096, f, { write: false, lease: 10 }));
    k.api.setLease(9, 0);
    assert.equal(await p.read32(base), 0x44, 'follows slot 10 now');
    assert.equal(d.faults.length, 2);
    k.check();

    // Write-protect keeps the lease bit; a write then faults (not writable) and a read does not.
    const wp = await k.api.wrprotectDriverRange(p.mm, base, base + 8192);
    assert.deepEqual(
      wp.map((w) => [w.address - base, w.dirty]),
      [
        [0, true],
        [4096, false],
      ],
    );
    assert.equal(await p.read32(base), 0x44);
    k.api.setLease(10, 0);
    d.onFault = async () => k.api.setLease(10, 10_000);
    assert.equal(await p.read32(base), 0x44);
    assert.equal(d.faults.length, 3, 'still leased after write-protect');
    k.check();

    await p.exit();
    k.api.putPage(f);
    k.check();
  }));

test('a process reading a leased page in a tight loop faults within one further access of setLease(slot, 0)', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const ctrVa = await p.mmap(4096, RW);
    await p.write32(ctrVa, 0);
    const ctrPfn = k.pfnOf(p.pid, ctrVa)!;
    const ctrBytes = k.api.pageBytes(ctrPfn);
    const ctr = new Int32Array(ctrBytes.buffer, ctrBytes.byteOffset, 1); // physical memory (shared)
    const d = driverVma(k, p.mm, 1);
    const f = driverFrame(k, 0);
    const slot = 3;
    const STOP = 0x5709;
    k.api.setLease(slot, 60_000);
    assert.ok(k.api.installPte(p.mm, d.base, f, { write: false, lease: slot }));
    let atFault = -1;
    d.onFault = async () => {
      atFault = Atomics.load(ctr, 0); // the process is asleep in its fault: the count is exact
      const words = new Int32Array(k.api.pageBytes(f).buffer, k.api.pageBytes(f).byteOffset, 1);
      Atomics.store(words, 0, STOP);
      k.api.setLease(slot, 60_000);
    };
    const run = p.run<number>(PROGRAMS, 'leaseSpin', {
      addr: d.base,
      ctr: ctrVa,
      stop: STOP,
      max: 50_000_000,
    });
    while (Atomics.load(ctr, 0) < 1000) await new Promise((r) => setImmediate(r));
    assert.equal(d.faults.length, 0, 'no fault while the lease is valid');
    k.api.setLease(slot, 0);
    const atExpiry = Atomics.load(ctr, 0);
    const total = await run;
    assert.equal(d.faults.length, 1);
    assert.ok(total < 50_000_000, 'the loop stopped (it saw the fault op write STOP)');
    // After setLease returned the process had finished `atExpiry` reads; read atExpiry+1 may have
    // passed its lease check before the store; read atExpiry+2 starts after the kernel read the
    // counter, hence after the store, and must fault.
    assert.ok(
      atFault >= atExpiry && atFault <= atExpiry + 1,
      `faulted after ${atFault - atExpiry} more reads`,
    );
    assert.equal(total, atFault + 1);
    await k.api.zapDriverRange(p.mm, d.base, d.base + 4096);
    k.api.putPage(f);
    k.check();
  }));

test('munmapDriver: range released and closed, PTEs zapped with their frame references, touch gives SIGSEGV', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn({ catchSignals: true });
    const d = driverVma(k, p.mm, 4);
    const base = d.base;
    const f = driverFrame(k, 0x55);
    k.api.setLease(1, 10_000);
    d.onFault = async (fl) => {
      k.api.installPte(fl.mm, fl.address, f, { write: fl.write, lease: 1 });
    };
    for (let i = 0; i < 4; i++) assert.equal(await p.read32(base + i * 4096), 0x55555555);
    assert.equal(k.api.pageInfo(f).refcount, 5);
    assert.equal(k.api.pageInfo(f).mapcount, 4);
    const plain = await p.mmap(4096, RW);

    await assert.rejects(k.api.munmapDriver(p.mm, base + 1, base + 4096), { code: 'EINVAL' });
    await assert.rejects(k.api.munmapDriver(p.mm, base, base), { code: 'EINVAL' });
    await assert.rejects(k.api.munmapDriver(p.mm, plain, plain + 4096), { code: 'EINVAL' });
    await assert.rejects(k.api.munmapDriver(p.mm, base, base + 5 * 4096), { code: 'EINVAL' });
    assert.deepEqual(d.closes, []);

    await k.api.munmapDriver(p.mm, base, base + 2 * 4096);
    assert.deepEqual(d.closes, [[base, base + 2 * 4096]]);
    assert.equal(k.api.pageInfo(f).refcount, 3);
    assert.equal(k.api.pageInfo(f).mapcount, 2);
    k.check();
    const faults = d.faults.length;
    assert.equal(await p.run(PROGRAMS, 'touchCatch', { addr: base, write: false }), 'SIGSEGV');
    assert.equal(await p.run(PROGRAMS, 'touchCatch', { addr: base + 4096, write: false }), 'SIGSEGV');
    assert.equal(d.faults.length, faults, 'the driver sees no fault for the removed range');
    assert.equal(await p.read32(base + 2 * 4096), 0x55555555, 'the rest is still mapped');

    // The address range can be reused.
    assert.equal(
      k.api.mmapDriver(p.mm, 2 * 4096, RW, { fault: async () => {}, close: () => {} }, base),
      base,
    );
    await k.api.munmapDriver(p.mm, base, base + 2 * 4096);
    assert.equal(await p.mmap(2 * 4096, RW, base), base, 'an ordinary mmap at the same address');
    await p.write32(base, 7);
    assert.equal(await p.read32(base), 7);

    // The rest, then exit: munmapDriver on an exiting or exited mm is a quiet no-op.
    await k.api.munmapDriver(p.mm, base + 2 * 4096, base + 4 * 4096);
    assert.deepEqual(d.closes.at(-1), [base + 2 * 4096, base + 4 * 4096]);
    assert.equal(k.api.pageInfo(f).refcount, 1, 'only the driver reference is left');
    k.check();
    const mm = p.mm;
    await p.exit();
    await k.api.munmapDriver(mm, base, base + 4096);
    k.api.putPage(f);
    k.check();
    assert.equal(k.stats().driverFrames, 0);
  }));

test('munmapDriver of part of a driver VMA splits it; an mm exiting meanwhile makes it a no-op', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn({ catchSignals: true });
    const d = driverVma(k, p.mm, 3);
    const f = driverFrame(k, 0x66);
    d.onFault = async (fl) => void k.api.installPte(fl.mm, fl.address, f, { write: false });
    for (let i = 0; i < 3; i++) await p.read32(d.base + i * 4096);
    await k.api.munmapDriver(p.mm, d.base + 4096, d.base + 2 * 4096);
    assert.deepEqual(d.closes, [[d.base + 4096, d.base + 2 * 4096]]);
    assert.equal(await p.run(PROGRAMS, 'touchCatch', { addr: d.base + 4096, write: false }), 'SIGSEGV');
    assert.equal(await p.read32(d.base), 0x66666666);
    assert.equal(await p.read32(d.base + 2 * 4096), 0x66666666);
    k.check();
    const exiting = p.exit();
    await k.api.munmapDriver(p.mm, d.base, d.base + 4096); // exiting: resolves, no error
    await exiting;
    assert.deepEqual(
      d.closes.slice(1).sort((x, y) => x[0] - y[0]),
      [
        [d.base, d.base + 4096],
        [d.base + 2 * 4096, d.base + 3 * 4096],
      ],
    );
    k.api.putPage(f);
    k.check();
  }));

test('deviceEntryAt reports the device entry actually in place', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(2 * 4096, RW);
    await p.write32(a, 1);
    const dev = k.api.registerDevice({ fault: async (f) => k.api.clearDeviceEntry(f.mm, f.address) });
    assert.equal(k.api.deviceEntryAt(p.mm, a), null, 'normal PTE');
    assert.equal(k.api.deviceEntryAt(p.mm, a + 4096), null, 'nothing mapped yet');
    assert.equal(k.api.deviceEntryAt(p.mm, a + 100 * 4096), null, 'no VMA');
    const pfn = await k.api.setDeviceEntry(p.mm, a, dev, 'readonly');
    assert.deepEqual(k.api.deviceEntryAt(p.mm, a), { pfn, mode: 'readonly', owner: dev });
    assert.deepEqual(
      k.api.deviceEntryAt(p.mm, a + 123),
      { pfn, mode: 'readonly', owner: dev },
      'rounded down',
    );
    await k.api.setDeviceEntry(p.mm, a, dev, 'none');
    assert.deepEqual(k.api.deviceEntryAt(p.mm, a), { pfn, mode: 'none', owner: dev });
    k.api.clearDeviceEntry(p.mm, a);
    assert.equal(k.api.deviceEntryAt(p.mm, a), null, 'cleared');
    k.check();

    // Reclaim replaces a readonly device entry (no rmap notifier needed) by a swap entry.
    await k.api.setDeviceEntry(p.mm, a, dev, 'readonly');
    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.equal(k.api.deviceEntryAt(p.mm, a), null, 'swap entry');
    assert.equal(await p.read32(a), 1);
    assert.equal(k.api.deviceEntryAt(p.mm, a), null, 'swapped in: a normal PTE');
    k.check();

    // A driver VMA never holds device entries.
    const drv = k.api.mmapDriver(p.mm, 4096, RW, { fault: async () => {}, close: () => {} });
    assert.equal(k.api.deviceEntryAt(p.mm, drv), null);
    const mm = p.mm;
    await p.exit();
    assert.throws(() => k.api.deviceEntryAt(mm, a), { code: 'ESRCH' });
  }));
