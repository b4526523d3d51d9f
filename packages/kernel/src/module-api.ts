/**
 * The KernelModuleApi object handed to drivers: every method a driver may call, implemented on the
 * kernel state. Export policy lives in api.ts (the only module a driver may import); this file is
 * kernel-internal.
 */
import {
  type DeviceOps,
  type DriverVmaOps,
  KernelError,
  type KernelModuleApi,
  type MmHandle,
  type MmuNotifierOps,
  type NotifierRegistration,
  PAGE_SIZE,
  type PageInfo,
  type Pfn,
  PROT_READ,
  PROT_WRITE,
  type RmapNotifierOps,
} from './api.js';
import { faultAnon } from './fault.js';
import type { Kernel } from './kernel.js';
import { LEASE_SLOTS, LeaseTable } from './lease.js';
import { leafEnd, protAllows, pteIndex } from './mm.js';
import {
  invalidateRangeStart,
  mmuIntervalReadBegin,
  mmuIntervalReadBeginNow,
  mmuIntervalReadRetry,
  mmuNotifierInvalidateRangeEnd,
} from './mmu-notifier.js';
import {
  flagNames,
  PG_anon,
  PG_device,
  PG_dirty,
  PG_driver,
  PG_external_rmap,
  PG_free,
  PG_locked,
  PG_pagetable,
} from './page.js';
import {
  KIND_DEVICE,
  KIND_NORMAL,
  mkDevicePte,
  mkPte,
  PTE_DIRTY,
  PTE_LEASED,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
  pteKind,
  ptePfn,
  VA_LIMIT,
  walk,
} from './pagetable.js';
import { doMmap, doMunmapDriver, dropDeviceEntry, zapPteRange } from './syscalls.js';
import { shootdown, tlbInvalidateMm } from './tlb.js';

/** Pages one ranged call (getUserPages, setDeviceEntries) may cover. */
export const MAX_RANGE_PAGES = 1024;

export function pageInfoOf(k: Kernel, pfn: Pfn): PageInfo {
  k.checkPfn(pfn);
  return {
    pfn,
    flags: flagNames(k.phys.flags(pfn)),
    refcount: k.phys.refcount(pfn),
    mapcount: k.phys.mapcount(pfn),
  };
}

export function createModuleApi(k: Kernel): KernelModuleApi {
  const ph = k.phys;
  const words = ph.words;

  const driverVmaCovering = (mm: ReturnType<Kernel['mmOf']>, start: number, end: number) => {
    if (start % PAGE_SIZE || end % PAGE_SIZE || end <= start)
      throw new KernelError('EINVAL', 'unaligned driver range');
    const v = mm.findVma(start);
    if (!v?.driver || end > v.end) throw new KernelError('EINVAL', 'range is not inside one driver VMA');
    return v;
  };

  const requireUserPage = (pfn: Pfn) => {
    k.checkPfn(pfn);
    if (ph.testFlag(pfn, PG_free)) throw new KernelError('EINVAL', `pfn ${pfn} is free`);
  };

  /**
   * The device entry `pte` at slot `pi` becomes a normal PTE: present if the VMA is readable,
   * writable if it is writable and the frame has one mapping. Only adds access: no shootdown.
   */
  const restoreDeviceEntry = (pi: number, pte: number, vma: { prot: number } | undefined) => {
    const pfn = ptePfn(pte);
    const readable = !!vma && (vma.prot & PROT_READ) !== 0;
    const writable = readable && !!vma && vma.prot & PROT_WRITE && ph.mapcount(pfn) === 1;
    // exchange, not compareExchange: in readonly mode the process may set the young bit meanwhile.
    const old = Atomics.exchange(
      words,
      pi,
      mkPte(pfn, (readable ? PTE_PRESENT | PTE_YOUNG : 0) | (writable ? PTE_WRITE : 0)),
    );
    if (old & PTE_DIRTY) ph.setFlag(pfn, PG_dirty);
    dropDeviceEntry(k, pfn);
  };

  /**
   * One attempt of gupOne, synchronous: the pinned frame if the PTE allows the access now, else -1
   * (a fault is needed). Throws what gupOne throws for the VMA.
   */
  const gupFast = (mm: ReturnType<Kernel['mmOf']>, va: number, write: boolean): Pfn => {
    if (mm.exiting) throw new KernelError('ESRCH', 'address space is exiting');
    const vma = mm.findVma(va);
    if (!vma || vma.driver) throw new KernelError('EFAULT', `no ordinary VMA at 0x${va.toString(16)}`);
    if (!protAllows(vma.prot, write)) throw new KernelError('EACCES', 'VMA protection forbids the access');
    const pi = pteIndex(ph, mm, va, false);
    const pte = pi >= 0 ? Atomics.load(words, pi) : 0;
    if (pte & PTE_PRESENT && (!write || pte & PTE_WRITE) && pteKind(pte) === KIND_NORMAL) {
      const pfn = ptePfn(pte);
      k.pin(pfn);
      if (write) ph.setFlag(pfn, PG_dirty);
      return pfn;
    }
    if (pte & PTE_PRESENT && !write && pteKind(pte) === KIND_DEVICE) {
      const pfn = ptePfn(pte);
      k.pin(pfn);
      return pfn;
    }
    return -1;
  };

  /** The VMA gupFast just found at `va` (it threw if there was none). */
  const vmaAt = (mm: ReturnType<Kernel['mmOf']>, va: number) => mm.findVma(va)!;

  /**
   * getUserPage's work for one page, the mmap read lock held by the caller: resolve the page as a
   * fault would and pin it.
   */
  const gupOne = async (mm: ReturnType<Kernel['mmOf']>, va: number, write: boolean): Promise<Pfn> => {
    for (let attempt = 0; attempt < 64; attempt++) {
      const pfn = gupFast(mm, va, write);
      if (pfn >= 0) return pfn;
      await faultAnon(k, mm, vmaAt(mm, va), va, write);
    }
    throw new KernelError('EAGAIN', 'getUserPage: fault did not settle');
  };

  /**
   * setDeviceEntry's page-table change for one page, without the shootdown: the present PTE (or
   * device entry) at `va` becomes a device entry of `owner`. Returns its frame, or throws EFAULT
   * (nothing mapped) / EAGAIN (the PTE changed under us).
   */
  const setDevicePte = (
    mm: ReturnType<Kernel['mmOf']>,
    va: number,
    owner: number,
    mode: 'none' | 'readonly',
  ) => {
    const vma = mm.findVma(va);
    if (!vma || vma.driver) throw new KernelError('EFAULT', 'no ordinary VMA there');
    const pi = pteIndex(ph, mm, va, false);
    let pte = pi >= 0 ? Atomics.load(words, pi) : 0;
    const kind = pteKind(pte);
    if (
      pte === 0 ||
      (kind !== KIND_NORMAL && kind !== KIND_DEVICE) ||
      (kind === KIND_NORMAL && !(pte & PTE_PRESENT))
    ) {
      throw new KernelError('EFAULT', `nothing mapped at 0x${va.toString(16)}`);
    }
    const pfn = ptePfn(pte);
    const want = mkDevicePte(pfn, mode === 'readonly');
    for (;;) {
      const prev = Atomics.compareExchange(words, pi, pte, want);
      if (prev === pte) break;
      if (ptePfn(prev) !== pfn || pteKind(prev) !== kind) throw new KernelError('EAGAIN', 'PTE changed');
      pte = prev;
    }
    if (pte & PTE_DIRTY) ph.setFlag(pfn, PG_dirty);
    if (kind === KIND_NORMAL) {
      k.deviceEntries.set(pfn, (k.deviceEntries.get(pfn) ?? 0) + 1);
      ph.setFlag(pfn, PG_device);
    }
    ph.setPrivate(pfn, owner);
    return pfn;
  };

  /** The page-aligned start of a ranged call of `count` pages (1..MAX_RANGE_PAGES), else EINVAL. */
  const rangeStart = (what: string, address: number, count: number) => {
    if (!Number.isInteger(count) || count < 1 || count > MAX_RANGE_PAGES)
      throw new KernelError('EINVAL', `${what}: count ${String(count)}`);
    if (!Number.isInteger(address) || address < 0 || address + count * PAGE_SIZE > VA_LIMIT)
      throw new KernelError('EINVAL', `${what}: bad address ${String(address)}`);
    return address - (address % PAGE_SIZE);
  };

  const checkDevice = (owner: number, mode: string) => {
    if (!k.devices.has(owner)) throw new KernelError('EINVAL', `unknown device ${owner}`);
    if (mode !== 'none' && mode !== 'readonly') throw new KernelError('EINVAL', `bad mode ${String(mode)}`);
  };

  const api: KernelModuleApi = {
    pageSize: PAGE_SIZE,
    name: k.name,

    mmOfPid(pid) {
      const p = k.procs.get(pid);
      return p && !p.kmm.exiting ? p.kmm.handle : undefined;
    },

    rangeMapped(mmH, start, end) {
      const mm = k.mmOf(mmH);
      let cur = start;
      for (const v of mm.overlaps(start, end)) {
        if (v.start > cur || v.driver) return false;
        cur = v.end;
      }
      return cur >= end;
    },

    async getUserPage(mmH, address, { write }) {
      const mm = k.mmOf(mmH);
      const va = address - (address % PAGE_SIZE);
      const unlock = mm.lock.tryRead() ?? (await mm.lock.read(k.timeouts.lockTimeoutMs));
      try {
        return await gupOne(mm, va, write);
      } finally {
        unlock();
      }
    },

    getUserPageNow(mmH, address, { write }) {
      const mm = k.mmOf(mmH);
      const unlock = mm.lock.tryRead();
      if (!unlock) return -1;
      try {
        return gupFast(mm, address - (address % PAGE_SIZE), write);
      } finally {
        unlock();
      }
    },

    async getUserPages(mmH, address, count, { write }) {
      const mm = k.mmOf(mmH);
      if (!Number.isInteger(count) || count < 1 || count > MAX_RANGE_PAGES)
        throw new KernelError('EINVAL', `getUserPages: count ${String(count)}`);
      const va = address - (address % PAGE_SIZE);
      // one mmap read lock for the range (Linux takes mmap_lock once for a GUP range)
      const unlock = mm.lock.tryRead() ?? (await mm.lock.read(k.timeouts.lockTimeoutMs));
      const out: Pfn[] = [];
      try {
        for (let i = 0; i < count; i++) {
          try {
            // present pages are pinned in this turn; only a page that needs a fault takes turns
            const fast = gupFast(mm, va + i * PAGE_SIZE, write);
            out.push(fast >= 0 ? fast : await gupOne(mm, va + i * PAGE_SIZE, write));
          } catch (e) {
            if (i === 0) throw e;
            break; // the pages pinned so far are the result (Linux: a short count)
          }
        }
        return out;
      } finally {
        unlock();
      }
    },

    putPage(pfn) {
      k.checkPfn(pfn);
      if ((k.pins.get(pfn) ?? 0) > 0) return k.unpin(pfn);
      if (k.driverFrames.has(pfn)) {
        k.driverFrames.delete(pfn);
        ph.clearFlag(pfn, PG_driver);
        return k.putFrame(pfn);
      }
      throw new KernelError('EINVAL', `putPage(${pfn}): no reference held`);
    },

    lockPage(pfn, timeoutMs) {
      requireUserPage(pfn);
      return ph.lockPage(pfn, timeoutMs ?? 5000);
    },
    trylockPage(pfn) {
      requireUserPage(pfn);
      return ph.trylockPage(pfn);
    },
    unlockPage(pfn) {
      k.checkPfn(pfn);
      ph.unlockPage(pfn);
    },
    exportPage(pfn) {
      requireUserPage(pfn);
      if (!ph.testFlag(pfn, PG_locked))
        throw new KernelError('EPERM', `exportPage(${pfn}): page lock not held`);
      ph.setFlag(pfn, PG_external_rmap);
    },
    unexportPage(pfn) {
      k.checkPfn(pfn);
      if (!ph.testFlag(pfn, PG_locked))
        throw new KernelError('EPERM', `unexportPage(${pfn}): page lock not held`);
      ph.clearFlag(pfn, PG_external_rmap);
    },
    pageExported(pfn) {
      k.checkPfn(pfn);
      return ph.testFlag(pfn, PG_external_rmap);
    },
    tryUnexportPages(pfns) {
      for (const pfn of pfns) k.checkPfn(pfn);
      const busy: Pfn[] = [];
      for (const pfn of pfns) if (!ph.clearFlagIfUnlocked(pfn, PG_external_rmap)) busy.push(pfn);
      return busy;
    },
    setPageDirty(pfn) {
      requireUserPage(pfn);
      ph.setFlag(pfn, PG_dirty);
    },
    pageInfo: (pfn) => pageInfoOf(k, pfn),

    pageBytes(pfn) {
      requireUserPage(pfn);
      return ph.frameBytes(pfn);
    },
    writePageData(pfn, data) {
      requireUserPage(pfn);
      if (data.length !== PAGE_SIZE) throw new KernelError('EINVAL', 'writePageData needs 4096 bytes');
      ph.writeFrame(pfn, data);
    },

    allocPage(data) {
      if (data === undefined) return k.allocDriverFrame();
      if (!(data instanceof Uint8Array) || data.byteLength !== PAGE_SIZE)
        throw new KernelError('EINVAL', 'allocPage data must be 4096 bytes');
      // filled in the same synchronous section: the old contents are never visible
      const pfn = k.allocDriverFrame(false);
      ph.writeFrame(pfn, data);
      return pfn;
    },

    allocPages(datas) {
      const n = datas?.length;
      if (!Number.isInteger(n) || n < 1 || n > MAX_RANGE_PAGES)
        throw new KernelError('EINVAL', `allocPages: count ${String(n)}`);
      for (let i = 0; i < n; i++) {
        const data = datas[i];
        if (!(data instanceof Uint8Array) || data.byteLength !== PAGE_SIZE)
          throw new KernelError('EINVAL', 'allocPages data must be 4096 bytes each');
      }
      const out: Pfn[] = [];
      for (let i = 0; i < n; i++) {
        let pfn: Pfn;
        try {
          pfn = k.allocDriverFrame(false);
        } catch (e) {
          if (i === 0) throw e;
          break; // out of memory: the frames so far are the caller's
        }
        // filled in the same synchronous section: the old contents are never visible
        ph.writeFrame(pfn, datas[i]);
        out.push(pfn);
      }
      return out;
    },

    mmapDriver(mmH: MmHandle, length: number, prot: number, ops: DriverVmaOps, address?: number) {
      const mm = k.mmOf(mmH);
      if (!ops || typeof ops.fault !== 'function')
        throw new KernelError('EINVAL', 'driver VMA needs fault()');
      return doMmap(mm, length, prot, address, ops);
    },

    installPte(mmH, address, pfn, { write, seq, lease }) {
      const mm = k.mmOf(mmH);
      requireUserPage(pfn);
      if (address % PAGE_SIZE) throw new KernelError('EINVAL', 'unaligned address');
      const vma = driverVmaCovering(mm, address, address + PAGE_SIZE);
      if (write && !(vma.prot & PROT_WRITE)) throw new KernelError('EACCES', 'driver VMA is not writable');
      if (lease !== undefined) {
        LeaseTable.checkSlot(lease);
        // The slot lives in the frame's D_PRIVATE word, which an anonymous page may use for its
        // device owner: leases are for driver frames (allocPage) only.
        if (ph.testFlag(pfn, PG_anon | PG_pagetable))
          throw new KernelError(
            'EINVAL',
            `lease on pfn ${pfn}: only driver frames (allocPage) can be leased`,
          );
      }
      if (seq !== undefined && mmuIntervalReadRetry(mm, seq)) return false;
      if (mm.exiting) return false;
      const pi = pteIndex(ph, mm, address, true);
      if (pi < 0) throw new KernelError('ENOMEM', 'no memory for a page table');
      const old = Atomics.load(words, pi);
      const leased = lease !== undefined ? PTE_LEASED : 0;
      // The slot is stored (in the frame's D_PRIVATE) before any PTE that refers to it: a process
      // that sees PTE_LEASED finds it.
      if (old !== 0) {
        if (pteKind(old) === KIND_NORMAL && ptePfn(old) === pfn) {
          // Same frame: upgrade to writable (downgrades need wrprotectDriverRange's shootdown); with
          // `lease` the entry becomes leased; without, an existing lease bit is kept (a lease is only
          // dropped by zapping the entry).
          if (lease !== undefined) ph.setPrivate(pfn, lease);
          const add = (write ? PTE_WRITE : 0) | leased;
          if (add) Atomics.or(words, pi, add);
          if (leased) tlbInvalidateMm(mm); // the next read checks the lease: no TLB hit without it
          return true;
        }
        throw new KernelError('EBUSY', 'a different frame is mapped there: zapDriverRange first');
      }
      if (lease !== undefined) ph.setPrivate(pfn, lease);
      ph.getRef(pfn);
      ph.addMapcount(pfn, 1);
      k.rmap.add(pfn, mm, address);
      Atomics.store(words, pi, mkPte(pfn, PTE_PRESENT | PTE_YOUNG | (write ? PTE_WRITE : 0) | leased));
      return true;
    },

    munmapDriver(mmH, start, end) {
      const mm = k.mms.get(mmH?.id);
      if (!mm) {
        if (mmH?.exiting) return Promise.resolve(); // exited: exit already removed and closed its VMAs
        return Promise.reject(new KernelError('ESRCH', `no such mm ${mmH?.id}`));
      }
      return doMunmapDriver(k, mm, start, end);
    },

    // zap and wrprotect await only what there is to wait for (notifier callbacks that returned a
    // promise, a process inside an access window): with neither, they complete in the caller's turn
    async zapDriverRange(mmH, start, end) {
      const mm = k.mmOf(mmH);
      driverVmaCovering(mm, start, end);
      const range = { mm: mm.handle, start, end, event: 'device' as const, blockable: true };
      const started = invalidateRangeStart(k, range);
      if (started !== 'ok') await started;
      try {
        const zapped = zapPteRange(k, mm, start, end);
        const flushed = shootdown(k, [mm]);
        if (flushed) await flushed;
        for (const z of zapped) k.putFrame(z.pfn);
        return zapped;
      } finally {
        mmuNotifierInvalidateRangeEnd(range);
      }
    },

    async wrprotectDriverRange(mmH, start, end) {
      const mm = k.mmOf(mmH);
      driverVmaCovering(mm, start, end);
      const range = { mm: mm.handle, start, end, event: 'device' as const, blockable: true };
      const started = invalidateRangeStart(k, range);
      if (started !== 'ok') await started;
      try {
        const out: Array<{ address: number; pfn: Pfn; dirty: boolean }> = [];
        for (let va = start; va < end; va += PAGE_SIZE) {
          const pi = pteIndex(ph, mm, va, false);
          if (pi < 0) continue;
          let pte = Atomics.load(words, pi);
          while (pte & PTE_PRESENT) {
            const prev = Atomics.compareExchange(words, pi, pte, pte & ~(PTE_WRITE | PTE_DIRTY));
            if (prev === pte) {
              out.push({ address: va, pfn: ptePfn(pte), dirty: (pte & PTE_DIRTY) !== 0 });
              break;
            }
            pte = prev;
          }
        }
        const flushed = shootdown(k, [mm]);
        if (flushed) await flushed;
        return out;
      } finally {
        mmuNotifierInvalidateRangeEnd(range);
      }
    },

    leaseSlots: LEASE_SLOTS,
    setLease: (slot, remainingMs) => k.leases.set(slot, remainingMs),
    leaseValid: (slot) => k.leases.valid(slot),

    registerDevice(ops: DeviceOps) {
      if (!ops || typeof ops.fault !== 'function') throw new KernelError('EINVAL', 'device needs fault()');
      const id = k.nextDevice++;
      k.devices.set(id, ops);
      return id;
    },

    async setDeviceEntry(mmH, address, owner, mode) {
      const mm = k.mmOf(mmH);
      checkDevice(owner, mode);
      const pfn = setDevicePte(mm, address - (address % PAGE_SIZE), owner, mode);
      const flushed = shootdown(k, [mm]);
      if (flushed) await flushed;
      return pfn;
    },

    setDeviceEntryNow(mmH, address, owner, mode) {
      const mm = k.mmOf(mmH);
      checkDevice(owner, mode);
      const pfn = setDevicePte(mm, address - (address % PAGE_SIZE), owner, mode);
      return { pfn, flushed: shootdown(k, [mm]) };
    },

    async setDeviceEntries(mmH, address, count, owner, mode) {
      const mm = k.mmOf(mmH);
      checkDevice(owner, mode);
      if (!Number.isInteger(count) || count < 1 || count > MAX_RANGE_PAGES)
        throw new KernelError('EINVAL', `setDeviceEntries: count ${String(count)}`);
      const va = address - (address % PAGE_SIZE);
      const out: Array<Pfn | null> = [];
      let changed = 0;
      for (let i = 0; i < count; i++) {
        try {
          out.push(setDevicePte(mm, va + i * PAGE_SIZE, owner, mode));
          changed++;
        } catch (e) {
          const c = (e as { code?: string }).code;
          if (c !== 'EFAULT' && c !== 'EAGAIN') throw e;
          out.push(null);
        }
      }
      // ONE shootdown for the whole range (flush_tlb_range), after the last PTE changed and before
      // we return. Enough for every page: it waits for every access window of the mm open at this
      // moment, and any access that could have read an old entry of ANY page of the range opened
      // before that page's change, hence before now, and is either closed already or waited for.
      // (tlb.test.ts / driver-api.test.ts: the call does not resolve while a window is open.)
      if (changed > 0) {
        const flushed = shootdown(k, [mm]);
        if (flushed) await flushed;
      }
      return out;
    },

    clearDeviceEntry(mmH, address) {
      const mm = k.mmOf(mmH);
      const va = address - (address % PAGE_SIZE);
      const pi = pteIndex(ph, mm, va, false);
      if (pi < 0) return;
      const pte = Atomics.load(words, pi);
      if (pteKind(pte) !== KIND_DEVICE) return;
      restoreDeviceEntry(pi, pte, mm.findVma(va));
    },

    clearDeviceEntries(mmH, start, end, owner) {
      const mm = k.mmOf(mmH);
      if (!Number.isInteger(start) || !Number.isInteger(end) || start % PAGE_SIZE || end % PAGE_SIZE)
        throw new KernelError('EINVAL', 'clearDeviceEntries: unaligned range');
      if (start < 0 || end > VA_LIMIT) throw new KernelError('EINVAL', 'clearDeviceEntries: bad range');
      let n = 0;
      let vma: ReturnType<typeof mm.findVma>;
      // inline per leaf table (see mm.ts leafEnd: no per-call closure)
      for (let va = start; va < end; ) {
        const stop = Math.min(end, leafEnd(va));
        let pi = walk(words, mm.root, va);
        if (pi < 0) {
          va = stop;
          continue;
        }
        for (; va < stop; pi++, va += PAGE_SIZE) {
          const pte = Atomics.load(words, pi);
          if (pteKind(pte) !== KIND_DEVICE || ph.getPrivate(ptePfn(pte)) !== owner) continue;
          if (!vma || va < vma.start || va >= vma.end) vma = mm.findVma(va);
          restoreDeviceEntry(pi, pte, vma);
          n++;
        }
      }
      return n;
    },

    deviceEntryAt(mmH, address) {
      const mm = k.mmOf(mmH);
      if (!Number.isInteger(address) || address < 0 || address >= VA_LIMIT)
        throw new KernelError('EINVAL', `bad address ${String(address)}`);
      const va = address - (address % PAGE_SIZE);
      const vma = mm.findVma(va);
      if (!vma || vma.driver) return null;
      const pi = pteIndex(ph, mm, va, false);
      const pte = pi >= 0 ? Atomics.load(words, pi) : 0;
      if (pte === 0 || pteKind(pte) !== KIND_DEVICE) return null;
      const pfn = ptePfn(pte);
      return { pfn, mode: pte & PTE_PRESENT ? 'readonly' : 'none', owner: ph.getPrivate(pfn) };
    },

    // ---- ranged grant step (issue 15) ------------------------------------------------------------
    deviceEntryModes(mmH, address, count, owner, out) {
      const mm = k.mmOf(mmH);
      const va0 = rangeStart('deviceEntryModes', address, count);
      const res = out ?? new Uint8Array(count);
      if (res.length < count) throw new KernelError('EINVAL', 'deviceEntryModes: out too short');
      let vma: ReturnType<typeof mm.findVma>;
      // one walk per leaf table; per page exactly deviceEntryAt's test
      for (let i = 0; i < count; ) {
        const va = va0 + i * PAGE_SIZE;
        const stop = Math.min(count, i + (leafEnd(va) - va) / PAGE_SIZE);
        const leaf = walk(words, mm.root, va);
        for (let pi = leaf; i < stop; i++, pi++) {
          res[i] = 0;
          if (leaf < 0) continue;
          const v = va0 + i * PAGE_SIZE;
          if (!vma || v < vma.start || v >= vma.end) vma = mm.findVma(v);
          if (!vma || vma.driver) continue;
          const pte = Atomics.load(words, pi);
          if (pte === 0 || pteKind(pte) !== KIND_DEVICE || ph.getPrivate(ptePfn(pte)) !== owner) continue;
          res[i] = pte & PTE_PRESENT ? 1 : 2;
        }
      }
      return res;
    },

    mmuNotifierRegister(mmH: MmHandle, ops: MmuNotifierOps): NotifierRegistration {
      const mm = k.mmOf(mmH);
      if (mm.exiting) throw new KernelError('ESRCH', 'address space is exiting');
      const reg = mm.notifiers.add(ops, { contextFree: ops.contextFree === true });
      return { unregister: () => reg.unregister(k.timeouts.unregisterTimeoutMs) };
    },

    rmapNotifierRegister(ops: RmapNotifierOps): NotifierRegistration {
      if (!ops || typeof ops.invalidatePage !== 'function')
        throw new KernelError('EINVAL', 'invalidatePage required');
      const reg = k.rmapNotifiers.list.add(ops, { contextFree: ops.contextFree === true });
      return { unregister: () => reg.unregister(k.timeouts.unregisterTimeoutMs) };
    },

    mmuIntervalReadBegin: (mmH) => mmuIntervalReadBegin(k.mmOf(mmH), k.timeouts.lockTimeoutMs),
    mmuIntervalReadBeginNow: (mmH) => mmuIntervalReadBeginNow(k.mmOf(mmH)),
    mmuIntervalReadRetry: (mmH, seq) => mmuIntervalReadRetry(k.mmOf(mmH), seq),
  };
  return Object.freeze(api);
}
