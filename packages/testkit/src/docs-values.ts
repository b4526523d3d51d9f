/**
 * The figures of docs/ that come from this package (`<!-- value: testkit.NAME -->` markers): the
 * soak's and the fuzzer's option defaults and fault timing. @xpmesh/node renders every other figure
 * (packages/node/src/docs/generate.ts) but cannot import this package, which depends on it; so this
 * package renders these (`npm run docs` passes them in) and its test checks them
 * (docs-values.test.ts).
 */
import { FUZZ_LIMITS, FUZZ_OPTIONS } from './fault/fuzz.js';
import { SOAK_LIMITS, SOAK_OPTIONS, SOAK_TIMING } from './fault/soak.js';

const num = (n: number) => n.toLocaleString('en-US');
const secs = (ms: number) => `${ms / 1000} s`;
const range = (o: { def: number; min: number; max: number }) => `${o.def}, ${o.min}..${o.max}`;

export const TESTKIT_DOC_VALUES: Readonly<Record<string, string>> = {
  'testkit.soakDurationMs': num(SOAK_OPTIONS.durationMs.def),
  'testkit.soakMaxDuration': `${SOAK_LIMITS.maxDurationMs / 3_600_000} h`,
  'testkit.soakMaxFaults': num(SOAK_LIMITS.maxFaults),
  'testkit.soakFaultEveryMs': num(SOAK_OPTIONS.faultEveryMs.def),
  'testkit.soakGapJitter': `±${SOAK_TIMING.gapJitter * 100} %`,
  'testkit.soakHold': `${SOAK_TIMING.holdMinMs / 1000}–${(SOAK_TIMING.holdMinMs + SOAK_TIMING.holdSpanMs) / 1000} s`,
  'testkit.soakRound': secs(SOAK_TIMING.roundMs),
  'testkit.soakNodes': range(SOAK_OPTIONS.nodes),
  'testkit.soakProcs': range(SOAK_OPTIONS.procs),
  'testkit.soakReclaimEveryMs': `${SOAK_OPTIONS.reclaimEveryMs.def} ms`,
  'testkit.fuzzDurationMs': num(FUZZ_OPTIONS.durationMs.def),
  'testkit.fuzzMaxDuration': `${FUZZ_LIMITS.maxDurationMs / 3_600_000} h`,
  'testkit.fuzzMaxFrames': num(FUZZ_OPTIONS.maxFrames.def),
};
