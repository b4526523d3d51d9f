/** Test helpers: a kernel that is always closed, a program module path, small utilities. */
import { fileURLToPath } from 'node:url';
import { createKernel, type Kernel, type KernelOptions } from '../index.js';

export const PROGRAMS = fileURLToPath(new URL('./programs.js', import.meta.url));

export async function withKernel<T>(opts: Partial<KernelOptions>, fn: (k: Kernel) => Promise<T>): Promise<T> {
  const k = await createKernel({ name: 'test', frames: 256, ...opts });
  try {
    return await fn(k);
  } finally {
    await k.close();
  }
}

/** A deterministic PRNG (mulberry32) for test workloads. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pageOf(byte: number): Uint8Array {
  return new Uint8Array(4096).fill(byte);
}
