/**
 * The load program: runs INSIDE a process (a worker thread, via the admin `run` operation →
 * Process.run), so every access goes through the process's page table and takes real page faults
 * (remote read faults, write upgrades, recalls). It does a bounded loop of 32-bit reads and writes
 * and records each one for the history checker.
 *
 * Write values are unique per run: (proc << 20) | seq, seq counting from args.seqBase + 1. The
 * value 0 is the initial content of every word (fresh anonymous memory).
 *
 * Timestamps are `performance.timeOrigin + performance.now()` in ms: comparable across threads
 * and processes of one machine (the history checker compares invoke/response times of different
 * processes).
 */
import type { ProcessContext } from '@xpmesh/kernel';

export interface LoadProgramArgs {
  /** Global process index, 0..2047 (the high bits of every written value). */
  proc: number;
  seed: number;
  /** Virtual address of each key in THIS process (the key is the word's index in the segment layout). */
  vaddrs: number[];
  keys: number[];
  /** Indices (into keys/vaddrs) this process reads, and writes. */
  readable: number[];
  writable: number[];
  /** Probability that an operation is a write (when `writable` is non-empty). */
  writeFraction: number;
  /** Hard caps: the loop stops at whichever comes first. */
  maxOps: number;
  durationMs: number;
  /** Sequence numbers already used by this process (earlier chunks). */
  seqBase: number;
}

export interface LoadProgramResult {
  proc: number;
  pid: number;
  /** One char per op: 'r' or 'w'. */
  kinds: string;
  keys: number[];
  values: number[];
  invoke: number[];
  response: number[];
  /** Highest sequence number used. */
  seq: number;
  errors: Record<string, number>;
  /** The first few error messages, for the report. */
  errorSamples: string[];
}

export const MAX_SEQ = (1 << 20) - 1;
export const MAX_PROCS = 2048;

/** mulberry32: small, fast, seedable. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function loadProgram(ctx: ProcessContext, a: LoadProgramArgs): LoadProgramResult {
  const origin = performance.timeOrigin;
  const now = () => origin + performance.now();
  const rnd = prng(a.seed);
  const out: LoadProgramResult = {
    proc: a.proc,
    pid: ctx.pid,
    kinds: '',
    keys: [],
    values: [],
    invoke: [],
    response: [],
    seq: a.seqBase,
    errors: {},
    errorSamples: [],
  };
  const kinds: string[] = [];
  const maxOps = Math.max(0, Math.min(a.maxOps, 1_000_000));
  const end = now() + Math.max(0, Math.min(a.durationMs, 600_000));
  const hi = (a.proc & (MAX_PROCS - 1)) << 20;
  let seq = a.seqBase;
  let consecutiveErrors = 0;
  for (let i = 0; i < maxOps; i++) {
    if ((i & 15) === 0 && now() >= end) break;
    const write = a.writable.length > 0 && (a.readable.length === 0 || rnd() < a.writeFraction);
    const list = write ? a.writable : a.readable;
    if (list.length === 0) break;
    const idx = list[Math.floor(rnd() * list.length)];
    const va = a.vaddrs[idx];
    if (write && seq >= MAX_SEQ) break;
    const t0 = now();
    try {
      let value: number;
      if (write) {
        value = hi | (seq + 1);
        ctx.write32(va, value);
        seq++;
      } else {
        value = ctx.read32(va);
      }
      const t1 = now();
      kinds.push(write ? 'w' : 'r');
      out.keys.push(a.keys[idx]);
      out.values.push(value);
      out.invoke.push(t0);
      out.response.push(t1);
      consecutiveErrors = 0;
    } catch (err) {
      if ((err as Error)?.name === 'ProcessKilled') throw err;
      // A refused access (SIGBUS/SIGSEGV: e.g. a detached or gone segment) did not take effect.
      const code = String((err as { code?: unknown }).code ?? 'EFAULT');
      out.errors[code] = (out.errors[code] ?? 0) + 1;
      if (out.errorSamples.length < 5) out.errorSamples.push(`${code}: ${(err as Error).message}`);
      if (++consecutiveErrors >= 20) break;
    }
  }
  out.kinds = kinds.join('');
  out.seq = seq;
  return out;
}
