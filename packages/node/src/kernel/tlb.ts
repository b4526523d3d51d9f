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

export async function flushTlb(env: TlbEnv, mms: Iterable<Mm>): Promise<void> {
  env.stats.shootdowns++;
  if (env.faultInjection?.skipShootdown) return;
  for (const mm of new Set(mms)) {
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
