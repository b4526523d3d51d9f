/**
 * Per-mm notifiers (mainline mmu_notifier). Dispatch is a set of typed functions: each evaluates
 * its arguments once (they are ordinary parameters) and calls every live registration with the
 * same values (the 2008 review's "buggy macro" point).
 *
 * Contracts, as the kernel honours them:
 * - invalidateRangeStart runs while the pages are still mapped, before the kernel touches the
 *   PTEs; the kernel starts it on every registration first and then awaits them all (two-pass:
 *   "send to every remote, then collect every ack"). Each await is bounded (deadline counted).
 *   Between start and end, `mm.invActive > 0`, so mmuIntervalReadBegin waits and installPte with a
 *   sequence number refuses: no secondary mapping is created meanwhile.
 * - invalidatePage is synchronous: it is called right after a PTE was cleared, inside the kernel's
 *   non-sleepable section. A callback that returns a promise is a bug: counted and not awaited.
 * - release runs at exit before any page of the mm is freed (mm.releaseDone gates freeing).
 * - Nothing here holds a non-sleepable section across an await.
 */
import type { MmuNotifierOps, MmuNotifierRange } from './api.js';
import type { Mm } from './mm.js';
import { withDeadline } from './srcu.js';

export interface NotifierEnv {
  readonly notifierTimeoutMs: number;
  readonly stats: {
    notifierDeadlines: number;
    notifierSleptNonBlockable: number;
    notifierInvalidatePagePromise: number;
    notifierAgain: number;
  };
  readonly logger: { warn(o: unknown, msg?: string): void };
}

function isThenable(x: unknown): x is Promise<unknown> {
  return !!x && typeof (x as { then?: unknown }).then === 'function';
}

/**
 * Begin an invalidation of `range`. Returns 'again' if a non-blockable callback refused (every
 * callback that already started gets its invalidateRangeEnd, and the sequence is closed again).
 */
export function mmuNotifierInvalidateRangeStart(
  env: NotifierEnv,
  range: MmuNotifierRange,
): Promise<'ok' | 'again'> {
  const r = invalidateRangeStart(env, range);
  return typeof r === 'string' ? Promise.resolve(r) : r;
}

/**
 * mmuNotifierInvalidateRangeStart for hot paths: 'ok' synchronously when no callback returned a
 * promise (an mm without notifiers, or callbacks with nothing to do), so the caller takes no turn
 * of the event loop; otherwise the same promise.
 */
export function invalidateRangeStart(
  env: NotifierEnv,
  range: MmuNotifierRange,
): 'ok' | Promise<'ok' | 'again'> {
  const mm = mmOf(range);
  mm.invActive++;
  mm.invSeq++;
  const regs = mm.notifiers.live();
  let pending: Promise<unknown>[] | undefined;
  for (let i = 0; i < regs.length; i++) {
    const r = regs[i];
    if (!r.ops.invalidateRangeStart) continue;
    const res = r.call('invalidateRangeStart', (ops) => ops.invalidateRangeStart!(range));
    if (res === 'again') {
      env.stats.notifierAgain++;
      // every registration before this one started (regs is a snapshot: same order)
      for (let j = 0; j < i; j++)
        regs[j].callSync('invalidateRangeEnd', (ops) => ops.invalidateRangeEnd?.(range));
      return Promise.allSettled(pending ?? []).then(() => {
        closeInvalidation(mm);
        return 'again' as const;
      });
    }
    if (isThenable(res)) {
      pending ??= [];
      if (!range.blockable) {
        env.stats.notifierSleptNonBlockable++;
        env.logger.warn({ mm: mm.id }, 'mmu notifier slept in a non-blockable invalidateRangeStart');
      }
      pending.push(res);
    }
  }
  if (pending === undefined) return 'ok';
  return Promise.allSettled(pending.map((p) => withDeadline(p, env.notifierTimeoutMs))).then((results) => {
    for (const r of results) {
      if (r.status === 'fulfilled' && r.value === 'deadline') env.stats.notifierDeadlines++;
      if (r.status === 'rejected')
        env.logger.warn({ err: String(r.reason) }, 'invalidateRangeStart rejected');
    }
    return 'ok' as const;
  });
}

export function mmuNotifierInvalidateRangeEnd(range: MmuNotifierRange): void {
  const mm = mmOf(range);
  for (const r of mm.notifiers.live()) {
    if (r.ops.invalidateRangeEnd) r.callSync('invalidateRangeEnd', (ops) => ops.invalidateRangeEnd!(range));
  }
  closeInvalidation(mm);
}

function closeInvalidation(mm: Mm): void {
  mm.invActive--;
  mm.invSeq++;
  if (mm.invActive === 0) for (const w of mm.invWaiters.splice(0)) w();
}

export function mmuNotifierInvalidatePage(env: NotifierEnv, mm: Mm, address: number): void {
  for (const r of mm.notifiers.live()) {
    if (!r.ops.invalidatePage) continue;
    const res: unknown = r.callSync('invalidatePage', (ops) => ops.invalidatePage!(mm.handle, address));
    if (isThenable(res)) {
      env.stats.notifierInvalidatePagePromise++;
      env.logger.warn({ mm: mm.id }, 'mmu notifier invalidatePage returned a promise (must be synchronous)');
    }
  }
}

export async function mmuNotifierRelease(env: NotifierEnv, mm: Mm): Promise<void> {
  const pending: Promise<unknown>[] = [];
  for (const r of mm.notifiers.live()) {
    if (!r.ops.release) continue;
    const res = r.call('release', (ops) => ops.release!(mm.handle));
    if (isThenable(res)) pending.push(res);
  }
  const results = await Promise.allSettled(pending.map((p) => withDeadline(p, env.notifierTimeoutMs)));
  for (const r of results)
    if (r.status === 'fulfilled' && r.value === 'deadline') env.stats.notifierDeadlines++;
  mm.releaseDone = true;
}

/** Test-and-clear young on secondary mappings of [start,end): true if any referenced it. */
export function mmuNotifierClearFlushYoung(mm: Mm, start: number, end: number): boolean {
  let young = false;
  for (const r of mm.notifiers.live()) {
    if (
      r.ops.clearFlushYoung &&
      r.callSync('clearFlushYoung', (ops) => ops.clearFlushYoung!(mm.handle, start, end))
    ) {
      young = true;
    }
  }
  return young;
}

/** mmu_interval_read_begin: wait (bounded) until no invalidation of mm is in progress. */
export async function mmuIntervalReadBegin(mm: Mm, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (mm.invActive > 0) {
    const left = deadline - Date.now();
    if (left <= 0) throw Object.assign(new Error('mmuIntervalReadBegin timed out'), { code: 'ETIMEDOUT' });
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, left);
      mm.invWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
  return mm.invSeq;
}

/** mmuIntervalReadBegin's result when it would not wait (no invalidation of mm in progress), else -1. */
export function mmuIntervalReadBeginNow(mm: Mm): number {
  return mm.invActive > 0 ? -1 : mm.invSeq;
}

export function mmuIntervalReadRetry(mm: Mm, seq: number): boolean {
  return mm.invActive > 0 || mm.invSeq !== seq;
}

/** Ranges carry the driver-visible handle; the kernel keeps a side map handle → Mm. */
const mmByHandle = new WeakMap<object, Mm>();
export function bindHandle(mm: Mm): void {
  mmByHandle.set(mm.handle, mm);
}
export function mmOf(range: MmuNotifierRange): Mm {
  const mm = mmByHandle.get(range.mm);
  if (!mm) throw new Error('range for an unknown mm');
  return mm;
}

export function registerMmuNotifier(mm: Mm, ops: MmuNotifierOps) {
  return mm.notifiers.add(ops);
}
