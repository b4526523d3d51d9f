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
