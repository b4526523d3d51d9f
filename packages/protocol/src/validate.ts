/**
 * Validation at ingress: one zod schema per message, built from the configured limits. Nothing acts
 * on a frame before every message in it passed. Unknown fields are dropped (forward compatibility:
 * a newer minor revision may add optional fields); unknown message types are rejected.
 *
 * The zod schemas are the reference. The hot path is a hand-written checker (fast-validate.ts)
 * that accepts exactly what the schemas accept and returns the same output; whatever it refuses is
 * re-checked by zod, which supplies the error code and message. test/validate-diff.test.ts proves
 * the two equal with fast-check.
 */
import { z } from 'zod';
import { MAX_CID_CHARS, MAX_ERROR_MESSAGE_CHARS, PAGE_SIZE } from './base.js';
import { WIRE_ERROR_CODES, type WireErrorCode } from './error-table.js';
import { buildFastChecks, buildFastVerdicts } from './fast-validate.js';
import { type Limits, resolveLimits } from './limits.js';
import { INVALIDATE_REASONS, type Message, type MessageType } from './messages.js';

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
export const NODE_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
export const SEGID_RE = /^[A-Za-z0-9._-]{1,64}:[0-9]{1,15}$/;
export const APID_RE = /^[A-Za-z0-9._-]{1,64}:a[0-9]{1,15}$/;
export { MAX_CID_CHARS, MAX_ERROR_MESSAGE_CHARS };

export const MESSAGE_TYPES: readonly MessageType[] = [
  'hello',
  'welcome',
  'auth',
  'ready',
  'get',
  'get-ok',
  'release',
  'map',
  'map-ok',
  'invalidate',
  'invalidate-ack',
  'detach',
  'segment-gone',
  'ok',
  'error',
];
const TYPE_SET = new Set<string>(MESSAGE_TYPES);

const uint32 = z
  .number()
  .int()
  .min(0)
  .max(2 ** 32 - 1);
const uint53 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const bytes = (n: number) =>
  z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.byteLength === n, {
    message: `expected ${n} bytes`,
  });

function buildSchemas(l: Limits) {
  const nodeId = z.string().regex(NODE_ID_RE);
  const cid = z.string().max(MAX_CID_CHARS).optional();
  const segid = z.string().max(l.maxStringChars).regex(SEGID_RE);
  const apid = z.string().max(l.maxStringChars).regex(APID_RE);
  const access = z.enum(['r', 'rw']);
  const page = z.object({ page: uint32, version: uint53, data: bytes(PAGE_SIZE) });
  const pages = z.array(page).max(l.maxPagesPerMessage);
  const range = z.tuple([
    uint32,
    z
      .number()
      .int()
      .min(1)
      .max(2 ** 32 - 1),
  ]);
  const ranges = z.array(range).min(1).max(l.maxRangesPerMessage);
  const schemas = {
    hello: z.object({
      t: z.literal('hello'),
      versions: z.array(z.number().int().min(1).max(65535)).min(1).max(16),
      node: nodeId,
      epoch: uint53,
      boot: uint53.optional(),
      nonce: bytes(NONCE_BYTES),
    }),
    welcome: z.object({
      t: z.literal('welcome'),
      version: z.number().int().min(1).max(65535),
      node: nodeId,
      epoch: uint53,
      boot: uint53.optional(),
      nonce: bytes(NONCE_BYTES),
      proof: bytes(PROOF_BYTES),
    }),
    auth: z.object({ t: z.literal('auth'), proof: bytes(PROOF_BYTES) }),
    ready: z.object({ t: z.literal('ready'), epoch: uint53 }),
    get: z.object({ t: z.literal('get'), id: uint32, cid, segid, access, uid: uint32, gid: uint32 }),
    'get-ok': z.object({ t: z.literal('get-ok'), re: uint32, cid, apid, size: uint53, access }),
    release: z.object({ t: z.literal('release'), id: uint32, cid, apid }),
    map: z.object({
      t: z.literal('map'),
      id: uint32,
      cid,
      apid,
      page: uint32,
      count: z.number().int().min(1).max(l.maxPagesPerMessage),
      access,
    }),
    'map-ok': z.object({
      t: z.literal('map-ok'),
      re: uint32,
      cid,
      access,
      pages,
      grants: z.array(uint53).max(l.maxPagesPerMessage),
    }),
    invalidate: z.object({
      t: z.literal('invalidate'),
      id: uint32,
      cid,
      segid,
      ranges,
      reason: z.enum(INVALIDATE_REASONS),
      writeback: z.boolean(),
      downgrade: z.boolean(),
      upTo: uint53,
    }),
    'invalidate-ack': z.object({ t: z.literal('invalidate-ack'), re: uint32, cid, dirty: pages }),
    detach: z.object({ t: z.literal('detach'), id: uint32, cid, apid, ranges, dirty: pages }),
    'segment-gone': z.object({
      t: z.literal('segment-gone'),
      cid,
      segid,
      reason: z.enum(['remove', 'exit', 'unmap']),
    }),
    ok: z.object({ t: z.literal('ok'), re: uint32, cid }),
    error: z.object({
      t: z.literal('error'),
      re: uint32.optional(),
      cid,
      code: z.enum(Object.keys(WIRE_ERROR_CODES) as [WireErrorCode, ...WireErrorCode[]]),
      message: z.string().max(MAX_ERROR_MESSAGE_CHARS),
    }),
  } satisfies Record<MessageType, z.ZodType>;
  return schemas;
}

/** Upper bounds that are a number's type (uint32, uint53, a version), not a configured limit. */
const TYPE_BOUNDS = new Set<number>([2 ** 32 - 1, Number.MAX_SAFE_INTEGER, 65535]);

/**
 * One rule for codes (docs/protocol.md §2): a frame, list, string or count over a configured limit
 * (docs/limits.md) is E_TOO_LARGE; anything else that fails, including a number outside its type's
 * range (negative, not an integer, a uint32 ≥ 2^32), is E_MALFORMED.
 */
function issueCode(issue: z.core.$ZodIssue | undefined): WireErrorCode {
  if (issue?.code !== 'too_big') return 'E_MALFORMED';
  if ((issue.origin === 'number' || issue.origin === 'int') && TYPE_BOUNDS.has(Number(issue.maximum)))
    return 'E_MALFORMED';
  return 'E_TOO_LARGE';
}

export type ValidationResult =
  | { ok: true; msg: Message }
  | { ok: false; code: WireErrorCode; message: string; re?: number };

/** Validates decoded values against the schemas for one set of limits. */
export class Validator {
  readonly limits: Limits;
  private readonly schemas: ReturnType<typeof buildSchemas>;
  private readonly fast: ReturnType<typeof buildFastChecks>;
  private readonly verdicts: ReturnType<typeof buildFastVerdicts>;
  constructor(limits?: Partial<Limits>) {
    this.limits = resolveLimits(limits);
    this.schemas = buildSchemas(this.limits);
    this.fast = buildFastChecks(this.limits);
    this.verdicts = buildFastVerdicts(this.limits);
  }

  /** Whether `accept` would accept the value, without building its output (the check of what we
   * send: the message goes out as it is). Same verdict as `accept(value) !== undefined`. */
  acceptable(value: unknown): boolean {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array)
      return false;
    const t = (value as Record<string, unknown>).t;
    if (typeof t !== 'string' || !TYPE_SET.has(t)) return false;
    const verdict = this.verdicts[t as MessageType];
    if (verdict !== undefined) return verdict(value as Record<string, unknown>);
    return this.fast[t as MessageType](value as Record<string, unknown>) !== undefined;
  }

  validate(value: unknown): ValidationResult {
    if (
      typeof value === 'object' &&
      value !== null &&
      !Array.isArray(value) &&
      !(value instanceof Uint8Array)
    ) {
      const t = (value as Record<string, unknown>).t;
      if (typeof t === 'string' && TYPE_SET.has(t)) {
        const msg = this.fast[t as MessageType](value as Record<string, unknown>);
        if (msg !== undefined) return { ok: true, msg };
      }
    }
    return this.validateWithSchema(value);
  }

  /** The fast path alone: the message if the hand-written checker accepts it, else undefined (then
   * `validate` gives the verdict). Same output as `validate` for what it accepts. */
  accept(value: unknown): Message | undefined {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array)
      return undefined;
    const t = (value as Record<string, unknown>).t;
    if (typeof t !== 'string' || !TYPE_SET.has(t)) return undefined;
    return this.fast[t as MessageType](value as Record<string, unknown>);
  }

  /** The reference path: the zod schemas only (tests compare the fast path against it). */
  validateWithSchema(value: unknown): ValidationResult {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array) {
      return { ok: false, code: 'E_MALFORMED', message: 'message is not a map' };
    }
    const v = value as Record<string, unknown>;
    const t = v.t;
    // A valid `id` is echoed as `re` whatever else is wrong (docs/errors.md), so a client that
    // matches replies by `re` learns at once that its request was refused.
    const id = v.id;
    const re = typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < 2 ** 32 ? id : undefined;
    if (typeof t !== 'string') return { ok: false, code: 'E_MALFORMED', message: 'missing field t', re };
    if (!TYPE_SET.has(t))
      return { ok: false, code: 'E_UNKNOWN_TYPE', message: `unknown type ${t.slice(0, 64)}`, re };
    const r = this.schemas[t as MessageType].safeParse(v);
    if (r.success) return { ok: true, msg: r.data as Message };
    const issue = r.error.issues[0];
    const code = issueCode(issue);
    const where = issue ? issue.path.join('.') : '';
    return {
      ok: false,
      code,
      message: `${t}: ${where ? `${where}: ` : ''}${issue?.message ?? 'invalid'}`,
      re,
    };
  }
}
