/**
 * The admin `pressure` operation against a real kernel (the peer network and the driver are inert
 * stand-ins): bad bodies are refused with E_BAD_REQUEST and change nothing; a good one reclaims
 * pages through the kernel's LRU reclaim and reports what happened; the count and the scan are
 * bounded; the data comes back from swap.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { DriverStatus } from '@xpmesh/driver';
import {
  createKernel,
  type Kernel,
  MAX_SHRINK_BATCHES,
  MAX_SHRINK_CONCURRENCY,
  RECLAIM_BATCH,
} from '@xpmesh/kernel';
import { type AdminCallError, AdminClient } from './admin-client.js';
import { resolveConfig } from './config.js';
import { type RunningInstance, startInstance } from './instance.js';
import { silentLogger } from './logger.js';
import {
  PRESSURE_DEFAULT_CONCURRENCY,
  PRESSURE_MAX_BATCHES,
  PRESSURE_MAX_BUDGET_MS,
  PRESSURE_MAX_CONCURRENCY,
} from './ops.js';
import type { DriverPort, NetPort } from './ports.js';

const PAGES = 24;

/** The status of a driver with nothing in it. */
const noDriverStatus: DriverStatus = {
  node: 'pressure',
  segments: [],
  grants: [],
  attachments: [],
  rmap: { entries: 0, frames: 0, bytes: 0, bytesPerEntry: 0 },
  cachedPages: 0,
  nodes: { known: 0, indexes: 1, freeIndexes: 0 },
  peers: [],
  counters: {
    faults: 0,
    localFaults: 0,
    remoteFaults: 0,
    coalescedFaults: 0,
    upgrades: 0,
    recalls: 0,
    homeFaults: 0,
    mapsGranted: 0,
    invalidationsSent: 0,
    invalidationsAcked: 0,
    fences: 0,
    overtakenGrants: 0,
    serializedInvalidations: 0,
    leaseWaits: 0,
    lostDirtyPages: 0,
    writebackWithoutData: 0,
    reclaimRefusals: 0,
    staleMessages: 0,
    pins: 0,
    unpins: 0,
    segmentGone: 0,
    nodesPruned: 0,
    refused: { no_permit: 0, access_denied: 0 },
  },
};

function inertParts(kernel: Kernel): { kernel: Kernel; net: NetPort; driver: DriverPort } {
  const refuse = () => Promise.reject(Object.assign(new Error('no driver here'), { code: 'EINVAL' }));
  return {
    kernel,
    net: { status: () => [], on: () => {}, close: async () => {} },
    driver: {
      make: refuse,
      remove: refuse,
      get: refuse,
      release: refuse,
      attach: refuse,
      detach: refuse,
      status: () => noDriverStatus,
      pageStates: () => [],
      events: new EventEmitter(),
    },
  };
}

interface PressureResult {
  requested: number;
  scanned: number;
  reclaimed: number;
  outcomes: Record<string, number>;
  stoppedBy: string;
  ms: number;
  freeFrames: { before: number; after: number };
  memory: { rss: number; heapUsed: number; arrayBuffers: number };
}

describe('admin pressure operation (real kernel)', () => {
  let kernel: Kernel;
  let instance: RunningInstance;
  let client: AdminClient;
  let pid = 0;
  let addr = 0;
  before(async () => {
    kernel = await createKernel({ name: 'p1', frames: 256 });
    const config = resolveConfig({ id: 'p1', 'admin-port': '0', frames: '256' }, {});
    instance = await startInstance(config, silentLogger, inertParts(kernel));
    client = new AdminClient(instance.adminUrl);
    pid = (await client.op<{ pid: number }>('spawn', {})).pid;
    addr = (await client.op<{ addr: number }>('mmap', { pid, len: PAGES * 4096 })).addr;
    for (let i = 0; i < PAGES; i++)
      await client.op('write', { pid, addr: addr + i * 4096, text: `page ${i}` });
  });
  after(async () => {
    await instance?.stop('test done');
  });

  const state = () => {
    const s = kernel.stats();
    return { free: s.freeFrames, lru: s.lruPages, swapUsed: s.swap?.used, reclaimed: s.counters.reclaim };
  };

  it('refuses bad bodies with E_BAD_REQUEST and changes nothing', async () => {
    const s0 = state();
    for (const body of [
      {},
      { pages: 0 },
      { pages: -3 },
      { pages: 1.5 },
      { pages: '8' },
      { pages: 2 ** 24 + 1 },
      { pages: 8, budgetMs: 0 },
      { pages: 8, budgetMs: PRESSURE_MAX_BUDGET_MS + 1 },
      { pages: 8, concurrency: 0 },
      { pages: 8, concurrency: PRESSURE_MAX_CONCURRENCY + 1 },
      { pages: 8, batches: 0 },
      { pages: 8, batches: PRESSURE_MAX_BATCHES + 1 },
      { pages: 8, batches: 1.5 },
    ]) {
      await assert.rejects(
        client.op('pressure', body),
        (e: AdminCallError) => e.code === 'E_BAD_REQUEST' && e.status === 400,
        JSON.stringify(body),
      );
    }
    const res = await fetch(`${client.base}/ops/pressure`, { method: 'POST', body: '{"pages":' });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { code: string }).code, 'E_BAD_REQUEST');
    assert.deepEqual(state(), s0, 'a refused pressure call changed the kernel');
  });

  it('reclaims exactly the pages asked for and reports the outcomes', async () => {
    const s0 = state();
    const r = await client.op<PressureResult>('pressure', { pages: 5 });
    assert.equal(r.requested, 5);
    assert.equal(r.reclaimed, 5);
    assert.equal(r.stoppedBy, 'done');
    assert.equal(r.outcomes.reclaimed, 5);
    assert.ok(r.scanned >= 5 && r.scanned <= 2 * s0.lru + 8, `scanned ${r.scanned}`);
    assert.equal(r.freeFrames.after - r.freeFrames.before, 5);
    assert.ok(r.ms >= 0 && r.memory.rss > 0 && r.memory.heapUsed > 0);
    const s1 = state();
    assert.equal(s1.lru, s0.lru - 5);
    assert.equal(s1.swapUsed, (s0.swapUsed ?? 0) + 5);
    const metrics = await client.get<string>('/metrics');
    assert.match(metrics, /xpmesh_reclaim_total\{outcome="reclaimed",node="p1"\} 5/);
  });

  it("has the kernel's own concurrency and batches bounds", () => {
    assert.equal(PRESSURE_MAX_CONCURRENCY, MAX_SHRINK_CONCURRENCY);
    assert.equal(PRESSURE_MAX_BATCHES, MAX_SHRINK_BATCHES);
    assert.equal(PRESSURE_DEFAULT_CONCURRENCY, RECLAIM_BATCH);
  });

  it('is bounded: a huge request scans at most 2 x the LRU + 8 pages and stops when the LRU is empty', async () => {
    const lru = state().lru;
    // the limits reach the kernel's shrink as given
    const seen: unknown[] = [];
    const shrink = kernel.shrink.bind(kernel);
    kernel.shrink = (n, limits) => {
      seen.push(limits);
      return shrink(n, limits);
    };
    const r = await client.op<PressureResult>('pressure', {
      pages: 1 << 20,
      concurrency: 4,
      batches: 2,
      budgetMs: 5000,
    });
    kernel.shrink = shrink;
    assert.deepEqual(seen, [{ budgetMs: 5000, concurrency: 4, batches: 2 }]);
    assert.equal(r.reclaimed, lru);
    assert.equal(r.stoppedBy, 'empty');
    assert.ok(r.scanned <= 2 * lru + 8);
    assert.equal(state().lru, 0);
    const again = await client.op<PressureResult>('pressure', { pages: 10 });
    assert.deepEqual([again.scanned, again.reclaimed, again.stoppedBy], [0, 0, 'empty']);
  });

  it('leaves the data intact (swapped back in on access) and the kernel consistent', async () => {
    for (let i = 0; i < PAGES; i++) {
      const r = await client.op<{ text: string }>('read', { pid, addr: addr + i * 4096, len: 16 });
      assert.equal(r.text, `page ${i}`);
    }
    const check = await client.op<{ ok: boolean; violations: string[] }>('check', {});
    assert.deepEqual(check, { ok: true, violations: [] });
  });
});
