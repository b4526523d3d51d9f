/**
 * The link's send queue across turns: a request on an idle link (nothing outstanding, nothing
 * queued) leaves at once, alone in its frame; everything else queued in one turn leaves in one batch
 * frame (a msgpack array, or a plain map for one message) at the turn's flush, in order, and nothing
 * of an earlier turn is sent again; the replies to one frame's requests leave in one frame (the last
 * reply owed flushes). The queue's arrays are reused from one flush to the next (link.ts: a count,
 * not the array's length, says what is queued), so turns of decreasing size are the case to check.
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

  it('turns of 5, 2, 1, 3 requests on an idle link: the first alone and at once, the rest of the turn in one frame; replies per request frame', async () => {
    const before = frames.length;
    const turns: number[][][] = [];
    for (const n of [5, 2, 1, 3]) {
      const at = frames.length;
      const pending = Array.from({ length: n }, (_, i) =>
        a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page: i, count: 1, access: 'r' }),
      );
      // The first request of the turn found the link idle: it is on the wire already, alone.
      assert.equal(frames.length, at + 1, 'the idle link sent the first request within request()');
      assert.equal(frames[at].length, 1, 'alone in its frame');
      const replies = await Promise.all(pending);
      const sent = frames.slice(at);
      turns.push(sent);
      assert.deepEqual(
        sent.map((f) => f.length),
        n === 1 ? [1] : [1, n - 1],
        `the turn's ${n} requests: the first alone, the other ${n - 1} batched in one frame`,
      );
      assert.deepEqual(
        replies.map((r) => r.re),
        sent.flat(),
        'each reply answers its request, in order',
      );
    }
    assert.equal(frames.length - before, 7, 'two frames per turn of several, one for a single request');
    const all = frames.slice(before).flat();
    assert.equal(new Set(all).size, all.length, 'no request id sent twice');
    // The replies of one frame's requests leave batched too: the last one owed flushes them all
    // (link.ts reply()), not each its own. (Two request frames that reach b in one read may be
    // answered in one frame: the replies of one request frame are never split.)
    const replies = replyFrames.flat();
    assert.deepEqual(replies, all, 'every reply once, in request order');
    for (const f of frames.slice(before)) {
      assert.ok(
        replyFrames.some((r) => f.every((id) => r.includes(id))),
        `the replies to request frame [${f}] left in one frame`,
      );
    }
  });

  it("requests made while others are outstanding leave batched at the turn's flush, not one by one", async () => {
    let releaseFirst: (() => void) | undefined;
    const blocked = new Promise<void>((r) => (releaseFirst = r));
    b.onRequest(async (_f, m) => {
      if ((m as MapReq).page === 100) await blocked;
      return { t: 'map-ok', re: (m as MapReq).id, access: 'r', pages: [], grants: [] } as never;
    });
    const at = frames.length;
    const first = a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page: 100, count: 1, access: 'r' });
    assert.equal(frames.length, at + 1, 'idle link: sent at once');
    await new Promise((r) => setTimeout(r, 20)); // a later turn, the first still outstanding
    const more = Array.from({ length: 4 }, (_, i) =>
      a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page: i, count: 1, access: 'r' }),
    );
    assert.equal(frames.length, at + 1, 'busy link: nothing sent within request()');
    await Promise.all(more);
    assert.deepEqual(
      frames.slice(at).map((f) => f.length),
      [1, 4],
      'the four requests of the busy turn in one frame',
    );
    releaseFirst?.();
    await first;
  });
});
