/**
 * The link's send queue across turns: everything queued in one turn leaves in one batch frame (a
 * msgpack array, or a plain map for one message), in order, and nothing of an earlier turn is sent
 * again; the replies to one frame's requests leave in one frame (the last reply owed flushes). The queue's arrays are reused from one flush to the next (link.ts: a count, not the
 * array's length, says what is queued), so turns of decreasing size are the case to check.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeRaw } from '../codec.js';
import type { MapReq } from '../messages.js';
import type { TransportPeerNetwork } from '../network.js';
import { createWsPeerNetwork } from '../ws.js';

const KEY = 'link-queue-test-key-0123456789abcdef';

describe('link send queue: one frame per turn, across turns of different sizes', () => {
  let a: TransportPeerNetwork;
  let b: TransportPeerNetwork;
  /** Request ids of every map request frame a sent after the handshake, one entry per frame. */
  const frames: number[][] = [];
  /** `re` of every map-ok frame b sent, one entry per frame. */
  const replyFrames: number[][] = [];
  before(async () => {
    b = await createWsPeerNetwork({
      self: 'b',
      listen: { host: '127.0.0.1', port: 0 },
      clusterKey: KEY,
      onFrame: (dir, _node, f) => {
        if (dir !== 'out') return;
        const v = decodeRaw(f) as Record<string, unknown> | Record<string, unknown>[];
        const ms = Array.isArray(v) ? v : [v];
        if (ms.every((m) => m.t === 'map-ok')) replyFrames.push(ms.map((m) => m.re as number));
      },
    });
    b.onRequest(
      async (_f, m) => ({ t: 'map-ok', re: (m as MapReq).id, access: 'r', pages: [], grants: [] }) as never,
    );
    a = await createWsPeerNetwork({
      self: 'a',
      peers: [{ node: 'b', url: b.address! }],
      clusterKey: KEY,
      onFrame: (dir, _node, f) => {
        if (dir !== 'out') return;
        const v = decodeRaw(f) as Record<string, unknown> | Record<string, unknown>[];
        const ms = Array.isArray(v) ? v : [v];
        if (ms.every((m) => m.t === 'map')) frames.push(ms.map((m) => m.id as number));
      },
    });
    await a.waitUp('b', 10_000);
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  it('turns of 5, 2, 1, 3 requests: 4 frames of exactly those requests, every reply to its request', async () => {
    for (const n of [5, 2, 1, 3]) {
      const replies = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page: i, count: 1, access: 'r' }),
        ),
      );
      const sent = frames.at(-1);
      assert.ok(sent, 'a frame was sent');
      assert.equal(sent.length, n, `one frame with the turn's ${n} requests`);
      assert.deepEqual(
        replies.map((r) => r.re),
        sent,
        'each reply answers its request, in order',
      );
    }
    assert.equal(frames.length, 4, 'one frame per turn, nothing sent twice');
    const all = frames.flat();
    assert.equal(new Set(all).size, all.length, 'no request id sent twice');
    // The replies of one turn's requests leave batched too: the last one owed flushes them all
    // (link.ts reply()), not each its own.
    assert.deepEqual(replyFrames, frames, 'one reply frame per request frame, same ids in the same order');
  });
});
