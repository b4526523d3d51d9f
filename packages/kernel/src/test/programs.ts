/** Programs run inside test processes (Process.run). Each is `(ctx, args) => result`. */
import type { ProcessContext } from '../process-messages.js';

/** Sum of 32-bit words in [addr, addr+len). */
export function sum32(ctx: ProcessContext, a: { addr: number; len: number }): number {
  let s = 0;
  for (let i = 0; i < a.len; i += 4) s = (s + ctx.read32(a.addr + i)) | 0;
  return s;
}

/** Touch an address and report the signal if one is delivered (catching it). */
export function touchCatch(ctx: ProcessContext, a: { addr: number; write: boolean }): string {
  try {
    if (a.write) ctx.write32(a.addr, 1);
    else ctx.read32(a.addr);
    return 'ok';
  } catch (e) {
    return String((e as { code?: string }).code);
  }
}

/** Touch an address without catching: an uncaught signal kills the process. */
export function touch(ctx: ProcessContext, a: { addr: number }): number {
  return ctx.read32(a.addr);
}

export function exitWith(ctx: ProcessContext, a: { code: number }): void {
  ctx.exit(a.code);
}

/**
 * Stamp hammer: pages [base, base+n*4096) each hold 1024 words equal to (page << 20 | version).
 * Repeatedly read a random page as one 4 KiB access and check every word carries that page's
 * index and one version (no torn or foreign page); writers bump the version of a random page with
 * one 4 KiB write. Runs `iters` iterations; returns {reads, writes, errors[]}.
 */
export function stampHammer(
  ctx: ProcessContext,
  a: { base: number; pages: number; iters: number; seed: number; writeEvery: number },
): { reads: number; writes: number; errors: string[] } {
  let s = a.seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const buf = new Uint8Array(4096);
  const w32 = new Uint32Array(buf.buffer);
  const versions = new Uint32Array(a.pages);
  const errors: string[] = [];
  let reads = 0;
  let writes = 0;
  for (let it = 0; it < a.iters && errors.length < 5; it++) {
    const p = Math.floor(rnd() * a.pages);
    const addr = a.base + p * 4096;
    if (a.writeEvery > 0 && it % a.writeEvery === 0) {
      versions[p] = (versions[p] + 1) & 0xfffff;
      w32.fill(((p << 20) | versions[p]) >>> 0);
      ctx.write(addr, buf);
      writes++;
      continue;
    }
    ctx.readInto(addr, buf);
    reads++;
    const first = w32[0];
    if (first >>> 20 !== p || (first & 0xfffff) !== versions[p]) {
      errors.push(`page ${p}: stamp 0x${first.toString(16)}, expected page ${p} version ${versions[p]}`);
      continue;
    }
    for (let i = 1; i < 1024; i++) {
      if (w32[i] !== first) {
        errors.push(`page ${p}: torn at word ${i}: 0x${w32[i].toString(16)} vs 0x${first.toString(16)}`);
        break;
      }
    }
  }
  return { reads, writes, errors };
}

/** Every page of [base, base+pages*4096) is uniform and carries its own page index. */
export function stampVerify(ctx: ProcessContext, a: { base: number; pages: number }): string[] {
  const buf = new Uint8Array(4096);
  const w32 = new Uint32Array(buf.buffer);
  const errors: string[] = [];
  for (let p = 0; p < a.pages; p++) {
    ctx.readInto(a.base + p * 4096, buf);
    if (w32[0] >>> 20 !== p) errors.push(`page ${p}: foreign stamp 0x${w32[0].toString(16)}`);
    else if (!w32.every((x) => x === w32[0])) errors.push(`page ${p}: torn`);
  }
  return errors;
}

/**
 * Lease spin: read the word at `addr` in a tight loop and store the number of completed reads at
 * `ctr` after each one, until the word reads `stop` or `max` reads were done. Returns the count.
 */
export function leaseSpin(
  ctx: ProcessContext,
  a: { addr: number; ctr: number; stop: number; max: number },
): number {
  let n = 0;
  while (n < a.max) {
    const v = ctx.read32(a.addr);
    n++;
    ctx.write32(a.ctr, n);
    if (v === a.stop) break;
  }
  return n;
}

/** Word 0 of page i of [addr, addr + pages pages) := 0x5000 + i. */
export function fillPages(ctx: ProcessContext, a: { addr: number; pages: number }): void {
  for (let i = 0; i < a.pages; i++) ctx.write32(a.addr + i * 4096, 0x5000 + i);
}

/**
 * TLB spin: read32 `addr` in a tight loop (software-TLB hits) until it reads `stop`, `max` reads
 * were done or `maxBad` reads returned something other than `good`. The reads come in batches of
 * `batch` with nothing but reads in between (so a compiler could not keep anything the read path
 * loads across them because of a write); after each batch the number of reads done is stored at
 * `ctr` (a write32). Returns the counts and the first bad value.
 */
export function tlbSpin(
  ctx: ProcessContext,
  a: { addr: number; ctr: number; good: number; stop: number; max: number; maxBad: number; batch: number },
): { reads: number; bad: number; firstBad: number; stopped: boolean } {
  let reads = 0;
  let bad = 0;
  let firstBad = 0;
  let stopped = false;
  while (!stopped && reads < a.max && bad < a.maxBad) {
    for (let i = 0; i < a.batch; i++) {
      const v = ctx.read32(a.addr);
      if (v === a.stop) {
        stopped = true;
        break;
      }
      if (v !== a.good && bad++ === 0) firstBad = v;
    }
    reads += a.batch;
    ctx.write32(a.ctr, reads);
  }
  return { reads, bad, firstBad, stopped };
}

/**
 * Write `len` pattern bytes at `addr` from a buffer at byte offset `srcOff`, read them back into a
 * buffer at byte offset `dstOff`; returns the first differing index, or -1.
 */
export function copyRoundTrip(
  ctx: ProcessContext,
  a: { addr: number; len: number; srcOff: number; dstOff: number; seed: number },
): number {
  const src = new Uint8Array(new ArrayBuffer(a.len + 16), a.srcOff, a.len);
  for (let i = 0; i < a.len; i++) src[i] = (i * 31 + a.seed) & 255;
  ctx.write(a.addr, src);
  const dst = new Uint8Array(new ArrayBuffer(a.len + 16), a.dstOff, a.len);
  ctx.readInto(a.addr, dst);
  for (let i = 0; i < a.len; i++) if (dst[i] !== src[i]) return i;
  const again = ctx.read(a.addr, a.len);
  for (let i = 0; i < a.len; i++) if (again[i] !== src[i]) return i;
  return -1;
}
