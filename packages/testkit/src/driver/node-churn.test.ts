/**
 * Per-node state of the driver stays bounded under membership churn (DNS membership re-creates
 * tasks under new node ids): thousands of distinct authenticated node ids come up at a home, take a
 * permit and map a page, and leave. The driver forgets each one once nothing of it is held
 * (DriverState.pruneNodes) and reuses its node index; a fenced node's old session is still refused
 * after that (by the network's epochs, remembered in its peer-table tombstone); a node that still
 * holds something is never forgotten.
 *
 * One real kernel with the driver (the home); the churning nodes are bare peer networks on the
 * in-memory transport that speak the driver's messages themselves.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createXpmemDriver, FORGOTTEN_FENCES_KEPT, MAX_NODE_INDEX, type XpmemDriver } from '@xpmesh/driver';
import * as instance from '@xpmesh/kernel';
import { PAGE_SIZE } from '@xpmesh/kernel';
import {
  CloseCode,
  type Get,
  type GetOk,
  type MapReq,
  MemorySwitch,
  type PeerNetworkOptions,
  TransportPeerNetwork,
} from '@xpmesh/protocol';
import { expectCode, PROT_RW, until } from './cluster.js';
import { bounded } from './scenario-cluster.js';

const KEY = 'node-churn-test-cluster-key-0123456789';
const fast = { clusterKey: KEY, heartbeatMs: 50, missedBeats: 4, reconnectMinMs: 10, reconnectMaxMs: 50 };
const LEASE_MS = 200;
const PAGES = 16;

interface Home {
  sw: MemorySwitch;
  net: TransportPeerNetwork;
  kernel: instance.Kernel;
  driver: XpmemDriver;
  segid: string;
  src: instance.Process;
  va: number;
  close(): Promise<void>;
}

async function home(maxPeers: number): Promise<Home> {
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-churn-'));
  const sw = new MemorySwitch({ seed: 3 });
  const net = await sw.join('h', { ...fast, members: [], peers: [], limits: { maxPeers } });
  const kernel = await instance.createKernel({ name: 'h', frames: 512, swapPath: join(dir, 'h.swap') });
  const driver = createXpmemDriver({ net, ackTimeoutMs: 300, leaseMs: LEASE_MS, leaseMarginMs: 20 });
  await kernel.loadModule(driver);
  const src = await kernel.spawn({ catchSignals: true });
  const va = await src.mmap(PAGES * PAGE_SIZE, PROT_RW);
  for (let i = 0; i < PAGES; i++) await src.write32(va + i * PAGE_SIZE, i);
  const segid = await driver.make(src.pid, va, PAGES * PAGE_SIZE, 0o666);
  return {
    sw,
    net,
    kernel,
    driver,
    segid,
    src,
    va,
    async close() {
      await driver.unload().catch(() => undefined);
      await kernel.close().catch(() => undefined);
      await sw.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A bare peer network `self` that dials the home (it answers invalidations unless told not to). */
async function peer(
  h: Home,
  self: string,
  o: Partial<PeerNetworkOptions> & { silent?: boolean } = {},
): Promise<TransportPeerNetwork> {
  const net = new TransportPeerNetwork({
    ...fast,
    ...o,
    self,
    transport: h.sw.transport(self),
    peers: [{ url: 'h' }],
  });
  net.onRequest((_from, msg) => {
    if (msg.t === 'invalidate' && !o.silent) return { t: 'invalidate-ack', dirty: [] } as never;
    return new Promise(() => {}) as never; // a silent mapper never acks (it gets fenced)
  });
  await net.start(false);
  return net;
}

/** `net` takes a read permit for the home's segment and maps page `page` (a reverse-map entry). */
async function mapPage(net: TransportPeerNetwork, h: Home, page: number): Promise<string> {
  const ok = (await net.request<Get>('h', {
    t: 'get',
    segid: h.segid,
    access: 'r',
    uid: 1000,
    gid: 1000,
  })) as GetOk;
  await net.request<MapReq>('h', { t: 'map', apid: ok.apid, page, count: 1, access: 'r' });
  return ok.apid;
}

const quiet = (d: XpmemDriver) => d.fencing.size === 0;

test('membership churn: 2000 node ids that map pages and leave; the driver forgets each, its per-node tables stay bounded; a fenced node is still refused; a node holding something is kept', {
  timeout: 120_000,
}, async (t) => {
  const h = await home(64);
  const extra: TransportPeerNetwork[] = [];
  try {
    const d = h.driver;
    // u: up the whole time, holding a reverse-map entry
    const u = await peer(h, 'u');
    extra.push(u);
    await u.waitUp('h', 5000);
    await mapPage(u, h, 1);
    const uIdx = d.nodeIndex.get('u');
    assert.ok(uIdx !== undefined);

    // f: maps a page, never acks the home's invalidation: fenced (ack deadline), then gone
    const F_EPOCH = 10_000;
    const f = await peer(h, 'f', { epoch: F_EPOCH, silent: true });
    await f.waitUp('h', 5000);
    const fSession = h.net.sessions().find((s) => s.node === 'f')?.epoch;
    assert.equal(fSession, F_EPOCH + 1);
    await mapPage(f, h, 0);
    await h.src.write32(h.va, 42); // the home writes page 0: invalidate → f is silent → fenced
    assert.ok(d.minEpoch.get('f') === F_EPOCH + 2, 'f fenced at its session epoch');
    await f.close();

    // churn: 40 rounds of 50 new node ids, each authenticates, maps a page and leaves
    const ROUNDS = 40;
    const PER = 50;
    let peak = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const nets = await Promise.all(
        Array.from({ length: PER }, async (_, i) => {
          const n = await peer(h, `t${r}-${i}`);
          await n.waitUp('h', 10_000);
          await mapPage(n, h, 2 + (i % (PAGES - 2)));
          return n;
        }),
      );
      peak = Math.max(peak, d.nodeTableSize, d.nodeNames.length);
      await Promise.all(nets.map((n) => n.close()));
    }
    await until(() => quiet(d), 'fences done', 20_000);
    await until(() => h.net.sessions().length === 1, 'only u is up');

    const s = d.status();
    t.diagnostic(
      `pruned ${s.counters.nodesPruned}, known ${s.nodes.known}, indexes ${s.nodes.indexes} (free ${s.nodes.freeIndexes}), peak ${peak}, peer table ${h.net.status().length}, tombstones ${h.net.tombstoneCount}`,
    );
    // Before: 2000+ entries in each table (every node id ever seen), indexes never reused.
    assert.ok(s.counters.nodesPruned >= ROUNDS * PER, `pruned ${s.counters.nodesPruned}`);
    assert.ok(s.nodes.known <= 8, `known node ids after the churn: ${s.nodes.known}`);
    assert.ok(peak <= 10 * PER, `peak of the per-node tables during the churn: ${peak}`);
    assert.ok(s.nodes.indexes <= 10 * PER, `indexes allocated: ${s.nodes.indexes}`);
    assert.ok(d.epochs.size <= 8 && d.minEpoch.size <= 8, 'epochs and fencing memory pruned');
    assert.equal(d.forgottenFences.size, FORGOTTEN_FENCES_KEPT, 'the status-only memory is bounded');
    assert.ok(d.nodeDispatches.size <= 8 && d.pruneDeferred.size === 0);
    // u (up, holding an entry) was never pruned: same index, its entry still there
    assert.equal(d.nodeIndex.get('u'), uIdx);
    assert.deepEqual(d.pageStates(h.segid)[1].sharers, ['u']);
    assert.equal(s.rmap.entries, 1, 'only u maps a page');
    assert.equal(s.counters.staleMessages, 0);

    // f was forgotten by the driver (its fencing memory too) and evicted from the peer table...
    assert.ok(!d.knownNodes().has('f'), 'f pruned');
    assert.ok(!h.net.status().some((p) => p.node === 'f'), 'f evicted from the peer table (tombstone)');
    // ...and its fenced session is still refused: the same incarnation, the same epoch (4005)
    const stale = h.net.metrics().staleRefused;
    const f1 = await peer(h, 'f', { epoch: F_EPOCH });
    extra.push(f1);
    await until(() => h.net.metrics().staleRefused > stale, 'f with its fenced epoch refused 4005');
    assert.ok((h.net.metrics().closesByCode[CloseCode.STALE_EPOCH] ?? 0) >= 1);
    assert.equal(f1.sessions().length, 0);
    assert.equal(d.status().counters.staleMessages, 0, 'nothing of it reached the driver');
    await f1.close();
    // a new incarnation of f is a new session: admitted, served
    const f2 = await peer(h, 'f', { epoch: F_EPOCH * 10 });
    extra.push(f2);
    await f2.waitUp('h', 5000);
    await mapPage(f2, h, 3);
    assert.equal(d.status().counters.staleMessages, 0);
  } finally {
    for (const n of extra) await n.close();
    await h.close();
  }
});

test('a node that still holds something here is never pruned: a reverse-map entry, a grant of its segment', {
  timeout: 120_000,
}, async () => {
  const h = await home(1024);
  const extra: TransportPeerNetwork[] = [];
  try {
    const d = h.driver;
    // q maps a page, then its session is closed: no session, but entries while its fence waits
    const q = await peer(h, 'q');
    extra.push(q);
    await q.waitUp('h', 5000);
    await mapPage(q, h, 0);
    const qIdx = d.nodeIndex.get('q');
    assert.ok(qIdx !== undefined);
    await q.close();
    await until(() => d.fencing.has('q'), 'q down, its fence waits out the lease');
    // Only the reverse-map entry keeps it (the lease wait is taken out of the check): not pruned.
    const wait = d.fencing.get('q');
    d.fencing.delete('q');
    assert.equal(d.pruneNodes(['q']), 0, 'q still has a reverse-map entry');
    assert.equal(d.nodeIndex.get('q'), qIdx);
    assert.ok(d.rmap.nodes().has(qIdx));
    if (wait) d.fencing.set('q', wait);
    await until(() => quiet(d) && d.rmap.size === 0, 'q fenced and its entries dropped');
    assert.ok(!d.knownNodes().has('q'), 'then it is pruned');
    assert.equal(d.freeNodeIndexes.at(-1), qIdx, 'its index is free for reuse');

    // k is a home: this instance holds a permit (grant) for k's segment; k leaves
    const k = await peer(h, 'k');
    extra.push(k);
    k.onRequest((_from, msg) => {
      if (msg.t === 'get') return { t: 'get-ok', apid: 'k:a1', size: PAGE_SIZE, access: 'r' } as never;
      return new Promise(() => {}) as never;
    });
    await k.waitUp('h', 5000);
    const p = await h.kernel.spawn({ catchSignals: true });
    const apid = await d.get(p.pid, 'k:1', 'r');
    await k.close();
    await until(() => !h.net.sessions().some((s) => s.node === 'k') && quiet(d), 'k down and fenced');
    assert.equal(d.pruneNodes(d.knownNodes()), 0, 'k is kept: a grant of its segment is held here');
    assert.ok(d.knownNodes().has('k'));
    await d.release(p.pid, apid);
    assert.equal(d.pruneNodes(d.knownNodes()), 1, 'released: k is forgotten');
    assert.ok(!d.knownNodes().has('k'));
  } finally {
    for (const n of extra) await n.close();
    await h.close();
  }
});

test('a node with a request still being handled is not pruned when its fence ends: pruned when the request ends', {
  timeout: 120_000,
}, async () => {
  const h = await home(1024);
  const extra: TransportPeerNetwork[] = [];
  try {
    const d = h.driver;
    // s holds page 5 and never acks: the home's write to page 5 invalidates for ack deadline + lease
    const s = await peer(h, 's', { silent: true });
    extra.push(s);
    await s.waitUp('h', 5000);
    await mapPage(s, h, 5);
    const g = await peer(h, 'g');
    extra.push(g);
    await g.waitUp('h', 5000);
    const ok = (await g.request<Get>('h', {
      t: 'get',
      segid: h.segid,
      access: 'r',
      uid: 1000,
      gid: 1000,
    })) as GetOk;
    const write = h.src.write32(h.va + 5 * PAGE_SIZE, 7); // blocks until the invalidation ends
    write.catch(() => undefined);
    await until(() => h.driver.pageStates(h.segid)[5].state === 'invalidating', 'page 5 invalidating');
    // g asks for page 5: its grant waits for the invalidation, inside the request's handling
    const mapped = g.request<MapReq>('h', { t: 'map', apid: ok.apid, page: 5, count: 1, access: 'r' });
    mapped.catch(() => undefined);
    await until(() => d.nodeDispatches.get('g')?.n === 1, "g's map is being handled");
    await g.close(); // g leaves: fenced, its permit revoked; its lease wait ends before the invalidation
    await until(() => d.fencing.has('g'), 'g fenced');
    await until(() => !d.fencing.has('g'), "g's fence done");
    // (its grant waits for the page, behind the home's own write fault: it may not have taken a
    // node index yet, and takes one when it runs)
    assert.ok(d.knownNodes().has('g'), 'g is kept while its map request is handled');
    assert.ok(d.pruneDeferred.has('g'));
    await write;
    await until(() => !d.knownNodes().has('g'), 'g pruned once its request ended');
    assert.ok(!d.nodeIndex.has('g') && d.pruneDeferred.size === 0);
    await assert.rejects(mapped);
    assert.equal(d.rmap.size, 0, 'the grant was refused (permit revoked), s was fenced');
  } finally {
    for (const n of extra) await n.close();
    await h.close();
  }
});

test('an attacher under home churn: 300 homes in turn, each attached, read and left; lease slots are given back (255 exist)', {
  timeout: 120_000,
}, async (t) => {
  const h = await home(1024);
  const extra: TransportPeerNetwork[] = [];
  try {
    const d = h.driver;
    const HOMES = 300; // more than the kernel's lease slots (255 usable)
    const p = await h.kernel.spawn({ catchSignals: true });
    let peakSlots = 0;
    for (let i = 0; i < HOMES; i++) {
      const id = `home${i}`;
      const m = await peer(h, id);
      m.onRequest((_from, msg) => {
        if (msg.t === 'get') return { t: 'get-ok', apid: `${id}:a1`, size: PAGE_SIZE, access: 'r' } as never;
        if (msg.t === 'map') {
          const data = new Uint8Array(PAGE_SIZE);
          new DataView(data.buffer).setUint32(0, i, true);
          return {
            t: 'map-ok',
            access: 'r',
            pages: [{ page: 0, version: 1, data }],
            grants: [i + 1],
          } as never;
        }
        return { t: 'ok' } as never; // detach, release
      });
      await m.waitUp('h', 5000);
      const apid = await d.get(p.pid, `${id}:1`, 'r');
      const va = await d.attach(p.pid, apid, 0, PAGE_SIZE);
      // bounded: before the fix, the 256th home found no free lease slot and the read never returned
      assert.equal(await bounded(p.read32(va), 10_000, `read of ${id}'s page`), i, `the page of ${id}`);
      peakSlots = Math.max(peakSlots, d.leaseSlot.size);
      await d.detach(p.pid, va);
      await d.release(p.pid, apid);
      await m.close();
    }
    await until(() => quiet(d), 'fences done', 20_000);
    t.diagnostic(`lease slots: peak ${peakSlots}, now ${d.leaseSlot.size}; pruned ${d.counters.nodesPruned}`);
    assert.ok(d.leaseSlot.size <= 1, 'every departed home gave its lease slot back');
    assert.ok(d.counters.nodesPruned >= HOMES);
  } finally {
    for (const n of extra) await n.close();
    await h.close();
  }
});

test('node indexes fit the reverse map: past MAX_NODE_INDEX a new node is refused E_BUSY (never wraps onto index 0)', {
  timeout: 120_000,
}, async () => {
  const h = await home(8);
  try {
    const d = h.driver;
    for (let i = d.nodeNames.length; i <= MAX_NODE_INDEX; i++) d.nodeIdx(`n${i}`);
    assert.equal(d.nodeNames.length, MAX_NODE_INDEX + 1);
    await expectCode(
      Promise.resolve().then(() => d.nodeIdx('one-too-many')),
      'E_BUSY',
    );
    // a freed index is reused
    assert.equal(d.pruneNodes(['n5']), 1);
    assert.equal(d.nodeIdx('one-too-many'), 5);
  } finally {
    await h.close();
  }
});
