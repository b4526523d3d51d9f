/**
 * id-table.ts against a Map model (fast-check): random interleavings of allocate+insert, lookups and
 * removals of held, removed and arbitrary u32 ids, and clears. Every id handed out is not held at
 * that moment, lookups and removals agree with the Map, entries() is insertion order, and the table
 * stays at most half full.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type IdEntry, IdTable } from '../id-table.js';

type Op =
  | { k: 'add' }
  | { k: 'take'; pick: number; raw: number; useRaw: boolean }
  | { k: 'get'; pick: number; raw: number; useRaw: boolean }
  | { k: 'clear' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ k: 'add' } as Op) },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('take' as const),
      pick: fc.nat(),
      raw: fc.nat({ max: 0xffffffff }),
      useRaw: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('get' as const),
      pick: fc.nat(),
      raw: fc.nat({ max: 0xffffffff }),
      useRaw: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ k: 'clear' } as Op) },
);

describe('IdTable', () => {
  it('behaves as a Map of the ids it hands out', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const t = new IdTable<IdEntry & { n: number }>(4);
        const model = new Map<number, IdEntry & { n: number }>();
        let n = 0;
        for (const o of ops) {
          if (o.k === 'add') {
            const id = t.allocId();
            assert.ok(id >= 1 && id <= 0xffffffff && Number.isInteger(id));
            assert.ok(!model.has(id), `id ${id} handed out while held`);
            const e = { id, seq: -1, n: n++ };
            t.set(e);
            model.set(id, e);
          } else if (o.k === 'clear') {
            t.clear();
            model.clear();
          } else {
            const held = [...model.keys()];
            const id = o.useRaw || held.length === 0 ? o.raw : held[o.pick % held.length];
            if (o.k === 'get') assert.equal(t.get(id), model.get(id));
            else {
              assert.equal(t.take(id), model.get(id));
              model.delete(id);
            }
          }
          assert.equal(t.size, model.size);
        }
        assert.deepEqual(
          t.entries().map((e) => e.n),
          [...model.values()].map((e) => e.n),
          'entries in insertion order',
        );
      }),
      { numRuns: 300 },
    );
  });

  it('ids are sequential, wrap after 2^32 - 1 to 1, and skip held ones', () => {
    const t = new IdTable<IdEntry>(4);
    const a = t.allocId();
    t.set({ id: a, seq: 0 });
    assert.equal(a, 1);
    assert.equal(t.allocId(), 2);
    // jump near the wrap (white-box: the next id to hand out)
    (t as unknown as { nextId: number }).nextId = 0xffffffff;
    assert.equal(t.allocId(), 0xffffffff);
    assert.equal(t.allocId(), 2, 'after 2^32 - 1 comes 1, held: skipped');
    assert.equal(t.get(0), undefined);
    assert.equal(t.take(1 + 16 * 1024)?.id, undefined, 'same slot, other id: nothing');
    assert.equal(t.take(1)?.id, 1);
  });
});
