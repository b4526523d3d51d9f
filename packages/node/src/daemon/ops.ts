/**
 * The admin API's operations: one zod schema per operation (validated once, at ingress) and the
 * error vocabulary. The same table drives the HTTP server, `xpmesh ctl` and the demo.
 *
 * Errors are `{ code, message }`. `code` is stable: the admin's own E_* codes below, or the code of
 * the layer that refused (kernel errno-style codes such as EINVAL / ESRCH / SIGBUS, or driver wire
 * codes such as E_PERM / E_NO_SEGMENT), passed through unchanged.
 */

import { ERROR_TABLE, type ErrorCode, type ErrorCodeOf, httpStatusOf } from '@xpmesh/protocol/error-table';
import { z } from 'zod';

/** An address or size: a JSON number or a "0x…" / decimal string. */
const addr = z.union([
  z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  z
    .string()
    .regex(/^(0x[0-9a-fA-F]+|\d+)$/, 'a number or a 0x-prefixed hex string')
    .transform((s) => Number(s)),
]);
const pid = z.number().int().positive();
/** A length in bytes: up to 1 GiB (262,144 pages; the scale runs export 100,000-page segments). */
const len = z
  .number()
  .int()
  .positive()
  .max(1 << 30);
const access = z.enum(['r', 'rw']);
const prot = z.enum(['none', 'r', 'rw']);
const segid = z.string().min(1).max(128);
/** Longest `pressure` budget: the answer comes within `xpmesh ctl`'s 20 s request timeout. */
export const PRESSURE_MAX_BUDGET_MS = 15_000;
/**
 * `pressure`'s `concurrency` and `batches` bounds: the kernel's own (MAX_SHRINK_CONCURRENCY,
 * MAX_SHRINK_BATCHES; pressure.test.ts checks they agree). Not imported: the CLI loads these schemas
 * and must not load the kernel.
 */
export const PRESSURE_MAX_CONCURRENCY = 64;
export const PRESSURE_MAX_BATCHES = 4;
/**
 * `pressure`'s default `concurrency`: the kernel's own reclaim batch (RECLAIM_BATCH, mainline's
 * SWAP_CLUSTER_MAX; pressure.test.ts checks they agree), so forced pressure reclaims as background
 * reclaim does: one rmap-notifier call (one invalidate per mapper) per batch, not per page.
 */
export const PRESSURE_DEFAULT_CONCURRENCY = 32;

export const OP_SCHEMAS = {
  /** Start a process (a worker thread). Signals are caught by default so SIGBUS is reported, not fatal. */
  spawn: z.object({
    uid: z.number().int().nonnegative().default(1000),
    gid: z.number().int().nonnegative().default(1000),
    name: z.string().max(64).default('proc'),
    catchSignals: z.boolean().default(true),
  }),
  /** Anonymous mmap; returns { addr }. */
  mmap: z.object({ pid, len, prot: prot.default('rw'), addr: addr.optional() }),
  munmap: z.object({ pid, addr, len }),
  /** Write bytes at addr: exactly one of text (UTF-8), hex, base64. */
  write: z
    .object({
      pid,
      addr,
      text: z.string().optional(),
      hex: z
        .string()
        .regex(/^([0-9a-fA-F]{2})*$/)
        .optional(),
      base64: z.string().optional(),
    })
    .refine(
      (o) => [o.text, o.hex, o.base64].filter((v) => v !== undefined).length === 1,
      'give exactly one of text, hex, base64',
    ),
  /** Read len bytes at addr; returns { hex, text, base64 }. */
  read: z.object({
    pid,
    addr,
    len: z
      .number()
      .int()
      .positive()
      .max(1 << 20),
  }),
  /** fork(); returns { pid } of the child. */
  fork: z.object({ pid }),
  exit: z.object({ pid }),
  /** xpmem_make; returns { segid }. mode is octal text ("0600") or a number. */
  make: z.object({
    pid,
    addr,
    size: len,
    mode: z
      .union([
        z.number().int().min(0).max(0o777),
        z
          .string()
          .regex(/^0?[0-7]{1,3}$/)
          .transform((s) => Number.parseInt(s, 8)),
      ])
      .default(0o600),
  }),
  remove: z.object({ segid }),
  /** xpmem_get; returns { apid }. */
  get: z.object({ pid, segid, access: access.default('rw') }),
  release: z.object({ pid, apid: z.string().min(1).max(128) }),
  /** xpmem_attach; returns { addr }. */
  attach: z.object({
    pid,
    apid: z.string().min(1).max(128),
    offset: addr.default(0),
    size: len,
    addr: addr.optional(),
  }),
  detach: z.object({ pid, addr }),
  /** Force reclaim (swap out) of the page backing pid:addr; returns the outcome. */
  reclaim: z.object({ pid, addr }),
  /**
   * Memory pressure: the kernel's LRU reclaim (as background reclaim does it: young pages get a
   * second chance; an exported page goes through the rmap notifiers, invalidate → every ack → swap
   * out) until `pages` pages are reclaimed, `budgetMs` has passed (a page in flight completes) or
   * 2 × the LRU size pages were looked at; `concurrency` pages at once (one batch, one rmap-notifier
   * call), `batches` batches in flight (the next one unmapped while the previous waits for its
   * acks or its swap write). Returns { requested,
   * scanned, reclaimed, outcomes, stoppedBy, ms, freeFrames: { before, after }, memory } (memory:
   * the instance process's memoryUsage()).
   */
  pressure: z.object({
    pages: z
      .number()
      .int()
      .positive()
      .max(1 << 24),
    budgetMs: z.number().int().positive().max(PRESSURE_MAX_BUDGET_MS).default(5000),
    concurrency: z.number().int().min(1).max(PRESSURE_MAX_CONCURRENCY).default(PRESSURE_DEFAULT_CONCURRENCY),
    batches: z.number().int().min(1).max(PRESSURE_MAX_BATCHES).default(1),
  }),
  /** Force migration of the page backing pid:addr; returns { from, to }. */
  migrate: z.object({ pid, addr }),
  /** Which frame backs pid:addr, and its descriptor. */
  pfn: z.object({ pid, addr }),
  /** Run the kernel's invariant checker; returns its findings. */
  check: z.object({}),
  /**
   * Run a program inside a process (its worker thread; accesses go through its page table):
   * `module` is a .js path relative to this package's dist directory (e.g. "load/program.js"),
   * `export` the function to call with (ctx, args). Returns { result } (the program's JSON value).
   */
  run: z.object({
    pid,
    module: z
      .string()
      .min(1)
      .max(256)
      .regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*\.js$/, 'a relative path like load/program.js'),
    export: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z_$][A-Za-z0-9_$]*$/),
    args: z.unknown().optional(),
  }),
} as const;

export type OpName = keyof typeof OP_SCHEMAS;
export type OpInput<N extends OpName> = z.output<(typeof OP_SCHEMAS)[N]>;
export type OpHandlers = { [N in OpName]: (input: OpInput<N>) => Promise<unknown> };
export const OP_NAMES = Object.keys(OP_SCHEMAS) as OpName[];

/** Operations that only read state: allowed without the admin token. */
export const READ_ONLY_OPS: ReadonlySet<OpName> = new Set(['read', 'pfn', 'check']);

/** Admin-level error codes (other codes pass through from the kernel or the driver). */
export type AdminErrorCode = ErrorCodeOf<'admin'> | 'E_TOO_LARGE' | 'E_BUSY' | 'E_INTERNAL';

/** An admin API error: `code` is a row of the one error table, which also gives its HTTP status. */
export class AdminError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message: string, status = httpStatusOf(code)) {
    super(message);
    this.name = 'AdminError';
    this.code = code;
    this.status = status;
  }
}

export { httpStatusOf };

/** Every error code the admin API answers with a known status (the metric's `code` label set): the
 * codes of the error table. */
export const KNOWN_ERROR_CODES: ReadonlySet<string> = new Set(ERROR_TABLE.map((r) => r.code));

/** Turn anything thrown by a layer below into `{code, message}` (codes travel as data). */
export function toErrorBody(err: unknown): { code: string; message: string } {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    if (typeof e.code === 'string' && /^[A-Z][A-Z0-9_]{1,40}$/.test(e.code)) {
      return { code: e.code, message: String(e.message ?? e.code) };
    }
    if (typeof e.message === 'string') return { code: 'E_INTERNAL', message: e.message };
  }
  return { code: 'E_INTERNAL', message: String(err) };
}

export function decodeWriteBytes(input: OpInput<'write'>): Uint8Array {
  if (input.text !== undefined) return new TextEncoder().encode(input.text);
  if (input.hex !== undefined) return Uint8Array.from(Buffer.from(input.hex, 'hex'));
  return Uint8Array.from(Buffer.from(input.base64 ?? '', 'base64'));
}

export function encodeReadBytes(bytes: Uint8Array): { hex: string; base64: string; text: string } {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const nul = b.indexOf(0);
  return {
    hex: b.toString('hex'),
    base64: b.toString('base64'),
    text: b.subarray(0, nul < 0 ? b.length : nul).toString('utf8'),
  };
}
