/**
 * The `outcome` label of xpmesh_reclaim_total is the kernel's ReclaimOutcome: docs/metrics.md lists
 * exactly those values (the record below stops compiling when the kernel adds or drops one).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ReclaimOutcome } from '@xpmesh/kernel';
import { reclaimOutcome } from './instance.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

const OUTCOMES: Record<ReclaimOutcome, true> = {
  reclaimed: true,
  referenced: true,
  external_failed: true,
  busy: true,
  pinned: true,
  unevictable: true,
  no_swap: true,
  again: true,
  io_error: true,
};

describe('reclaim outcome labels', () => {
  it('docs/metrics.md lists exactly the kernel outcomes', () => {
    const doc = readFileSync(`${ROOT}/docs/metrics.md`, 'utf8');
    const start = doc.indexOf('| outcome ');
    assert.ok(start >= 0, 'docs/metrics.md has an outcome table');
    const rows = doc.slice(start).split('\n\n')[0].split('\n').slice(2);
    const listed = rows.map((r) => /^\| `([a-z_]+)`/.exec(r)?.[1]);
    assert.deepEqual(listed.sort(), Object.keys(OUTCOMES).sort());
    assert.doesNotMatch(doc, /`swapped`/, 'the outcome is `reclaimed`, not `swapped`');
  });

  it('the daemon passes the kernel outcome through as the label', () => {
    for (const o of Object.keys(OUTCOMES)) assert.equal(reclaimOutcome(o), o);
    assert.equal(reclaimOutcome(true), 'reclaimed');
    assert.equal(reclaimOutcome({ ok: true }), 'reclaimed');
  });
});
