import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_READ, PROT_WRITE } from '../api.js';
import { createKernel } from '../index.js';
import { withKernel } from './helpers.js';

test('createKernel with 262,144 frames (1 GiB) boots, runs a process and checks clean', async () => {
  const k = await createKernel({ name: 'big', frames: 262_144, swapSlots: 1024 });
  try {
    const p = await k.spawn();
    const a = await p.mmap(64 * 4096, PROT_READ | PROT_WRITE);
    await p.write32(a + 63 * 4096, 5);
    assert.equal(await p.read32(a + 63 * 4096), 5);
    assert.ok(k.pfnOf(p.pid, a + 63 * 4096)! > 0);
    k.check();
    assert.equal(k.stats().frames, 262_144);
  } finally {
    await k.close();
  }
});

test('createKernel validates its options', async () => {
  await assert.rejects(createKernel({ name: '', frames: 64 }), { code: 'EINVAL' });
  await assert.rejects(createKernel({ name: 'x', frames: 3 }), { code: 'EINVAL' });
  await assert.rejects(createKernel({ name: 'x', frames: 64, watermarks: { min: 10, low: 5 } }), {
    code: 'EINVAL',
  });
});

test('modules are loaded with the API and unloaded on close; stats report the counters', async () => {
  const seen: string[] = [];
  await withKernel({}, async (k) => {
    await k.loadModule({
      name: 'm',
      load: (api) => void seen.push(`load:${api.name}:${api.pageSize}`),
      unload: async () => void seen.push('unload'),
    });
    assert.equal(Object.isFrozen(k.api), true);
    const s = k.stats();
    assert.equal(s.processes, 0);
    assert.ok(s.swap && s.swap.slots === 256);
  });
  assert.deepEqual(seen, ['load:test:4096', 'unload']);
});

test('exit while a driver fault is still running completes once the fault settles (bounded)', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let faults = 0;
    const base = k.api.mmapDriver(p.mm, 4096, PROT_READ, {
      fault: async () => {
        faults++;
        await gate;
      },
      close: () => {},
    });
    const access = p.read32(base).catch((e: { code?: string }) => e.code);
    while (faults === 0) await new Promise((r) => setTimeout(r, 1));
    const exited = p.exit();
    setTimeout(release, 20);
    assert.deepEqual(await exited, { code: 0 });
    assert.equal(await access, 'ESRCH');
    k.check();
  }));
