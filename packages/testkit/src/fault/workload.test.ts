/**
 * The history rules of the fault workload (workload.ts), on hand-made histories: they must accept
 * what the dirty-page policy allows (a fenced instance's unobserved write vanishes) and still catch
 * a stale read by a survivor and a fenced session's write that becomes visible after the home moved
 * on. No namespaces needed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkFaultHistory, type IncInfo, type LostChunkInfo, type RecordedOp } from './workload.js';

const op = (
  inc: number,
  kind: 'r' | 'w',
  value: number,
  invokeTs: number,
  responseTs: number,
  address = 1,
): RecordedOp => ({
  process: `inc${inc}`,
  address,
  kind,
  value,
  invokeTs,
  responseTs,
  inc,
});

/** inc 1: the home instance n1; inc 2: n2 (the victim, tainted or not); inc 3: n3. */
const incs =
  (victimTainted: boolean) =>
  (id: number): IncInfo | undefined =>
    ({
      1: { node: 'n1', tainted: false },
      2: { node: 'n2', tainted: victimTainted },
      3: { node: 'n3', tainted: false },
    })[id];

describe('fault history rules', () => {
  it('accepts a linearizable history', () => {
    const h = [op(1, 'w', 10, 0, 1), op(3, 'r', 10, 2, 3), op(3, 'w', 11, 4, 5), op(1, 'r', 11, 6, 7)];
    assert.equal(checkFaultHistory(h, [], incs(false), 0).result.ok, true);
  });

  it('catches a stale read by a survivor', () => {
    const h = [op(1, 'w', 10, 0, 1), op(3, 'w', 11, 2, 3), op(1, 'r', 11, 4, 5), op(3, 'r', 10, 6, 7)];
    const c = checkFaultHistory(h, [], incs(false), 0);
    assert.equal(c.result.ok, false);
  });

  it("allows a fenced session's unobserved write to vanish (the dirty-page policy), and only then", () => {
    // n2 writes 20 and reads it back locally; it is fenced; the page reverts: n1 and n3 read 10 later
    const h = [
      op(1, 'w', 10, 0, 1),
      op(3, 'r', 10, 2, 3),
      op(2, 'w', 20, 4, 5),
      op(2, 'r', 20, 6, 7),
      op(1, 'r', 10, 10, 11),
      op(3, 'r', 10, 12, 13),
    ];
    const ok = checkFaultHistory(h, [], incs(true), 0);
    assert.equal(ok.result.ok, true, JSON.stringify(ok.result.violations));
    assert.equal(ok.indeterminateWrites, 1);
    assert.equal(ok.droppedReads, 1);
    // the same history from a session that was NOT fenced is a lost update
    assert.equal(checkFaultHistory(h, [], incs(false), 0).result.ok, false);
  });

  it("catches a fenced session's write that becomes visible after the home moved on", () => {
    // n2 writes 20 (fenced session); n3 then writes 30 and n1 reads 30; later n3 reads 20: the stale
    // write was accepted after a newer one
    const h = [
      op(1, 'w', 10, 0, 1),
      op(2, 'w', 20, 2, 3),
      op(3, 'w', 30, 10, 11),
      op(1, 'r', 30, 12, 13),
      op(3, 'r', 20, 20, 21),
    ];
    const c = checkFaultHistory(h, [], incs(true), 0);
    assert.equal(c.result.ok, false);
  });

  it('gives values of a lost chunk an indeterminate write, and nothing else', () => {
    const value = (2 << 20) | 5;
    const lost: LostChunkInfo[] = [
      { slot: 2, inc: 3, node: 'n3', name: 'n3/p0', seqFrom: 0, seqTo: 200, t0: 5 },
    ];
    const h = [op(1, 'w', 10, 0, 1), op(1, 'r', value, 20, 21), op(1, 'r', value, 22, 23)];
    const c = checkFaultHistory(h, lost, incs(false), 0);
    assert.equal(c.result.ok, true, JSON.stringify(c.result.violations));
    assert.equal(c.syntheticWrites, 1);
    assert.equal(
      checkFaultHistory(h, [], incs(false), 0).result.ok,
      false,
      'an unknown value without a lost chunk',
    );
    // a value read before the lost chunk was even sent is still a violation
    const early = [op(1, 'r', value, 1, 2)];
    assert.equal(checkFaultHistory(early, lost, incs(false), 0).result.ok, false);
  });
});
