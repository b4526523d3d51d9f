/**
 * Page tables in shared memory: two levels, each table one physical frame of 1024 int32 entries.
 *
 * Virtual addresses are 32-bit: bits 31..22 index the root (level 1), bits 21..12 the leaf table,
 * bits 11..0 the byte in the page. A root entry is `(leafPfn << 8) | PTE_PRESENT`.
 *
 * Leaf PTE (int32):
 *   bit 0      P  present: the process may read through it (and write if W)
 *   bit 1      W  writable
 *   bit 2      Y  young (accessed), set by the process with compareExchange
 *   bit 3      D  dirty, set by the process with compareExchange before it writes
 *   bits 4..6  kind: 0 normal, 1 swap entry, 2 device entry, 3 migration entry
 *   bit 7      L  leased (normal entries in driver VMAs only): usable only while the lease recorded
 *                 in the frame's descriptor (D_PRIVATE = lease slot, see lease.ts) is valid
 *   bits 8..31 frame number (normal, device, migration) or swap slot (swap): 24 bits, 2^24 frames
 * A value of 0 is "none". A normal entry with P clear and a frame is PROT_NONE (frame kept).
 * A device entry has P set only in mode 'readonly' (reads proceed, writes fault).
 * Processes treat every entry without P (or without W, for a write) as a page fault, and an entry
 * with L whose lease has expired likewise.
 */
import type { Pfn } from './api.js';

export const PTE_PRESENT = 1 << 0;
export const PTE_WRITE = 1 << 1;
export const PTE_YOUNG = 1 << 2;
export const PTE_DIRTY = 1 << 3;
/** Leased: the process checks the frame's lease (lease.ts) before using the entry. */
export const PTE_LEASED = 1 << 7;
export const PTE_KIND_SHIFT = 4;
export const PTE_KIND_MASK = 7 << PTE_KIND_SHIFT;
export const PTE_PFN_SHIFT = 8;

export const KIND_NORMAL = 0;
export const KIND_SWAP = 1;
export const KIND_DEVICE = 2;
export const KIND_MIGRATION = 3;

export const PT_ENTRIES = 1024;
export const L1_SHIFT = 22;
export const VA_LIMIT = 2 ** 32;

export function ptePfn(pte: number): Pfn {
  return pte >>> PTE_PFN_SHIFT;
}
export function pteKind(pte: number): number {
  return (pte & PTE_KIND_MASK) >>> PTE_KIND_SHIFT;
}
/** Flag bits a normal PTE may carry (P W Y D L). */
const PTE_FLAG_MASK = PTE_PRESENT | PTE_WRITE | PTE_YOUNG | PTE_DIRTY | PTE_LEASED;

export function mkPte(pfn: Pfn, bits: number): number {
  return (pfn << PTE_PFN_SHIFT) | (bits & PTE_FLAG_MASK) | 0;
}
export function mkSwapPte(slot: number): number {
  return (slot << PTE_PFN_SHIFT) | (KIND_SWAP << PTE_KIND_SHIFT) | 0;
}
export function mkMigrationPte(pfn: Pfn): number {
  return (pfn << PTE_PFN_SHIFT) | (KIND_MIGRATION << PTE_KIND_SHIFT) | 0;
}
export function mkDevicePte(pfn: Pfn, readonly: boolean): number {
  return (pfn << PTE_PFN_SHIFT) | (KIND_DEVICE << PTE_KIND_SHIFT) | (readonly ? PTE_PRESENT : 0) | 0;
}
/** True for entries that hold a reference to a frame (counted in mapcount and the rmap). */
export function pteMapsFrame(pte: number): boolean {
  if (pte === 0) return false;
  const k = pteKind(pte);
  return k === KIND_NORMAL || k === KIND_DEVICE;
}

/** Index (into the int32 view of physical memory) of the root entry covering `va`. */
export function rootIndex(rootPfn: Pfn, va: number): number {
  return rootPfn * PT_ENTRIES + (va >>> L1_SHIFT);
}

/**
 * Index of the leaf PTE for `va`, or -1 if its leaf table does not exist. Pure walk; the kernel and
 * the process worker share it.
 */
export function walk(words: Int32Array, rootPfn: Pfn, va: number): number {
  const r = Atomics.load(words, rootPfn * PT_ENTRIES + (va >>> L1_SHIFT));
  if (!(r & PTE_PRESENT)) return -1;
  return (r >>> PTE_PFN_SHIFT) * PT_ENTRIES + ((va >>> 12) & (PT_ENTRIES - 1));
}
