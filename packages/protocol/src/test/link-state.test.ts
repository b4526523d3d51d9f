import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  LINK_EVENTS,
  LINK_STATES,
  LINK_TRANSITIONS,
  type LinkState,
  linkStateDiagram,
  nextLinkState,
} from '../link-state.js';

const docs = new URL('../../../../docs/protocol.md', import.meta.url);

function edges(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)\s*:\s*(.+?)\s*$/.exec(line);
    if (m) out.add(`${m[1]} ${m[2]} ${m[3]}`);
  }
  return out;
}

test('the link state diagram in docs/protocol.md is the one generated from the table', () => {
  const md = readFileSync(docs, 'utf8');
  const block = /## 6\. Link state machine\n[\s\S]*?```mermaid\n(stateDiagram-v2[\s\S]*?)\n```/.exec(md);
  assert.ok(block, 'docs/protocol.md §6 has a stateDiagram-v2 block');
  assert.deepEqual([...edges(block[1])].sort(), [...edges(linkStateDiagram())].sort());
  assert.ok(edges(linkStateDiagram()).size >= 12);
});

test('nextLinkState follows the table and refuses everything else; every state can close but closed', () => {
  let legal = 0;
  for (const s of LINK_STATES) {
    for (const e of LINK_EVENTS) {
      const edge = LINK_TRANSITIONS[s][e];
      if (edge) {
        assert.equal(nextLinkState(s, e), edge.to);
        legal++;
      } else assert.throws(() => nextLinkState(s, e), /illegal link transition/);
    }
    if (s !== 'closed') assert.equal(nextLinkState(s, 'close'), 'closed');
  }
  assert.ok(legal >= 9);
  // the two handshakes: server hello → auth → up, client welcome → ready → up; nothing reopens
  const walk = (from: LinkState, evs: (typeof LINK_EVENTS)[number][]) => evs.reduce(nextLinkState, from);
  assert.equal(walk('await-hello', ['hello', 'auth']), 'up');
  assert.equal(walk('await-welcome', ['welcome', 'ready']), 'up');
  assert.deepEqual(Object.keys(LINK_TRANSITIONS.closed), []);
});
