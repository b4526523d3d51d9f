/**
 * Global rmap notifiers (the 2008 patch: mmu_rmap_notifier_register, PG_external_rmap,
 * invalidate_page), made fallible.
 *
 * Contract: `rmapNotifierInvalidatePage` is called by tryToUnmap / pageMkclean AFTER the local rmap
 * walk, with the page lock held and no non-sleepable section held, only for pages with
 * PG_external_rmap. Every notifier is started first, then all are awaited (two-pass), each bounded
 * by a deadline; a missed deadline counts as failure. The outcome is success only if every
 * notifier reported success; only then may the caller clear PG_external_rmap.
 */
import { KernelError, type Pfn, type RmapInvalidateResult, type RmapNotifierOps } from './api.js';
import { PG_locked, type PhysMem } from './page.js';
import { NotifierList, withDeadline } from './srcu.js';

/** Kept for callers of the first version; `isExported` is now part of RmapNotifierOps (api.ts). */
export type RmapNotifierIntrospection = Pick<RmapNotifierOps, 'isExported'>;

export type RmapNotifierOpsExt = RmapNotifierOps;

export interface RmapOutcome {
  ok: boolean;
  dirty: boolean;
  failures: string[];
}

export class RmapNotifiers {
  readonly list = new NotifierList<RmapNotifierOpsExt>();
  calls = 0;
  failures = 0;
  deadlines = 0;

  constructor(
    private readonly phys: PhysMem,
    private readonly timeoutMs: number,
  ) {}

  async invalidatePage(pfn: Pfn, reason: 'reclaim' | 'migrate' | 'clean'): Promise<RmapOutcome> {
    if (!this.phys.testFlag(pfn, PG_locked)) {
      throw new KernelError('EPERM', `rmap notifier dispatch for pfn ${pfn} without the page lock`);
    }
    const regs = this.list.live();
    const pending = regs.map((r) => {
      this.calls++;
      try {
        return withDeadline(
          Promise.resolve(r.call('invalidatePage', (ops) => ops.invalidatePage(pfn, reason))),
          this.timeoutMs,
        );
      } catch (e) {
        return Promise.reject(e);
      }
    });
    const results = await Promise.allSettled(pending);
    const out: RmapOutcome = { ok: true, dirty: false, failures: [] };
    for (const r of results) {
      if (r.status === 'rejected') {
        out.ok = false;
        out.failures.push(`threw: ${String(r.reason)}`);
      } else if (r.value === 'deadline') {
        this.deadlines++;
        out.ok = false;
        out.failures.push('deadline');
      } else if (!r.value.ok) {
        out.ok = false;
        out.failures.push(r.value.reason);
      } else if (r.value.dirty) {
        out.dirty = true;
      }
    }
    if (!out.ok) this.failures++;
    return out;
  }

  /**
   * invalidatePage for a batch (the caller holds every page lock): each notifier is called once for
   * the whole batch when it has invalidatePages, else once per page; every call is started before any
   * is awaited, each under the deadline. Outcome per page, in order: ok only if every notifier
   * reported ok for that page.
   */
  async invalidatePages(
    pfns: readonly Pfn[],
    reason: 'reclaim' | 'migrate' | 'clean',
  ): Promise<RmapOutcome[]> {
    for (const pfn of pfns) {
      if (!this.phys.testFlag(pfn, PG_locked)) {
        throw new KernelError('EPERM', `rmap notifier dispatch for pfn ${pfn} without the page lock`);
      }
    }
    // Nothing per page is made before the wait: what a batch allocates before its notifiers answer
    // lives for the whole remote round trip and is copied by every young-generation GC meanwhile
    // (issue 15). Each call's settled result is kept as it came (one per batched call, one per
    // page otherwise) and the per-page outcomes are built once every call has settled.
    const batched: Array<PromiseSettledResult<readonly RmapInvalidateResult[] | 'deadline'>> = [];
    const single: Array<{ i: number; r: PromiseSettledResult<RmapInvalidateResult | 'deadline'> }> = [];
    const calls: Array<Promise<void>> = [];
    for (const reg of this.list.live()) {
      if (reg.ops.invalidatePages) {
        this.calls++;
        const batch = pfns.slice();
        let p: Promise<readonly RmapInvalidateResult[] | 'deadline'>;
        try {
          p = withDeadline(
            Promise.resolve(reg.call('invalidatePages', (ops) => ops.invalidatePages!(batch, reason))),
            this.timeoutMs,
          );
        } catch (e) {
          p = Promise.reject(e);
        }
        calls.push(
          p.then(
            (value) => void batched.push({ status: 'fulfilled', value }),
            (reason) => void batched.push({ status: 'rejected', reason }),
          ),
        );
      } else {
        for (let i = 0; i < pfns.length; i++) {
          this.calls++;
          let p: Promise<RmapInvalidateResult | 'deadline'>;
          try {
            p = withDeadline(
              Promise.resolve(reg.call('invalidatePage', (ops) => ops.invalidatePage(pfns[i], reason))),
              this.timeoutMs,
            );
          } catch (e) {
            p = Promise.reject(e);
          }
          calls.push(
            p.then(
              (value) => void single.push({ i, r: { status: 'fulfilled', value } }),
              (reason) => void single.push({ i, r: { status: 'rejected', reason } }),
            ),
          );
        }
      }
    }
    await Promise.all(calls);
    const out: RmapOutcome[] = new Array(pfns.length);
    for (let i = 0; i < pfns.length; i++) out[i] = { ok: true, dirty: false, failures: [] };
    const fail = (i: number, why: string) => {
      out[i].ok = false;
      out[i].failures.push(why);
    };
    const apply = (i: number, r: PromiseSettledResult<RmapInvalidateResult | 'deadline'>) => {
      if (r.status === 'rejected') fail(i, `threw: ${String(r.reason)}`);
      else if (r.value === 'deadline') {
        this.deadlines++;
        fail(i, 'deadline');
      } else if (!r.value.ok) fail(i, r.value.reason);
      else if (r.value.dirty) out[i].dirty = true;
    };
    for (const b of batched) {
      if (b.status === 'rejected') {
        for (let i = 0; i < pfns.length; i++) fail(i, `threw: ${String(b.reason)}`);
        continue;
      }
      const rs = b.value;
      if (rs === 'deadline') {
        this.deadlines++;
        for (let i = 0; i < pfns.length; i++) fail(i, 'deadline');
      } else if (!Array.isArray(rs) || rs.length !== pfns.length) {
        for (let i = 0; i < pfns.length; i++) fail(i, 'invalidatePages: wrong number of results');
      } else {
        for (let i = 0; i < pfns.length; i++) {
          const r = rs[i] as RmapInvalidateResult | 'deadline';
          if (r === 'deadline') fail(i, 'deadline');
          else if (!r.ok) fail(i, r.reason);
          else if (r.dirty) out[i].dirty = true;
        }
      }
    }
    for (const { i, r } of single) apply(i, r);
    for (const o of out) if (!o.ok) this.failures++;
    return out;
  }

  /** True if some notifier's driver says its reverse map holds `pfn` (undefined: none can say). */
  anyExported(pfn: Pfn): boolean | undefined {
    let known = false;
    for (const r of this.list.live()) {
      if (!r.ops.isExported) continue;
      known = true;
      if (r.ops.isExported(pfn)) return true;
    }
    return known ? false : undefined;
  }
}
