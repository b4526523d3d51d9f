/**
 * The encoder reuses slab memory only after every frame written there was given back (fast-encode.ts
 * Slab, with the proof). What must hold: nobody who may still read a frame ever sees its bytes
 * change. Checked for every interleaving of pinned frames, leased frames and releases (fast-check,
 * against snapshots), and for the readers a sent frame has: ws's and Node's write queue (corked
 * batches of replies, unmasked server frames: the socket holds our very bytes until written), a tap
 * that keeps outgoing frames, and the memory transport's receiver. Also that reuse does happen (the
 * latency this is for: a serial round trip writes its frames into the same, cache-hot bytes).
 *
 * The first test needs a fresh slab (nothing pinned yet): node --test runs each file in its own
 * process, and nothing encodes before it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import fc from 'fast-check';
import { encodeLinkFrameLeased } from '../codec.js';
import { encodeFast, encodeFastLeased, takeRelease } from '../fast-encode.js';
import { createMemoryNetwork } from '../memory.js';
import type { MapOk, MapReq, Message } from '../messages.js';
import type { TransportPeerNetwork as PeerNetwork } from '../network.js';
import { createWsPeerNetwork } from '../ws.js';
import { type WsConn, wsTransport } from '../ws-transport.js';

const KEY = 'slab-reuse-test-key-0123456789abcdef';

function mapOk(re: number, pages: number, fill: number, size = 4096): Message {
  return {
    t: 'map-ok',
    re,
    access: 'r',
    pages: Array.from({ length: pages }, (_, i) => ({
      page: i,
      version: 1,
      data: new Uint8Array(size).fill((fill + i) & 0xff),
    })),
    grants: Array.from({ length: pages }, () => 1),
  } as Message;
}

describe('fast-encode slab: leases', () => {
  it('a released frame is reused by the next one (same bytes); an unreleased one is not', () => {
    const a = encodeFastLeased(mapOk(1, 1, 1))!;
    const ra = takeRelease()!;
    assert.equal(takeRelease(), undefined, 'a release is handed out once');
    ra();
    const b = encodeFastLeased(mapOk(2, 1, 2))!;
    const rb = takeRelease()!;
    assert.equal(b.buffer, a.buffer);
    assert.equal(b.byteOffset, a.byteOffset, 'written over the released frame');
    const snap = Buffer.from(b);
    const c = encodeFastLeased(mapOk(3, 1, 3))!;
    const rc = takeRelease()!;
    assert.ok(c.byteOffset >= b.byteOffset + b.byteLength || c.buffer !== b.buffer, 'b is still held');
    assert.deepEqual(Buffer.from(b), snap);
    rb();
    rc();
  });

  it('no frame still held (pinned, or leased and not released) ever changes, whatever the interleaving', () => {
    type Op =
      | { k: 'pin' | 'lease'; pages: number; size: number; fill: number }
      | { k: 'release'; pick: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 1,
        arbitrary: fc.record({
          k: fc.constant('pin' as const),
          pages: fc.integer({ min: 0, max: 2 }),
          size: fc.integer({ min: 0, max: 5000 }),
          fill: fc.integer({ min: 0, max: 255 }),
        }),
      },
      {
        weight: 6,
        arbitrary: fc.record({
          k: fc.constant('lease' as const),
          // up to 64 pages: slabs fill and roll over, so fresh slabs (that may rewind) keep coming
          pages: fc.integer({ min: 0, max: 64 }),
          size: fc.integer({ min: 0, max: 8192 }),
          fill: fc.integer({ min: 0, max: 255 }),
        }),
      },
      { weight: 6, arbitrary: fc.record({ k: fc.constant('release' as const), pick: fc.nat() }) },
    );
    let id = 0;
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const held: { frame: Uint8Array; snap: Buffer; release?: () => void }[] = [];
        try {
          for (const o of ops) {
            if (o.k === 'release') {
              const leased = held.filter((h) => h.release !== undefined);
              if (leased.length === 0) continue;
              const h = leased[o.pick % leased.length];
              held.splice(held.indexOf(h), 1);
              h.release!();
            } else {
              const m = mapOk(++id & 0xffff, o.pages, o.fill, o.size);
              const frame = o.k === 'pin' ? encodeFast(m)! : encodeFastLeased(m)!;
              const release = o.k === 'lease' ? takeRelease() : undefined;
              held.push({ frame, snap: Buffer.from(frame), release });
            }
            for (const h of held) assert.ok(Buffer.from(h.frame).equals(h.snap), 'a held frame changed');
          }
        } finally {
          for (const h of held) h.release?.();
        }
      }),
      { numRuns: 200, seed: 15 },
    );
  });
});

/** Replies whose bytes say which request they answer: a frame overwritten before it was sent shows. */
function install(b: PeerNetwork, pages: number): void {
  b.onRequest(async (_f, m) => {
    const req = m as MapReq;
    return mapOk(req.id, pages, req.page) as never;
  });
}

async function checkReplies(a: PeerNetwork, n: number, pages: number): Promise<void> {
  // n requests in one turn: their replies leave the server corked, several frames in its socket
  // at once (unmasked server frames are not copied by ws: the socket holds our bytes).
  const replies = (await Promise.all(
    Array.from({ length: n }, (_, i) =>
      a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page: i, count: 1, access: 'r' }),
    ),
  )) as MapOk[];
  replies.forEach((r, i) => {
    assert.equal(r.pages.length, pages);
    for (const p of r.pages)
      assert.ok(
        p.data.every((x) => x === ((i + p.page) & 0xff)),
        `reply ${i} page ${p.page}: bytes of another frame`,
      );
  });
}

describe('sent frames are intact on the wire (ws)', () => {
  let a: PeerNetwork;
  let b: PeerNetwork;
  before(async () => {
    b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
    install(b, 60);
    a = await createWsPeerNetwork({ self: 'a', peers: [{ node: 'b', url: b.address! }], clusterKey: KEY });
    await a.waitUp('b', 10_000);
  });
  after(async () => {
    await a.close();
    await b.close();
  });

  it('batches of large replies (MBs in the write queue): every byte as encoded', async () => {
    // 24 × 60 pages ≈ 6 MB per turn: more than the loopback socket takes at once, so writes stay
    // queued in Node while the encoder writes the next frames
    for (let round = 0; round < 4; round++) await checkReplies(a, 24, 60);
  });

  it('serial round trips (each frame reused at once) and small batches', async () => {
    for (let i = 0; i < 50; i++) await checkReplies(a, 1 + (i % 5), 60);
  });
});

describe('ws transport: a frame still in the socket queue is never given back', () => {
  it('the reader stops reading: frames sent in later turns do not overwrite queued ones', async () => {
    const t = wsTransport({ listen: { host: '127.0.0.1', port: 0 }, maxFrameBytes: 1 << 20 });
    let server: WsConn | undefined;
    const listener = await t.listen((c) => {
      server = c as WsConn;
      c.setHandlers({ onFrame() {}, onPong() {}, onClose() {} });
    });
    const client = (await t.dial(listener.address, 5000)) as WsConn;
    const until = Date.now() + 10_000;
    while (server === undefined && Date.now() < until) await tick();
    assert.ok(server, 'accepted');
    const got: Uint8Array[] = [];
    client.setHandlers({ onFrame: (f) => got.push(f), onPong() {}, onClose() {} });
    try {
      // the client's socket stops reading: the server's writes back up in Node (asynchronous writes,
      // libuv holding our unmasked bytes), while the encoder writes the next frames, one turn each
      const sock = (client.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
      sock.pause();
      const sent: Buffer[] = [];
      for (let i = 0; i < 40; i++) {
        const { frame, release } = encodeLinkFrameLeased(mapOk(i, 60, i));
        sent.push(Buffer.from(frame));
        server.send(frame, release);
        await tick();
      }
      assert.ok(server.bufferedAmount() > 0, 'writes are queued (the case under test)');
      sock.resume();
      const deadline = Date.now() + 20_000;
      while (got.length < sent.length && Date.now() < deadline) await tick();
      assert.equal(got.length, sent.length);
      for (let i = 0; i < got.length; i++)
        assert.ok(Buffer.from(got[i]).equals(sent[i]), `frame ${i} changed on the way`);
    } finally {
      client.close(1000, 'done');
      server?.close(1000, 'done');
      await listener.close();
    }
  });
});

describe('a tap that keeps outgoing frames sees them unchanged', () => {
  for (const transport of ['ws', 'memory'] as const) {
    it(transport, async () => {
      const kept: { frame: Uint8Array; snap: Buffer }[] = [];
      const onFrame = (dir: 'in' | 'out', _node: string, frame: Uint8Array) => {
        if (dir === 'out') kept.push({ frame, snap: Buffer.from(frame) });
      };
      let a: PeerNetwork;
      let close: () => Promise<void>;
      if (transport === 'ws') {
        const b = await createWsPeerNetwork({
          self: 'b',
          listen: { host: '127.0.0.1', port: 0 },
          clusterKey: KEY,
          onFrame,
        });
        install(b, 2);
        a = await createWsPeerNetwork({
          self: 'a',
          peers: [{ node: 'b', url: b.address! }],
          clusterKey: KEY,
          onFrame,
        });
        close = async () => {
          await a.close();
          await b.close();
        };
      } else {
        const mem = await createMemoryNetwork({ nodes: ['a', 'b'], clusterKey: KEY, seed: 3, onFrame });
        a = mem.networks.a;
        install(mem.networks.b, 2);
        close = () => mem.close();
      }
      try {
        await a.waitUp('b', 10_000);
        // decoded page data are views of received frames: kept across later round trips
        const first = (await a.request<MapReq>('b', {
          t: 'map',
          apid: 'b:a1',
          page: 9,
          count: 1,
          access: 'r',
        })) as MapOk;
        for (let i = 0; i < 40; i++) await checkReplies(a, 1 + (i % 3), 2);
        assert.ok(
          first.pages[0].data.every((x) => x === 9),
          'received page data unchanged',
        );
        assert.ok(kept.length > 80);
        for (const k of kept) assert.ok(Buffer.from(k.frame).equals(k.snap), 'a tapped frame changed');
      } finally {
        await close();
      }
    });
  }
});
