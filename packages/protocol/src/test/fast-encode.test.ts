/**
 * The link's hand-written writer (fast-encode.ts) against msgpackr (the codec's reference encoder):
 * - every valid message and batch: byte for byte msgpackr's frame of the same message with its
 *   fields in schema order (the validator's output), so the wire stays standard MessagePack;
 * - mutated and arbitrary values: either the writer declines (the link then uses msgpackr) or the
 *   receiver decodes and validates its frame to exactly what it makes of msgpackr's frame;
 * - frames handed out are never overwritten (a socket may still hold them), across slab changes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeRaw, encodeFrame, encodeLinkFrame, FrameDecoder } from '../codec.js';
import { encodeFast } from '../fast-encode.js';
import type { Message } from '../messages.js';
import { Validator } from '../validate.js';
import { anyMessage, arbitraries } from './arbitraries.js';

const RUNS = Number(process.env.DIFF_RUNS ?? 3000);
const HANDSHAKE = new Set(['hello', 'welcome', 'auth', 'ready']);
const validator = new Validator();

/** The message as the validator outputs it: known fields only, in schema order. */
function canonical(m: Message): Message {
  const r = validator.validate(m);
  assert.ok(r.ok, `arbitrary message must be valid: ${!r.ok && r.message}`);
  return r.msg;
}

const bytes = (u: Uint8Array | undefined) => (u ? Buffer.from(u).toString('hex') : 'declined');

describe('fast-encode: the link writer equals msgpackr', () => {
  it('valid messages: byte-identical to msgpackr in schema order (handshake types declined)', () => {
    fc.assert(
      fc.property(anyMessage, (m) => {
        const f = encodeFast(m);
        if (HANDSHAKE.has(m.t)) {
          assert.equal(f, undefined);
          return;
        }
        assert.ok(f, `declined a valid ${m.t}`);
        assert.equal(bytes(f), bytes(encodeFrame(canonical(m))));
        assert.deepEqual(decodeRaw(f), decodeRaw(encodeFrame(m)));
      }),
      { numRuns: RUNS },
    );
  });

  it('batches: one msgpack array of the messages, byte-identical to msgpackr', () => {
    const session = fc.oneof(
      ...Object.entries(arbitraries)
        .filter(([t]) => !HANDSHAKE.has(t))
        .map(([, a]) => a),
    );
    fc.assert(
      fc.property(fc.array(session, { minLength: 1, maxLength: 20 }), (ms) => {
        const f = encodeFast(ms);
        assert.ok(f);
        const ref = encodeFrame(ms.length === 1 ? canonical(ms[0]) : ms.map(canonical));
        assert.equal(bytes(f), bytes(ref));
      }),
      { numRuns: Math.ceil(RUNS / 5) },
    );
  });

  it('strings: UTF-8 like msgpackr (multi-byte, astral, lone surrogates, every header size)', () => {
    const s = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ unit: 'grapheme', maxLength: 300 }),
      fc.constantFrom(
        '\ud800',
        'a\udc00b',
        'é'.repeat(16),
        'x'.repeat(31),
        'x'.repeat(32),
        'x'.repeat(256),
        'x'.repeat(70000),
        '€'.repeat(30000),
      ),
    );
    fc.assert(
      fc.property(s, fc.option(fc.string({ maxLength: 64 }), { nil: undefined }), (message, cid) => {
        const m = { t: 'error', re: 7, cid, code: 'E_BUSY', message } as Message;
        const f = encodeFast(m);
        assert.ok(f);
        assert.equal(bytes(f), bytes(encodeFrame(m)));
      }),
      { numRuns: RUNS },
    );
  });

  it('mutated and arbitrary values: declined, or decoded and validated exactly like msgpackr', () => {
    const decoder = new FrameDecoder();
    const edge = fc.constantFrom<unknown>(
      undefined,
      null,
      -0,
      -1,
      -33,
      -200,
      -40000,
      -(2 ** 31) - 1,
      0.5,
      127,
      128,
      255,
      256,
      65535,
      65536,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 53,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      '',
      'r',
      'é',
      true,
      false,
      [],
      [1],
      [0, 1],
      [[0, 1]],
      [[0, 1, 2]],
      {},
      { page: 0, version: 0, data: new Uint8Array(4096) },
      { page: 0, version: 0, data: new Uint8Array(4096), extra: 1 },
      { page: 0, version: 0 },
      new Uint8Array(0),
      new Uint8Array(300),
      new Uint8Array(70000),
      Buffer.alloc(32),
      new Uint16Array(16),
      new Date(0),
      new Map(),
    );
    const value = fc.oneof({ weight: 4, arbitrary: edge }, { weight: 1, arbitrary: fc.anything() });
    const session = fc.oneof(
      ...Object.entries(arbitraries)
        .filter(([t]) => !HANDSHAKE.has(t))
        .map(([, a]) => a),
    );
    const keys = [
      'id',
      're',
      'cid',
      'apid',
      'segid',
      'page',
      'count',
      'access',
      'pages',
      'grants',
      'ranges',
      'reason',
      'writeback',
      'downgrade',
      'upTo',
      'dirty',
      'uid',
      'gid',
      'size',
      'code',
      'message',
      'extra',
    ];
    fc.assert(
      fc.property(
        session,
        fc.constantFrom(...keys),
        value,
        fc.nat(),
        fc.boolean(),
        (msg, key, v, i, nested) => {
          const m = structuredClone(msg) as unknown as Record<string, unknown>;
          const vv = typeof v === 'object' && v !== null ? structuredClone(v) : v;
          const arr = m[key];
          if (nested && Array.isArray(arr) && arr.length > 0) {
            const el = arr[i % arr.length];
            if (el && typeof el === 'object' && !Array.isArray(el)) {
              const ek = Object.keys(el);
              (el as Record<string, unknown>)[ek[i % ek.length]] = vv;
            } else arr[i % arr.length] = vv;
          } else m[key] = vv;
          let ref: Uint8Array;
          try {
            ref = encodeFrame(m as unknown as Message);
          } catch {
            return; // msgpackr cannot encode it either (a bug the link reports before encoding)
          }
          const f = encodeFast(m as unknown as Message);
          if (f === undefined) return;
          assert.deepEqual(decoder.decode(f), decoder.decode(ref));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('never overwrites a frame it returned, across slab changes and oversized frames', () => {
    const page = (n: number) => ({ page: n, version: n, data: new Uint8Array(4096).fill(n & 0xff) });
    const frames: [Uint8Array, string][] = [];
    for (let i = 0; i < 400; i++) {
      // 64 pages (a full map-ok: slab changes in the middle of big frames) and 600 pages (2.4 MB:
      // larger than a 2 MiB slab)
      const count = i % 200 === 7 ? 600 : i % 50 === 7 ? 64 : i % 5 === 0 ? 64 : (i % 5) + 1;
      const m = {
        t: 'map-ok',
        re: i,
        access: 'r',
        pages: Array.from({ length: count }, (_, j) => page(i + j)),
        grants: [i],
      } as Message;
      const f = encodeLinkFrame(m);
      frames.push([f, bytes(f)]);
      frames.push([encodeLinkFrame({ t: 'ok', re: i }), bytes(encodeFrame({ t: 'ok', re: i }))]);
    }
    for (const [f, hex] of frames) assert.equal(bytes(f), hex);
  });

  it('encodeLinkFrame falls back to msgpackr for what the writer declines', () => {
    const hello = { t: 'hello', versions: [2], node: 'a', epoch: 1, nonce: new Uint8Array(32) } as Message;
    assert.equal(bytes(encodeLinkFrame(hello)), bytes(encodeFrame(hello)));
    const odd = { t: 'ok', re: 1, cid: 5 } as unknown as Message; // invalid: cid must be a string
    assert.equal(bytes(encodeLinkFrame(odd)), bytes(encodeFrame(odd)));
  });
});
