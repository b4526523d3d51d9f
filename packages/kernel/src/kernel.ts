/**
 * The instance kernel: owns physical memory, address spaces, the rmap, the LRU, the swap area, the
 * notifier lists and the processes. The mm paths live in their own files (fault.ts, reclaim.ts,
 * migrate.ts, fork.ts, syscalls.ts); this file holds the shared state and the small helpers they
 * all use (frame references, LRU membership, frame allocation with reclaim).
 */
import type { Logger } from '@xpmesh/protocol';
import { type DeviceOps, KernelError, type Pfn } from './api.js';
import { LeaseTable } from './lease.js';
import type { Mm } from './mm.js';
import type { NotifierEnv } from './mmu-notifier.js';
import {
  FrameCounts,
  PG_anon,
  PG_driver,
  PG_external_rmap,
  PG_lru,
  PG_swapcache,
  type PhysMem,
} from './page.js';
import type { Process } from './process.js';
import { Rmap } from './rmap.js';
import { RmapNotifiers } from './rmap-notifier.js';
import type { SwapArea } from './swap.js';
import type { TlbEnv } from './tlb.js';

export interface Watermarks {
  /** Below this many free frames, an allocation for a process reclaims directly. */
  readonly min: number;
  /** Below this, background reclaim (kswapd) is woken. */
  readonly low: number;
  /** Background reclaim runs until this many frames are free. */
  readonly high: number;
}

export interface KernelTimeouts {
  readonly lockTimeoutMs: number;
  readonly notifierTimeoutMs: number;
  readonly rmapNotifierTimeoutMs: number;
  readonly shootdownTimeoutMs: number;
  readonly faultTimeoutMs: number;
  readonly unregisterTimeoutMs: number;
}

export function newStats() {
  return {
    faults: 0,
    minorFaults: 0,
    cowFaults: 0,
    cowReuse: 0,
    swapIns: 0,
    swapCacheHits: 0,
    deviceFaults: 0,
    driverFaults: 0,
    /** Driver-VMA faults taken on a present PTE_LEASED entry whose lease had expired. */
    leaseFaults: 0,
    segv: 0,
    /** SIGSEGVs for a write to a driver VMA mapped without PROT_WRITE (e.g. a read-only attachment). */
    driverWriteDenied: 0,
    sigbus: 0,
    swapOuts: 0,
    reclaim: {
      reclaimed: 0,
      referenced: 0,
      external_failed: 0,
      busy: 0,
      pinned: 0,
      unevictable: 0,
      no_swap: 0,
      again: 0,
      io_error: 0,
    } as Record<string, number>,
    migrated: 0,
    migrateFailed: 0,
    mkcleanRetries: 0,
    kswapdRuns: 0,
    directReclaims: 0,
    oom: 0,
    shootdowns: 0,
    shootdownWaits: 0,
    shootdownKills: 0,
    notifierDeadlines: 0,
    notifierSleptNonBlockable: 0,
    notifierInvalidatePagePromise: 0,
    notifierAgain: 0,
    forks: 0,
    exits: 0,
  };
}
export type KernelStatsCounters = ReturnType<typeof newStats>;

export class Kernel implements TlbEnv, NotifierEnv {
  readonly rmap = new Rmap();
  readonly rmapNotifiers: RmapNotifiers;
  readonly stats = newStats();
  readonly mms = new Map<number, Mm>();
  readonly procs = new Map<number, Process>();
  /** LRU of anonymous pages, oldest first (CLOCK / second chance on young bits). */
  readonly lru = new Set<Pfn>();
  /** Swap cache: slot → frame while the frame is being written out (page locked). */
  readonly swapCache = new Map<number, Pfn>();
  /** Pins: references taken by getUserPage and by kernel paths that hold a page across an await. */
  readonly pins = new FrameCounts();
  /** Frames allocated by drivers (allocPage), holding their base reference. */
  readonly driverFrames = new FrameCounts();
  readonly devices = new Map<number, DeviceOps>();
  /** Number of device entries per frame. */
  readonly deviceEntries = new FrameCounts();
  /** Lease deadlines, shared with every process worker (lease.ts). */
  readonly leases = new LeaseTable();
  /** Invariant breaches detected as they happen (reported by check()). */
  readonly violations: string[] = [];
  /** Test-only fault injection (see tlb.ts). Never set outside tests. */
  readonly faultInjection = { skipShootdown: false, skipTlbInvalidate: false };
  nextPid = 1;
  nextDevice = 1;
  private kswapd: Promise<void> | null = null;
  closed = false;
  /** Set by reclaim.ts (avoids an import cycle). */
  shrinkHook: ((nr: number, blockable: boolean) => Promise<unknown>) | null = null;
  killHook: ((mm: Mm) => Promise<void>) | null = null;

  constructor(
    readonly name: string,
    readonly phys: PhysMem,
    readonly swap: SwapArea | null,
    readonly watermarks: Watermarks,
    readonly timeouts: KernelTimeouts,
    readonly logger: Logger,
  ) {
    this.rmapNotifiers = new RmapNotifiers(phys, timeouts.rmapNotifierTimeoutMs);
  }

  get shootdownTimeoutMs(): number {
    return this.timeouts.shootdownTimeoutMs;
  }
  get notifierTimeoutMs(): number {
    return this.timeouts.notifierTimeoutMs;
  }

  async killStuck(mm: Mm): Promise<void> {
    this.logger.error(
      { mm: mm.id },
      'process stuck inside an access past the shootdown deadline: killing it',
    );
    if (this.killHook) await this.killHook(mm);
  }

  mmOf(handle: { id: number }): Mm {
    const mm = this.mms.get(handle?.id);
    if (!mm || mm.dead) throw new KernelError('ESRCH', `no such mm ${handle?.id}`);
    return mm;
  }

  checkPfn(pfn: Pfn): void {
    if (!this.phys.valid(pfn)) throw new KernelError('EINVAL', `bad pfn ${pfn}`);
  }

  // ---- references -------------------------------------------------------------------------------

  pin(pfn: Pfn): void {
    this.phys.getRef(pfn);
    this.pins.set(pfn, (this.pins.get(pfn) ?? 0) + 1);
  }

  unpin(pfn: Pfn): void {
    const n = this.pins.get(pfn) ?? 0;
    if (n <= 0) throw new KernelError('EINVAL', `pfn ${pfn} is not pinned`);
    if (n === 1) this.pins.delete(pfn);
    else this.pins.set(pfn, n - 1);
    this.putFrame(pfn);
  }

  /** Drop one reference; frees the frame when the count reaches 0. */
  putFrame(pfn: Pfn): void {
    if (this.phys.dropRef(pfn) === 0) this.freeUserFrame(pfn);
  }

  private freeUserFrame(pfn: Pfn): void {
    const f = this.phys.flags(pfn);
    if (this.phys.mapcount(pfn) !== 0)
      this.violations.push(`pfn ${pfn} freed with mapcount ${this.phys.mapcount(pfn)}`);
    if (f & PG_external_rmap) {
      // Invariant 1/2: a page still in a driver's reverse map must not be freed. Drivers drop it in
      // invalidateRangeStart / release; reaching here means one did not.
      if (this.rmapNotifiers.anyExported(pfn) !== false) {
        this.violations.push(`pfn ${pfn} freed with PG_external_rmap set`);
      }
    }
    if (f & PG_swapcache) this.violations.push(`pfn ${pfn} freed while in the swap cache`);
    // PG_lru iff on the LRU (check.ts asserts it): a driver frame (never on it) skips the Set
    if (f & PG_lru) this.lru.delete(pfn);
    this.driverFrames.delete(pfn);
    this.phys.freeFrame(pfn);
  }

  lruAdd(pfn: Pfn): void {
    this.phys.setFlag(pfn, PG_lru | PG_anon);
    this.lru.add(pfn);
  }

  lruDel(pfn: Pfn): void {
    this.phys.clearFlag(pfn, PG_lru);
    this.lru.delete(pfn);
  }

  // ---- allocation -------------------------------------------------------------------------------

  /** A frame for a process: direct reclaim below the min watermark; ENOMEM if none is left. */
  async allocUserFrame(): Promise<Pfn> {
    for (let attempt = 0; attempt < 4; attempt++) {
      if (this.phys.nrFree > this.watermarks.min || attempt === 3) {
        const pfn = this.phys.allocFrame();
        if (pfn >= 0) {
          this.wakeKswapd();
          return pfn;
        }
      }
      if (!this.shrinkHook || !this.swap) break;
      this.stats.directReclaims++;
      await this.shrinkHook(Math.max(8, this.watermarks.low - this.phys.nrFree), false);
    }
    const pfn = this.phys.allocFrame();
    if (pfn >= 0) return pfn;
    this.stats.oom++;
    throw new KernelError('ENOMEM', 'out of memory');
  }

  /** A driver frame; `zero` false only for a caller that overwrites all of it before returning. */
  allocDriverFrame(zero = true): Pfn {
    const pfn = this.phys.allocFrame(zero);
    if (pfn < 0) throw new KernelError('ENOMEM', 'no free frame');
    this.phys.setFlag(pfn, PG_driver);
    this.driverFrames.add(pfn);
    this.wakeKswapd();
    return pfn;
  }

  wakeKswapd(): void {
    if (this.kswapd || this.closed || !this.swap || !this.shrinkHook) return;
    if (this.phys.nrFree >= this.watermarks.low) return;
    const shrink = this.shrinkHook;
    this.stats.kswapdRuns++;
    this.kswapd = (async () => {
      await new Promise((r) => setImmediate(r));
      while (!this.closed && this.phys.nrFree < this.watermarks.high) {
        const r = (await shrink(32, true)) as { reclaimed: number };
        if (r.reclaimed === 0) break;
      }
    })()
      .catch((e) => this.logger.error({ err: String(e) }, 'kswapd failed'))
      .finally(() => {
        this.kswapd = null;
      });
  }

  async idle(): Promise<void> {
    while (this.kswapd) await this.kswapd;
  }
}
