/**
 * TLB shootdown. A process caches translations for read32 in its software TLB, and an access in
 * flight may hold an old PTE value (read before the kernel changed it). A shootdown first moves the
 * mm's TLB generation on (tlbInvalidate: every cached translation of the process is dropped at its
 * next use; a read already past its data load discards the value — access.ts, "Software TLB", rule
 * K), then `flushTlb` returns only when every process of the given mms has left the access window it
 * was in when the flush began (access.ts, C_SEQ odd). Call it after changing PTEs and BEFORE
 * freeing, reusing, copying (migration) or writing out (swap) the old frames.
 *
 * Bounded: a process stuck inside one window past the deadline is killed (its worker terminated),
 * which ends its access for certain; that is counted.
 */
import { C_SEQ, C_SHOOT_WAITERS, C_TLB_ACK, C_TLB_GEN } from './access.js';
import { sleepOn } from './atomics.js';
import type { Mm } from './mm.js';

export interface TlbEnv {
  readonly shootdownTimeoutMs: number;
  readonly stats: { shootdowns: number; shootdownWaits: number; shootdownKills: number };
  killStuck(mm: Mm): Promise<void>;
  /**
   * Test-only fault injection: skip the whole shootdown (proves the stamp test can fail), or only its
   * TLB generation move (proves tlb-cache.test.ts can fail).
   */
  readonly faultInjection?: { skipShootdown: boolean; skipTlbInvalidate?: boolean };
}

/**
 * Move the TLB generation of a process's control words on: its software TLB drops every cached
 * translation at its next access (access.ts, rule K). Does not wait for anything: alone, it is for
 * PTE changes whose old translation may still be used by accesses in flight, only not by later ones
 * (a young bit cleared, a lease bit added). Kernel thread only (the single writer of C_TLB_GEN, so a
 * load and a store suffice). The new generation is never the one the process's TLB is tagged with
 * (C_TLB_ACK), so it cannot come back to it (no ABA). The Atomics.load that rule K requires after
 * the store is the caller's: shootdown() reads C_SEQ; tlbInvalidate's own callers free nothing.
 */
export function tlbInvalidate(ctl: Int32Array): void {
  let g = (Atomics.load(ctl, C_TLB_GEN) + 1) | 0;
  if (g === Atomics.load(ctl, C_TLB_ACK)) g = (g + 1) | 0;
  Atomics.store(ctl, C_TLB_GEN, g);
}

/** tlbInvalidate for an mm (nothing to do if its process is gone). */
export function tlbInvalidateMm(mm: Mm): void {
  if (mm.ctl) tlbInvalidate(mm.ctl);
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
  // Rule K (access.ts): every generation moves on BEFORE any C_SEQ is read below (those Atomics
  // loads are the ones rule K wants after the move), so a TLB hit that could have used an old
  // entry either finished its data load before the move or discards its value.
  for (let i = 0; i < list.length && !env.faultInjection?.skipTlbInvalidate; i++) {
    const ctl = list[i].ctl;
    if (ctl) tlbInvalidate(ctl);
  }
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
