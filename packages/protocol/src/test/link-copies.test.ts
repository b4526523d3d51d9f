/**
 * What a link sends for a request and a reply is a copy of the caller's object with the id / `re`
 * (link.ts withId / withRe: literals for the hot types, Object.assign for the rest): every field of
 * the type arrives, `cid` travels (the reply's own, else the request's), the caller's object is not
 * changed, and a field the type does not have does not leave the process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeRaw } from '../codec.js';
import type { Invalidate, MapReq, Message, Release } from '../messages.js';
import type { TransportPeerNetwork } from '../network.js';
import { createWsPeerNetwork } from '../ws.js';

const KEY = 'link-copies-test-key-0123456789abcdef';

describe('request and reply copies', () => {
  let a: TransportPeerNetwork;
  let b: TransportPeerNetwork;
  const seenByB: Message[] = [];
  const rawIn: Record<string, unknown>[] = [];
  let replyCid: string | undefined;
  before(async () => {
    b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
    b.onRequest(async (_f, m) => {
      seenByB.push(m);
      const extra = { stray: 1 };
      if (m.t === 'map')
        return { t: 'map-ok', access: m.access, pages: [], grants: [7], cid: replyCid, ...extra } as never;
      if (m.t === 'invalidate') return { t: 'invalidate-ack', dirty: [], ...extra } as never;
      return { t: 'ok', ...extra } as never;
    });
    a = await createWsPeerNetwork({
      self: 'a',
      peers: [{ node: 'b', url: b.address! }],
      clusterKey: KEY,
      onFrame: (dir, _n, f) => {
        if (dir !== 'in') return;
        const v = decodeRaw(f) as Record<string, unknown> | Record<string, unknown>[];
        for (const m of Array.isArray(v) ? v : [v]) rawIn.push(m);
      },
    });
    await a.waitUp('b', 10_000);
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  it('map / map-ok: every field, cid both ways, the caller object untouched, no stray field on the wire', async () => {
    const req = {
      t: 'map',
      apid: 'b:a1',
      page: 3,
      count: 2,
      access: 'rw',
      cid: 'op-1',
      stray: true,
    } as const;
    const snapshot = JSON.stringify(req);
    replyCid = undefined;
    const r1 = await a.request<MapReq>('b', req as unknown as Omit<MapReq, 'id'>);
    assert.equal(JSON.stringify(req), snapshot, 'caller object not changed');
    const got = seenByB.at(-1) as MapReq;
    assert.deepEqual(
      { ...got, id: 0 },
      { t: 'map', id: 0, apid: 'b:a1', page: 3, count: 2, access: 'rw', cid: 'op-1' },
    );
    assert.equal(r1.cid, 'op-1', "the request's cid on a reply without one");
    assert.deepEqual(r1.grants, [7]);
    assert.equal(r1.re, got.id);
    replyCid = 'own';
    const r2 = await a.request<MapReq>('b', req as unknown as Omit<MapReq, 'id'>);
    assert.equal(r2.cid, 'own', "the reply's own cid wins");
    assert.ok(
      rawIn.every((m) => !('stray' in m)),
      'no stray field on the wire',
    );
  });

  it('invalidate / invalidate-ack and release / ok', async () => {
    const inv: Omit<Invalidate, 'id'> = {
      t: 'invalidate',
      segid: 'b:1',
      ranges: [[0, 4]],
      reason: 'unmap',
      writeback: true,
      downgrade: false,
      upTo: 9,
      cid: 'op-2',
    };
    const ack = await a.request<Invalidate>('b', inv);
    const got = seenByB.at(-1) as Invalidate;
    assert.deepEqual({ ...got, id: 0 }, { ...inv, id: 0 });
    assert.equal(ack.t, 'invalidate-ack');
    assert.equal(ack.cid, 'op-2');
    const ok = await a.request<Release>('b', { t: 'release', apid: 'b:a1' } as Omit<Release, 'id'>);
    assert.equal(ok.t, 'ok');
    assert.equal(ok.cid, undefined);
  });
});
