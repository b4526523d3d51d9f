/**
 * Copies of page data for messages (map-ok pages, dirty pages in invalidate-acks and detaches).
 * Each copy is a 4 KiB view carved from a 64 KiB slab, and a slab is never reused: a new one is
 * taken when it is used up, and the garbage collector frees it once no copy in it is referenced (the
 * protocol encodes a message's data into its own frame, so copies die young). One allocation per 16
 * pages instead of one per page: a fresh 4 KiB ArrayBuffer per grant was a measurable part of a
 * remote fault (allocation, then the collections its external memory triggers).
 */
const SLAB_PAGES = 16;
let slab: Uint8Array | undefined;
let used = SLAB_PAGES;

/** A private copy of `src` (a frame's bytes). */
export function copyPage(src: Uint8Array): Uint8Array {
  const n = src.byteLength;
  if (used === SLAB_PAGES || !slab || slab.byteLength !== n * SLAB_PAGES) {
    slab = new Uint8Array(n * SLAB_PAGES);
    used = 0;
  }
  const out = slab.subarray(used * n, (used + 1) * n);
  used++;
  out.set(src);
  return out;
}

/**
 * Staging buffers of the home's ranged grant (home.ts grantRange): the pages of one map-ok are
 * copied into one buffer, taken here and given back once the reply has been encoded. A fresh
 * 256 KiB buffer per 64-page grant cost more than the copy itself (the host maps its memory on
 * first touch, and the collector frees it again): measured ~170-230 us per 64 pages against ~25 us
 * into a reused one. At most STAGE_POOL buffers of at most STAGE_PAGES pages are kept (a bound: 1 MiB
 * with 4 KiB pages); a larger request gets a buffer of its own that is not kept.
 */
const STAGE_POOL = 4;
const STAGE_PAGES = 64;
const stages: Uint8Array[] = [];

/**
 * A buffer for `pages` pages of `pageBytes` bytes: aligned (offset 0 of its own ArrayBuffer), not
 * shared. Up to STAGE_PAGES pages it is a pooled one of exactly STAGE_PAGES pages.
 */
export function takeStage(pages: number, pageBytes: number): Uint8Array {
  if (pages > STAGE_PAGES) return new Uint8Array(pages * pageBytes);
  // every kept buffer has exactly STAGE_PAGES pages of `pageBytes` (giveStage keeps no other)
  return stages.pop() ?? new Uint8Array(STAGE_PAGES * pageBytes);
}

/**
 * Give `b` back. The caller guarantees nothing will read it any more: every view of it that went into
 * a message has been encoded (home.ts grantRange: after `hold`, see there).
 */
export function giveStage(b: Uint8Array, pageBytes: number): void {
  if (stages.length < STAGE_POOL && b.byteLength === STAGE_PAGES * pageBytes && !stages.includes(b))
    stages.push(b);
}

/** Buffers in the pool now (tests). */
export function stagesKept(): number {
  return stages.length;
}
