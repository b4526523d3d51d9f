/**
 * The instance fuzzer in CI: random, mutated and structurally valid but meaningless frames from an
 * authenticated peer against a running instance, for a bounded time or number of frames (whichever
 * comes first), with a fixed seed. Every check must hold: no crash, every frame answered as the
 * protocol's decoder and the driver's contract predict, the state unchanged, kernel invariants, the
 * segment's bytes, the good peer's session never fenced and its operations served. Nothing here
 * depends on speed: the bound only decides how many frames are sent.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { encodeFrame, type Message } from '@xpmesh/protocol';
import { fuzzInstance, type Known, predictFrame } from './fuzz.js';

it('the predictor never lets a frame through that would legitimately change state', () => {
  const k: Known = { segid: 'n1:1', segids: new Set(['n1:1']), apids: ['n1:a1', 'n1:a2'] };
  const f = (m: unknown) => encodeFrame(m as Message);
  const get = { t: 'get', id: 9, segid: 'n1:1', access: 'r', uid: 1000, gid: 1000 };
  assert.ok('unsafe' in predictFrame(f(get), k), 'a get the 0600 mode allows is never sent');
  assert.ok(
    'unsafe' in
      predictFrame(
        f([
          { t: 'ok', re: 1 },
          { ...get, access: 'rw' },
        ]),
        k,
      ),
    'nor inside a batch',
  );
  assert.deepEqual(predictFrame(f({ ...get, uid: 2000 }), k), {
    replies: [{ re: 9, codes: ['E_PERM'] }],
    tokens: 0,
    requests: 1,
    messages: 1,
    rejected: false,
  });
  const inval = {
    t: 'invalidate',
    id: 1,
    ranges: [[0, 1]],
    reason: 'reclaim',
    writeback: true,
    downgrade: false,
  };
  assert.ok('unsafe' in predictFrame(f({ ...inval, segid: 'fuzzer:1', upTo: 1 }), k));
  const p = predictFrame(f({ ...inval, segid: 'n1:1', upTo: 1 }), k);
  assert.ok(!('unsafe' in p) && p.replies[0].codes[0] === 'E_STATE');
  const bad = predictFrame(Uint8Array.of(0xc1), k);
  assert.ok(
    !('unsafe' in bad) && bad.rejected && bad.tokens === 1 && bad.replies[0].codes[0] === 'E_MALFORMED',
  );
  const hello = predictFrame(f({ t: 'ready', epoch: 1 }), k);
  assert.ok(!('unsafe' in hello) && hello.tokens === 1 && hello.replies[0].re === undefined);
});

it('fuzz a running instance: ~12 s or 20,000 frames, every check holds', async () => {
  const s = await fuzzInstance({ durationMs: 12_000, maxFrames: 20_000, seed: 7, quiet: true });
  const failed = ((s.checks ?? []) as Array<{ name: string; ok: boolean; detail: string }>).filter(
    (c) => !c.ok,
  );
  assert.ok(
    s.ok,
    `fuzz failed: ${JSON.stringify({ error: s.error, failed, findings: s.findings, crashes: s.crashes }, null, 2)}`,
  );
  const frames = s.frames as { total: number; byClass: Record<string, number>; requests: number };
  const sessions = s.sessions as { abuseCloses: number; reconnects: number };
  const good = s.goodPeer as { reads: number; cycles: number };
  assert.ok(frames.total > 0 && frames.total <= 20_000, `frames ${frames.total}`);
  for (const cls of ['random', 'mutated', 'structured'])
    assert.ok(frames.byClass[cls] > 0, `no ${cls} frame sent`);
  assert.ok(frames.requests > 0);
  assert.ok(
    sessions.abuseCloses > 0 && sessions.reconnects > 0,
    'abuse closes and re-authentications happened',
  );
  assert.ok(good.reads > 0 && good.cycles > 0);
  console.error(
    `fuzz: ${frames.total} frames in ${s.durationMs} ms, ${sessions.abuseCloses} abuse closes; codes ${JSON.stringify((s.replies as { codes: unknown }).codes)}`,
  );
});
