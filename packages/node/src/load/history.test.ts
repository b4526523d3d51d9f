import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkHistory, type HistoryOp } from './history.js';

const op = (
  process: string,
  kind: 'r' | 'w',
  value: number,
  invokeTs: number,
  responseTs: number,
  address = 1,
): HistoryOp => ({
  process,
  address,
  kind,
  value,
  invokeTs,
  responseTs,
});

describe('history checker: hand-made histories', () => {
  it('accepts a sequential history and reads of the initial value', () => {
    const h = [
      op('a', 'r', 0, 0, 1),
      op('a', 'w', 10, 2, 3),
      op('b', 'r', 10, 4, 5),
      op('b', 'w', 11, 6, 7),
      op('a', 'r', 11, 8, 9),
    ];
    const r = checkHistory(h);
    assert.equal(r.ok, true, JSON.stringify(r.violations));
    assert.equal(r.reads, 3);
    assert.equal(r.writes, 2);
  });

  it('catches a stale read and names the address and the operations', () => {
    // w10 completes, w11 completes, then a read (invoked after both) returns 10: stale.
    const h = [op('a', 'w', 10, 0, 1, 42), op('b', 'w', 11, 2, 3, 42), op('c', 'r', 10, 4, 5, 42)];
    const r = checkHistory(h);
    assert.equal(r.ok, false);
    const v = r.violations[0];
    assert.equal(v.address, 42);
    assert.match(v.message, /address 42/);
    assert.ok(
      v.ops.some((o) => o.process === 'c' && o.kind === 'r' && o.value === 10),
      'names the stale read',
    );
    assert.ok(
      v.ops.some((o) => o.kind === 'w' && o.value === 11),
      'names the overwriting write',
    );
  });

  it('accepts a read concurrent with a write returning either value', () => {
    for (const v of [0, 10])
      assert.equal(checkHistory([op('a', 'w', 10, 0, 10), op('b', 'r', v, 2, 3)]).ok, true);
  });

  it('catches a read of the initial value after a write completed', () => {
    const r = checkHistory([op('a', 'w', 10, 0, 1), op('b', 'r', 0, 2, 3)]);
    assert.equal(r.ok, false);
    assert.equal(r.violations[0].rule, 'overwritten-value');
  });

  it('catches read-read inversion (new value, then old value, both during a long write)', () => {
    // w11 spans [0,100]; r1 reads 11 in [10,11]; r2 (after r1) reads the older 10: not linearizable.
    const h = [
      op('a', 'w', 10, -10, -5),
      op('b', 'w', 11, 0, 100),
      op('c', 'r', 11, 10, 11),
      op('d', 'r', 10, 20, 21),
    ];
    assert.equal(checkHistory(h).ok, false);
  });

  it('catches a read from the future and an unknown value (and says where that value was written)', () => {
    assert.equal(
      checkHistory([op('a', 'r', 10, 0, 1), op('b', 'w', 10, 5, 6)]).violations[0].rule,
      'read-before-write',
    );
    const r = checkHistory([op('a', 'w', 7, 0, 1, 2), op('b', 'r', 7, 2, 3, 1)]);
    assert.equal(r.violations[0].rule, 'unknown-value');
    assert.match(r.violations[0].message, /written to address 2/);
  });

  it('gives ties and the clock slack the benefit of the doubt', () => {
    // Touching intervals are concurrent: the read may be ordered before w11.
    assert.equal(
      checkHistory([op('a', 'w', 10, 0, 1), op('b', 'w', 11, 1, 2), op('c', 'r', 10, 2, 3)]).ok,
      true,
    );
    const gaps = [op('a', 'w', 10, 0, 1), op('b', 'w', 11, 1.5, 2), op('c', 'r', 10, 2.5, 3)];
    assert.equal(checkHistory(gaps).ok, false);
    assert.equal(checkHistory(gaps, 20, 0.3).ok, true);
  });

  it('checks a 200,000-operation history (sort + sweep; its speed is not asserted here)', () => {
    const h: HistoryOp[] = [];
    for (let i = 0; i < 200_000; i++)
      h.push(op('p', i % 2 ? 'r' : 'w', i % 2 ? i : i + 1, i, i + 0.5, Math.floor(i / 2) % 64));
    const r = checkHistory(h);
    assert.equal(r.ops, 200_000);
    assert.equal(r.ok, true);
  });
});

/** A linearizable history: random intervals, a linearization point inside each, values applied in that order. */
const linearizable = fc
  .array(
    fc.record({
      proc: fc.integer({ min: 0, max: 3 }),
      address: fc.integer({ min: 0, max: 2 }),
      write: fc.boolean(),
      inv: fc.integer({ min: 0, max: 1000 }),
      len: fc.integer({ min: 0, max: 50 }),
      at: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
    { maxLength: 80 },
  )
  .map((specs) => {
    const withPoint = specs.map((s, i) => ({ ...s, i, point: s.inv + s.len * s.at }));
    withPoint.sort((a, b) => a.point - b.point || a.i - b.i);
    const cur = new Map<number, number>();
    let next = 1;
    return withPoint.map((s): HistoryOp => {
      let value: number;
      if (s.write) {
        value = next++;
        cur.set(s.address, value);
      } else value = cur.get(s.address) ?? 0;
      return {
        process: `p${s.proc}`,
        address: s.address,
        kind: s.write ? 'w' : 'r',
        value,
        invokeTs: s.inv,
        responseTs: s.inv + s.len,
      };
    });
  });

/** A sequential history: one op after another, each read returning the latest write. */
const sequential = fc
  .array(fc.record({ address: fc.integer({ min: 0, max: 3 }), write: fc.boolean() }), { maxLength: 100 })
  .map((specs) => {
    const cur = new Map<number, number>();
    return specs.map((s, i): HistoryOp => {
      const value = s.write ? i + 1 : (cur.get(s.address) ?? 0);
      if (s.write) cur.set(s.address, value);
      return {
        process: `p${i % 3}`,
        address: s.address,
        kind: s.write ? 'w' : 'r',
        value,
        invokeTs: 2 * i,
        responseTs: 2 * i + 1,
      };
    });
  });

describe('history checker: properties', () => {
  it('sequential histories always pass', () => {
    fc.assert(
      fc.property(sequential, (h) => checkHistory(h).ok),
      { numRuns: 300, seed: 7 },
    );
  });

  it('linearizable concurrent histories always pass', () => {
    fc.assert(
      fc.property(linearizable, (h) => checkHistory(h).ok),
      { numRuns: 300, seed: 11 },
    );
  });

  it('an injected stale read is always caught', () => {
    fc.assert(
      fc.property(sequential, fc.nat(), (h, pick) => {
        // Find an address with two writes; append a read after the second returning the first.
        const byAddr = new Map<number, HistoryOp[]>();
        for (const o of h) if (o.kind === 'w') byAddr.set(o.address, [...(byAddr.get(o.address) ?? []), o]);
        const candidates = [...byAddr.values()].filter((ws) => ws.length >= 2);
        fc.pre(candidates.length > 0);
        const ws = candidates[pick % candidates.length];
        const k = pick % (ws.length - 1);
        const end = h.length * 2 + 10;
        const stale: HistoryOp = {
          process: 'stale',
          address: ws[k].address,
          kind: 'r',
          value: ws[k].value,
          invokeTs: end,
          responseTs: end + 1,
        };
        const r = checkHistory([...h, stale]);
        return (
          !r.ok &&
          r.violations.some(
            (v) =>
              v.address === stale.address &&
              v.ops.some((o) => o.process === 'stale' || o.value === stale.value),
          )
        );
      }),
      { numRuns: 300, seed: 13 },
    );
  });
});
