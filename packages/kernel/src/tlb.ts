/**
 * TLB shootdown. A process caches nothing across accesses, but an access in flight may hold an
 * old PTE value (read before the kernel changed it). `flushTlb` returns only when every process of
 * the given mms has left the access window it was in when the flush began (access.ts, C_SEQ odd).
 * Call it after changing PTEs and BEFORE freeing, reusing, copying (migration) or writing out
 * (swap) the old frames.
 *
 * Bounded: a process stuck inside one window past the deadline is killed (its worker terminated),
 * which ends its access for certain; that is counted.
 */
import { C_SEQ, C_SHOOT_WAITERS } from './access.js';
import { sleepOn } from './atomics.js';
import type { Mm } from './mm.js';

export interface TlbEnv {
  readonly shootdownTimeoutMs: number;
  readonly stats: { shootdowns: number; shootdownWaits: number; shootdownKills: number };
  killStuck(mm: Mm): Promise<void>;
  /** Test-only fault injection: skip the wait (proves the stamp test can fail). */
  readonly faultInjection?: { skipShootdown: boolean };
}

export function flushTlb(env: TlbEnv, mms: Iterable<Mm>): Promise<void> {
  return shootdown(env, mms) ?? Promise.resolve();
}

/**
 * flushTlb for hot paths: returns undefined when no process of `mms` was inside an access window
 * (nothing to wait for: any later access reads the new PTEs), else a promise that resolves once
 * every such window closed. The first case is decided synchronously, with exactly the check the
 * waiting path makes first, so a caller that needs no wait takes no turn of the event loop.
 */
export function shootdown(env: TlbEnv, mms: Iterable<Mm>): Promise<void> | undefined {
  env.stats.shootdowns++;
  if (env.faultInjection?.skipShootdown) return undefined;
  const list = [...new Set(mms)];
  for (let i = 0; i < list.length; i++) {
    const ctl = list[i].ctl;
    if (!ctl) continue;
    // the waiter count goes up BEFORE C_SEQ is read (as in the waiting path), so a process leaving
    // its window right now notifies; an even C_SEQ means it is not in a window: no wait for it
    Atomics.add(ctl, C_SHOOT_WAITERS, 1);
    const s = Atomics.load(ctl, C_SEQ);
    Atomics.sub(ctl, C_SHOOT_WAITERS, 1);
    if ((s & 1) !== 0) return waitWindows(env, list.slice(i));
  }
  return undefined;
}

async function waitWindows(env: TlbEnv, mms: Mm[]): Promise<void> {
  for (const mm of mms) {
    const ctl = mm.ctl;
    if (!ctl) continue;
    Atomics.add(ctl, C_SHOOT_WAITERS, 1);
    try {
      const s = Atomics.load(ctl, C_SEQ);
      if ((s & 1) === 0) continue;
      env.stats.shootdownWaits++;
      const deadline = Date.now() + env.shootdownTimeoutMs;
      while (mm.ctl && Atomics.load(ctl, C_SEQ) === s) {
        const left = deadline - Date.now();
        if (left <= 0) {
          env.stats.shootdownKills++;
          await env.killStuck(mm);
          break;
        }
        await sleepOn(ctl, C_SEQ, s, Math.min(left, 50));
      }
    } finally {
      Atomics.sub(ctl, C_SHOOT_WAITERS, 1);
    }
  }
}
