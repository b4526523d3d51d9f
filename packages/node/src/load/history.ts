/**
 * History checker: per-address linearizability of a read/write register whose writes have unique
 * values (the initial value 0 is an implicit write that completed before everything).
 *
 * With unique values every read is mapped to the one write it observed, and linearizability can be
 * decided in O(n log n) (Gibbons & Korach 1997, "zones"): group each write with the reads that
 * returned its value (a cluster). A cluster's zone spans from the earliest response of its
 * operations (f) to the latest invocation (s). If f < s the zone is *forward* (the write must be
 * linearized before f and the last read after s, so no other write may take effect inside);
 * otherwise *backward*. The history is linearizable iff
 *   1. every read returns a value some write wrote, and no read responds before its write is
 *      invoked (a read cannot see the future);
 *   2. no two forward zones overlap (two writes both "current" over one stretch of time: a stale
 *      read, or reads ordered against the writes);
 *   3. no backward zone lies inside a forward zone (a whole write, with all its reads, happened
 *      while another value had to stay current: a read returned an overwritten value).
 * Comparisons are strict, so operations whose timestamps tie are given the benefit of the doubt;
 * `slackMs` widens every interval by that much on both sides (clock uncertainty between threads).
 */

export type OpKind = 'r' | 'w';

export interface HistoryOp {
  /** Who did it (e.g. "n2/pid3"). */
  process: string;
  /** Address key (the same word has the same key in every process). */
  address: number;
  kind: OpKind;
  value: number;
  /** Invocation and response times (ms, one clock). */
  invokeTs: number;
  responseTs: number;
}

export interface Violation {
  address: number;
  rule:
    | 'unknown-value'
    | 'read-before-write'
    | 'overlapping-forward-zones'
    | 'overwritten-value'
    | 'duplicate-write';
  message: string;
  ops: HistoryOp[];
}

export interface CheckResult {
  ok: boolean;
  ops: number;
  addresses: number;
  reads: number;
  writes: number;
  violations: Violation[];
}

interface Cluster {
  write: HistoryOp;
  reads: HistoryOp[];
  /** earliest response, and the op that has it */
  f: number;
  fOp: HistoryOp;
  /** latest invocation, and the op that has it */
  s: number;
  sOp: HistoryOp;
}

export const INITIAL_VALUE = 0;

function describe(op: HistoryOp): string {
  return `${op.kind === 'w' ? 'write' : 'read'} ${op.value} by ${op.process} [${op.invokeTs.toFixed(3)}, ${op.responseTs.toFixed(3)}]`;
}

/** Check one address's operations. At most `maxViolations` are returned. */
export function checkAddress(
  address: number,
  rawOps: HistoryOp[],
  maxViolations = 10,
  slackMs = 0,
  writtenElsewhere?: (value: number) => HistoryOp | undefined,
): Violation[] {
  // Widen every interval by the clock slack: only orderings clearer than the slack count.
  const ops =
    slackMs > 0
      ? rawOps.map((o) => ({ ...o, invokeTs: o.invokeTs - slackMs, responseTs: o.responseTs + slackMs }))
      : rawOps;
  const out: Violation[] = [];
  const add = (v: Violation) => {
    if (out.length < maxViolations) out.push(v);
  };
  const initial: HistoryOp = {
    process: '(initial)',
    address,
    kind: 'w',
    value: INITIAL_VALUE,
    invokeTs: Number.NEGATIVE_INFINITY,
    responseTs: Number.NEGATIVE_INFINITY,
  };
  const clusters = new Map<number, Cluster>();
  const mk = (w: HistoryOp): Cluster => ({
    write: w,
    reads: [],
    f: w.responseTs,
    fOp: w,
    s: w.invokeTs,
    sOp: w,
  });
  clusters.set(INITIAL_VALUE, mk(initial));
  for (const op of ops) {
    if (op.kind !== 'w') continue;
    if (clusters.has(op.value)) {
      add({
        address,
        rule: 'duplicate-write',
        message: `address ${address}: value ${op.value} written twice (values must be unique)`,
        ops: [clusters.get(op.value)!.write, op],
      });
      continue;
    }
    clusters.set(op.value, mk(op));
  }
  for (const op of ops) {
    if (op.kind !== 'r') continue;
    const c = clusters.get(op.value);
    if (!c) {
      add({
        address,
        rule: 'unknown-value',
        message: `address ${address}: ${describe(op)} returned a value no write to this address wrote${
          writtenElsewhere?.(op.value)
            ? ` (it was written to address ${writtenElsewhere(op.value)!.address} by ${describe(writtenElsewhere(op.value)!)}: pages aliased?)`
            : ''
        }`,
        ops: writtenElsewhere?.(op.value) ? [op, writtenElsewhere(op.value)!] : [op],
      });
      continue;
    }
    if (op.responseTs < c.write.invokeTs) {
      add({
        address,
        rule: 'read-before-write',
        message: `address ${address}: ${describe(op)} responded before ${describe(c.write)} was invoked`,
        ops: [op, c.write],
      });
    }
    c.reads.push(op);
    if (op.responseTs < c.f) {
      c.f = op.responseTs;
      c.fOp = op;
    }
    if (op.invokeTs > c.s) {
      c.s = op.invokeTs;
      c.sOp = op;
    }
  }
  const forward: Cluster[] = [];
  const backward: Cluster[] = [];
  for (const c of clusters.values()) {
    if (c.write === initial && c.reads.length === 0) continue;
    if (c.f < c.s) forward.push(c);
    else backward.push(c);
  }
  forward.sort((a, b) => a.f - b.f);
  // 2. forward zones must be disjoint: sweep in order of start, tracking the furthest end so far.
  let reach: Cluster | undefined;
  for (const c of forward) {
    if (reach && c.f < reach.s) {
      const [a, b] = [reach, c];
      add({
        address,
        rule: 'overlapping-forward-zones',
        message:
          `address ${address}: values ${a.write.value} and ${b.write.value} must both be current between ` +
          `${Math.max(a.f, b.f).toFixed(3)} and ${Math.min(a.s, b.s).toFixed(3)}: ` +
          `${describe(a.fOp)} … ${describe(a.sOp)} overlaps ${describe(b.fOp)} … ${describe(b.sOp)}` +
          ` (a read returned a stale value, or reads disagree on the order of writes)`,
        ops: dedupe([a.write, a.fOp, a.sOp, b.write, b.fOp, b.sOp]),
      });
    }
    if (!reach || c.s > reach.s) reach = c;
  }
  // 3. no backward zone inside a forward zone. Forward zones are (after check 2) disjoint and
  // sorted by start, so the only candidate is the last one starting before the backward zone.
  if (forward.length > 0) {
    for (const c of backward) {
      const lo = c.s;
      const hi = c.f;
      let l = 0;
      let h = forward.length - 1;
      let found = -1;
      while (l <= h) {
        const m = (l + h) >> 1;
        if (forward[m].f < lo) {
          found = m;
          l = m + 1;
        } else h = m - 1;
      }
      // Check the candidate and (in case check 2 failed) the longest-reaching zone before it.
      for (let k = found; k >= 0 && k >= found - 1; k--) {
        const z = forward[k];
        if (z !== c && z.f < lo && hi < z.s) {
          add({
            address,
            rule: 'overwritten-value',
            message:
              `address ${address}: ${describe(c.write)}${c.reads.length ? ` (and its ${c.reads.length} read(s))` : ''} ` +
              `happened entirely between ${describe(z.fOp)} and ${describe(z.sOp)}, ` +
              `which both need value ${z.write.value} current: a read returned an overwritten value`,
            ops: dedupe([z.write, z.fOp, z.sOp, c.write]),
          });
          break;
        }
      }
    }
  }
  return out;
}

function dedupe(ops: HistoryOp[]): HistoryOp[] {
  return [...new Set(ops)];
}

/** Check a whole history (all addresses). */
export function checkHistory(ops: HistoryOp[], maxViolations = 20, slackMs = 0): CheckResult {
  const by = new Map<number, HistoryOp[]>();
  let reads = 0;
  for (const op of ops) {
    let l = by.get(op.address);
    if (!l) {
      l = [];
      by.set(op.address, l);
    }
    l.push(op);
    if (op.kind === 'r') reads++;
  }
  const violations: Violation[] = [];
  let writes: Map<number, HistoryOp> | undefined;
  const elsewhere = (value: number) => {
    if (!writes) {
      writes = new Map();
      for (const op of ops) if (op.kind === 'w') writes.set(op.value, op);
    }
    return writes.get(value);
  };
  for (const [address, list] of [...by].sort((a, b) => a[0] - b[0])) {
    if (violations.length >= maxViolations) break;
    violations.push(...checkAddress(address, list, maxViolations - violations.length, slackMs, elsewhere));
  }
  return {
    ok: violations.length === 0,
    ops: ops.length,
    addresses: by.size,
    reads,
    writes: ops.length - reads,
    violations,
  };
}
