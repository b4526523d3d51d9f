import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_NONE, PROT_READ, PROT_WRITE } from '../api.js';
import { PROGRAMS, withKernel } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;

test('a process reads and writes through its page table; first touch faults a zeroed page', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(3 * 4096, RW);
    assert.deepEqual(await p.read(a + 100, 4), new Uint8Array(4), 'fresh page reads zero');
    await p.write(a + 4000, new Uint8Array(5000).fill(9)); // crosses two page boundaries
    const back = await p.read(a + 4000, 5000);
    assert.ok(back.every((b) => b === 9));
    await p.write32(a + 8, 0x12345678);
    assert.equal(await p.read32(a + 8), 0x12345678);
    assert.equal(await p.cas32(a + 8, 1, 2), 0x12345678, 'failed CAS returns the old value');
    assert.equal(await p.cas32(a + 8, 0x12345678, 5), 0x12345678);
    assert.equal(await p.read32(a + 8), 5);
    assert.ok(k.stats().counters.minorFaults >= 2);
    k.check();
  }));

test('programs run inside the process with synchronous accessors', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    for (let i = 0; i < 4; i++) await p.write32(a + i * 4, i + 1);
    assert.equal(await p.run(PROGRAMS, 'sum32', { addr: a, len: 16 }), 10);
    k.check();
  }));

test('SIGSEGV kills by default; exit status carries the signal; pages are freed', () =>
  withKernel({}, async (k) => {
    const free0 = k.stats().freeFrames;
    const p = await k.spawn();
    const a = await p.mmap(4096, RW);
    await p.write32(a, 1);
    await assert.rejects(p.read32(0x1000), { code: 'SIGSEGV' });
    const st = await p.exited;
    assert.deepEqual(st, { code: 139, signal: 'SIGSEGV' });
    assert.equal(k.stats().freeFrames, free0, 'every frame (page tables too) returned');
    await assert.rejects(p.read32(a), { code: 'ESRCH' });
    k.check();
  }));

test('a program may catch SIGSEGV; catchSignals keeps a process alive after a refused access', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(4096, PROT_READ);
    assert.equal(await p.run(PROGRAMS, 'touchCatch', { addr: a, write: true }), 'SIGSEGV');
    assert.equal(await p.run(PROGRAMS, 'touchCatch', { addr: a, write: false }), 'ok');
    const q = await k.spawn({ catchSignals: true });
    await assert.rejects(q.write32(0x2000_0000, 1), { code: 'SIGSEGV' });
    const b = await q.mmap(4096, RW);
    await q.write32(b, 3);
    assert.equal(await q.read32(b), 3);
    await assert.rejects(p.run(PROGRAMS, 'touch', { addr: 0x5000 }), { code: 'SIGSEGV' });
    assert.equal((await p.exited).signal, 'SIGSEGV');
    k.check();
  }));

test('exit from a program and from the kernel', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    void p.run(PROGRAMS, 'exitWith', { code: 3 }).catch(() => undefined);
    assert.deepEqual(await p.exited, { code: 3 });
    const q = await k.spawn();
    await q.exit(0);
    assert.equal(k.processes().length, 0);
    k.check();
  }));

test('mmap/munmap/mprotect: argument errors change nothing', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(8192, RW);
    await p.write32(a, 1);
    const before = JSON.stringify(k.stats().freeFrames);
    await assert.rejects(p.mmap(0, RW), { code: 'EINVAL' });
    await assert.rejects(p.mmap(4096, 8), { code: 'EINVAL' });
    await assert.rejects(p.mmap(4096, RW, a), { code: 'EINVAL' }, 'fixed address overlapping');
    await assert.rejects(p.mmap(4096, RW, a + 1), { code: 'EINVAL' });
    await assert.rejects(p.mmap(0xe000_0000, RW), { code: 'ENOMEM' });
    await assert.rejects(p.munmap(a + 3, 4096), { code: 'EINVAL' });
    await assert.rejects(p.munmap(a, 0), { code: 'EINVAL' });
    await assert.rejects(p.mprotect(a, 4096, 99), { code: 'EINVAL' });
    await assert.rejects(p.mprotect(a, 3 * 4096, PROT_READ), { code: 'ENOMEM' }, 'hole in range');
    assert.equal(JSON.stringify(k.stats().freeFrames), before);
    assert.equal(await p.read32(a), 1);
    await p.write32(a + 4096, 2);
    k.check();
  }));

test('munmap of part of a VMA splits it; the unmapped part faults, the rest keeps its data', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn({ catchSignals: true });
    const a = await p.mmap(3 * 4096, RW);
    for (let i = 0; i < 3; i++) await p.write32(a + i * 4096, 10 + i);
    await p.munmap(a + 4096, 4096);
    assert.equal(await p.read32(a), 10);
    assert.equal(await p.read32(a + 8192), 12);
    await assert.rejects(p.read32(a + 4096), { code: 'SIGSEGV' });
    const b = await p.mmap(4096, RW, a + 4096);
    assert.equal(b, a + 4096);
    assert.equal(await p.read32(b), 0, 'remapped page is fresh');
    k.check();
  }));

test('mprotect: read-only refuses writes but keeps data; PROT_NONE refuses reads; back to RW works', () =>
  withKernel({}, async (k) => {
    const p = await k.spawn({ catchSignals: true });
    const a = await p.mmap(2 * 4096, RW);
    await p.write32(a, 7);
    await p.mprotect(a, 4096, PROT_READ);
    await assert.rejects(p.write32(a, 8), { code: 'SIGSEGV' });
    assert.equal(await p.read32(a), 7);
    await p.write32(a + 4096, 9);
    await p.mprotect(a, 8192, PROT_NONE);
    await assert.rejects(p.read32(a), { code: 'SIGSEGV' });
    k.check();
    await p.mprotect(a, 8192, RW);
    assert.equal(await p.read32(a), 7);
    await p.write32(a, 8);
    assert.equal(await p.read32(a), 8);
    assert.equal(await p.read32(a + 4096), 9);
    k.check();
  }));

test('out of memory without swap: the faulting process gets SIGBUS, the kernel stays consistent', () =>
  withKernel({ frames: 64, swapSlots: 0, watermarks: { min: 2, low: 2, high: 2 } }, async (k) => {
    const p = await k.spawn();
    const a = await p.mmap(128 * 4096, RW);
    let err: unknown;
    try {
      for (let i = 0; i < 128; i++) await p.write32(a + i * 4096, i);
    } catch (e) {
      err = e;
    }
    assert.equal((err as { code?: string }).code, 'SIGBUS');
    assert.equal((await p.exited).signal, 'SIGBUS');
    k.check();
  }));
