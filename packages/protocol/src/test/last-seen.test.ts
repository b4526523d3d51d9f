/**
 * PeerStatus.lastSeenMs (link.ts lastSeen): the clock is read for the first frame after each
 * heartbeat, not for every frame, so the reported age is never under the exact age of the last
 * frame and at most one heartbeat interval over it (the upper bound is what is checked here: the
 * lower one holds by construction, lastSeen is only ever the clock at a frame's arrival). Fake time
 * over the memory transport.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import FakeTimers from '@sinonjs/fake-timers';
import type { Clock } from '../base.js';
import { MemorySwitch } from '../memory.js';
import type { MapReq } from '../messages.js';

const HEARTBEAT = 100;

describe('lastSeenMs: within one heartbeat of the exact age, never under it', () => {
  it('while requests flow, and after they stop', async () => {
    const fake = FakeTimers.createClock(0, 10_000);
    const clock: Clock = {
      now: () => fake.now,
      setTimeout: (fn, ms) => fake.setTimeout(fn, ms),
      clearTimeout: (h) => fake.clearTimeout(h as number),
    };
    const sw = new MemorySwitch({ seed: 7, clock, defaults: { delayMs: 1, jitterMs: 0 } });
    /** Fake time of the latest frame b received from a (the tap sees every incoming frame). */
    let lastIn = -1;
    const opts = {
      members: ['a', 'b'],
      clusterKey: 'last-seen-test-key',
      heartbeatMs: HEARTBEAT,
      missedBeats: 50,
    };
    const b = await sw.join(
      'b',
      {
        ...opts,
        onFrame: (dir) => {
          if (dir === 'in') lastIn = fake.now;
        },
      },
      false,
    );
    const a = await sw.join('a', opts, false);
    b.onRequest(
      async (_f, m) => ({ t: 'map-ok', re: (m as MapReq).id, access: 'r', pages: [], grants: [] }) as never,
    );
    a.connect();
    b.connect();
    try {
      while (b.status().find((p) => p.node === 'a')?.state !== 'up' || a.status()[0]?.state !== 'up') {
        await fake.tickAsync(1);
      }
      const age = () => b.status().find((p) => p.node === 'a')!.lastSeenMs;
      // a request every 7 ms for 1 s: b's view of a is never older than one heartbeat + the gap
      for (let t = 0; t < 1000; t += 7) {
        const r = a.request<MapReq>('b', { t: 'map', apid: 'b:a1', page: 0, count: 1, access: 'r' });
        await fake.tickAsync(7);
        await r;
        // (pongs count as seen too: the exact age is at most the age of the last request frame)
        const exact = fake.now - lastIn;
        assert.ok(age() >= 0, `reported ${age()}`);
        assert.ok(age() <= exact + HEARTBEAT, `reported ${age()} over ${exact} + one heartbeat`);
      }
      // requests stop; a still answers pings (pongs are seen too), so the age stays within a heartbeat
      await fake.tickAsync(3 * HEARTBEAT);
      assert.ok(age() <= 2 * HEARTBEAT, `idle but answering pings: ${age()} ms`);
    } finally {
      await sw.close();
      await fake.runAllAsync().catch(() => {});
    }
  });
});
