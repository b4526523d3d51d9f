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
      fc.array(
        fc.tuple(
          fc.boolean(),
          fc.nat(20),
          fc.nat(3),
          fc.nat(2),
          // small pages collide often; the largest ones sit next to the write bit (bit 31)
          fc.oneof(fc.nat(4), fc.constantFrom(0x7fffffff, 0x7ffffffe, 0x40000000)),
          fc.boolean(),
        ),
        { maxLength: 300 },
      ),
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
        // the per-page queries agree with the model too (write access shares a word with the page)
        for (const k of model.keys()) {
          const [pfn, node, seg, page] = k.split('/').map(Number);
          const i = r.find(pfn, node, seg, page);
          assert.ok(i >= 0);
          assert.equal(r.isWrite(i), model.get(k));
          assert.equal(r.entry(i, pfn).page, page);
          let any = false;
          let write = false;
          for (const [k2, w2] of model) {
            const [p2, , s2, pg2] = k2.split('/').map(Number);
            if (p2 === pfn && s2 === seg && pg2 === page) {
              any = true;
              write ||= w2;
            }
          }
          const m = r.pageMask(pfn, seg, page);
          assert.equal((m & 1) !== 0, any);
          assert.equal((m & 2) !== 0, write);
          assert.equal(r.hasPage(pfn, seg, page), any);
          // the list-free walk finds exactly slotsOf's slots, in the same order
          const walked: number[] = [];
          for (let j = r.firstSlotOf(pfn, seg, page); j >= 0; j = r.nextSlotOf(j, seg, page)) walked.push(j);
          assert.deepEqual(walked, r.slotsOf(pfn, seg, page, []));
          assert.ok(walked.length > 0);
        }
      },
    ),
    { seed: 42, numRuns: 200 },
  );
});

test('reverse map: the list-free slot walk of a page with no entry, or a frame never seen, is empty', () => {
  const r = new ReverseMap();
  r.add(3, 1, 1, 0, 1, 1, false);
  r.add(3, 2, 1, 1, 1, 1, true);
  r.add(3, 3, 1, 0, 1, 1, true);
  assert.equal(r.firstSlotOf(3, 1, 2), -1);
  assert.equal(r.firstSlotOf(3, 2, 0), -1);
  assert.equal(r.firstSlotOf(1_000_000, 1, 0), -1);
  assert.equal(r.firstSlotOf(-1, 1, 0), -1);
  const nodes: number[] = [];
  for (let i = r.firstSlotOf(3, 1, 0); i >= 0; i = r.nextSlotOf(i, 1, 0)) nodes.push(r.nodeAt(i));
  assert.deepEqual(nodes.sort(), [1, 3]);
});

test('reverse map refuses a page index that does not fit beside the write bit', () => {
  const r = new ReverseMap();
  assert.throws(() => r.add(1, 1, 1, 0x80000000, 1, 1, false), RangeError);
  assert.throws(() => r.add(1, 1, 1, -1, 1, 1, false), RangeError);
  assert.equal(r.size, 0);
});

test('reverse map costs at most 24 bytes per (page, mapper) entry at scale (2 mappers per page)', () => {
  const r = new ReverseMap();
  const frames = 65536;
  for (let i = 0; i < 2 * frames; i++) r.add(i % frames, i < frames ? 1 : 2, 1, i % frames, 1, 1, false);
  assert.equal(r.size, 2 * frames);
  const per = r.bytes() / r.size;
  assert.ok(per <= 24, `${per} bytes/entry`);
});
