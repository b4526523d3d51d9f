import assert from 'node:assert/strict';
import { test } from 'node:test';
import { C_SEQ } from '../access.js';
import { type Pfn, PROT_READ, PROT_WRITE } from '../api.js';
import { withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;

test('exportPage requires the page lock (EPERM) and sets PG_external_rmap', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = k.pfnOf(p.pid, a)!;
    assert.throws(() => k.api.exportPage(pfn), { code: 'EPERM' });
    await k.api.lockPage(pfn);
    k.api.exportPage(pfn);
    k.api.unlockPage(pfn);
    assert.ok(k.api.pageExported(pfn));
    assert.throws(() => k.api.unexportPage(pfn), { code: 'EPERM' });
  }));

/** A fake driver reverse map: which pages it exported, and how its rmap callback behaves. */
function fakeDriver(k: Parameters<Parameters<typeof withKernel>[1]>[0]) {
  const exported = new Set<Pfn>();
  const calls: Array<{ pfn: Pfn; reason: string; locked: boolean; mapped: boolean }> = [];
  let behaviour: 'ok' | 'fail' | 'dirty' | 'hang' | 'failOnce' = 'ok';
  let pidForWalk = 0;
  let addrForWalk = 0;
  const reg = k.api.rmapNotifierRegister({
    invalidatePage: async (pfn, reason) => {
      calls.push({
        pfn,
        reason,
        locked: k.api.pageInfo(pfn).flags.includes('locked'),
        mapped: k.pfnOf(pidForWalk, addrForWalk) === pfn,
      });
      if (behaviour === 'hang') return new Promise(() => {});
      if (behaviour === 'fail') return { ok: false, reason: 'remote did not ack' };
      if (behaviour === 'failOnce') {
        behaviour = 'ok';
        return { ok: false, reason: 'transient' };
      }
      if (reason !== 'clean') exported.delete(pfn);
      return { ok: true, dirty: behaviour === 'dirty' };
    },
    isExported: (pfn: Pfn) => exported.has(pfn),
  });
  return {
    exported,
    calls,
    reg,
    set: (b: typeof behaviour) => {
      behaviour = b;
    },
    watch: (pid: number, addr: number) => {
      pidForWalk = pid;
      addrForWalk = addr;
    },
    async export(pfn: Pfn) {
      await k.api.lockPage(pfn);
      k.api.exportPage(pfn); // before adding to the driver's own reverse map
      exported.add(pfn);
      k.api.unlockPage(pfn);
    },
  };
}

test('reclaim of an exported page: rmap notifier runs after the local unmap with the page lock held', () =>
  withKernel({}, async (k) => {
    const d = fakeDriver(k);
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write(a, new Uint8Array(4096).fill(3));
    const pfn = k.pfnOf(p.pid, a)!;
    await d.export(pfn);
    d.watch(p.pid, a);
    k.check();
    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.deepEqual(d.calls, [{ pfn, reason: 'reclaim', locked: true, mapped: false }]);
    assert.ok((await p.read(a, 4096)).every((x) => x === 3));
    assert.ok(!k.api.pageExported(k.pfnOf(p.pid, a)!));
    k.check();
  }));

test('rmap notifier failure: reclaim keeps the page, keeps the flag, counts it; data intact', () =>
  withKernel({}, async (k) => {
    const d = fakeDriver(k);
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 11);
    const pfn = k.pfnOf(p.pid, a)!;
    await d.export(pfn);
    d.set('fail');
    assert.equal(await k.reclaimPage(pfn), 'external_failed');
    assert.equal(k.pfnOf(p.pid, a), pfn, 'same frame mapped again');
    assert.ok(k.api.pageExported(pfn), 'flag kept');
    assert.equal(k.stats().counters.reclaim.external_failed, 1);
    assert.equal(k.stats().rmapNotifiers.failures, 1);
    assert.equal(await p.read32(a), 11);
    await p.write32(a, 12);
    k.check();
    assert.equal(await k.migratePage(pfn), 'external_failed');
    assert.equal(k.pfnOf(p.pid, a), pfn);
    k.check();
    d.set('ok');
    const np = await k.migratePage(pfn);
    assert.equal(typeof np, 'number');
    assert.equal(await p.read32(a), 12);
    k.check();
  }));

test('rmap notifier deadline counts as failure; unregister still waits for the late callback', () =>
  withKernel({ rmapNotifierTimeoutMs: 30, unregisterTimeoutMs: 50 }, async (k) => {
    const d = fakeDriver(k);
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = k.pfnOf(p.pid, a)!;
    await d.export(pfn);
    d.set('hang');
    assert.equal(await k.reclaimPage(pfn), 'external_failed');
    assert.equal(k.stats().rmapNotifiers.deadlines, 1);
    await assert.rejects(
      d.reg.unregister(),
      { code: 'ETIMEDOUT' },
      'bounded: the hung callback never finishes',
    );
    assert.equal(await p.read32(a), 1);
  }));

test('remote dirt reported by the rmap notifier marks the page dirty; pageMkclean retries failures', () =>
  withKernel({}, async (k) => {
    const d = fakeDriver(k);
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = k.pfnOf(p.pid, a)!;
    await d.export(pfn);
    d.set('failOnce');
    const r = await k.pageMkclean(pfn);
    assert.deepEqual(r, { dirty: true, clean: true });
    assert.equal(d.calls.length, 2, 'retried after the failure');
    assert.ok(k.api.pageExported(pfn), 'mkclean does not clear the flag');
    const faults = k.stats().counters.faults;
    await p.write32(a, 2); // write-protected by mkclean: faults again
    assert.ok(k.stats().counters.faults > faults);
    d.set('dirty');
    const r2 = await k.pageMkclean(pfn);
    assert.equal(r2.dirty, true);
    k.check();
  }));

test('getUserPage: faults in, breaks COW on write, pins; errors EFAULT/EACCES', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    const ro = await p.mmap(4096, PROT_READ);
    const pfn = await k.api.getUserPage(p.mm, a, { write: true });
    assert.equal(k.pfnOf(p.pid, a), pfn);
    k.api.pageBytes(pfn)[0] = 0x42;
    assert.equal((await p.read(a, 1))[0], 0x42);
    k.api.putPage(pfn);
    await assert.rejects(k.api.getUserPage(p.mm, 0x1000, { write: false }), { code: 'EFAULT' });
    await assert.rejects(k.api.getUserPage(p.mm, ro, { write: true }), { code: 'EACCES' });
    const c = await p.fork();
    const shared = k.pfnOf(c.pid, a)!;
    const mine = await k.api.getUserPage(c.mm, a, { write: true });
    assert.notEqual(mine, shared, 'write pin broke COW in the child');
    k.api.putPage(mine);
    k.check();
  }));

test('getUserPageNow: the pinned frame when the PTE allows the access as it is, else -1 and no pin', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(2 * 4096, RW);
    const ro = await p.mmap(4096, PROT_READ);
    // never touched: a fault is needed, so -1 (and nothing allocated or pinned)
    assert.equal(k.api.getUserPageNow(p.mm, a, { write: false }), -1);
    assert.equal(k.pfnOf(p.pid, a), undefined);
    await p.write32(a, 7);
    const pfn = k.pfnOf(p.pid, a)!;
    const refs = k.api.pageInfo(pfn).refcount;
    assert.equal(k.api.getUserPageNow(p.mm, a + 5, { write: true }), pfn);
    assert.equal(k.api.pageInfo(pfn).refcount, refs + 1, 'pinned');
    k.api.putPage(pfn);
    // the same frame getUserPage returns
    const slow = await k.api.getUserPage(p.mm, a, { write: false });
    assert.equal(slow, pfn);
    k.api.putPage(slow);
    // a write to a COW-shared page needs the fault (the COW break): -1, no pin
    const c = await p.fork();
    const shared = k.pfnOf(c.pid, a)!;
    const before = k.api.pageInfo(shared).refcount;
    assert.equal(k.api.getUserPageNow(c.mm, a, { write: true }), -1);
    assert.equal(k.api.pageInfo(shared).refcount, before);
    const r = k.api.getUserPageNow(c.mm, a, { write: false });
    assert.equal(r, shared, 'a read of the shared page needs no fault');
    k.api.putPage(r);
    assert.throws(() => k.api.getUserPageNow(p.mm, 0x1000, { write: false }), { code: 'EFAULT' });
    assert.throws(() => k.api.getUserPageNow(p.mm, ro, { write: true }), { code: 'EACCES' });
    k.check();
  }));

test('fork copies exported or pinned pages for the child at once (remote users keep the parent page)', () =>
  withKernel({}, async (k) => {
    const d = fakeDriver(k);
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = k.pfnOf(p.pid, a)!;
    await d.export(pfn);
    const c = await p.fork();
    assert.notEqual(k.pfnOf(c.pid, a), pfn);
    assert.equal(await c.read32(a), 1);
    const faults = k.stats().counters.faults;
    await p.write32(a, 2);
    assert.equal(k.stats().counters.faults, faults, 'parent kept its writable page');
    assert.equal(k.pfnOf(p.pid, a), pfn);
    assert.equal(await c.read32(a), 1);
    k.check();
  }));

test('driver VMA: faults go to the driver, which installs another process page; zap collects dirt; close on munmap/exit', () =>
  withKernel({}, async (k) => {
    const src = await k.spawn();
    const sa = await src.mmap(2 * 4096, RW);
    await src.write32(sa, 5);
    const dst = await k.spawn();
    const closes: Array<[number, number]> = [];
    const pins: Pfn[] = [];
    const base = k.api.mmapDriver(dst.mm, 2 * 4096, RW, {
      fault: async (f) => {
        const seq = await k.api.mmuIntervalReadBegin(f.mm);
        const pfn = await k.api.getUserPage(src.mm, sa + (f.address - base), { write: f.write });
        pins.push(pfn);
        assert.ok(k.api.installPte(f.mm, f.address, pfn, { write: f.write, seq }));
      },
      close: (_mm, s, e) => void closes.push([s, e]),
    });
    assert.equal(await dst.read32(base), 5);
    await dst.write32(base + 4096, 9);
    assert.equal(await src.read32(sa + 4096), 9, 'one frame, two mappings');
    k.check({ allowPins: true });
    const zapped = await k.api.zapDriverRange(dst.mm, base, base + 2 * 4096);
    assert.deepEqual(
      zapped.map((z) => [z.address - base, z.dirty]),
      [
        [0, false],
        [4096, true],
      ],
    );
    for (const p of pins.splice(0)) k.api.putPage(p);
    k.check();
    assert.equal(await dst.read32(base + 4096), 9, 'refault after zap');
    const wp = await k.api.wrprotectDriverRange(dst.mm, base, base + 2 * 4096);
    assert.equal(wp.length, 1);
    await dst.munmap(base, 4096);
    assert.deepEqual(closes, [[base, base + 4096]]);
    await dst.exit();
    assert.deepEqual(closes.at(-1), [base + 4096, base + 2 * 4096]);
    for (const p of pins.splice(0)) k.api.putPage(p);
    k.check();
  }));

test('device entries: touching one calls the device, which brings the page home; reclaim skips them', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const faults: Array<{ write: boolean }> = [];
    const dev = k.api.registerDevice({
      fault: async (f) => {
        faults.push({ write: f.write });
        k.api.writePageData(k.pfnOf(p.pid, a)!, new Uint8Array(4096).fill(0x11)); // "recalled" data
        k.api.clearDeviceEntry(f.mm, f.address);
      },
    });
    const pfn = await k.api.setDeviceEntry(p.mm, a, dev, 'none');
    assert.equal(await k.reclaimPage(pfn), 'unevictable');
    assert.equal(await k.migratePage(pfn), 'unevictable');
    k.check();
    assert.equal(await p.read32(a), 0x11111111);
    assert.deepEqual(faults, [{ write: false }]);
    await k.api.setDeviceEntry(p.mm, a, dev, 'readonly');
    assert.equal(await p.read32(a), 0x11111111, 'reads proceed in readonly mode');
    assert.equal(faults.length, 1);
    await p.write32(a, 2);
    assert.deepEqual(faults.at(-1), { write: true });
    assert.equal(await p.read32(a), 2);
    await assert.rejects(k.api.setDeviceEntry(p.mm, a + 4096 * 100, dev, 'none'), { code: 'EFAULT' });
    k.check();
  }));

test("setDeviceEntryNow: the entry changes in the caller's turn; a promise only when the shootdown must wait", () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(2 * 4096, RW);
    await p.write32(a, 1);
    await p.write32(a + 4096, 2);
    const faults: number[] = [];
    const dev = k.api.registerDevice({
      fault: async (f) => {
        faults.push(f.address);
        k.api.clearDeviceEntry(f.mm, f.address);
      },
    });
    // the process is outside any access window: nothing to wait for
    const r = k.api.setDeviceEntryNow(p.mm, a, dev, 'none');
    assert.equal(r.pfn, k.pfnOf(p.pid, a));
    assert.equal(r.flushed, undefined);
    assert.deepEqual([...k.api.deviceEntryModes(p.mm, a, 1, dev)], [2]);
    assert.equal(await p.read32(a), 1);
    assert.deepEqual(faults, [a], 'the access faulted into the device');
    // inside an access window (C_SEQ odd): the shootdown waits for it to close
    Atomics.add(p.ctl, C_SEQ, 1);
    const w = k.api.setDeviceEntryNow(p.mm, a + 4096, dev, 'readonly');
    assert.ok(w.flushed instanceof Promise);
    let done = false;
    void w.flushed.then(() => {
      done = true;
    });
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(done, false, 'still waiting for the window');
    Atomics.add(p.ctl, C_SEQ, 1);
    Atomics.notify(p.ctl, C_SEQ);
    await w.flushed;
    assert.throws(() => k.api.setDeviceEntryNow(p.mm, a + 4096 * 100, dev, 'none'), { code: 'EFAULT' });
    k.check();
  }));

test('device fault throwing SIGBUS delivers SIGBUS to the process', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const { KernelError } = await import('../api.js');
    const dev = k.api.registerDevice({
      fault: async () => {
        throw new KernelError('SIGBUS', 'owner instance is gone');
      },
    });
    await k.api.setDeviceEntry(p.mm, a, dev, 'none');
    await assert.rejects(p.read32(a), { code: 'SIGBUS' });
    assert.equal((await p.exited).signal, 'SIGBUS');
    k.check();
  }));

test('check() detects PG_external_rmap disagreeing with the driver reverse map', () =>
  withKernel({}, async (k) => {
    const d = fakeDriver(k);
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = k.pfnOf(p.pid, a)!;
    d.exported.add(pfn); // driver claims a mapping without exportPage
    assert.throws(() => k.check(), /PG_external_rmap=false but driver reverse map says true/);
    d.exported.delete(pfn);
    k.check();
  }));
