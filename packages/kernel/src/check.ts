/**
 * kernel.check(): verify the invariants of BRIEF §5 that one kernel can see (1, 2, 5, 6, 7).
 * Walks every live page table and compares with the page descriptors, the rmap, the swap slot
 * counts, the pins, the notifier registrations, and the violations recorded as they happened.
 * Throws one Error listing every violation. `quiescent` adds the at-rest rules (no pins, no locked
 * pages, no in-flight invalidation).
 */
import type { Pfn } from './api.js';
import type { Kernel } from './kernel.js';
import { LEASE_SLOTS } from './lease.js';
import {
  PG_anon,
  PG_device,
  PG_driver,
  PG_external_rmap,
  PG_free,
  PG_locked,
  PG_lru,
  PG_pagetable,
  PG_swapcache,
} from './page.js';
import {
  KIND_DEVICE,
  KIND_MIGRATION,
  KIND_NORMAL,
  KIND_SWAP,
  PT_ENTRIES,
  PTE_LEASED,
  PTE_PFN_SHIFT,
  PTE_PRESENT,
  pteKind,
  ptePfn,
} from './pagetable.js';
import { Registration } from './srcu.js';

export interface CheckOptions {
  /** At rest: no pins, locked pages, swap cache or invalidation in progress. Default true. */
  quiescent?: boolean;
  /** Pins held by a driver are legitimate (its remote mappings): skip pinned == unpinned. */
  allowPins?: boolean;
}

export function checkKernel(k: Kernel, opts: CheckOptions = {}): string[] {
  const errs: string[] = [...k.violations];
  const ph = k.phys;
  const words = ph.words;
  const maps = new Map<Pfn, number>();
  const rmapSeen = new Set<string>();
  const devCount = new Map<Pfn, number>();
  const slotRefs = new Map<number, number>();
  const tables = new Set<Pfn>();
  const quiescent = opts.quiescent ?? true;

  for (const mm of k.mms.values()) {
    if (mm.dead) continue;
    tables.add(mm.root);
    for (let i = 0; i < PT_ENTRIES; i++) {
      const r = Atomics.load(words, mm.root * PT_ENTRIES + i);
      if (!(r & PTE_PRESENT)) continue;
      const leaf = r >>> PTE_PFN_SHIFT;
      tables.add(leaf);
      for (let j = 0; j < PT_ENTRIES; j++) {
        const pte = Atomics.load(words, leaf * PT_ENTRIES + j);
        if (pte === 0) continue;
        const va = i * 2 ** 22 + j * 4096;
        const kind = pteKind(pte);
        const vma = mm.findVma(va);
        if (!vma) errs.push(`mm ${mm.id}: PTE at 0x${va.toString(16)} outside any VMA`);
        if (kind === KIND_NORMAL || kind === KIND_DEVICE) {
          const pfn = ptePfn(pte);
          if (!ph.valid(pfn) || ph.isFree(pfn)) {
            errs.push(`mm ${mm.id}: 0x${va.toString(16)} maps free/invalid frame ${pfn}`);
            continue;
          }
          if (pte & PTE_LEASED) {
            const slot = ph.getPrivate(pfn);
            if (kind !== KIND_NORMAL || !vma?.driver || ph.flags(pfn) & (PG_anon | PG_pagetable))
              errs.push(
                `mm ${mm.id}: leased entry at 0x${va.toString(16)} not a driver frame in a driver VMA`,
              );
            else if (!(slot >= 1 && slot < LEASE_SLOTS))
              errs.push(`mm ${mm.id}: leased entry at 0x${va.toString(16)}: pfn ${pfn} records slot ${slot}`);
          }
          maps.set(pfn, (maps.get(pfn) ?? 0) + 1);
          rmapSeen.add(`${pfn}:${mm.id}:${va}`);
          if (kind === KIND_DEVICE) devCount.set(pfn, (devCount.get(pfn) ?? 0) + 1);
        } else if (kind === KIND_SWAP) {
          if (vma?.driver) errs.push(`mm ${mm.id}: swap entry in a driver VMA at 0x${va.toString(16)}`);
          slotRefs.set(ptePfn(pte), (slotRefs.get(ptePfn(pte)) ?? 0) + 1);
        } else if (kind === KIND_MIGRATION) {
          if (quiescent) errs.push(`mm ${mm.id}: migration entry left at 0x${va.toString(16)}`);
        } else {
          errs.push(`mm ${mm.id}: corrupt PTE at 0x${va.toString(16)}`);
        }
      }
    }
  }

  // rmap ⊆ PTEs (PTEs ⊆ rmap is the count comparison below).
  let rmapTotal = 0;
  for (const [pfn, list] of k.rmap.entries()) {
    for (const e of list) {
      rmapTotal++;
      if (!rmapSeen.has(`${pfn}:${e.mm.id}:${e.va}`)) {
        errs.push(`rmap: pfn ${pfn} lists mm ${e.mm.id} 0x${e.va.toString(16)} but no PTE maps it`);
      }
    }
  }
  if (rmapTotal !== rmapSeen.size) errs.push(`rmap has ${rmapTotal} entries, page tables ${rmapSeen.size}`);

  let free = 0;
  let totalPins = 0;
  for (let pfn = 1; pfn < ph.frames; pfn++) {
    const f = ph.flags(pfn);
    const mapped = maps.get(pfn) ?? 0;
    const pins = k.pins.get(pfn) ?? 0;
    totalPins += pins;
    if (f & PG_free) {
      free++;
      if (mapped || ph.refcount(pfn) || pins)
        errs.push(`pfn ${pfn}: free but mapped ${mapped}, refcount ${ph.refcount(pfn)}`);
      if (f & (PG_external_rmap | PG_lru | PG_swapcache))
        errs.push(`pfn ${pfn}: free with flags 0x${f.toString(16)}`);
      if (quiescent && f & PG_locked) errs.push(`pfn ${pfn}: free page locked at quiescence`);
      continue;
    }
    if (ph.mapcount(pfn) !== mapped) errs.push(`pfn ${pfn}: mapcount ${ph.mapcount(pfn)} but ${mapped} PTEs`);
    const base = (f & PG_pagetable ? 1 : 0) + (k.driverFrames.has(pfn) ? 1 : 0);
    const expect = mapped + pins + base;
    if (ph.refcount(pfn) !== expect) {
      errs.push(
        `pfn ${pfn}: refcount ${ph.refcount(pfn)}, expected ${expect} (maps ${mapped} pins ${pins} base ${base})`,
      );
    }
    if (f & PG_pagetable && !tables.has(pfn)) errs.push(`pfn ${pfn}: page table of no live mm (leak)`);
    if (!(f & (PG_pagetable | PG_driver)) && expect === 0)
      errs.push(`pfn ${pfn}: allocated but unreferenced (leak)`);
    if ((devCount.get(pfn) ?? 0) !== (k.deviceEntries.get(pfn) ?? 0)) {
      errs.push(
        `pfn ${pfn}: ${devCount.get(pfn) ?? 0} device entries, accounted ${k.deviceEntries.get(pfn) ?? 0}`,
      );
    }
    if (!!(f & PG_device) !== (devCount.get(pfn) ?? 0) > 0)
      errs.push(`pfn ${pfn}: PG_device disagrees with PTEs`);
    const exported = k.rmapNotifiers.anyExported(pfn);
    if (exported !== undefined && exported !== !!(f & PG_external_rmap)) {
      errs.push(
        `pfn ${pfn}: PG_external_rmap=${!!(f & PG_external_rmap)} but driver reverse map says ${exported}`,
      );
    }
    if (!!(f & PG_lru) !== k.lru.has(pfn)) errs.push(`pfn ${pfn}: PG_lru disagrees with the LRU`);
    if (quiescent && f & PG_locked) errs.push(`pfn ${pfn}: locked at quiescence`);
    if (quiescent && f & PG_swapcache) errs.push(`pfn ${pfn}: in swap cache at quiescence`);
  }
  if (free !== ph.nrFree) errs.push(`free list holds ${ph.nrFree} frames, ${free} marked free`);
  for (const pfn of k.lru) if (ph.isFree(pfn)) errs.push(`LRU holds free pfn ${pfn}`);

  if (k.swap) {
    let used = 0;
    for (let s = 0; s < k.swap.slots; s++) {
      const want = slotRefs.get(s) ?? 0;
      if (k.swap.ref(s) !== want)
        errs.push(`swap slot ${s}: refcount ${k.swap.ref(s)}, ${want} swap entries`);
      if (k.swap.ref(s) > 0 || k.swap.reserved.has(s)) used++;
    }
    if (used !== k.swap.inUse) errs.push(`swap: ${k.swap.inUse} slots accounted in use, ${used} actually`);
  } else if (slotRefs.size > 0) errs.push('swap entries without a swap area');

  if (Registration.violations > 0)
    errs.push(`${Registration.violations} notifier callback(s) ran after unregister`);
  if (k.stats.notifierSleptNonBlockable > 0) errs.push('a notifier slept in a non-blockable range');
  if (quiescent) {
    if (totalPins > 0 && !opts.allowPins) errs.push(`pinned != unpinned: ${totalPins} pin(s) outstanding`);
    for (const mm of k.mms.values()) {
      if (mm.invActive !== 0)
        errs.push(`mm ${mm.id}: ${mm.invActive} invalidation(s) in progress at quiescence`);
    }
    if (k.swapCache.size > 0) errs.push(`swap cache not empty at quiescence (${k.swapCache.size})`);
  }
  return errs;
}
