/**
 * `ws` masks every client frame; with the `bufferutil` addon (a dependency of this package, prebuilt
 * for linux-x64) it does so natively, else in a JavaScript loop that was the hottest code of a remote
 * fault (BRIEF §6). Both paths must carry the same bytes: the child (ws-masking-child.ts) runs once
 * as installed and once with WS_NO_BUFFER_UTIL=1, which makes `ws` take its JavaScript fallback.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./ws-masking-child.js', import.meta.url));

function runChild(env: NodeJS.ProcessEnv): { masking: string; frames: number; ok: boolean } {
  const r = spawnSync(process.execPath, [CHILD], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line);
}

it('bufferutil is installed with its native addon (not its own JavaScript fallback)', () => {
  const require = createRequire(import.meta.url);
  const bu = require('bufferutil') as { mask: unknown; unmask: unknown };
  assert.match(String(bu.mask), /\[native code\]/);
  assert.match(String(bu.unmask), /\[native code\]/);
});

it('ws masks natively by default and frames of every size arrive intact', () => {
  const env = { ...process.env };
  delete env.WS_NO_BUFFER_UTIL;
  const r = runChild(env);
  assert.equal(r.masking, 'native');
  assert.ok(r.frames > 130);
  assert.equal(r.ok, true);
});

it('WS_NO_BUFFER_UTIL=1: the JavaScript masking fallback carries the same frames intact', () => {
  const r = runChild({ ...process.env, WS_NO_BUFFER_UTIL: '1' });
  assert.equal(r.masking, 'js');
  assert.ok(r.frames > 130);
  assert.equal(r.ok, true);
});
