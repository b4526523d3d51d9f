/**
 * The dial table at run time (membership from DNS uses it): a peer added by address only comes up
 * under the node id it authenticates with; removePeer stops the redials of that address without
 * touching a session that is up.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemorySwitch } from '../memory.js';

const KEY = 'dial-table-test-cluster-key';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
});
