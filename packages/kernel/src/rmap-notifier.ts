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
import { KernelError, type Pfn, type RmapNotifierOps } from './api.js';
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
