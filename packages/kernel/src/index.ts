/**
 * `@xpmesh/kernel`: the module API (api.ts, re-exported whole) and the boot API of an instance
 * kernel for the daemon and test harnesses (`createKernel`, processes, reclaim/migrate/check/stats).
 * Export policy (see api.ts): a driver uses only the names of api.ts.
 */
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Logger, silentLogger } from '@xpmesh/protocol';
import {
  KernelError,
  type KernelModule,
  type KernelModuleApi,
  type MmHandle,
  PAGE_SIZE,
  type PageInfo,
  type Pfn,
} from './api.js';
import { type CheckOptions, checkKernel } from './check.js';
import { Kernel as KernelState, type Watermarks } from './kernel.js';
import { LEASE_SLOTS } from './lease.js';
import { type MigrateOutcome, migratePage, migratePages } from './migrate.js';
import { createModuleApi, MAX_RANGE_PAGES, pageInfoOf } from './module-api.js';
import { PhysMem, PRETOUCH_AHEAD } from './page.js';
import { KIND_DEVICE, KIND_NORMAL, pteKind, ptePfn, walk } from './pagetable.js';
import { Process, type SpawnOptions } from './process.js';
import {
  MAX_SHRINK_BATCHES,
  MAX_SHRINK_CONCURRENCY,
  pageMkclean,
  RECLAIM_BATCH,
  type ReclaimOutcome,
  reclaimPage,
  type ShrinkLimits,
  type ShrinkResult,
  shrink,
} from './reclaim.js';
import { SwapArea } from './swap.js';

export type { Clock, Logger } from '@xpmesh/protocol';
export * from './api.js';
export type { CheckOptions } from './check.js';
export type { Watermarks } from './kernel.js';
export type { MigrateOutcome } from './migrate.js';
export type { ExitStatus, Process, SpawnOptions } from './process.js';
export type { ProcessContext, Program } from './process-messages.js';
export type { ReclaimOutcome, ShrinkLimits, ShrinkResult } from './reclaim.js';
export type { RmapNotifierIntrospection } from './rmap-notifier.js';
/** Bounds of `shrink`'s limits (`concurrency` pages per batch, `batches` in flight). */
export {
  LEASE_SLOTS,
  MAX_RANGE_PAGES,
  MAX_SHRINK_BATCHES,
  MAX_SHRINK_CONCURRENCY,
  PRETOUCH_AHEAD,
  /** Pages per batch of background (kswapd) and direct reclaim: one rmap-notifier call per batch. */
  RECLAIM_BATCH,
};

export interface KernelOptions {
  name: string;
  /** Number of 4 KiB frames of physical memory (262,144 = 1 GiB). */
  frames: number;
  /** Swap file path; default a fresh file in the OS temp dir, removed on close. */
  swapPath?: string;
  /** Number of swap slots; default = frames. 0 disables swap. */
  swapSlots?: number;
  watermarks?: Partial<Watermarks>;
  logger?: Logger;
  rmapNotifierTimeoutMs?: number;
  notifierTimeoutMs?: number;
  lockTimeoutMs?: number;
  shootdownTimeoutMs?: number;
  faultTimeoutMs?: number;
  unregisterTimeoutMs?: number;
}

export interface KernelStats {
  name: string;
  frames: number;
  freeFrames: number;
  lruPages: number;
  swap: { slots: number; used: number; reads: number; writes: number } | null;
  processes: number;
  pins: number;
  driverFrames: number;
  rmapNotifiers: { registered: number; calls: number; failures: number; deadlines: number };
  counters: KernelState['stats'];
}

export interface Kernel {
  readonly name: string;
  /** The object handed to drivers (kernel modules). */
  readonly api: KernelModuleApi;
  loadModule(mod: KernelModule): Promise<void>;
  spawn(opts?: SpawnOptions): Promise<Process>;
  process(pid: number): Process | undefined;
  processes(): Process[];
  /** Force reclaim (swap-out) of one page, ignoring its young bits. */
  reclaimPage(pfn: Pfn): Promise<ReclaimOutcome>;
  /**
   * Reclaim pressure: try to free `nrPages` pages from the LRU (blockable, like background reclaim),
   * bounded by a scan limit and optionally by `limits.budgetMs`, `limits.concurrency` pages at once.
   */
  shrink(nrPages: number, limits?: ShrinkLimits): Promise<ShrinkResult>;
  /** Move a page to another frame; the new pfn, or why not. */
  migratePage(pfn: Pfn): Promise<Pfn | MigrateOutcome>;
  /** Migrate several pages with one rmap-notifier dispatch for the batch; per page as migratePage. */
  migratePages(pfns: readonly Pfn[]): Promise<Array<Pfn | MigrateOutcome>>;
  /** page_mkclean on one page (takes and releases the page lock). */
  pageMkclean(pfn: Pfn): Promise<{ dirty: boolean; clean: boolean }>;
  /** The frame mapped at vaddr in pid (normal or device entry), or undefined. */
  pfnOf(pid: number, vaddr: number): Pfn | undefined;
  pageInfo(pfn: Pfn): PageInfo;
  mmOfPid(pid: number): MmHandle | undefined;
  /** Throws an Error listing every invariant violation. */
  check(opts?: CheckOptions): void;
  /** The violations check() would report (empty when all hold). */
  violations(opts?: CheckOptions): string[];
  stats(): KernelStats;
  /** Wait until background reclaim is idle. */
  idle(): Promise<void>;
  /** Kill every process, unload modules, close and remove the swap file. */
  close(): Promise<void>;
}

class InstanceKernel implements Kernel {
  readonly api: KernelModuleApi;
  private readonly modules: KernelModule[] = [];

  constructor(readonly k: KernelState) {
    this.api = createModuleApi(k);
    // Background and direct reclaim take pages RECLAIM_BATCH at a time (one rmap-notifier call and
    // one swap write per batch), as mainline's shrink_folio_list does with SWAP_CLUSTER_MAX.
    k.shrinkHook = (nr, blockable) => shrink(k, nr, blockable, { concurrency: RECLAIM_BATCH });
    k.killHook = async (mm) => {
      const p = k.procs.get(mm.pid);
      if (!p) return;
      void p.kill();
      await p.terminated;
    };
  }

  get name(): string {
    return this.k.name;
  }

  async loadModule(mod: KernelModule): Promise<void> {
    await mod.load(this.api);
    this.modules.push(mod);
  }

  spawn(opts?: SpawnOptions): Promise<Process> {
    return Process.spawn(this.k, opts);
  }

  process(pid: number): Process | undefined {
    return this.k.procs.get(pid);
  }

  processes(): Process[] {
    return [...this.k.procs.values()];
  }

  reclaimPage(pfn: Pfn): Promise<ReclaimOutcome> {
    return reclaimPage(this.k, pfn, { force: true, blockable: true });
  }

  shrink(nrPages: number, limits?: ShrinkLimits): Promise<ShrinkResult> {
    return shrink(this.k, nrPages, true, limits);
  }

  migratePage(pfn: Pfn): Promise<Pfn | MigrateOutcome> {
    return migratePage(this.k, pfn);
  }

  migratePages(pfns: readonly Pfn[]): Promise<Array<Pfn | MigrateOutcome>> {
    return migratePages(this.k, pfns);
  }

  async pageMkclean(pfn: Pfn): Promise<{ dirty: boolean; clean: boolean }> {
    this.k.checkPfn(pfn);
    await this.k.phys.lockPage(pfn, this.k.timeouts.lockTimeoutMs);
    try {
      return await pageMkclean(this.k, pfn);
    } finally {
      this.k.phys.unlockPage(pfn);
    }
  }

  pfnOf(pid: number, vaddr: number): Pfn | undefined {
    const p = this.k.procs.get(pid);
    if (!p || p.kmm.dead) return undefined;
    const pi = walk(this.k.phys.words, p.kmm.root, vaddr - (vaddr % PAGE_SIZE));
    if (pi < 0) return undefined;
    const pte = Atomics.load(this.k.phys.words, pi);
    const kind = pteKind(pte);
    if (pte === 0 || (kind !== KIND_NORMAL && kind !== KIND_DEVICE)) return undefined;
    return ptePfn(pte);
  }

  pageInfo(pfn: Pfn): PageInfo {
    return pageInfoOf(this.k, pfn);
  }

  mmOfPid(pid: number): MmHandle | undefined {
    return this.api.mmOfPid(pid);
  }

  violations(opts?: CheckOptions): string[] {
    return checkKernel(this.k, opts);
  }

  check(opts?: CheckOptions): void {
    const errs = checkKernel(this.k, opts);
    if (errs.length > 0) {
      throw new Error(
        `kernel ${this.k.name}: ${errs.length} invariant violation(s):\n  ${errs.slice(0, 50).join('\n  ')}`,
      );
    }
  }

  stats(): KernelStats {
    const k = this.k;
    const pins = k.pins.total;
    return {
      name: k.name,
      frames: k.phys.frames,
      freeFrames: k.phys.nrFree,
      lruPages: k.lru.size,
      swap: k.swap
        ? { slots: k.swap.slots, used: k.swap.inUse, reads: k.swap.reads, writes: k.swap.writes }
        : null,
      processes: k.procs.size,
      pins,
      driverFrames: k.driverFrames.size,
      rmapNotifiers: {
        registered: k.rmapNotifiers.list.size,
        calls: k.rmapNotifiers.calls,
        failures: k.rmapNotifiers.failures,
        deadlines: k.rmapNotifiers.deadlines,
      },
      counters: structuredClone(k.stats),
    };
  }

  idle(): Promise<void> {
    return this.k.idle();
  }

  async close(): Promise<void> {
    if (this.k.closed) return;
    await Promise.all(this.processes().map((p) => p.exit(128 + 9, 'SIGKILL')));
    for (const m of this.modules.splice(0).reverse()) {
      try {
        await m.unload?.();
      } catch (e) {
        this.k.logger.warn({ module: m.name, err: String(e) }, 'module unload failed');
      }
    }
    this.k.closed = true;
    await this.k.idle();
    await this.k.swap?.close();
  }
}

export async function createKernel(opts: KernelOptions): Promise<Kernel> {
  if (!opts || typeof opts.name !== 'string' || opts.name.length === 0)
    throw new KernelError('EINVAL', 'name required');
  const phys = new PhysMem(opts.frames);
  const slots = opts.swapSlots ?? opts.frames;
  let swap: SwapArea | null = null;
  if (slots > 0) {
    const path =
      opts.swapPath ??
      join(
        tmpdir(),
        `xpmesh-swap-${opts.name.replace(/[^\w.-]/g, '_')}-${process.pid}-${randomBytes(4).toString('hex')}`,
      );
    swap = await SwapArea.open(path, slots, opts.swapPath === undefined);
  }
  const min = opts.watermarks?.min ?? Math.max(4, Math.floor(opts.frames / 256));
  const low = opts.watermarks?.low ?? min * 2;
  const high = opts.watermarks?.high ?? min * 3;
  if (!(min >= 0 && low >= min && high >= low && high < opts.frames)) {
    await swap?.close(); // no swap file left behind by a refused configuration
    throw new KernelError('EINVAL', 'watermarks must satisfy 0 <= min <= low <= high < frames');
  }
  const k = new KernelState(
    opts.name,
    phys,
    swap,
    { min, low, high },
    {
      lockTimeoutMs: opts.lockTimeoutMs ?? 10_000,
      notifierTimeoutMs: opts.notifierTimeoutMs ?? 10_000,
      rmapNotifierTimeoutMs: opts.rmapNotifierTimeoutMs ?? 5_000,
      shootdownTimeoutMs: opts.shootdownTimeoutMs ?? 5_000,
      faultTimeoutMs: opts.faultTimeoutMs ?? 60_000,
      unregisterTimeoutMs: opts.unregisterTimeoutMs ?? 10_000,
    },
    opts.logger ?? silentLogger,
  );
  return new InstanceKernel(k);
}
