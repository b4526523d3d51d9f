/**
 * PG_external_rmap at the home: a frame carries it while the driver's reverse map has an entry for
 * it, and loses it (under its page lock) once the map for the frame is empty.
 */
import type { DriverState } from './state.js';

/**
 * Clear PG_external_rmap once the driver's reverse map for the frame is empty, under the page lock
 * (held by the caller on the rmap-notifier path; otherwise taken with trylock, or later in the
 * background if the kernel holds it right now, e.g. while reclaim walks the page).
 */
export function unexportIfEmpty(d: DriverState, pfn: number, lockHeld: boolean): void {
  unexportEmpty(d, [pfn], lockHeld);
}

/**
 * unexportIfEmpty for many frames: the frames whose map is empty are unexported with one kernel call
 * (each under its page lock, taken with trylock); a frame whose lock is held is retried later.
 */
export function unexportEmpty(d: DriverState, pfns: Iterable<number>, lockHeld: boolean): void {
  const k = d.kernel;
  const empty: number[] = [];
  for (const pfn of pfns) if (pfn >= 0 && d.rmap.isEmpty(pfn)) empty.push(pfn);
  if (empty.length === 0) return;
  if (lockHeld) {
    for (const pfn of empty) if (k.pageExported(pfn)) k.unexportPage(pfn);
    return;
  }
  // checked empty and unexported in one synchronous section, as attempt() below does for a retry
  for (const pfn of k.tryUnexportPages(empty)) unexportLater(d, pfn);
}

/** The page lock of `pfn` was held: poll with trylock until it can be unexported (or need not be). */
function unexportLater(d: DriverState, pfn: number): void {
  const k = d.kernel;
  /** One synchronous attempt: true when done (unexported, or nothing left to do). */
  const attempt = (): boolean => {
    if (!d.loaded || !d.rmap.isEmpty(pfn) || !k.pageExported(pfn)) return true;
    if (!k.trylockPage(pfn)) return false;
    try {
      if (d.rmap.isEmpty(pfn) && k.pageExported(pfn)) k.unexportPage(pfn);
    } finally {
      k.unlockPage(pfn);
    }
    return true;
  };
  // Someone (usually the kernel: reclaim or migration walking the page) holds the lock. Never sleep
  // on the lock of a frame we hold no reference to: it may be freed and reused meanwhile, and a
  // lock taken on the reused frame would collide with its new owner. Poll with trylock instead;
  // each attempt checks and unexports in one synchronous section. If the kernel holds the lock for
  // reclaim or migration it calls our rmap notifier anyway, which unexports an empty page.
  let tries = 0;
  const retry = () => {
    if (attempt()) return;
    if (++tries < 200) d.clock.setTimeout(retry, 5);
    else d.log.warn({ pfn }, 'xpmem: page stayed locked; PG_external_rmap left for the rmap notifier');
  };
  d.clock.setTimeout(retry, 1);
}
