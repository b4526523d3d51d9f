import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { PROT_READ, PROT_WRITE } from '../api.js';
import { withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;

test('swap: data written reads back after forced reclaim; the slot is freed on swap-in', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4 * 4096, RW);
    for (let i = 0; i < 4; i++) await p.write(a + i * 4096, new Uint8Array(4096).fill(i + 1));
    const pfns = [0, 1, 2, 3].map((i) => k.pfnOf(p.pid, a + i * 4096)!);
    for (const pfn of pfns) assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    assert.equal(k.stats().swap!.used, 4);
    assert.equal(k.pfnOf(p.pid, a), undefined, 'no frame mapped after swap-out');
    k.check();
    for (let i = 0; i < 4; i++) {
      const b = await p.read(a + i * 4096, 4096);
      assert.ok(
        b.every((x) => x === i + 1),
        `page ${i} content`,
      );
    }
    assert.equal(k.stats().swap!.used, 0);
    assert.equal(k.stats().counters.swapIns, 4);
    k.check();
  }));

test('swap: the private swap file is a real open file, already gone from the directory (nothing left even after a kill)', async () => {
  let path = '';
  const openAs = (p: string) =>
    readdirSync('/proc/self/fd').some((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === `${p} (deleted)`;
      } catch {
        return false;
      }
    });
  await withKernel({}, async (k) => {
    const { swap } = (k as unknown as { k: { swap: { path: string } } }).k;
    path = swap.path;
    assert.ok(!existsSync(path), 'unlinked at open');
    assert.ok(openAs(path), 'still open: the pages go through a real file');
  });
  assert.ok(!openAs(path), 'closed with the kernel');
  // a process killed outright (SIGKILL: no cleanup runs) leaves no swap file behind
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { createKernel } = await import(${JSON.stringify(new URL('../index.js', import.meta.url).href)});
       const k = await createKernel({ name: 'killed', frames: 64, swapSlots: 16 });
       console.log(k.stats().swap ? 'up' : 'no swap');
       setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const line = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('child did not start within 20 s')), 20_000);
    child.stdout!.once('data', (d: Buffer) => {
      clearTimeout(t);
      resolve(String(d).trim());
    });
  });
  assert.equal(line, 'up');
  const left = () => readdirSync(tmpdir()).filter((f) => f.startsWith(`xpmesh-swap-killed-${child.pid}-`));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.deepEqual(left(), []);
});

test('shrink: young pages get a second chance; under pressure everything old is reclaimed', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(16 * 4096, RW);
    for (let i = 0; i < 16; i++) await p.write32(a + i * 4096, i);
    const r1 = await k.shrink(4);
    assert.equal(r1.reclaimed, 4);
    assert.ok((r1.outcomes.referenced ?? 0) >= 1, 'young bits were honoured');
    const r2 = await k.shrink(100);
    assert.ok(r2.reclaimed >= 8);
    k.check();
    for (let i = 0; i < 16; i++) assert.equal(await p.read32(a + i * 4096), i);
    k.check();
  }));

test('direct reclaim and kswapd keep a process running when memory is over-committed', () =>
  withKernel({ frames: 64, swapSlots: 512 }, async (k) => {
    const p = await k.spawn();
    const n = 200;
    const a = await p.mmap(n * 4096, RW);
    for (let i = 0; i < n; i++) await p.write32(a + i * 4096, i * 3);
    for (let i = 0; i < n; i++) assert.equal(await p.read32(a + i * 4096), i * 3);
    await k.idle();
    const s = k.stats();
    assert.ok(s.counters.swapOuts > 0 && s.counters.swapIns > 0);
    assert.ok(s.counters.directReclaims + s.counters.kswapdRuns > 0);
    k.check();
  }));

test('migration moves data to a new frame and keeps write permission and dirtiness', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write(a, new Uint8Array(4096).fill(0x5a));
    const old = k.pfnOf(p.pid, a)!;
    const np = await k.migratePage(old);
    assert.equal(typeof np, 'number');
    assert.notEqual(np, old);
    assert.equal(k.pfnOf(p.pid, a), np);
    assert.ok(k.pageInfo(old).flags.includes('free'));
    assert.ok((await p.read(a, 4096)).every((x) => x === 0x5a));
    const faults = k.stats().counters.faults;
    await p.write32(a, 1);
    assert.equal(k.stats().counters.faults, faults, 'still writable: no fault');
    k.check();
  }));

test('fork: copy-on-write isolates parent and child; shared pages are counted once per mapping', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(2 * 4096, RW);
    await p.write32(a, 1);
    await p.write32(a + 4096, 2);
    const c = await p.fork();
    const shared = k.pfnOf(p.pid, a)!;
    assert.equal(k.pfnOf(c.pid, a), shared);
    assert.equal(k.pageInfo(shared).mapcount, 2);
    k.check();
    await c.write32(a, 10);
    assert.equal(await p.read32(a), 1);
    assert.equal(await c.read32(a), 10);
    assert.notEqual(k.pfnOf(c.pid, a), shared);
    await p.write32(a + 4096, 20); // parent breaks COW on the second page
    assert.equal(await c.read32(a + 4096), 2);
    assert.equal(k.pageInfo(shared).mapcount, 1);
    await p.write32(a, 3); // now sole user: COW reuse, no copy
    assert.equal(k.pfnOf(p.pid, a), shared);
    k.check();
    await c.exit();
    k.check();
  }));

test('fork shares swap entries; both sides read the data back', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 77);
    assert.equal(await k.reclaimPage(k.pfnOf(p.pid, a)!), 'reclaimed');
    const c = await p.fork();
    k.check();
    assert.equal(await c.read32(a), 77);
    assert.equal(await p.read32(a), 77);
    await c.write32(a, 78);
    assert.equal(await p.read32(a), 77);
    k.check();
  }));

test('reclaim and migration of a COW-shared page update every mapping', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 5);
    const c = await p.fork();
    const pfn = k.pfnOf(p.pid, a)!;
    const np = (await k.migratePage(pfn)) as number;
    assert.equal(k.pfnOf(p.pid, a), np);
    assert.equal(k.pfnOf(c.pid, a), np);
    k.check();
    assert.equal(await k.reclaimPage(np), 'reclaimed');
    k.check();
    assert.equal(await c.read32(a), 5);
    assert.equal(await p.read32(a), 5);
    await p.write32(a, 6);
    assert.equal(await c.read32(a), 5);
    k.check();
  }));

test('reclaim skips pinned pages (getUserPage) and driver frames', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    const pfn = await k.api.getUserPage(p.mm, a, { write: false });
    assert.equal(await k.reclaimPage(pfn), 'pinned');
    assert.equal(await k.migratePage(pfn), 'pinned');
    assert.throws(() => k.check(), /pinned != unpinned/);
    k.api.putPage(pfn);
    const d = k.api.allocPage();
    assert.equal(await k.reclaimPage(d), 'unevictable');
    k.api.putPage(d);
    assert.equal(await k.reclaimPage(pfn), 'reclaimed');
    k.check();
  }));
