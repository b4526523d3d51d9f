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
  /**
   * Open model only: when the operation was due (its `op` call's intended start). Latency is
   * measured from it; the check uses only invoke and response.
   */
  intendedTs?: number;
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

/**
 * Operations missing from the history: a chunk of one process whose result never came back (e.g.
 * the `run` call timed out). Its operations may have taken effect, so reads elsewhere may have
 * returned values it wrote.
 */
export interface LostChunk {
  /** The process, as in {@link HistoryOp.process}. */
  process: string;
  /** Index of the chunk in that process's sequence (0 = its first). */
  chunk: number;
  /** Why it was lost (e.g. "run:E_TIMEOUT"). */
  error: string;
  /** At most this many operations were lost with it; null when unknown. */
  maxOps: number | null;
  /** Every value its writes could have written (inclusive range); null when unknown. */
  writeValues: { from: number; to: number } | null;
}

/** The history lacks operations: linearizability cannot be decided for the whole run. */
export interface Incomplete {
  rule: 'history-incomplete';
  message: string;
  /** Processes that lost chunks. */
  processes: string[];
  chunks: LostChunk[];
  /** Upper bound on the operations missing; null when some chunk's bound is unknown. */
  maxLostOps: number | null;
  /**
   * Reads that returned a value only a lost chunk can have written: consequences of the missing
   * operations, not violations (the first few are in `CheckResult.consequences`).
   */
  readsOfLostWrites: number;
}

export interface CheckResult {
  /** True only for a complete history with no violation. */
  ok: boolean;
  /**
   * `linearizable`; `violated` (the recorded operations alone prove a violation, complete history
   * or not); `incomplete` (operations are missing and the recorded ones show no violation: the run
   * cannot be certified, but nothing is known to be wrong).
   */
  verdict: 'linearizable' | 'violated' | 'incomplete';
  ops: number;
  addresses: number;
  reads: number;
  writes: number;
  /** Violations proven by the recorded operations (never a consequence of lost ones). */
  violations: Violation[];
  /** Set when the history lacks operations (lost chunks). */
  incomplete?: Incomplete;
  /** With `incomplete`: the first findings explained by the missing operations (`unknown-value`). */
  consequences?: Violation[];
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

/**
 * Check one address's operations. At most `maxViolations` are returned. A read of a value that no
 * recorded write wrote but that `lostValue` says a lost operation may have written is not a
 * violation: it goes to `lost` (counted in `lost.count`, the first `lost.max` kept).
 */
export function checkAddress(
  address: number,
  rawOps: HistoryOp[],
  maxViolations = 10,
  slackMs = 0,
  writtenElsewhere?: (value: number) => HistoryOp | undefined,
  lostValue?: (value: number) => boolean,
  lost?: { findings: Violation[]; count: number; max: number },
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
    if (!c && lost && lostValue?.(op.value) && !writtenElsewhere?.(op.value)) {
      lost.count++;
      if (lost.findings.length < lost.max)
        lost.findings.push({
          address,
          rule: 'unknown-value',
          message: `address ${address}: ${describe(op)} returned a value no recorded write wrote, which a lost chunk may have written: a consequence of the incomplete history, not a violation`,
          ops: [op],
        });
      continue;
    }
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

/**
 * Check a whole history (all addresses). `lostChunks` names operations missing from it: the result
 * is then not `ok` (verdict `incomplete` unless the recorded operations prove a violation anyway),
 * and reads of values only those operations can have written are reported as consequences, not as
 * `unknown-value` violations. Every other finding stands: dropping some writes, and the reads that
 * returned them, from a linearizable history leaves a linearizable history.
 */
export function checkHistory(
  ops: HistoryOp[],
  maxViolations = 20,
  slackMs = 0,
  lostChunks: readonly LostChunk[] = [],
): CheckResult {
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
  // A chunk whose written values are unknown may explain any unknown value.
  const lostValue =
    lostChunks.length === 0
      ? undefined
      : (value: number) =>
          lostChunks.some(
            (c) => c.writeValues === null || (value >= c.writeValues.from && value <= c.writeValues.to),
          );
  const lost = lostChunks.length ? { findings: [] as Violation[], count: 0, max: maxViolations } : undefined;
  for (const [address, list] of [...by].sort((a, b) => a[0] - b[0])) {
    // Past the cap, go on only to count the reads of lost writes.
    if (violations.length >= maxViolations && !lost) break;
    const found = checkAddress(
      address,
      list,
      Math.max(0, maxViolations - violations.length),
      slackMs,
      elsewhere,
      lostValue,
      lost,
    );
    violations.push(...found.slice(0, Math.max(0, maxViolations - violations.length)));
  }
  const base = { ops: ops.length, addresses: by.size, reads, writes: ops.length - reads, violations };
  if (!lost) {
    const ok = violations.length === 0;
    return { ok, verdict: ok ? 'linearizable' : 'violated', ...base };
  }
  return {
    ok: false,
    verdict: violations.length ? 'violated' : 'incomplete',
    ...base,
    incomplete: describeIncomplete(lostChunks, lost.count),
    consequences: lost.findings,
  };
}

function describeIncomplete(chunks: readonly LostChunk[], readsOfLostWrites: number): Incomplete {
  const processes = [...new Set(chunks.map((c) => c.process))];
  const bounds = chunks.map((c) => c.maxOps);
  const maxLostOps = bounds.every((b) => b !== null)
    ? bounds.reduce((a: number, b) => a + (b ?? 0), 0)
    : null;
  const errors = [...new Set(chunks.map((c) => c.error))].join(', ');
  const message =
    `history incomplete: ${chunks.length} chunk(s) of ${processes.join(', ')} lost (${errors}), ` +
    `${maxLostOps === null ? 'an unknown number of' : `at most ${maxLostOps}`} operation(s) missing; ` +
    `${readsOfLostWrites} read(s) returned values only the missing operations can have written (not violations)`;
  return {
    rule: 'history-incomplete',
    message,
    processes,
    chunks: [...chunks],
    maxLostOps,
    readsOfLostWrites,
  };
}
