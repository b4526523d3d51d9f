/**
 * The workload interface (docs/load.md, "Writing a workload"). A workload is an ES module whose
 * default export (or `workload` export) is a {@link WorkloadModule}. The built-in workloads
 * (./workloads/*.ts) are written against it, and `xpmesh load --workload ./my-workload.js` runs a
 * user's module the same way.
 *
 * Two halves run in two places:
 * - `plan` runs once, in the load tester: it lays out the words the workload touches (keys) and
 *   says what runs in the background (reclaim, fork, re-attach);
 * - `op` runs inside every process's worker thread, once per call (an iteration), through the
 *   process's page table. It is shipped to the instances as its source text
 *   (`Function.prototype.toString`), so it must be self-contained: it can use its argument `t`
 *   and JavaScript built-ins, nothing from its module's scope, no imports, no Node API.
 */

/** What `plan` is told about the run. */
export interface PlanInput {
  /** Processes in all (instances × processes per instance); process 0 is the home. */
  procs: number;
  instances: number;
  /** `--pages`: how many pages the workload should touch, and the segment's size in pages. */
  pages: number;
  segmentPages: number;
  /** `--pages` pages spread evenly over the segment (page indices), a handy default layout. */
  touchedPages: number[];
  seed: number;
}

/** A word of the shared segment: page index in the segment, 32-bit word index in the page. */
export interface KeySpec {
  page: number;
  word: number;
}

export interface Background {
  /** The home forces reclaim (swap-out) of a segment page, pausing this long between calls. */
  reclaim?: { pauseMs: number } | null;
  /** The home process forks; each child exits after `childLifeMs`; `pauseMs` between forks. */
  fork?: { pauseMs: number; childLifeMs: number } | null;
  /** Attachers detach and re-attach the segment after every `every` chunks. */
  churn?: { every: number } | null;
}

export interface WorkloadPlan<P = unknown> {
  /** The words the workload touches; key i is `keys[i]` (in every process). Distinct words. */
  keys: KeySpec[];
  /** JSON given to every process as `t.params`. */
  params?: P;
  background?: Background;
  /** Chunk length (ms) of duration-bounded runs: the runner's unit of progress and churn. */
  chunkMs?: number;
}

/** The handle `op` receives: everything the op may touch. */
export interface OpContext<P = unknown> {
  /** This process's index (0 = the home process), and the number of processes. */
  readonly proc: number;
  readonly procs: number;
  /** Number of keys in the plan: valid keys are 0..keys-1. */
  readonly keys: number;
  readonly params: P;
  /** Kept across calls and chunks of this process (JSON, at most 64 KiB). */
  readonly state: Record<string, unknown>;
  /** Seeded uniform [0, 1): the same seed and `--ops` give the same sequence per process. */
  random(): number;
  /** Read the word `key` through the page table; recorded; returns its value. */
  read(key: number): number;
  /** Write a fresh unique value to `key` through the page table; recorded; returns the value. */
  write(key: number): number;
}

export interface WorkloadModule<P = unknown> {
  name: string;
  description: string;
  plan(input: PlanInput): WorkloadPlan<P>;
  /**
   * One iteration, inside the process. Synchronous. A refused access throws an Error whose `code`
   * is 'SIGBUS' or 'SIGSEGV' (counted as an error; it did not take effect); anything else it
   * throws is counted as `E_WORKLOAD` (or its `code`).
   */
  op(t: OpContext<P>): void;
}
