import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeFrame, decodeRaw, encodeFrame } from '../codec.js';
import type { Message } from '../messages.js';
import { MESSAGE_TYPES } from '../validate.js';
import { anyMessage, arbitraries } from './arbitraries.js';

/** Comparable form: byte arrays as hex (Buffer vs Uint8Array prototypes differ). */
function norm(v: unknown): unknown {
  if (v instanceof Uint8Array)
    return `bytes:${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`;
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

describe('codec + validation round trip', () => {
  it('has an arbitrary for every message type', () => {
    assert.deepEqual(Object.keys(arbitraries).sort(), [...MESSAGE_TYPES].sort());
  });

  for (const t of MESSAGE_TYPES) {
    it(`${t}: decode(encode(m)) == m and passes validation`, () => {
      fc.assert(
        fc.property(arbitraries[t], (m) => {
          const r = decodeFrame(encodeFrame(m));
          assert.ok(r.ok, r.ok ? '' : `${r.code} ${r.message}`);
          assert.deepEqual(norm(r.messages), norm([m]));
        }),
        { numRuns: 200 },
      );
    });
  }

  it('batches: several messages share one frame, order kept', () => {
    fc.assert(
      fc.property(fc.array(anyMessage, { minLength: 2, maxLength: 20 }), (ms) => {
        const r = decodeFrame(encodeFrame(ms));
        assert.ok(r.ok);
        assert.deepEqual(norm(r.messages), norm(ms));
      }),
      { numRuns: 100 },
    );
  });

  it('encodes plain msgpack: a map with string keys, page data as bin 16', () => {
    const m: Message = {
      t: 'map-ok',
      re: 7,
      access: 'r',
      pages: [{ page: 1, version: 2, data: new Uint8Array(4096) }],
      grants: [3],
    };
    const f = Buffer.from(encodeFrame(m));
    assert.equal(f[0], 0x85, 'fixmap of 5 entries');
    assert.ok(f.includes(Buffer.from([0xc5, 0x10, 0x00])), 'bin16 header of 4096 bytes');
    // Optional fields that are undefined are omitted, not encoded as msgpackr's undefined extension.
    const g = Buffer.from(encodeFrame({ t: 'ok', re: 1, cid: undefined } as Message));
    assert.deepEqual([...g], [...Buffer.from([0x82, 0xa1, 0x74, 0xa2, 0x6f, 0x6b, 0xa2, 0x72, 0x65, 0x01])]);
  });

  it('decoded page data is a view into the frame (no copy)', () => {
    const frame = encodeFrame({
      t: 'invalidate-ack',
      re: 1,
      dirty: [{ page: 0, version: 1, data: new Uint8Array(4096).fill(9) }],
    });
    const r = decodeFrame(frame);
    assert.ok(r.ok && r.messages[0].t === 'invalidate-ack');
    const data = (r.messages[0] as { dirty: { data: Uint8Array }[] }).dirty[0].data;
    assert.equal(data.buffer, frame.buffer);
    assert.equal(data[4095], 9);
  });

  it('rejects with stable codes', () => {
    const bad = (v: unknown) => decodeFrame(encodeFrame(v as Message));
    assert.equal(
      bad({ t: 'nope' }).ok ? '' : (bad({ t: 'nope' }) as { code: string }).code,
      'E_UNKNOWN_TYPE',
    );
    const unknown = bad({ t: 'nope', id: 7 });
    assert.equal(!unknown.ok && unknown.re, 7, 'an unknown type with a valid id is answered with re');
    const untyped = bad({ id: 8 });
    assert.equal(!untyped.ok && untyped.re, 8);
    const short = bad({
      t: 'map-ok',
      re: 1,
      access: 'r',
      pages: [{ page: 0, version: 0, data: new Uint8Array(4095) }],
    });
    assert.equal(!short.ok && short.code, 'E_MALFORMED');
    const many = bad({ t: 'map', id: 1, apid: 'n:a1', page: 0, count: 65, access: 'r' });
    assert.equal(!many.ok && many.code, 'E_TOO_LARGE');
    assert.equal(!many.ok && many.re, 1, 'the request id is echoed so the requester fails fast');
    const trailing = decodeFrame(Buffer.concat([encodeFrame({ t: 'ok', re: 1 }), Buffer.from([0])]));
    assert.equal(!trailing.ok && trailing.code, 'E_MALFORMED');
    const big = decodeFrame(new Uint8Array((1 << 20) + 1));
    assert.equal(!big.ok && big.code, 'E_TOO_LARGE');
    assert.equal(decodeRaw(encodeFrame({ t: 'ok', re: 3 })) instanceof Object, true);
  });
});
