import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  mermaidDiagram,
  NEXT_INDEX,
  nextState,
  PAGE_EVENTS,
  PAGE_STATES,
  TRANSITIONS,
} from '../page-state.js';
import { Segment } from '../state.js';

const docs = new URL('../../../../docs/driver.md', import.meta.url);

function edges(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\w+)\s*-->\s*(\w+)\s*:\s*([\w-]+)\s*$/.exec(line);
    if (m) out.add(`${m[1]} ${m[2]} ${m[3]}`);
  }
  return out;
}

test('the mermaid diagram in docs/driver.md has exactly the edges of the transition table', () => {
  const md = readFileSync(docs, 'utf8');
  const block = /```mermaid\n(stateDiagram-v2[\s\S]*?)```/.exec(md);
  assert.ok(block, 'docs/driver.md has a stateDiagram-v2 block');
  assert.deepEqual([...edges(block[1])].sort(), [...edges(mermaidDiagram())].sort());
  assert.ok(edges(mermaidDiagram()).size >= 15);
});

test('nextState follows the table and refuses everything else', () => {
  let legal = 0;
  for (const s of PAGE_STATES) {
    for (const e of PAGE_EVENTS) {
      const to = TRANSITIONS[s][e];
      if (to) {
        assert.equal(nextState(s, e), to);
        legal++;
      } else assert.throws(() => nextState(s, e), /illegal page-state transition/);
    }
  }
  assert.ok(legal > 0);
  // the coherence core: a write grant is only possible with no other copy
  assert.equal(TRANSITIONS.shared['grant-write'], undefined);
  assert.equal(TRANSITIONS.invalidating['grant-read'], undefined);
  assert.equal(TRANSITIONS.invalidating['grant-write'], undefined);
});

test('Segment.transition (the index table) moves exactly as the table says and refuses the rest', () => {
  const env = {
    clock: { now: () => 0, setTimeout: () => 0, clearTimeout: () => undefined },
    log: { debug() {}, info() {}, warn() {}, error() {} },
    events: new EventEmitter(),
    counters: { serializedInvalidations: 0 },
    invalidationBoundMs: 1000,
  } as unknown as ConstructorParameters<typeof Segment>[7];
  const seen: string[] = [];
  env.events.on('page-state', (e: { from: string; to: string; event: string }) =>
    seen.push(`${e.from} ${e.event} ${e.to}`),
  );
  for (const s of PAGE_STATES) {
    for (const e of PAGE_EVENTS) {
      const seg = new Segment('h:1', 1, { id: 1 } as never, 0, 4096, 0o600, 4096, env);
      seg.state[0] = PAGE_STATES.indexOf(s);
      const to = TRANSITIONS[s][e];
      assert.equal(NEXT_INDEX[e][PAGE_STATES.indexOf(s)], to === undefined ? -1 : PAGE_STATES.indexOf(to));
      seen.length = 0;
      if (to === undefined) {
        assert.throws(() => seg.transition(0, e), /illegal page-state transition/);
        assert.equal(seg.pageState(0), s, 'an illegal event changes nothing');
      } else {
        seg.transition(0, e);
        assert.equal(seg.pageState(0), to);
        assert.deepEqual(seen, to === s ? [] : [`${s} ${e} ${to}`]);
      }
    }
  }
});
