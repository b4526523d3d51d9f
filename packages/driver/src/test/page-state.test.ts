import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { mermaidDiagram, nextState, PAGE_EVENTS, PAGE_STATES, TRANSITIONS } from '../page-state.js';

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
