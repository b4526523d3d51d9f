/**
 * Real hosts, real faults: every scenario of scenarios.ts, each on its own lab of three instances in
 * network namespaces on a bridge (netns.ts), with a controller inside a namespace of its own.
 *
 * Needs root, iproute2 (`ip netns`, veth, bridge) and nftables. Without them it prints a loud
 * SKIPPED line and skips; with CI=true a missing capability is a failure, not a skip.
 *
 *   XPMESH_FAULT_ONLY=name,name   run only the scenarios whose name contains one of these
 *   XPMESH_FAULT_REPORT=FILE      write every scenario's result (checks, evidence, notes) as JSON
 *   XPMESH_FAULT_VERBOSE=1        print each check as it happens (stderr)
 *   XPMESH_FAULT_RECLAIM_MS=N     forced reclaims every N ms in the load scenarios (default none)
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { leftovers, probeCapabilities, sweepOrphans } from './netns.js';
import { formatResult, runScenario, SCENARIOS, type ScenarioResult } from './scenarios.js';

const ci = process.env.CI === 'true';
const cap = probeCapabilities();
const only = (process.env.XPMESH_FAULT_ONLY ?? '').split(',').filter(Boolean);
const selected = SCENARIOS.filter((s) => only.length === 0 || only.some((o) => s.name.includes(o)));
const skip = cap.ok || ci ? false : `SKIPPED: ${cap.reason} (CI=true makes this a failure)`;
if (skip) console.warn(`\n*** SKIPPED the real-hosts fault tests (network namespaces): ${cap.reason} ***\n`);

describe('real hosts, real faults (network namespaces, nft, signals)', { skip }, () => {
  const results: ScenarioResult[] = [];

  before(() => {
    if (!cap.ok) return;
    const removed = sweepOrphans();
    if (removed.length) console.warn(`removed leftovers of dead runs: ${removed.join(', ')}`);
  });

  it('this machine can build labs (root, ip netns, veth, bridge, nft bridge family)', () => {
    assert.ok(cap.ok, `missing capability: ${cap.reason}`);
  });

  for (const s of selected) {
    it(s.name, { skip: !cap.ok, timeout: 180_000 }, async (t) => {
      const reclaim = Number(process.env.XPMESH_FAULT_RECLAIM_MS ?? 0);
      const r = await runScenario(s, {
        verbose: process.env.XPMESH_FAULT_VERBOSE === '1',
        load: reclaim > 0 ? { reclaimEveryMs: reclaim } : {},
      });
      results.push(r);
      if (process.env.XPMESH_FAULT_REPORT)
        writeFileSync(process.env.XPMESH_FAULT_REPORT, JSON.stringify(results, null, 2));
      for (const line of formatResult(r).split('\n')) t.diagnostic(line);
      assert.ok(r.ok, formatResult(r));
    });
  }

  it('leaves nothing behind (namespaces, links, nft tables, /etc/netns)', { skip: !cap.ok }, () => {
    assert.deepEqual(leftovers(), []);
  });
});
