import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ReverseMap } from '../rmap.js';

test('reverse map: add, update, find, remove, filter', () => {
  const r = new ReverseMap(2);
  assert.equal(r.add(5, 1, 1, 0, 7, 3, false), true);
  assert.equal(r.add(5, 2, 1, 0, 8, 4, true), true);
  assert.equal(r.add(5, 1, 1, 0, 9, 3, true), false, 'same (pfn,node,seg,page) updates');
  assert.equal(r.size, 2);
  assert.deepEqual(
    r.entries(5).map((e) => [e.node, e.apid, e.write]),
    [
      [2, 8, true],
      [1, 9, true],
    ],
  );
  assert.equal(r.isEmpty(6), true);
  assert.equal(r.remove(5, 2, 1, 0)?.epoch, 4);
  assert.equal(r.remove(5, 2, 1, 0), undefined);
  assert.equal(r.filter((e) => e.node === 1).length, 1);
  r.remove(5, 1, 1, 0);
  assert.equal(r.isEmpty(5), true);
  assert.equal(r.size, 0);
});

test('reverse map agrees with a naive model under random operations', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.boolean(), fc.nat(20), fc.nat(3), fc.nat(2), fc.nat(4), fc.boolean()), {
        maxLength: 300,
      }),
      (ops) => {
        const r = new ReverseMap(1);
        const model = new Map<string, boolean>();
        for (const [add, pfn, node, seg, page, w] of ops) {
          const key = `${pfn}/${node}/${seg}/${page}`;
          if (add) {
            r.add(pfn, node, seg, page, 0, 1, w);
            model.set(key, w);
          } else {
            assert.equal(r.remove(pfn, node, seg, page) !== undefined, model.delete(key));
          }
        }
        assert.equal(r.size, model.size);
        const got = r.filter(() => true).map((e) => `${e.pfn}/${e.node}/${e.seg}/${e.page}=${e.write}`);
        assert.deepEqual(got.sort(), [...model].map(([k, w]) => `${k}=${w}`).sort());
      },
    ),
    { seed: 42, numRuns: 200 },
  );
});

test('reverse map costs at most 48 bytes per entry at scale', () => {
  const r = new ReverseMap();
  const frames = 65536;
  for (let i = 0; i < 2 * frames; i++) r.add(i % frames, 1 + (i & 1), 1, i % frames, 1, 1, false);
  const per = r.bytes() / r.size;
  assert.ok(per <= 48, `${per} bytes/entry`);
});
