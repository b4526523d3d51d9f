/**
 * The contract the driver's ranged grant relies on (driver/src/home.ts grantRange): a reply's page
 * data may be a VIEW of memory the handler owns only until its next macrotask. The network queues
 * the handler's reply in the microtasks that follow it, and the link encodes everything queued in a
 * turn before that turn ends, so the bytes on the wire are the bytes at reply time, whatever the
 * handler's owner writes there from a setImmediate on. Checked on both transports, for a single
 * reply and for replies batched in one turn.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createMemoryNetwork } from '../memory.js';
import type { MapOk, MapReq } from '../messages.js';
import type { TransportPeerNetwork as PeerNetwork } from '../network.js';
import { createWsPeerNetwork } from '../ws.js';

const KEY = 'reply-in-turn-test-key-0123456789abcdef';

function install(b: PeerNetwork): void {
  const mem = new Uint8Array(4096 * 8);
  b.onRequest(async (_f, m) => {
    const req = m as MapReq;
    const data = mem.subarray(req.page * 4096, (req.page + 1) * 4096);
    data.fill(0x11);
    // what the owner of the memory does once it gets it back (grantRange: the pins are dropped and
    // the page may be written or freed): from the next macrotask on
    setImmediate(() => data.fill(0xee));
    return {
      t: 'map-ok',
      re: req.id,
      access: 'r',
      pages: [{ page: req.page, version: 1, data }],
      grants: [1],
    } as never;
  });
}

async function check(a: PeerNetwork): Promise<void> {
  const one = (await a.request<MapReq>('b', {
    t: 'map',
    apid: 'b:a1',
    page: 0,
    count: 1,
    access: 'r',
  })) as MapOk;
  assert.ok(
    one.pages[0].data.every((x) => x === 0x11),
    'single reply: the bytes as of the reply',
  );
  const many = (await Promise.all(
    Array.from({ length: 8 }, (_, page) =>
      a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page, count: 1, access: 'r' }),
    ),
  )) as MapOk[];
  for (const r of many)
    assert.ok(
      r.pages[0].data.every((x) => x === 0x11),
      'batched replies: as of the reply',
    );
}

describe('a reply is encoded in the turn it is queued (views in replies are safe until setImmediate)', () => {
  it('memory transport', async () => {
    const mem = await createMemoryNetwork({ nodes: ['a', 'b'], clusterKey: KEY, seed: 1 });
    try {
      const [a, b] = [mem.networks.a, mem.networks.b];
      install(b);
      await a.waitUp('b', 10_000);
      await check(a);
    } finally {
      await mem.close();
    }
  });

  describe('ws transport', () => {
    let a: PeerNetwork;
    let b: PeerNetwork;
    before(async () => {
      b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
      install(b);
      a = await createWsPeerNetwork({ self: 'a', peers: [{ node: 'b', url: b.address! }], clusterKey: KEY });
      await a.waitUp('b', 10_000);
    });
    after(async () => {
      await a?.close();
      await b?.close();
    });
    it('single and batched replies', () => check(a));
  });
});
