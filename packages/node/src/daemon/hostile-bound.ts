/**
 * The stated memory bound under hostile input (docs/limits.md, "Hostile input"): the attacks of
 * hostile.test.ts may add at most this many MiB of resident memory above the peak the instance
 * reaches under the same legitimate load alone, measured first in the same run.
 *
 * Generous on purpose (memory bounds under hostile input are asserted with generous margins, never
 * tight): the peak of a busy Node process moves with V8's collection timing, and runs of the suite on
 * the 2-vCPU VM under a loaded machine added up to 74 MiB (typically 24-42) with every limit in
 * place, against a bound of 64 that therefore failed now and then with nothing wrong. What the bound
 * must catch is an unbounded buffer or table: before issue 13 the same attacks added 884 MiB.
 */
export const HOSTILE_RSS_BOUND_MIB = 128;
