/**
 * The dial table at run time (membership from DNS uses it): a peer added by address only comes up
 * under the node id it authenticates with; removePeer stops the redials of that address without
 * touching a session that is up.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CloseCode } from '../errors.js';
import { MemorySwitch } from '../memory.js';
import { TransportPeerNetwork } from '../network.js';

const KEY = 'dial-table-test-cluster-key';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, maxMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > maxMs) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const fast = { clusterKey: KEY, reconnectMinMs: 10, reconnectMaxMs: 20, heartbeatMs: 100, missedBeats: 3 };

/** A network with node id `self` listening at memory address `address` (a task behind a DNS name). */
async function task(sw: MemorySwitch, self: string, address: string): Promise<TransportPeerNetwork> {
  const net = new TransportPeerNetwork({ ...fast, self, transport: sw.transport(address) });
  await net.listen();
  return net;
}

describe('dial table', () => {
  it('addPeer by URL: the peer is known by its authenticated id; removePeer stops redialing', async () => {
    const sw = new MemorySwitch({ seed: 7 });
    try {
      const opts = { clusterKey: KEY, members: [], peers: [], reconnectMinMs: 10, reconnectMaxMs: 20 };
      const a = await sw.join('a', opts);
      const b = await sw.join('b', opts);
      a.addPeer({ url: 'b' }); // an address, no id: as DNS gives it
      assert.deepEqual(a.dialTargets(), ['b']);
      const up = await a.waitUp('b', 5000);
      assert.equal(up.node, 'b');
      assert.ok(
        b.sessions().some((s) => s.node === 'a'),
        'the dialled side admitted the unknown id',
      );

      assert.equal(a.removePeer('b'), true);
      assert.equal(a.removePeer('b'), false);
      assert.deepEqual(a.dialTargets(), []);
      assert.ok(
        a.sessions().some((s) => s.node === 'b'),
        'a session that is up stays',
      );

      // b goes away: with no target left, a never dials it again
      await b.close();
      const before = a.metrics().dialFailures;
      await sleep(200);
      assert.equal(a.metrics().dialFailures, before, 'no redial of a removed address');

      // the control: a target that stays keeps being redialed
      a.addPeer({ url: 'b' });
      await sleep(200);
      assert.ok(a.metrics().dialFailures > before, 'a kept target is redialed');
    } finally {
      await sw.close();
    }
  });

  it('a DNS address handed to a new node id: the dial follows whoever authenticates there, and the departed node becomes evictable', async () => {
    const sw = new MemorySwitch({ seed: 9 });
    const extra: TransportPeerNetwork[] = [];
    try {
      const a = await sw.join('a', { ...fast, members: [], peers: [], limits: { maxPeers: 2 } });
      const x = await task(sw, 'x', 'addr');
      extra.push(x);
      a.addPeer({ url: 'addr' }); // from DNS: an address, no node id
      await a.waitUp('x', 5000);
      await x.close(); // the task is re-created: same address, new node id
      await until(() => a.sessions().length === 0, 'a sees x leave');
      const y = await task(sw, 'y', 'addr');
      extra.push(y);
      // before the fix the target stayed pinned to x: every dial was refused 4010, forever
      await a.waitUp('y', 5000);
      assert.equal(a.metrics().closesByCode[CloseCode.WRONG_NODE] ?? 0, 0, 'nothing refused 4010');
      // x is no longer reached through a dialed address: a newcomer may evict it (table: x, y)
      const z = new TransportPeerNetwork({
        ...fast,
        self: 'z',
        transport: sw.transport('z'),
        peers: [{ url: 'a' }],
      });
      extra.push(z);
      await z.start(false);
      await until(() => a.sessions().some((s) => s.node === 'z'), 'z admitted');
      assert.equal(a.metrics().peersRefused, 0);
      assert.equal(a.metrics().peersEvicted, 1);
      assert.ok(!a.status().some((p) => p.node === 'x'), 'x was evicted');
    } finally {
      for (const n of extra) await n.close();
      await sw.close();
    }
  });

  it('a configured node id stays pinned: another node answering at its address is refused 4010', async () => {
    const sw = new MemorySwitch({ seed: 10 });
    const extra: TransportPeerNetwork[] = [];
    try {
      const a = await sw.join('a', { ...fast, members: [], peers: [] });
      const w = await task(sw, 'w', 'addr-q');
      extra.push(w);
      a.addPeer({ node: 'q', url: 'addr-q' }); // configured: q (a < q, so a dials)
      await until(
        () => (a.metrics().closesByCode[CloseCode.WRONG_NODE] ?? 0) >= 2,
        'w refused 4010, and again on the redial',
      );
      assert.equal(a.sessions().length, 0, 'w never comes up in place of q');
      assert.ok(!a.status().some((p) => p.node === 'w'));
    } finally {
      for (const n of extra) await n.close();
      await sw.close();
    }
  });

  it('a fence of a node id not in the peer table creates no entry: the table stays within limits.maxPeers', async () => {
    const sw = new MemorySwitch({ seed: 11 });
    const extra: TransportPeerNetwork[] = [];
    try {
      const a = await sw.join('a', { ...fast, members: [], peers: [], limits: { maxPeers: 2 } });
      for (let i = 0; i < 100; i++) a.fence(`ghost${i}`, 'test: the driver fences an id it never saw up');
      assert.equal(a.metrics().fences, 100, 'each fence is counted');
      assert.equal(a.status().length, 0, 'no entry was made');
      assert.equal(a.tombstoneCount, 0, 'nothing to remember: no epoch of theirs came up');
      // the table has its room: newcomers (one of them a fenced id) are admitted as before
      for (const id of ['ghost7', 'n1']) {
        const n = new TransportPeerNetwork({
          ...fast,
          self: id,
          transport: sw.transport(id),
          peers: [{ url: 'a' }],
        });
        extra.push(n);
        await n.start(false);
        await until(() => a.sessions().some((s) => s.node === id), `${id} admitted`);
      }
      assert.equal(a.metrics().peersRefused, 0);
      assert.ok(a.status().length <= 2);
    } finally {
      for (const n of extra) await n.close();
      await sw.close();
    }
  });
});
