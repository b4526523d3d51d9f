/** Programs run inside benchmark processes (Process.run). */
import type { ProcessContext } from '../process-messages.js';

/** Bandwidth: read [addr, addr+len) `rounds` times through the page table; bytes per ms. */
export function readBandwidth(ctx: ProcessContext, a: { addr: number; len: number; rounds: number }): number {
  const dst = new Uint8Array(a.len);
  ctx.readInto(a.addr, dst); // warm (faults)
  const t0 = performance.now();
  for (let r = 0; r < a.rounds; r++) ctx.readInto(a.addr, dst);
  return (a.len * a.rounds) / (performance.now() - t0);
}

/**
 * Baseline: raw SharedArrayBuffer copy of the same size in the same thread, bytes per ms. One bulk
 * `set` of the whole range (no per-page work at all): the ceiling a mapped read could reach.
 */
export function rawCopyBandwidth(ctx: ProcessContext, a: { len: number; rounds: number }): number {
  const src = new Uint8Array(ctx.physMemForBaseline(), 4096 * 64, a.len);
  const dst = new Uint8Array(a.len);
  dst.set(src);
  const t0 = performance.now();
  for (let r = 0; r < a.rounds; r++) dst.set(src);
  return (a.len * a.rounds) / (performance.now() - t0);
}

/** Minor-fault cost: touch `pages` fresh pages; microseconds per fault. */
export function touchFresh(ctx: ProcessContext, a: { addr: number; pages: number }): number {
  const t0 = performance.now();
  for (let i = 0; i < a.pages; i++) ctx.write32(a.addr + i * 4096, i);
  return ((performance.now() - t0) * 1000) / a.pages;
}

/** Per-access cost: one read32 in each page of [addr, addr+len), `rounds` times; ns per access. */
export function read32PerPage(ctx: ProcessContext, a: { addr: number; len: number; rounds: number }): number {
  let s = 0;
  for (let off = 0; off < a.len; off += 4096) s ^= ctx.read32(a.addr + off); // warm (faults)
  const t0 = performance.now();
  for (let r = 0; r < a.rounds; r++) {
    for (let off = 0; off < a.len; off += 4096) s ^= ctx.read32(a.addr + off);
  }
  const ns = ((performance.now() - t0) * 1e6) / ((a.rounds * a.len) / 4096);
  return s === 0x7fffffff ? ns + 0 : ns; // keep `s` alive
}

/**
 * Baseline of read32PerPage: the same word-per-page pattern with Atomics.load straight from the
 * physical-memory SharedArrayBuffer (no page table, no access window); ns per access.
 */
export function rawRead32PerPage(ctx: ProcessContext, a: { len: number; rounds: number }): number {
  const words = new Int32Array(ctx.physMemForBaseline(), 4096 * 64, a.len / 4);
  let s = 0;
  for (let off = 0; off < a.len; off += 4096) s ^= Atomics.load(words, off >>> 2);
  const t0 = performance.now();
  for (let r = 0; r < a.rounds; r++) {
    for (let off = 0; off < a.len; off += 4096) s ^= Atomics.load(words, off >>> 2);
  }
  const ns = ((performance.now() - t0) * 1e6) / ((a.rounds * a.len) / 4096);
  return s === 0x7fffffff ? ns + 0 : ns; // keep `s` alive
}
