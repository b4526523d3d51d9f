/**
 * Differential test of the fused frame reader (fast-decode.ts) against the reference decode
 * (msgpackr + the validator, FrameDecoder.decodeReference) on valid frames from both encoders and
 * from a writer that picks every legal (and some illegal) MessagePack width, on mutated frames
 * (byte flips, truncations, insertions, lying length headers), on messages with a field replaced
 * by an edge value, extra, missing, reordered or repeated keys, and on arbitrary msgpack values,
 * under default and tight limits. Whenever the fused reader answers, the reference accepts the
 * frame and outputs the same messages (deep equality, and page bytes that are the same views of
 * the frame); `decode` (fused reader, else reference) always gives the reference's result,
 * errors included. And it does answer for what links send (else the fast path would be dead code).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeFrame, encodeLinkFrame, FrameDecoder } from '../codec.js';
import { readFast } from '../fast-decode.js';
import { type Limits, resolveLimits } from '../limits.js';
import type { Message } from '../messages.js';
import { seededRandom } from '../transport.js';
import { anyMessage, arbitraries } from './arbitraries.js';

const RUNS = Number(process.env.DIFF_RUNS ?? 3000);

const LIMITS: Limits[] = [
  resolveLimits(),
  resolveLimits({ maxBatch: 2, maxPagesPerMessage: 2, maxRangesPerMessage: 3, maxStringChars: 8 }),
];
const DECODERS = LIMITS.map((l) => new FrameDecoder(l));

/** Decodes `frame` every way; asserts the contract; returns whether the fused reader answered. */
function check(frame: Uint8Array, d: FrameDecoder): boolean {
  const ref = d.decodeReference(frame);
  const got = d.decode(frame);
  assert.deepStrictEqual(got, ref);
  if (frame.byteLength === 0 || frame.byteLength > d.limits.maxFrameBytes) return false;
  const fast = readFast(frame, d.limits);
  if (fast === undefined) return false;
  assert.ok(ref.ok, `fused reader accepted what the reference refuses: ${!ref.ok && ref.message}`);
  assert.deepStrictEqual(fast, ref.messages);
  // Page bytes: the same kind of view of the same bytes of the frame as msgpackr hands out.
  for (let i = 0; i < fast.length; i++) {
    const a = pagesOf(fast[i]);
    const b = pagesOf(ref.messages[i]);
    assert.equal(a.length, b.length);
    for (let k = 0; k < a.length; k++) {
      assert.equal(Object.getPrototypeOf(a[k]), Object.getPrototypeOf(b[k]));
      assert.equal(a[k].buffer, frame.buffer);
      assert.equal(a[k].buffer, b[k].buffer);
      assert.equal(a[k].byteOffset, b[k].byteOffset);
      assert.equal(a[k].byteLength, b[k].byteLength);
    }
  }
  return true;
}

function pagesOf(m: Message): Uint8Array[] {
  const ps = m.t === 'map-ok' ? m.pages : m.t === 'invalidate-ack' || m.t === 'detach' ? m.dirty : [];
  return ps.map((p) => p.data);
}

const HANDSHAKE = new Set(['hello', 'welcome', 'auth', 'ready']);
function isAscii(m: Message): boolean {
  for (const v of Object.values(m))
    if (typeof v === 'string' && Buffer.byteLength(v) !== v.length) return false;
  return true;
}

// ---- a MessagePack writer with a choice of widths -----------------------------------------------

/** A map with explicit entries (repeated or non-string keys allowed). */
class Entries {
  constructor(readonly entries: [unknown, unknown][]) {}
}

type Rand = () => number;
const rng: (seed: number) => Rand = seededRandom;

/**
 * Encodes `v` as standard MessagePack, choosing at random among the widths that can hold each value
 * (fixint/uint8..64/int8..64/float32/float64 for an integer, fixstr/str8/16/32, bin8/16/32,
 * fix/16/32 arrays and maps). With `lie`, a few length headers are off by a little or huge.
 */
function encodeWide(v: unknown, r: Rand, lie = false): Uint8Array {
  const out: number[] = [];
  const u = (n: number, bytes: number) => {
    for (let i = bytes - 1; i >= 0; i--) out.push(Math.floor(n / 2 ** (8 * i)) & 0xff);
  };
  const len = (n: number) => {
    if (!lie || r() > 0.05) return n;
    const c = r();
    return c < 0.3 ? Math.max(0, n - 1) : c < 0.6 ? n + 1 : c < 0.8 ? n + 1000 : 0xffffffff;
  };
  const header = (n: number, fix: number, fixMax: number, c8: number | null, c16: number, c32: number) => {
    const opts: (() => void)[] = [];
    if (n <= fixMax) opts.push(() => out.push(fix + n));
    if (c8 !== null && n < 256) opts.push(() => out.push(c8, n));
    if (n < 65536)
      opts.push(() => {
        out.push(c16);
        u(n, 2);
      });
    opts.push(() => {
      out.push(c32);
      u(n, 4);
    });
    pick(opts);
  };
  // The smallest width most of the time (keys almost always), so that most frames are ones the
  // fused reader takes (it declines a key that is not a fixstr) and the rest exercise every width.
  let keyNext = false;
  const pick = (opts: (() => void)[]) => {
    const canonical = keyNext ? 0.97 : 0.6;
    keyNext = false;
    opts[r() < canonical ? 0 : Math.floor(r() * opts.length)]();
  };
  const write = (x: unknown): void => {
    if (x === null) out.push(0xc0);
    else if (x === undefined) out.push(0xd4, 0, 0);
    else if (x === true || x === false) out.push(x ? 0xc3 : 0xc2);
    else if (typeof x === 'number') writeNumber(x);
    else if (typeof x === 'string') {
      const b = Buffer.from(x, 'utf8');
      header(len(b.length), 0xa0, 31, 0xd9, 0xda, 0xdb);
      for (const c of b) out.push(c);
    } else if (x instanceof Uint8Array) {
      const n = len(x.length);
      if (n < 256 && r() < 0.5) out.push(0xc4, n);
      else if (n < 65536 && r() < 0.7) out.push(0xc5, n >> 8, n & 0xff);
      else {
        out.push(0xc6);
        u(n, 4);
      }
      for (const c of x) out.push(c);
    } else if (Array.isArray(x)) {
      header(len(x.length), 0x90, 15, null, 0xdc, 0xdd);
      for (const e of x) write(e);
    } else {
      const es = x instanceof Entries ? x.entries : Object.entries(x as object);
      header(len(es.length), 0x80, 15, null, 0xde, 0xdf);
      for (const [k, e] of es) {
        keyNext = true;
        write(k);
        keyNext = false;
        write(e);
      }
    }
  };
  const writeNumber = (x: number) => {
    const opts: (() => void)[] = [];
    if (Number.isInteger(x) && !Object.is(x, -0)) {
      if (x >= 0 && x < 128) opts.push(() => out.push(x));
      if (x < 0 && x >= -32) opts.push(() => out.push(x & 0xff));
      if (x >= 0 && x < 256) opts.push(() => out.push(0xcc, x));
      if (x >= 0 && x < 65536)
        opts.push(() => {
          out.push(0xcd);
          u(x, 2);
        });
      if (x >= 0 && x < 2 ** 32)
        opts.push(() => {
          out.push(0xce);
          u(x, 4);
        });
      if (x >= 0 && x < 2 ** 64)
        opts.push(() => {
          out.push(0xcf);
          u(x, 8);
        });
      if (x >= -128 && x < 128) opts.push(() => out.push(0xd0, x & 0xff));
      if (x >= -32768 && x < 32768)
        opts.push(() => {
          out.push(0xd1);
          u(x & 0xffff, 2);
        });
      if (x >= -(2 ** 31) && x < 2 ** 31)
        opts.push(() => {
          out.push(0xd2);
          u(x >>> 0, 4);
        });
      if (Math.abs(x) < 2 ** 63)
        opts.push(() => {
          const b = Buffer.alloc(8);
          b.writeBigInt64BE(BigInt(x));
          out.push(0xd3, ...b);
        });
    }
    if (Object.is(Math.fround(x), x) || Number.isNaN(x))
      opts.push(() => {
        const b = Buffer.alloc(4);
        b.writeFloatBE(x);
        out.push(0xca, ...b);
      });
    opts.push(() => {
      const b = Buffer.alloc(8);
      b.writeDoubleBE(x);
      out.push(0xcb, ...b);
    });
    pick(opts);
  };
  write(v);
  return Uint8Array.from(out);
}

// ---- generators ---------------------------------------------------------------------------------

const sessionMessage = fc.oneof(
  ...Object.entries(arbitraries)
    .filter(([t]) => !HANDSHAKE.has(t))
    .map(([, a]) => a),
);
const batch = fc.array(sessionMessage, { minLength: 1, maxLength: 4 });

const EDGE_VALUES: unknown[] = [
  undefined,
  null,
  -0,
  0,
  -1,
  0.5,
  1,
  63,
  64,
  65,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  -(2 ** 53),
  Number.NaN,
  Number.POSITIVE_INFINITY,
  '',
  'r',
  'rw',
  'a:1',
  'a:a1',
  'a:a1\n',
  'é:a1',
  `${'n'.repeat(64)}:1`,
  'x'.repeat(65),
  'x'.repeat(513),
  'é',
  'ü'.repeat(40),
  'é'.repeat(300),
  '\u{1F600}',
  'E_BUSY',
  'E_NOPE',
  'remove',
  'fence',
  'map',
  'map-ok',
  'hello',
  true,
  false,
  [],
  [[0, 1]],
  [[0, 0]],
  [[0, 1, 2]],
  [1, 2],
  {},
  new Uint8Array(0),
  new Uint8Array(32),
  new Uint8Array(4095),
  new Uint8Array(4096),
  [{ page: 0, version: 0, data: new Uint8Array(4096) }],
  [{ page: 0, version: 0, data: new Uint8Array(4096), extra: 1 }],
  [{ page: 0, data: new Uint8Array(4096) }],
  [{ page: -0, version: 2 ** 53 - 1, data: new Uint8Array(4096) }],
  2 ** 32 + 0.5,
  1e-300,
  -(2 ** 31),
];
const edge = fc.constantFrom<unknown>(...EDGE_VALUES);

const onePage = () => [{ page: 3, version: 9, data: new Uint8Array(4096).fill(1) }];
/** Samples with a page (fc.sample may give none), so that the page fields are replaced too. */
const WITH_PAGES: Record<string, Message[]> = {
  'map-ok': [{ t: 'map-ok', re: 1, access: 'r', pages: onePage(), grants: [5] }],
  'invalidate-ack': [{ t: 'invalidate-ack', re: 1, cid: 'c', dirty: onePage() }],
  detach: [{ t: 'detach', id: 1, apid: 'n:a1', ranges: [[1, 2]], dirty: onePage() }],
};

/** Paths to every leaf of a message (through objects and arrays; byte arrays are leaves). */
function leafPaths(v: unknown, at: (string | number)[] = []): (string | number)[][] {
  if (v instanceof Uint8Array || typeof v !== 'object' || v === null) return at.length > 0 ? [at] : [];
  const out: (string | number)[][] = at.length > 0 ? [at] : [];
  const keys = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
  for (const k of keys) out.push(...leafPaths((v as Record<string | number, unknown>)[k], [...at, k]));
  return out;
}
/** A deep copy of `m` with the value at `path` replaced. */
function setPath(m: unknown, path: (string | number)[], v: unknown): unknown {
  if (path.length === 0) return v;
  const [k, ...rest] = path;
  const copy = (Array.isArray(m) ? [...m] : { ...(m as object) }) as Record<string | number, unknown>;
  copy[k] = setPath(copy[k], rest, v);
  return copy;
}

/** A session message as explicit entries, then changed: a field replaced, dropped or repeated, a
 * key added, the order shuffled. */
const tampered = fc
  .tuple(
    sessionMessage,
    fc.array(
      fc.tuple(
        fc.constantFrom('replace', 'drop', 'repeat', 'add', 'swap', 'rekey'),
        fc.nat(),
        edge,
        fc.constantFrom('t', 'id', 're', 'cid', 'x', '__proto__', 'page', 'data', 'pages'),
      ),
      { maxLength: 3 },
    ),
  )
  .map(([m, ops]) => {
    const es: [unknown, unknown][] = Object.entries(m);
    for (const [op, n, v, key] of ops) {
      const i = es.length === 0 ? 0 : n % es.length;
      if (op === 'replace' && es.length > 0) es[i] = [es[i][0], v];
      else if (op === 'drop') es.splice(i, 1);
      else if (op === 'repeat' && es.length > 0) es.splice(i + 1, 0, [es[i][0], n % 2 ? es[i][1] : v]);
      else if (op === 'add') es.splice(i, 0, [key, v]);
      else if (op === 'swap' && es.length > 1) [es[0], es[i]] = [es[i], es[0]];
      else if (op === 'rekey' && es.length > 0) es[i] = [n % 3 === 0 ? 1 : key, es[i][1]];
    }
    return new Entries(es);
  });

/** Structural JSON-ish values (with byte arrays), some with a `t` of a session type. */
const anyValue = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    edge,
    fc.integer(),
    fc.double(),
    fc.string(),
    fc.uint8Array({ maxLength: 8 }),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.constantFrom('t', 're', 'id', 'cid', 'pages', 'access', 'grants', 'k'), tie('v'), {
      maxKeys: 5,
    }),
    fc.record({ t: fc.constantFrom('map', 'map-ok', 'ok', 'error', 'invalidate'), re: tie('v') }),
  ),
})).v;

/** Byte-level mutations of a frame. */
const mutation = fc.array(
  fc.tuple(
    fc.constantFrom('flip', 'set', 'truncate', 'insert', 'delete'),
    fc.nat(),
    fc.constantFrom(
      0x00,
      0x7f,
      0x80,
      0x8f,
      0x90,
      0xa0,
      0xbf,
      0xc0,
      0xc1,
      0xc4,
      0xca,
      0xcb,
      0xcf,
      0xd3,
      0xd4,
      0xdb,
      0xdd,
      0xdf,
      0xff,
    ),
    fc.integer({ min: 0, max: 7 }),
  ),
  { minLength: 1, maxLength: 3 },
);
function mutate(frame: Uint8Array, ops: [string, number, number, number][]): Uint8Array {
  let b = Array.from(frame);
  for (const [op, n, byte, bit] of ops) {
    const i = b.length === 0 ? 0 : n % b.length;
    if (op === 'flip' && b.length > 0) b[i] ^= 1 << bit;
    else if (op === 'set' && b.length > 0) b[i] = byte;
    else if (op === 'truncate') b = b.slice(0, i);
    else if (op === 'insert') b.splice(i, 0, byte);
    else if (op === 'delete') b.splice(i, 1);
  }
  return Uint8Array.from(b);
}

/** The frame as the ws transport delivers it: a Buffer that is a view into a larger chunk. */
function asReceived(frame: Uint8Array, pad: number): Buffer {
  const chunk = Buffer.alloc(frame.byteLength + pad * 2, 0xee);
  chunk.set(frame, pad);
  return chunk.subarray(pad, pad + frame.byteLength);
}

describe('fused frame reader (fast-decode) vs msgpackr + validator', () => {
  it('answers for what links send, with the reference output (single and batch, both encoders)', () => {
    let answered = 0;
    let ascii = 0;
    fc.assert(
      fc.property(batch, fc.boolean(), fc.nat(64), (ms, single, pad) => {
        const value = single ? ms[0] : ms;
        for (const d of DECODERS) {
          for (const frame of [encodeLinkFrame(value), encodeFrame(value)]) {
            const f = asReceived(frame, pad);
            const fused = check(f, d);
            if (d === DECODERS[0]) {
              assert.ok(d.decodeReference(f).ok);
              if (frame !== undefined && (single ? [ms[0]] : ms).every(isAscii)) {
                ascii++;
                // Link frames of valid ASCII session messages all take the fused path.
                assert.ok(fused, 'fused reader declined a valid link frame');
                answered++;
              }
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
    assert.ok(answered > 0 && answered === ascii);
  });

  it('same as the reference for every width MessagePack allows, and for lying length headers', () => {
    let fused = 0;
    fc.assert(
      fc.property(fc.oneof(batch, sessionMessage), fc.integer(), fc.boolean(), (v, seed, lie) => {
        const frame = encodeWide(v, rng(seed), lie);
        for (const d of DECODERS) if (check(frame, d)) fused++;
      }),
      { numRuns: RUNS },
    );
    assert.ok(fused > RUNS / 20, `fused reader answered ${fused} times`);
  });

  it('same as the reference with every leaf of sample messages replaced by every edge value', () => {
    const edges = EDGE_VALUES;
    let checks = 0;
    let fused = 0;
    for (const [t, arb] of Object.entries(arbitraries)) {
      if (HANDSHAKE.has(t)) continue;
      for (const m of [...fc.sample(arb, { numRuns: 3, seed: 7 }), ...(WITH_PAGES[t] ?? [])]) {
        for (const path of leafPaths(m)) {
          for (const v of edges) {
            const changed = setPath(m, path, v);
            for (const seed of [1, 2]) {
              const frame = encodeWide(changed, rng(seed));
              for (const d of DECODERS) if (check(frame, d)) fused++;
              checks++;
            }
          }
        }
      }
    }
    assert.ok(checks > 1000);
    assert.ok(fused > 500, `fused reader answered ${fused} of ${checks}`);
  });

  it('same as the reference for tampered messages (replaced, dropped, repeated, added, reordered keys)', () => {
    fc.assert(
      fc.property(
        fc.array(tampered, { minLength: 1, maxLength: 3 }),
        fc.integer(),
        fc.boolean(),
        (ms, seed, one) => {
          const frame = encodeWide(one ? ms[0] : ms, rng(seed));
          for (const d of DECODERS) check(frame, d);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('same as the reference for mutated link frames (flips, truncations, insertions, deletions)', () => {
    fc.assert(
      fc.property(batch, fc.boolean(), mutation, (ms, single, ops) => {
        const frame = mutate(encodeLinkFrame(single ? ms[0] : ms), ops);
        for (const d of DECODERS) check(frame, d);
      }),
      { numRuns: RUNS },
    );
  });

  it('same as the reference for arbitrary msgpack values and random bytes', () => {
    fc.assert(
      fc.property(anyValue, fc.integer(), (v, seed) => {
        const r = rng(seed);
        for (const d of DECODERS) {
          check(encodeWide(v, r), d);
          check(encodeWide(v, r, true), d);
        }
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (b) => {
        for (const d of DECODERS) check(b, d);
      }),
      { numRuns: RUNS },
    );
  });

  it('declines, without allocating for them, length headers far beyond the frame', () => {
    const d = DECODERS[0];
    // batch of 2^32-1 messages; map-ok whose pages array claims 2^32-1 entries; ranges likewise
    const huge = [
      Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x81, 0xa1, 0x74, 0xa2, 0x6f, 0x6b]),
      encodeWide(
        new Entries([
          ['t', 'map-ok'],
          ['re', 1],
          ['access', 'r'],
        ]),
        rng(1),
      ),
    ];
    const pagesHuge = Uint8Array.from([
      0x84,
      0xa1,
      0x74,
      0xa6,
      ...Buffer.from('map-ok'),
      0xa2,
      0x72,
      0x65,
      0x01,
      0xa6,
      ...Buffer.from('access'),
      0xa1,
      0x72,
      0xa5,
      ...Buffer.from('pages'),
      0xdd,
      0xff,
      0xff,
      0xff,
      0xff,
    ]);
    for (const f of [...huge, pagesHuge]) {
      assert.equal(readFast(f, d.limits), undefined);
      check(f, d);
    }
    const ok = d.decode(pagesHuge);
    assert.ok(!ok.ok);
  });

  it('reads -0 and float-encoded integers as msgpackr does (the validator accepts them)', () => {
    const d = DECODERS[0];
    const m = new Entries([
      ['t', 'ok'],
      ['re', -0],
    ]);
    for (let seed = 0; seed < 50; seed++) {
      const f = encodeWide(m, rng(seed));
      check(f, d);
    }
    // float64 5.0 as `re`
    const f = Uint8Array.from([
      0x82, 0xa1, 0x74, 0xa2, 0x6f, 0x6b, 0xa2, 0x72, 0x65, 0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0,
    ]);
    assert.deepEqual(readFast(f, d.limits), [{ t: 'ok', re: 5 }]);
    check(f, d);
  });

  it('any message, handshake ones included, decodes the same both ways', () => {
    fc.assert(
      fc.property(anyMessage, (m) => {
        for (const d of DECODERS) check(encodeLinkFrame(m), d);
      }),
      { numRuns: RUNS },
    );
  });
});
