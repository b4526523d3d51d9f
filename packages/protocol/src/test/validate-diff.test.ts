/**
 * Differential test: the hand-written ingress checker (fast-validate.ts) against the zod schemas
 * (the reference) on valid messages, mutated messages and arbitrary values, under default and tight
 * limits. Same accept/reject decision; when both accept, the same output (deep equality).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { buildFastChecks } from '../fast-validate.js';
import { resolveLimits } from '../limits.js';
import type { MessageType } from '../messages.js';
import { MESSAGE_TYPES, Validator } from '../validate.js';
import { anyMessage } from './arbitraries.js';

const RUNS = Number(process.env.DIFF_RUNS ?? 10_000);

const edge = fc.constantFrom<unknown>(
  undefined,
  null,
  -0,
  0,
  -1,
  0.5,
  1,
  2,
  63,
  64,
  65,
  65535,
  65536,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  -(2 ** 53),
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  '',
  'r',
  'rw',
  'w',
  'a:1',
  'a:a1',
  'a:1\n',
  'a:a1\n',
  `${'n'.repeat(64)}:1`,
  `${'n'.repeat(65)}:1`,
  `n:${'1'.repeat(15)}`,
  `n:${'1'.repeat(16)}`,
  'x'.repeat(64),
  'x'.repeat(65),
  'x'.repeat(512),
  'x'.repeat(513),
  'E_BUSY',
  'E_NOPE',
  'remove',
  'exit',
  'fence',
  'hello',
  true,
  false,
  [],
  [1],
  [0, 1],
  [0, 0],
  [0, 1, 2],
  [[0, 1]],
  {},
  { page: 0, version: 0, data: new Uint8Array(4096) },
  new Uint8Array(0),
  new Uint8Array(31),
  new Uint8Array(32),
  new Uint8Array(33),
  new Uint8Array(4095),
  new Uint8Array(4096),
  Buffer.alloc(32),
  Buffer.alloc(4096),
  new Uint16Array(16),
  new Date(0),
  new Map(),
);
const weird: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: edge },
  { weight: 1, arbitrary: fc.anything() },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.string({ maxLength: 80 }) },
  { weight: 1, arbitrary: fc.array(edge, { maxLength: 70 }) },
);

/** Applies one mutation somewhere in a (deep-copied) message. */
function mutate(msg: Record<string, unknown>, path: number[], how: number, value: unknown, key: string) {
  const m = structuredClone(msg) as Record<string, unknown>;
  // Edge values are shared constants: never let a mutation reach them.
  value = typeof value === 'object' && value !== null ? structuredClone(value) : value;
  const keys = Object.keys(m);
  const k = keys[path[0] % keys.length];
  switch (how % 6) {
    case 0:
      m[k] = value;
      break;
    case 1:
      delete m[k];
      break;
    case 2:
      m[key] = value;
      break;
    case 3: {
      // inside an array field (versions, pages, ranges, dirty) or a nested object
      const arr = m[k];
      if (Array.isArray(arr) && arr.length > 0) {
        const i = path[1] % arr.length;
        const el = arr[i];
        if (Array.isArray(el)) el[path[2] % 3] = value;
        else if (el && typeof el === 'object') {
          const ek = Object.keys(el);
          (el as Record<string, unknown>)[ek[path[2] % ek.length]] = value;
        } else arr[i] = value;
      } else m[k] = value;
      break;
    }
    case 4: {
      const arr = m[k];
      if (Array.isArray(arr)) {
        if (path[1] % 2) arr.push(value);
        else arr.length = path[2] % (arr.length + 1);
      } else m[k] = [value];
      break;
    }
    default:
      m.cid = value;
  }
  return m;
}

const limitSets = [
  resolveLimits(),
  resolveLimits({ maxPagesPerMessage: 2, maxRangesPerMessage: 3, maxStringChars: 12 }),
];

function compare(v: Validator, fast: ReturnType<typeof buildFastChecks>, x: unknown) {
  const ref = v.validateWithSchema(x);
  const viaValidate = v.validate(x);
  let f: unknown;
  const isMap = typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
  const t = isMap ? (x as Record<string, unknown>).t : undefined;
  if (isMap && typeof t === 'string' && (MESSAGE_TYPES as readonly string[]).includes(t)) {
    f = fast[t as MessageType](x as Record<string, unknown>);
    if ((f !== undefined) !== ref.ok)
      assert.fail(`fast ${f !== undefined} vs zod ${ref.ok}: ${describeValue(x)}`);
    // the verdict-only check (outgoing messages) says the same
    if (v.acceptable(x) !== ref.ok)
      assert.fail(`acceptable ${!ref.ok} vs zod ${ref.ok}: ${describeValue(x)}`);
    if (ref.ok) assert.deepStrictEqual(f, ref.msg);
  }
  assert.deepStrictEqual(viaValidate, ref);
}

function describeValue(x: unknown): string {
  try {
    return JSON.stringify(x, (_k, v) =>
      v instanceof Uint8Array
        ? `<bytes ${v.byteLength}>`
        : typeof v === 'number' && !Number.isFinite(v)
          ? String(v)
          : v,
    ).slice(0, 400);
  } catch {
    return '<unprintable>';
  }
}

describe('fast validator = zod schemas', () => {
  for (const [li, limits] of limitSets.entries()) {
    const v = new Validator(limits);
    const fast = buildFastChecks(limits);
    it(`valid messages (limits #${li})`, () => {
      fc.assert(
        fc.property(anyMessage, (m) => compare(v, fast, m)),
        { numRuns: RUNS / 4 },
      );
    });
    it(`mutated messages (limits #${li})`, () => {
      fc.assert(
        fc.property(
          anyMessage,
          fc.array(fc.nat(), { minLength: 3, maxLength: 3 }),
          fc.nat(),
          weird,
          fc.constantFrom('extra', 'id', 're', 'cid', 'pages', 'dirty', 'ranges', '__proto__', 'constructor'),
          (m, path, how, value, key) => compare(v, fast, mutate(m as never, path, how, value, key)),
        ),
        { numRuns: RUNS },
      );
    });
    it(`double mutations (limits #${li})`, () => {
      fc.assert(
        fc.property(
          anyMessage,
          fc.array(fc.nat(), { minLength: 6, maxLength: 6 }),
          fc.nat(),
          fc.nat(),
          weird,
          weird,
          (m, p, h1, h2, a, b) =>
            compare(v, fast, mutate(mutate(m as never, p.slice(0, 3), h1, a, 'x'), p.slice(3), h2, b, 'y')),
        ),
        { numRuns: RUNS / 2 },
      );
    });
    it(`arbitrary maps with a known type (limits #${li})`, () => {
      fc.assert(
        fc.property(
          fc.constantFrom(...MESSAGE_TYPES),
          fc.dictionary(
            fc.constantFrom(
              'id',
              're',
              'cid',
              'segid',
              'apid',
              'access',
              'uid',
              'gid',
              'size',
              'page',
              'count',
              'pages',
              'ranges',
              'dirty',
              'reason',
              'writeback',
              'downgrade',
              'code',
              'message',
              'versions',
              'node',
              'epoch',
              'nonce',
              'proof',
              'version',
            ),
            weird,
          ),
          (t, d) => compare(v, fast, { ...d, t }),
        ),
        { numRuns: RUNS / 2 },
      );
    });
  }
  it('every leaf of sample messages replaced by every edge value (fast path and verdicts vs zod)', () => {
    const edges = fc.sample(edge, { numRuns: 2000, seed: 3 }).filter((x, i, a) => a.indexOf(x) === i);
    const leaves = (x: unknown, at: (string | number)[] = []): (string | number)[][] => {
      if (x instanceof Uint8Array || typeof x !== 'object' || x === null) return at.length ? [at] : [];
      const keys = Array.isArray(x) ? x.map((_, i) => i) : Object.keys(x);
      return [...(at.length ? [at] : []), ...keys.flatMap((k) => leaves((x as never)[k], [...at, k]))];
    };
    const set = (x: unknown, path: (string | number)[], val: unknown): unknown => {
      if (path.length === 0) return val;
      const c = (Array.isArray(x) ? [...x] : { ...(x as object) }) as Record<string | number, unknown>;
      c[path[0]] = set(c[path[0]], path.slice(1), val);
      return c;
    };
    for (const limits of limitSets) {
      const v = new Validator(limits);
      const fast = buildFastChecks(limits);
      for (const m of fc.sample(anyMessage, { numRuns: 60, seed: 11 }))
        for (const path of leaves(m)) for (const e of edges) compare(v, fast, set(m, path, e));
    }
  });
  it('non-maps', () => {
    const v = new Validator();
    fc.assert(
      fc.property(weird, (x) => compare(v, buildFastChecks(v.limits), x)),
      { numRuns: RUNS / 4 },
    );
  });
});
