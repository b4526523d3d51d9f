/**
 * The kernel's module API: the surface for drivers ("kernel modules").
 *
 * Export policy (BRIEF §2, the EXPORT_SYMBOL vs EXPORT_SYMBOL_GPL review point): `@xpmesh/kernel`
 * is one module (index.ts, the package's only `exports` entry) that re-exports this file and adds
 * the boot API for the daemon and test harnesses. A driver uses exactly the names of this file and
 * nothing else of the kernel: everything a driver can do to the kernel is a method of
 * {@link KernelModuleApi}, handed to the driver when it is loaded; the types and constants below
 * are part of the same surface. packages/driver/src/test/imports.test.ts holds drivers to it.
 *
 * CONTRACT STATUS: these signatures are the agreement between the kernel and the driver. Additive
 * changes are fine; a changed signature must be changed in both places in one commit.
 */

import type { ErrorCodeOf } from '@xpmesh/protocol';

/** Size of a page frame in bytes: the one page size of every layer (defined by the protocol). */
export { PAGE_SIZE } from '@xpmesh/protocol';
export const PAGE_SHIFT = 12;

/** A physical frame number: index of a 4 KiB frame in the instance's physical memory. */
export type Pfn = number;

/**
 * Stable error codes (errno-style): the kernel's rows of the one error table (@xpmesh/protocol
 * error-table.ts, docs/errors.md). Codes travel as data: match on `code`, never on class.
 */
export type KernelErrorCode = ErrorCodeOf<'kernel'>;

export class KernelError extends Error {
  readonly code: KernelErrorCode;
  constructor(code: KernelErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'KernelError';
    this.code = code;
  }
}

/** Why a mapping is being invalidated (mainline `enum mmu_notifier_event`). */
export type InvalidateEvent =
  | 'unmap' // munmap / zap of a range
  | 'protection' // mprotect reducing access
  | 'cow' // copy-on-write: fork write-protects, a write fault breaks COW
  | 'migrate' // page migration / compaction
  | 'reclaim' // page reclaim (swap out)
  | 'release' // address space exit
  | 'clear' // page_mkclean / writeback
  | 'device'; // a driver changes mappings it owns

/** Mainline `struct mmu_notifier_range`. */
export interface MmuNotifierRange {
  readonly mm: MmHandle;
  /** Page-aligned start virtual address (inclusive). */
  readonly start: number;
  /** Page-aligned end virtual address (exclusive). */
  readonly end: number;
  readonly event: InvalidateEvent;
  /** False where the kernel cannot wait: the callback must not await; it returns 'again' to refuse. */
  readonly blockable: boolean;
}

/**
 * Per-mm notifier ops (mainline `struct mmu_notifier_ops`). Contracts:
 * - invalidateRangeStart: the pages in the range are still mapped. After it resolves, no secondary
 *   mapping of them may remain or be created until the matching invalidateRangeEnd. It may sleep
 *   (return a promise) only when `range.blockable`; otherwise it must return synchronously, and may
 *   return 'again' to make the kernel back off and retry the whole operation.
 * - invalidateRangeEnd: the kernel finished changing the page tables; secondary mappings may be
 *   created again (after re-validating with mmuIntervalReadRetry).
 * - invalidatePage: called where the kernel cannot wait (a lock is held). Synchronous; returning a
 *   promise is a bug the kernel rejects.
 * - release: the address space is exiting. Runs before any of its pages is freed; all secondary
 *   mappings must be gone when it resolves. Calling unregister from inside release is refused.
 * - clearFlushYoung: the young-bit callback (page ageing for reclaim); return true if a
 *   secondary mapping referenced the page since the last call.
 */
export interface MmuNotifierOps {
  invalidateRangeStart?(range: MmuNotifierRange): undefined | 'again' | Promise<void>;
  invalidateRangeEnd?(range: MmuNotifierRange): void;
  invalidatePage?(mm: MmHandle, address: number): void;
  release?(mm: MmHandle): Promise<void> | undefined;
  clearFlushYoung?(mm: MmHandle, start: number, end: number): boolean;
  /**
   * Optional (additive): as RmapNotifierOps.contextFree — no callback of this registration calls
   * its unregister, directly or through work it starts or awaits; the kernel then runs the
   * callbacks that may sleep (invalidateRangeStart, release) without the notifier context. An
   * unregister called from inside anyway is not recognised as its caller's once the callback has
   * awaited (it waits for it, up to its deadline: ETIMEDOUT; from inside `release`, EBUSY only
   * before the first await). Read once, at registration.
   */
  readonly contextFree?: boolean;
}

/** Result of a global rmap notifier callback (the 2008 patch's `invalidate_page`, made fallible). */
export type RmapInvalidateResult =
  | {
      readonly ok: true /** a remote copy was dirty: the kernel marks the page dirty */;
      readonly dirty: boolean;
    }
  | { readonly ok: false; readonly reason: string };

/**
 * Global rmap notifier ops (`struct mmu_rmap_notifier_ops`). `invalidatePage` is called from
 * tryToUnmap and pageMkclean AFTER the kernel's own rmap walk, with the page lock held and no
 * non-sleepable section held: it may await (send invalidations to remote instances and wait for
 * their acks). It is called only for pages with PG_external_rmap set. The kernel applies a
 * deadline; a callback that misses it counts as failure. `reason` tells why.
 *
 * Device entries: a device entry does not pin a page; reclaim/migration unmap it and rely on the
 * rmap notifier to bring remote data home before the frame is written out or copied. When
 * invalidatePage runs for 'reclaim' or 'migrate', the home PTEs (device entries included) are
 * already swap/migration entries. For a remote writer (home entry 'none', frame stale) the driver
 * must write the returned dirty data INTO THE FRAME (`writePageData`) and report `dirty: true`
 * before resolving `{ ok: true }`: the kernel writes the frame to swap / copies it only after the
 * notifier returned ok, so the frame is then taken as current. On failure the kernel puts the same
 * device entries back (mode and owner kept). For 'clean' (pageMkclean) device entries stay as they
 * are; the callback makes a remote writer write back.
 */
export interface RmapNotifierOps {
  invalidatePage(pfn: Pfn, reason: 'reclaim' | 'migrate' | 'clean'): Promise<RmapInvalidateResult>;
  /**
   * Optional (additive): invalidatePage for a batch of pages in ONE call (reclaim calls it once per
   * batch: kernel shrink / reclaimPages), with the same contract for every page of the batch: each
   * page lock is held, each page has PG_external_rmap and its local mappings are already replaced.
   * Returns one result per page, in order (a wrong length fails the whole batch). One deadline
   * covers the call. A notifier without it gets one invalidatePage call per page, all started before
   * any is awaited.
   */
  invalidatePages?(
    pfns: readonly Pfn[],
    reason: 'reclaim' | 'migrate' | 'clean',
  ): Promise<readonly RmapInvalidateResult[]>;
  /**
   * Optional (additive): true if the driver's reverse map currently holds `pfn`. Lets
   * `kernel.check()` verify "PG_external_rmap is set iff the driver's reverse map is non-empty".
   * Synchronous, side-effect free; called only from checks.
   */
  isExported?(pfn: Pfn): boolean;
  /**
   * Optional (additive): a promise by the driver that no callback of this registration calls its
   * unregister, directly or through work it starts or awaits. The kernel then runs the callbacks
   * without the notifier context (srcu.ts): no AsyncLocalStorage, so no process-wide promise hooks
   * while they sleep (issue 15: they cost a reclaim batch's every promise, and V8 recompiles the
   * hook functions after each full GC). What is given up is only the self-recognition of an
   * unregister called from inside: it would wait for the very callback it runs in and end in
   * ETIMEDOUT at its deadline (bounded; the registration is dead all the same, no callback starts
   * after it). Nothing else changes: each callback is still counted in flight until its promise
   * settles, and unregister still waits for every one of them. Read once, at registration.
   */
  readonly contextFree?: boolean;
}

/** An address space (mm_struct) as a driver sees it. */
export interface MmHandle {
  /** Unique for the lifetime of the kernel; never reused. */
  readonly id: number;
  /** The owning process id. */
  readonly pid: number;
  /** Credentials of the owning process (for System V IPC-style permission checks). */
  readonly uid: number;
  readonly gid: number;
  /** True once exit has started (release called or about to be). */
  readonly exiting: boolean;
}

/** A registration that can be undone. `unregister` waits for in-flight callbacks (SRCU-like). */
export interface NotifierRegistration {
  /** Resolves when no callback of this registration is running and none will run again. */
  unregister(): Promise<void>;
}

/** Protection bits (mmap PROT_*). */
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;

/** A fault as the kernel hands it to a driver. */
export interface DriverFault {
  readonly mm: MmHandle;
  /** Page-aligned faulting address. */
  readonly address: number;
  /** True for a write access. */
  readonly write: boolean;
}

/**
 * A driver VMA: an address range whose page faults the driver resolves (XPMEM attachments).
 * - fault: resolve the fault by calling `installPte` (or throw KernelError SIGBUS / SIGSEGV, which is
 *   delivered to the process). The kernel retries the access after the promise resolves; resolving
 *   without installing anything just makes the access fault again. Every fault in the VMA comes
 *   here, also one on a present entry: a write to a read-only entry, or an access through a leased
 *   entry whose lease has expired (wait for renewal, or zap, then resolve).
 * - close: the VMA (or the part [start,end)) is going away (munmap, exit). Called after the kernel
 *   zapped the PTEs of the range and completed the TLB shootdown; the driver drops its references.
 */
export interface DriverVmaOps {
  fault(fault: DriverFault): Promise<void>;
  close(mm: MmHandle, start: number, end: number): void | Promise<void>;
}

/**
 * A device (driver) that owns "device entries" installed in ordinary anonymous VMAs, like HMM
 * device-private entries. A process touching a device entry (any access for mode 'none', a write
 * for mode 'readonly') calls `fault`, which must bring the page home (e.g. recall a remote
 * writer's data) and call `clearDeviceEntry`. Throwing KernelError SIGBUS delivers SIGBUS.
 *
 * A device entry does not pin a page; reclaim/migration unmap it and rely on the rmap notifier to
 * bring remote data home before the frame is written out or copied (see RmapNotifierOps). After
 * swap-in or migration the home PTE is an ordinary PTE: the driver re-applies device entries when it
 * next grants remote copies. Exception: a 'none' entry on a page without PG_external_rmap (no rmap
 * notifier would run) keeps the page unevictable.
 */
export interface DeviceOps {
  fault(fault: DriverFault): Promise<void>;
}

/** Per-page view for status displays and checks. */
export interface PageInfo {
  readonly pfn: Pfn;
  readonly flags: readonly string[]; // e.g. ['locked','referenced','dirty','lru','swapcache','external_rmap']
  readonly refcount: number;
  readonly mapcount: number;
}

/**
 * Everything a driver may do to the kernel. Handed to a driver's `load(kernel)`.
 * All addresses are virtual addresses in the given mm; all lengths are bytes, page-aligned.
 */
export interface KernelModuleApi {
  readonly pageSize: number;
  /** Instance name, for logs. */
  readonly name: string;

  // ---- address spaces -------------------------------------------------------------------------
  /** The mm of a live process, or undefined. */
  mmOfPid(pid: number): MmHandle | undefined;
  /** True if [start,end) is fully covered by ordinary (non-driver) VMAs of mm. */
  rangeMapped(mm: MmHandle, start: number, end: number): boolean;

  // ---- get_user_pages ---------------------------------------------------------------------------
  /**
   * Resolve the page backing `address` in `mm` as a fault would (allocating, swapping in, or breaking
   * COW when `write`), and return its frame with one reference taken (a pin). The caller must
   * `putPage` it. Throws EFAULT if no VMA covers the address, EACCES if the VMA forbids the access.
   */
  getUserPage(mm: MmHandle, address: number, opts: { write: boolean }): Promise<Pfn>;
  /**
   * getUserPage when it has nothing to wait for, in the caller's turn: if the mmap read lock is free
   * and the PTE allows the access as it is, the frame, pinned, exactly as getUserPage's first attempt
   * returns it under that lock (taken and dropped inside this call); else -1 (no pin taken: call
   * getUserPage, which may fault the page in). Throws what getUserPage throws for the VMA.
   */
  getUserPageNow(mm: MmHandle, address: number, opts: { write: boolean }): Pfn;
  /**
   * Ranged getUserPage (`get_user_pages`): the `count` pages (1..1024, else EINVAL) from `address`,
   * under one mmap read lock, each resolved and pinned as getUserPage does. Returns the frames of
   * the run that succeeded from the first page (shorter than `count` if a later page failed: the
   * caller `putPage`s every frame returned); throws what getUserPage would if the FIRST page fails.
   */
  getUserPages(mm: MmHandle, address: number, count: number, opts: { write: boolean }): Promise<Pfn[]>;
  /** Drop a reference taken by getUserPage or allocPage. */
  putPage(pfn: Pfn): void;

  // ---- page lock and flags ---------------------------------------------------------------------
  /** Sleep (bounded by `timeoutMs`, default 5000) until the page lock is ours. ETIMEDOUT on expiry. */
  lockPage(pfn: Pfn, timeoutMs?: number): Promise<void>;
  trylockPage(pfn: Pfn): boolean;
  unlockPage(pfn: Pfn): void;
  /**
   * Set PG_external_rmap (`mmu_rmap_export_page`). Throws EPERM if the page lock is not held.
   * Must be called before the driver adds the page to its own reverse map.
   */
  exportPage(pfn: Pfn): void;
  /** Clear PG_external_rmap. The page lock must be held (EPERM otherwise); call only when the
   * driver's reverse map for the page became empty. */
  unexportPage(pfn: Pfn): void;
  pageExported(pfn: Pfn): boolean;
  /**
   * unexportPage for many frames whose reverse map became empty, in one call: for each frame with
   * PG_external_rmap whose page lock is free, take the lock, clear the flag and release the lock in
   * one synchronous step (so the flag still only changes under the page lock). Frames without the
   * flag are skipped. Returns the frames whose lock someone else holds (left as they were: retry
   * later, e.g. with trylockPage). EINVAL for a bad frame number.
   */
  tryUnexportPages(pfns: readonly Pfn[]): Pfn[];
  setPageDirty(pfn: Pfn): void;
  pageInfo(pfn: Pfn): PageInfo;

  // ---- frame data (the driver copies pages to and from the wire) --------------------------------
  /** A live view of the frame's 4096 bytes in physical memory. Do not keep it across an await. */
  pageBytes(pfn: Pfn): Uint8Array;
  /** Copy 4096 bytes into the frame. */
  writePageData(pfn: Pfn, data: Uint8Array): void;

  // ---- driver-owned frames and driver VMAs ------------------------------------------------------
  /**
   * Allocate a frame owned by the driver (refcount 1, not on the LRU), zeroed, or holding a copy of
   * `data` (exactly pageSize bytes, else EINVAL) when given: a frame that is filled at once is not
   * zeroed first. ENOMEM if none.
   */
  allocPage(data?: Uint8Array): Pfn;
  /**
   * Ranged allocPage(data) for `datas` (1..1024 pages, each exactly pageSize bytes, else EINVAL with
   * nothing allocated): one frame per page holding a copy of it, in order. Returns fewer frames than
   * asked when memory runs out after the first (the caller owns what it got); ENOMEM if none.
   */
  allocPages(datas: ReadonlyArray<Uint8Array>): Pfn[];
  /**
   * Create a driver VMA of `length` bytes in mm (at `address` if given, else anywhere free).
   * `prot` bounds what installPte may grant. Returns the start address.
   */
  mmapDriver(mm: MmHandle, length: number, prot: number, ops: DriverVmaOps, address?: number): number;
  /**
   * Install a PTE for `pfn` at `address` in a driver VMA (takes a frame reference and adds the rmap
   * entry). If `seq` is given and an invalidation of mm began since mmuIntervalReadBegin returned it,
   * installs nothing and returns false (the caller retries). EINVAL outside a driver VMA.
   *
   * `lease` (a slot 1 .. leaseSlots-1, else EINVAL): the entry is leased. A process uses it only while
   * `leaseValid(lease)`; once the lease has expired, an access faults into the VMA's `fault` op even
   * though the entry is present (the op waits for renewal, or zaps, and returns; the access then
   * retries). The slot is recorded in the FRAME: every leased entry of `pfn` follows the slot of the
   * latest installPte with a lease. Only driver frames (allocPage) can be leased (EINVAL otherwise).
   * Installing the frame already mapped at `address` again: `write` upgrades the entry to writable,
   * `lease` makes it leased; without `lease` an existing lease is kept (only a zap drops it).
   */
  installPte(
    mm: MmHandle,
    address: number,
    pfn: Pfn,
    opts: { write: boolean; seq?: number; lease?: number },
  ): boolean;
  /**
   * Remove PTEs in [start,end) of a driver VMA, complete the TLB shootdown (no process can still
   * access the old frames when this resolves), drop the frame references, and return what was
   * mapped (with the dirty bit collected from the PTEs).
   */
  zapDriverRange(
    mm: MmHandle,
    start: number,
    end: number,
  ): Promise<Array<{ address: number; pfn: Pfn; dirty: boolean; write: boolean }>>;
  /** Write-protect PTEs in [start,end) of a driver VMA (with shootdown); returns dirty bits seen. */
  wrprotectDriverRange(
    mm: MmHandle,
    start: number,
    end: number,
  ): Promise<Array<{ address: number; pfn: Pfn; dirty: boolean }>>;
  /**
   * Remove [start,end) of a driver VMA as munmap would (xpmem_detach): zap its PTEs with a full TLB
   * shootdown (dropping the frame references), release the address range (a later mmap/mmapDriver may
   * reuse it; a touch meanwhile gets SIGSEGV), and call the VMA's `close` op for the range. EINVAL if
   * the range is unaligned or not covered by driver VMAs. If the mm is exiting or gone, resolves
   * without doing anything (exit removes and closes the VMAs itself). Takes the mmap lock for write:
   * do not call it from a fault op of the same mm.
   */
  munmapDriver(mm: MmHandle, start: number, end: number): Promise<void>;

  // ---- leases (remote copies held under a lease from their home instance) -----------------------
  /** Lease slots available to drivers: valid slot numbers are 1 .. leaseSlots-1 (0 = not leased). */
  readonly leaseSlots: number;
  /**
   * Set when the lease of `slot` expires: `remainingMs` from now (≤ 0: expired now; Infinity: never).
   * Takes effect for every access that starts after it returns, in every process, even before the
   * kernel thread runs again. An access already past its lease check completes; to be sure no
   * process still uses a frame, zap its entries (zapDriverRange). EINVAL for a bad slot or NaN.
   */
  setLease(slot: number, remainingMs: number): void;
  /** Whether the lease of `slot` is valid now. EINVAL for a bad slot. */
  leaseValid(slot: number): boolean;

  // ---- device entries in ordinary VMAs (HMM device-private analogue) ----------------------------
  /** Register a device; returns its owner id used in device entries. */
  registerDevice(ops: DeviceOps): number;
  /**
   * Replace the present PTE at `address` in mm with a device entry of `owner`. Mode 'none': no access
   * (a remote holds the page for writing; the frame's content is stale until recalled). Mode
   * 'readonly': reads proceed from the frame, writes fault into the device. Completes the TLB
   * shootdown before resolving. The frame stays allocated and keeps its rmap entry. Returns its pfn.
   * EFAULT if nothing is mapped there (the caller resolves with getUserPage first).
   * The entry does not pin the page: reclaim/migration may unmap it (see RmapNotifierOps).
   */
  setDeviceEntry(mm: MmHandle, address: number, owner: number, mode: 'none' | 'readonly'): Promise<Pfn>;
  /**
   * setDeviceEntry with its page-table change made in the caller's turn: returns the pfn and, only
   * when the TLB shootdown has processes to wait for, `flushed` (the entry counts as set once it
   * settles, exactly when setDeviceEntry would resolve). Same errors, thrown synchronously.
   */
  setDeviceEntryNow(
    mm: MmHandle,
    address: number,
    owner: number,
    mode: 'none' | 'readonly',
  ): { pfn: Pfn; flushed: Promise<void> | undefined };
  /**
   * Ranged setDeviceEntry for the `count` pages (1..1024, else EINVAL) from `address`, with ONE TLB
   * shootdown for the whole range (a process of mm is waited for at most once, not once per page).
   * Per page: its frame, or null where setDeviceEntry would have thrown EFAULT (nothing mapped) or
   * EAGAIN (the PTE changed meanwhile); those pages are left as they were.
   */
  setDeviceEntries(
    mm: MmHandle,
    address: number,
    count: number,
    owner: number,
    mode: 'none' | 'readonly',
  ): Promise<Array<Pfn | null>>;
  /** Turn a device entry back into a normal PTE (writable if the VMA allows). No-op if none (also
   * when reclaim or migration already replaced the entry: a swap/migration entry or a fresh PTE). */
  clearDeviceEntry(mm: MmHandle, address: number): void;
  /**
   * Ranged clearDeviceEntry, in one page-table walk: every device entry of `owner` in [start,end)
   * (page-aligned, else EINVAL) becomes a normal PTE again; anything else (another owner's entry, a
   * normal, swap or migration entry, a hole) is left alone. Returns how many entries it cleared.
   * Like clearDeviceEntry it only ever adds access, so there is no TLB shootdown to wait for.
   */
  clearDeviceEntries(mm: MmHandle, start: number, end: number, owner: number): number;
  /**
   * The device entry currently at `address` in an ordinary VMA of mm: its frame, mode and owner (the
   * device that set it), or null if the entry there is not a device entry (a normal, swap or
   * migration entry, none, no VMA, or a driver VMA). Reclaim, migration and their failure paths
   * replace or restore device entries behind the driver's back: ask here rather than trusting a
   * record of what was installed.
   */
  deviceEntryAt(mm: MmHandle, address: number): { pfn: Pfn; mode: 'none' | 'readonly'; owner: number } | null;

  // ---- ranged grant step (issue 15) -------------------------------------------------------------
  /**
   * Ranged deviceEntryAt for the `count` pages (1..1024, else EINVAL) from `address`, in one
   * page-table walk: per page 0 (no device entry of `owner` there: deviceEntryAt would give null or
   * another owner), 1 (`owner`'s 'readonly' entry) or 2 (`owner`'s 'none' entry). Written into `out`
   * (length >= count) when given, else a new array.
   */
  deviceEntryModes(mm: MmHandle, address: number, count: number, owner: number, out?: Uint8Array): Uint8Array;

  // ---- notifiers -------------------------------------------------------------------------------
  mmuNotifierRegister(mm: MmHandle, ops: MmuNotifierOps): NotifierRegistration;
  rmapNotifierRegister(ops: RmapNotifierOps): NotifierRegistration;
  /** Mainline mmu_interval_read_begin: a sequence number; waits (bounded) while an invalidation of
   * mm is in progress. */
  mmuIntervalReadBegin(mm: MmHandle): Promise<number>;
  /** mmuIntervalReadBegin when it has nothing to wait for, in the caller's turn: the same sequence
   * number if no invalidation of mm is in progress, else -1 (call mmuIntervalReadBegin). */
  mmuIntervalReadBeginNow(mm: MmHandle): number;
  /** True if an invalidation of mm started since `seq` was read: the caller must retry. */
  mmuIntervalReadRetry(mm: MmHandle, seq: number): boolean;
}

/** What a kernel module exports: loaded by the instance, given the kernel API. */
export interface KernelModule {
  readonly name: string;
  load(kernel: KernelModuleApi): void | Promise<void>;
  unload?(): Promise<void>;
}
