/**
 * The workloads: the built-in ones (./workloads/*.ts, each a {@link WorkloadModule}), loading a
 * user's module (`--workload ./file.js`), and turning a module's plan into the runner's checked
 * {@link Plan}. docs/load.md describes each built-in and the interface.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { compileSandbox, MAX_SOURCE_BYTES } from './harness.js';
import type { KeySpec, PlanInput, WorkloadModule } from './workload-api.js';
import attachChurn from './workloads/attach-churn.js';
import forkStorm from './workloads/fork-storm.js';
import manyToOne from './workloads/many-to-one.js';
import mixed from './workloads/mixed.js';
import pingPong from './workloads/ping-pong.js';
import readMostly from './workloads/read-mostly.js';
import reclaimStorm from './workloads/reclaim-storm.js';

export const BUILTIN_WORKLOADS: readonly WorkloadModule[] = [
  readMostly,
  pingPong,
  manyToOne,
  reclaimStorm,
  forkStorm,
  attachChurn,
  mixed,
] as WorkloadModule[];

export const WORKLOADS = [
  'read-mostly',
  'ping-pong',
  'many-to-one',
  'reclaim-storm',
  'fork-storm',
  'attach-churn',
  'mixed',
] as const;
export type Workload = (typeof WORKLOADS)[number];

export const WORKLOAD_HELP = Object.fromEntries(
  BUILTIN_WORKLOADS.map((w) => [w.name, w.description]),
) as Record<Workload, string>;

export function builtinWorkload(name: string): WorkloadModule | undefined {
  return BUILTIN_WORKLOADS.find((w) => w.name === name);
}

/** Bounds on what a plan may ask for. */
export const PLAN_LIMITS = {
  maxKeys: 65_536,
  maxParamsBytes: 64 * 1024,
  wordsPerPage: 1024,
  /** `chunkMs`: chunk length of duration-bounded runs. */
  chunkMs: { min: 10, max: 10_000, default: 200 },
} as const;

export interface Plan {
  keys: Array<KeySpec & { key: number }>;
  params: unknown;
  reclaim: { pauseMs: number } | null;
  fork: { pauseMs: number; childLifeMs: number } | null;
  /** Re-attach every `every` chunks (attachers only). */
  churn: { every: number } | null;
  /** Chunk length for duration-bounded runs. */
  chunkMs: number;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Pages of the segment the workload touches: `pages` of them, spread over the segment. */
export function touchedPages(pages: number, segmentPages: number): number[] {
  const n = Math.max(1, Math.min(pages, segmentPages));
  return range(n).map((i) => Math.floor((i * segmentPages) / n));
}

const int = (min: number, max: number) => z.number().int().min(min).max(max);

const moduleSchema = z.object({
  name: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -'),
  description: z.string().max(500).default(''),
  plan: z.custom<WorkloadModule['plan']>((f) => typeof f === 'function', 'plan must be a function'),
  op: z.custom<WorkloadModule['op']>((f) => typeof f === 'function', 'op must be a function'),
});

function planSchema(segmentPages: number) {
  return z.object({
    keys: z
      .array(z.object({ page: int(0, segmentPages - 1), word: int(0, PLAN_LIMITS.wordsPerPage - 1) }))
      .min(1)
      .max(PLAN_LIMITS.maxKeys),
    params: z.unknown().optional(),
    background: z
      .object({
        reclaim: z.object({ pauseMs: int(0, 60_000) }).nullish(),
        fork: z.object({ pauseMs: int(1, 60_000), childLifeMs: int(0, 60_000) }).nullish(),
        churn: z.object({ every: int(1, 100_000) }).nullish(),
      })
      .optional(),
    chunkMs: int(PLAN_LIMITS.chunkMs.min, PLAN_LIMITS.chunkMs.max).optional(),
  });
}

export class WorkloadError extends Error {
  readonly code = 'E_WORKLOAD';
}

const issues = (e: z.ZodError) =>
  e.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');

/** Check a module's shape and that its `op` compiles as a self-contained function. */
export function checkModule(m: unknown, where: string): WorkloadModule {
  const r = moduleSchema.safeParse(m);
  if (!r.success) throw new WorkloadError(`${where}: not a workload module (${issues(r.error)})`);
  const w = r.data as WorkloadModule;
  const src = w.op.toString();
  if (src.length > MAX_SOURCE_BYTES)
    throw new WorkloadError(`${where}: op is longer than ${MAX_SOURCE_BYTES} bytes`);
  if (/^\s*async\b/.test(src) || /^\s*(async\s+)?(function\s*)?\*/.test(src))
    throw new WorkloadError(`${where}: op must be a plain synchronous function`);
  if (/\[native code\]/.test(src))
    throw new WorkloadError(`${where}: op must be written in JavaScript (not bound)`);
  try {
    compileSandbox(src);
  } catch (e) {
    throw new WorkloadError(`${where}: op does not compile on its own: ${(e as Error).message}`);
  }
  return w;
}

/**
 * Load a user's workload module: ONLY the file named (resolved against `cwd`), its default export
 * or its `workload` export. Its top level runs here, in the load tester; its `op` runs in workers.
 */
export async function loadWorkloadModule(path: string, cwd = process.cwd()): Promise<WorkloadModule> {
  const file = resolve(cwd, path);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (e) {
    throw new WorkloadError(`cannot load workload module ${file}: ${(e as Error).message}`);
  }
  return checkModule(mod.default ?? mod.workload, file);
}

/** Is this `--workload` value a path to a module (rather than a built-in name)? */
export const isModulePath = (w: string) => /[/\\]/.test(w) || /\.(m?js|cjs)$/.test(w);

/** Run the module's plan for this run and check it. */
export function makePlan(w: WorkloadModule, input: PlanInput): Plan {
  let raw: unknown;
  try {
    raw = w.plan(input);
  } catch (e) {
    throw new WorkloadError(`workload ${w.name}: plan() threw: ${(e as Error).message}`);
  }
  const r = planSchema(input.segmentPages).safeParse(raw);
  if (!r.success) throw new WorkloadError(`workload ${w.name}: bad plan (${issues(r.error)})`);
  const p = r.data;
  const seen = new Set<number>();
  for (const k of p.keys) {
    const id = k.page * PLAN_LIMITS.wordsPerPage + k.word;
    if (seen.has(id))
      throw new WorkloadError(
        `workload ${w.name}: key page ${k.page} word ${k.word} is listed twice (keys must be distinct words)`,
      );
    seen.add(id);
  }
  let paramsJson: string | undefined;
  try {
    paramsJson = p.params === undefined ? undefined : JSON.stringify(p.params);
  } catch (e) {
    throw new WorkloadError(`workload ${w.name}: params are not JSON: ${(e as Error).message}`);
  }
  if (paramsJson !== undefined && paramsJson.length > PLAN_LIMITS.maxParamsBytes)
    throw new WorkloadError(
      `workload ${w.name}: params are larger than ${PLAN_LIMITS.maxParamsBytes} bytes as JSON`,
    );
  const bg = p.background ?? {};
  return {
    keys: p.keys.map((k, key) => ({ key, page: k.page, word: k.word })),
    params: paramsJson === undefined ? undefined : JSON.parse(paramsJson),
    reclaim: bg.reclaim ?? null,
    fork: bg.fork ?? null,
    churn: bg.churn ?? null,
    chunkMs: p.chunkMs ?? PLAN_LIMITS.chunkMs.default,
  };
}
