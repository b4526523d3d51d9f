/**
 * Fuzz: ≥ 100,000 random and mutated frames at a live ws endpoint on 127.0.0.1, from an
 * authenticated session (the worst case: past the handshake). Every frame must be answered with
 * exactly one `error` carrying a stable code; the request handler must never run for the fuzzer;
 * the process keeps serving a well-behaved peer. Repeated abuse with the default budget closes the
 * link with 4002.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import WebSocket from 'ws';
import { clientProof, clusterKeyBytes, newNonce, serverProof } from '../auth.js';
import { decodeFrame, decodeRaw, encodeFrame } from '../codec.js';
import { CloseCode, isWireErrorCode } from '../errors.js';
import { type Message, PROTOCOL_VERSIONS, type Release } from '../messages.js';
import type { TransportPeerNetwork } from '../network.js';
import { seededRandom } from '../transport.js';
import { createWsPeerNetwork } from '../ws.js';
import { anyMessage } from './arbitraries.js';

const KEY = 'fuzz-cluster-key-0123456789abcdef';
const TOTAL = 100_000;
const PER_CONN = 10_000;
const WINDOW = 2000;
const HANDSHAKE_TYPES = new Set(['hello', 'welcome', 'auth', 'ready']);

/** A client written from docs/protocol.md: plain ws + msgpack + HMAC. Resolves once `ready`. */
async function rawSession(url: string, node: string, onMsg: (m: Record<string, unknown>) => void) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  });
  const key = clusterKeyBytes(KEY);
  const cnonce = newNonce();
  const inbox: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  ws.on('message', (d: Buffer) => {
    const v = decodeRaw(d);
    for (const m of (Array.isArray(v) ? v : [v]) as Record<string, unknown>[]) {
      if (m.t === 'welcome' || m.t === 'ready') inbox.push(m);
      else onMsg(m);
    }
    wake?.();
  });
  const next = async () => {
    for (let i = 0; i < 500 && inbox.length === 0; i++) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 10);
      });
    }
    const m = inbox.shift();
    assert.ok(m, 'handshake reply');
    return m;
  };
  ws.send(
    encodeFrame({ t: 'hello', versions: [...PROTOCOL_VERSIONS], node, epoch: Date.now(), nonce: cnonce }),
  );
  const w = await next();
  assert.equal(w.t, 'welcome');
  const snode = w.node as string;
  assert.ok(
    Buffer.from(serverProof(key, cnonce, w.nonce as Uint8Array, node, snode)).equals(w.proof as Buffer),
  );
  ws.send(encodeFrame({ t: 'auth', proof: clientProof(key, cnonce, w.nonce as Uint8Array, node, snode) }));
  assert.equal((await next()).t, 'ready');
  return ws;
}

/** Frames that must be rejected: decode/validation failures, or handshake messages after ready. */
function mustReject(f: Uint8Array): boolean {
  const r = decodeFrame(f);
  if (!r.ok) return true;
  return r.messages.length === 1 && HANDSHAKE_TYPES.has(r.messages[0].t);
}

function makeGenerator(seed: number) {
  const rnd = seededRandom(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const valid: Uint8Array[] = fc
    .sample(anyMessage, { numRuns: 400, seed })
    .map((m) => Uint8Array.prototype.slice.call(encodeFrame(m as Message)));
  const randomBytes = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const structural: (() => unknown)[] = [
    () => ({ t: 'get', id: int(100), segid: 'x:1', access: 'rwx', uid: 0, gid: 0 }),
    () => ({ t: 'map', id: -1, apid: 'x:a1', page: 0, count: 1, access: 'r' }),
    () => ({ t: 'map', id: 1, apid: 'x:a1', page: 0, count: 1000, access: 'r' }),
    () => ({ t: 'map-ok', re: 1, access: 'r', pages: [{ page: 0, version: 0, data: new Uint8Array(4095) }] }),
    () => ({ t: 'detach', id: 2, apid: 'x:a1', ranges: [], dirty: [] }),
    () => ({
      t: 'invalidate',
      id: 3,
      segid: 'x:1',
      ranges: [[0, 0]],
      reason: 'reclaim',
      writeback: 1,
      downgrade: false,
    }),
    () => ({ t: `zz${int(1000)}` }),
    () => ({ t: 42 }),
    () => [],
    () => 'just a string',
    () => ({ t: 'error', code: 'E_NOPE', message: 'x' }),
    () => ({ t: 'hello', versions: [1], node: 'z', epoch: 1, nonce: new Uint8Array(32) }),
    () => ({ t: 'ready', epoch: 1 }),
    () => Array.from({ length: 300 }, () => ({ t: 'ok', re: 1 })),
    () => ({ t: 'release', id: 1, apid: 'y'.repeat(600) }),
  ];
  return (): Uint8Array => {
    for (;;) {
      const base = valid[int(valid.length)];
      let f: Uint8Array;
      switch (int(6)) {
        case 0:
          f = randomBytes(int(200));
          break;
        case 1:
          f = base.subarray(0, int(base.length));
          break;
        case 2: {
          f = new Uint8Array(base.length + 1 + int(8));
          f.set(base);
          f.set(randomBytes(f.length - base.length), base.length);
          break;
        }
        case 3: {
          f = Uint8Array.prototype.slice.call(base);
          for (let k = 1 + int(4); k > 0; k--) f[int(f.length)] ^= 1 << int(8);
          break;
        }
        case 4:
          f = encodeFrame(structural[int(structural.length)]() as Message);
          break;
        default: {
          // Splice random bytes into the middle of a valid frame.
          const at = int(base.length);
          f = new Uint8Array(base.length);
          f.set(base);
          f.set(randomBytes(Math.min(4, base.length - at)), at);
          break;
        }
      }
      if (mustReject(f)) return f;
    }
  };
}

it(`fuzz: ${TOTAL} random and mutated frames are each rejected with a code; the peer keeps serving`, async () => {
  let fuzzHandled = 0;
  let goodHandled = 0;
  const b: TransportPeerNetwork = await createWsPeerNetwork({
    self: 'b',
    listen: { host: '127.0.0.1', port: 0 },
    clusterKey: KEY,
    limits: { malformedBurst: PER_CONN * 2, maxFrameBytes: 1 << 20 },
  });
  b.onRequest(async (from) => {
    if (from.node === 'z') fuzzHandled++;
    else goodHandled++;
    return { t: 'ok' };
  });
  const a = await createWsPeerNetwork({
    self: 'a',
    peers: [{ node: 'b', url: b.address! }],
    clusterKey: KEY,
  });
  const t0 = Date.now();
  try {
    const session = await a.waitUp('b', 10_000);
    const gen = makeGenerator(1234);
    const codes = new Map<string, number>();
    let sent = 0;
    let errors = 0;
    while (sent < TOTAL) {
      let here = 0;
      const ws = await rawSession(b.address!, 'z', (m) => {
        if (m.t === 'error' && isWireErrorCode(m.code)) {
          errors++;
          codes.set(m.code as string, (codes.get(m.code as string) ?? 0) + 1);
        } else assert.fail(`unexpected reply ${JSON.stringify(m).slice(0, 200)}`);
      });
      while (here < PER_CONN && sent < TOTAL) {
        for (let k = 0; k < WINDOW; k++, here++, sent++) ws.send(gen());
        // The well-behaved peer is served in the middle of the storm.
        assert.equal((await a.request<Release>('b', { t: 'release', apid: 'b:a1' })).t, 'ok');
        for (let i = 0; i < 3000 && errors < sent; i++) await sleep(2);
        assert.equal(errors, sent, 'one error reply per rejected frame');
      }
      ws.close();
    }
    assert.equal(errors, TOTAL);
    assert.equal(fuzzHandled, 0, 'no fuzz frame reached the request handler');
    assert.ok(goodHandled >= TOTAL / WINDOW);
    const m = b.metrics();
    const rejected = Object.values(m.rejected).reduce((x, y) => x + y, 0);
    assert.equal(rejected, TOTAL);
    assert.equal(m.abuseCloses, 0);
    assert.deepEqual(a.sessions(), [session], 'the good session was never disturbed');
    console.error(
      `fuzz: ${TOTAL} frames in ${Date.now() - t0} ms; codes ${JSON.stringify(Object.fromEntries(codes))}`,
    );
  } finally {
    await a.close();
    await b.close();
  }
});

it('repeated abuse with the default budget closes the link with 4002', async () => {
  const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
  try {
    let errors = 0;
    const ws = await rawSession(b.address!, 'z', (m) => {
      if (m.t === 'error') errors++;
    });
    const closed = new Promise<number>((res) => ws.once('close', (code) => res(code)));
    for (let i = 0; i < 100; i++) ws.send(Buffer.from([0xc1]));
    const code = await Promise.race([closed, sleep(10_000).then(() => -1)]);
    assert.equal(code, CloseCode.ABUSE);
    assert.ok(errors >= 32, `error replies before the close: ${errors}`);
    assert.equal(b.metrics().abuseCloses, 1);
  } finally {
    await b.close();
  }
});

it('an unauthenticated peer gets one error and a close, never a second chance', async () => {
  const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
  try {
    const ws = new WebSocket(b.address!);
    await new Promise((r) => ws.once('open', r));
    const got: unknown[] = [];
    ws.on('message', (d: Buffer) => got.push(decodeRaw(d)));
    const closed = new Promise<number>((res) => ws.once('close', (code) => res(code)));
    ws.send(encodeFrame({ t: 'get', id: 1, segid: 'b:1', access: 'r', uid: 0, gid: 0 }));
    assert.equal(await Promise.race([closed, sleep(10_000).then(() => -1)]), CloseCode.HANDSHAKE);
    assert.equal((got[0] as { code: string }).code, 'E_STATE');
  } finally {
    await b.close();
  }
});

it('an unknown message type with a valid id is answered with an error carrying re (docs/errors.md)', async () => {
  const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
  try {
    const got: Record<string, unknown>[] = [];
    const ws = await rawSession(b.address!, 'z', (m) => got.push(m));
    ws.send(encodeFrame({ t: 'teleport', id: 42 } as unknown as Message));
    for (let i = 0; i < 500 && !got.some((m) => m.t === 'error'); i++) await sleep(10);
    const e = got.find((m) => m.t === 'error');
    assert.equal(e?.code, 'E_UNKNOWN_TYPE');
    assert.equal(e?.re, 42);
    ws.close();
  } finally {
    await b.close();
  }
});
