/**
 * The home's source PTEs: the device mode (DEV_*) a segment page's PTE in the source address space
 * must have while copies exist elsewhere — 'readonly' under read copies, 'none' under a remote
 * writer, normal when no copy is left — so that a home access faults into the driver.
 */
import { PM_ANY, PM_WRITE } from './rmap.js';
import { DEV_CLEAR, DEV_NONE, DEV_READONLY, type DriverState, type Segment } from './state.js';

export function pageAddr(d: DriverState, seg: Segment, p: number): number {
  return seg.vaddr + p * d.kernel.pageSize;
}

/**
 * The device mode (DEV_*) of the source PTE as it is now, read from the page table: reclaim,
 * migration and their failure paths replace or restore device entries without telling us, so
 * `seg.dev` is only a hint and every decision that matters reads the real entry.
 */
export function devModeAt(d: DriverState, seg: Segment, p: number, pfn?: number): number {
  if (seg.mm.exiting) return DEV_CLEAR;
  const e = d.kernel.deviceEntryAt(seg.mm, pageAddr(d, seg, p));
  if (!e || e.owner !== d.deviceOwner || (pfn !== undefined && e.pfn !== pfn)) return DEV_CLEAR;
  return e.mode === 'none' ? DEV_NONE : DEV_READONLY;
}

/** DEV_* of a deviceEntryModes result (0 none of ours, 1 'readonly', 2 'none'). */
export function devOf(m: number): number {
  return m === 2 ? DEV_NONE : m === 1 ? DEV_READONLY : DEV_CLEAR;
}

/**
 * Put the source PTE of a page in device mode `mode` (DEV_*). Synchronous (returns undefined) when
 * no device entry has to be set (clearing one only adds access and needs no shootdown) or when the
 * one set needs no wait for its shootdown (no process of the source inside an access window); else
 * a promise that settles once the shootdown is done. A throw (EFAULT, EAGAIN) is synchronous.
 */
export function setHomeDevice(
  d: DriverState,
  seg: Segment,
  p: number,
  mode: number,
): Promise<void> | undefined {
  const cur = devModeAt(d, seg, p);
  seg.dev[p] = cur;
  if (cur === mode) return undefined;
  const k = d.kernel;
  const addr = pageAddr(d, seg, p);
  if (cur !== DEV_CLEAR) {
    k.clearDeviceEntry(seg.mm, addr);
    seg.dev[p] = DEV_CLEAR;
  }
  if (mode === DEV_CLEAR) return undefined;
  // the entry changes now; it counts as set (seg.dev) once its shootdown is done, which is at once
  // when no process of the source was inside an access window (then no promise at all)
  const set = k.setDeviceEntryNow(seg.mm, addr, d.deviceOwner, mode === DEV_NONE ? 'none' : 'readonly');
  if (set.flushed === undefined) {
    seg.dev[p] = mode;
    return undefined;
  }
  return set.flushed.then(() => {
    seg.dev[p] = mode;
  });
}

/**
 * Make the source PTE agree with the directory: no copy → normal, readers → 'readonly', writer →
 * 'none'. Returns undefined when that was done synchronously (the usual case: nothing to change).
 */
export function syncHomePte(d: DriverState, seg: Segment, p: number): Promise<void> | undefined {
  const m = d.rmap.pageMask(seg.pfn[p], seg.slot, p);
  const want =
    seg.removed || seg.mm.exiting
      ? DEV_CLEAR
      : m & PM_WRITE
        ? DEV_NONE
        : m & PM_ANY
          ? DEV_READONLY
          : DEV_CLEAR;
  const failed = (e: unknown) => {
    d.log.debug({ err: e, segid: seg.segid, page: p }, 'xpmem: source PTE not changed');
    if (want === DEV_CLEAR) seg.dev[p] = DEV_CLEAR;
  };
  try {
    return setHomeDevice(d, seg, p, want)?.catch(failed);
  } catch (e) {
    failed(e);
    return undefined;
  }
}
