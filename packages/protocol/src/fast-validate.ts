/**
 * Hand-written accept path of the ingress validator. It checks exactly what the zod schemas in
 * validate.ts check (every field, type, range, length, pattern and size) and builds the same output
 * (known keys only, new objects and arrays, byte arrays passed through), at a fraction of zod's
 * cost. It only decides "valid → here is the message"; anything it refuses goes to the zod schemas,
 * which produce the error code and message (so diagnostics are zod's, byte for byte).
 * test/validate-diff.test.ts proves accept/reject and output equal to zod with fast-check.
 */
import { MAX_CID_CHARS, MAX_ERROR_MESSAGE_CHARS, PAGE_SIZE } from './base.js';
import { WIRE_ERROR_CODES } from './error-table.js';
import type { Limits } from './limits.js';
import { INVALIDATE_REASONS, type Message, type MessageType } from './messages.js';

type Rec = Record<string, unknown>;
type Check = (v: Rec) => Message | undefined;

const NONCE = 32;
const PROOF = 32;
const MAX_U32 = 0xffffffff;
const MAX_U53 = Number.MAX_SAFE_INTEGER;
const NODE_RE = /^[A-Za-z0-9._-]{1,64}$/;
const SEG_RE = /^[A-Za-z0-9._-]{1,64}:[0-9]{1,15}$/;
const AP_RE = /^[A-Za-z0-9._-]{1,64}:a[0-9]{1,15}$/;
const INVALIDATE_REASON_SET = new Set<string>(INVALIDATE_REASONS);
const GONE_REASONS = new Set(['remove', 'exit', 'unmap']);
const ERROR_CODES = new Set(Object.keys(WIRE_ERROR_CODES));

/** zod's notion of an object: non-null, typeof object, not an array. */
function isObj(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function intIn(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}
function u32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_U32;
}
function u53(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_U53;
}
function bytes(v: unknown, n: number): v is Uint8Array {
  return v instanceof Uint8Array && v.byteLength === n;
}
function access(v: unknown): boolean {
  return v === 'r' || v === 'rw';
}
/** `cid`: absent/undefined, or a string of ≤ 64 chars. */
function cidOk(v: Rec): boolean {
  const c = v.cid;
  return c === undefined || (typeof c === 'string' && c.length <= MAX_CID_CHARS);
}

/**
 * Verdict-only checks of the types a link sends most (its outgoing check runs on every message):
 * true exactly when `buildFastChecks(l)[t]` returns a message, without building it.
 * test/validate-diff.test.ts compares the two on every value it generates.
 */
export function buildFastVerdicts(l: Limits): Partial<Record<MessageType, (v: Rec) => boolean>> {
  const maxStr = l.maxStringChars;
  const maxPages = l.maxPagesPerMessage;
  const maxRanges = l.maxRangesPerMessage;
  const segid = (s: unknown): boolean => typeof s === 'string' && s.length <= maxStr && SEG_RE.test(s);
  const apid = (s: unknown): boolean => typeof s === 'string' && s.length <= maxStr && AP_RE.test(s);
  const pagesOk = (a: unknown): boolean => {
    if (!Array.isArray(a) || a.length > maxPages) return false;
    for (let i = 0; i < a.length; i++) {
      const p = a[i];
      if (!isObj(p) || !u32(p.page) || !u53(p.version) || !bytes(p.data, PAGE_SIZE)) return false;
    }
    return true;
  };
  const rangesOk = (a: unknown): boolean => {
    if (!Array.isArray(a) || a.length < 1 || a.length > maxRanges) return false;
    for (let i = 0; i < a.length; i++) {
      const r = a[i];
      if (!Array.isArray(r) || r.length !== 2 || !u32(r[0]) || !intIn(r[1], 1, MAX_U32)) return false;
    }
    return true;
  };
  return {
    map: (v) =>
      u32(v.id) && cidOk(v) && apid(v.apid) && u32(v.page) && intIn(v.count, 1, maxPages) && access(v.access),
    'map-ok': (v) => {
      if (!u32(v.re) || !cidOk(v) || !access(v.access) || !pagesOk(v.pages)) return false;
      const gs = v.grants;
      if (!Array.isArray(gs) || gs.length > maxPages) return false;
      for (const g of gs) if (!u53(g)) return false;
      return true;
    },
    invalidate: (v) =>
      u32(v.id) &&
      cidOk(v) &&
      segid(v.segid) &&
      typeof v.reason === 'string' &&
      INVALIDATE_REASON_SET.has(v.reason) &&
      typeof v.writeback === 'boolean' &&
      typeof v.downgrade === 'boolean' &&
      u53(v.upTo) &&
      rangesOk(v.ranges),
    'invalidate-ack': (v) => u32(v.re) && cidOk(v) && pagesOk(v.dirty),
    ok: (v) => u32(v.re) && cidOk(v),
  };
}

export function buildFastChecks(l: Limits): Record<MessageType, Check> {
  const maxStr = l.maxStringChars;
  const maxPages = l.maxPagesPerMessage;
  const maxRanges = l.maxRangesPerMessage;
  const nodeId = (s: unknown): s is string => typeof s === 'string' && NODE_RE.test(s);
  const segid = (s: unknown): s is string => typeof s === 'string' && s.length <= maxStr && SEG_RE.test(s);
  const apid = (s: unknown): s is string => typeof s === 'string' && s.length <= maxStr && AP_RE.test(s);

  /** PageData[] (≤ maxPagesPerMessage), copied like zod does; undefined if invalid. */
  const pages = (a: unknown): Rec[] | undefined => {
    if (!Array.isArray(a) || a.length > maxPages) return undefined;
    const out: Rec[] = new Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const p = a[i];
      if (!isObj(p)) return undefined;
      const page = p.page;
      const version = p.version;
      const data = p.data;
      if (!u32(page) || !u53(version) || !bytes(data, PAGE_SIZE)) return undefined;
      out[i] = { page, version, data };
    }
    return out;
  };
  /** PageRange[] (1..maxRangesPerMessage). */
  const ranges = (a: unknown): [number, number][] | undefined => {
    if (!Array.isArray(a) || a.length < 1 || a.length > maxRanges) return undefined;
    const out: [number, number][] = new Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const r = a[i];
      if (!Array.isArray(r) || r.length !== 2) return undefined;
      const first = r[0];
      const count = r[1];
      if (!u32(first) || !intIn(count, 1, MAX_U32)) return undefined;
      out[i] = [first, count];
    }
    return out;
  };
  /** Copies `cid` the way zod does: present key (even undefined) → present in the output. */
  const withCid = (o: Rec, v: Rec): Message => {
    if ('cid' in v) o.cid = v.cid;
    return o as unknown as Message;
  };

  return {
    hello: (v) => {
      const vs = v.versions;
      if (!Array.isArray(vs) || vs.length < 1 || vs.length > 16) return undefined;
      for (let i = 0; i < vs.length; i++) if (!intIn(vs[i], 1, 65535)) return undefined;
      if (!nodeId(v.node) || !u53(v.epoch) || !bytes(v.nonce, NONCE)) return undefined;
      if (v.boot !== undefined && !u53(v.boot)) return undefined;
      const o: Rec = { t: 'hello', versions: vs.slice(), node: v.node, epoch: v.epoch };
      if ('boot' in v) o.boot = v.boot;
      o.nonce = v.nonce;
      return o as unknown as Message;
    },
    welcome: (v) => {
      if (!intIn(v.version, 1, 65535) || !nodeId(v.node) || !u53(v.epoch)) return undefined;
      if (!bytes(v.nonce, NONCE) || !bytes(v.proof, PROOF)) return undefined;
      if (v.boot !== undefined && !u53(v.boot)) return undefined;
      const o: Rec = { t: 'welcome', version: v.version, node: v.node, epoch: v.epoch };
      if ('boot' in v) o.boot = v.boot;
      o.nonce = v.nonce;
      o.proof = v.proof;
      return o as unknown as Message;
    },
    auth: (v) => (bytes(v.proof, PROOF) ? { t: 'auth', proof: v.proof } : undefined),
    ready: (v) => (u53(v.epoch) ? { t: 'ready', epoch: v.epoch } : undefined),
    get: (v) => {
      if (!u32(v.id) || !cidOk(v) || !segid(v.segid) || !access(v.access)) return undefined;
      if (!u32(v.uid) || !u32(v.gid)) return undefined;
      const o: Rec = { t: 'get', id: v.id };
      withCid(o, v);
      o.segid = v.segid;
      o.access = v.access;
      o.uid = v.uid;
      o.gid = v.gid;
      return o as unknown as Message;
    },
    'get-ok': (v) => {
      if (!u32(v.re) || !cidOk(v) || !apid(v.apid) || !u53(v.size) || !access(v.access)) return undefined;
      const o: Rec = { t: 'get-ok', re: v.re };
      withCid(o, v);
      o.apid = v.apid;
      o.size = v.size;
      o.access = v.access;
      return o as unknown as Message;
    },
    release: (v) => {
      if (!u32(v.id) || !cidOk(v) || !apid(v.apid)) return undefined;
      const o: Rec = { t: 'release', id: v.id };
      withCid(o, v);
      o.apid = v.apid;
      return o as unknown as Message;
    },
    map: (v) => {
      if (!u32(v.id) || !cidOk(v) || !apid(v.apid) || !u32(v.page)) return undefined;
      if (!intIn(v.count, 1, maxPages) || !access(v.access)) return undefined;
      const o: Rec = { t: 'map', id: v.id };
      withCid(o, v);
      o.apid = v.apid;
      o.page = v.page;
      o.count = v.count;
      o.access = v.access;
      return o as unknown as Message;
    },
    'map-ok': (v) => {
      if (!u32(v.re) || !cidOk(v) || !access(v.access)) return undefined;
      const ps = pages(v.pages);
      if (!ps) return undefined;
      const gs = v.grants;
      if (!Array.isArray(gs) || gs.length > maxPages) return undefined;
      for (const g of gs) if (!u53(g)) return undefined;
      const o: Rec = { t: 'map-ok', re: v.re };
      withCid(o, v);
      o.access = v.access;
      o.pages = ps;
      o.grants = [...gs];
      return o as unknown as Message;
    },
    invalidate: (v) => {
      if (!u32(v.id) || !cidOk(v) || !segid(v.segid)) return undefined;
      if (typeof v.reason !== 'string' || !INVALIDATE_REASON_SET.has(v.reason)) return undefined;
      if (typeof v.writeback !== 'boolean' || typeof v.downgrade !== 'boolean') return undefined;
      if (!u53(v.upTo)) return undefined;
      const rs = ranges(v.ranges);
      if (!rs) return undefined;
      const o: Rec = { t: 'invalidate', id: v.id };
      withCid(o, v);
      o.segid = v.segid;
      o.ranges = rs;
      o.reason = v.reason;
      o.writeback = v.writeback;
      o.downgrade = v.downgrade;
      o.upTo = v.upTo;
      return o as unknown as Message;
    },
    'invalidate-ack': (v) => {
      if (!u32(v.re) || !cidOk(v)) return undefined;
      const ds = pages(v.dirty);
      if (!ds) return undefined;
      const o: Rec = { t: 'invalidate-ack', re: v.re };
      withCid(o, v);
      o.dirty = ds;
      return o as unknown as Message;
    },
    detach: (v) => {
      if (!u32(v.id) || !cidOk(v) || !apid(v.apid)) return undefined;
      const rs = ranges(v.ranges);
      if (!rs) return undefined;
      const ds = pages(v.dirty);
      if (!ds) return undefined;
      const o: Rec = { t: 'detach', id: v.id };
      withCid(o, v);
      o.apid = v.apid;
      o.ranges = rs;
      o.dirty = ds;
      return o as unknown as Message;
    },
    'segment-gone': (v) => {
      if (!cidOk(v) || !segid(v.segid)) return undefined;
      if (typeof v.reason !== 'string' || !GONE_REASONS.has(v.reason)) return undefined;
      const o: Rec = { t: 'segment-gone' };
      withCid(o, v);
      o.segid = v.segid;
      o.reason = v.reason;
      return o as unknown as Message;
    },
    ok: (v) => {
      if (!u32(v.re) || !cidOk(v)) return undefined;
      return withCid({ t: 'ok', re: v.re }, v);
    },
    error: (v) => {
      const re = v.re;
      if (re !== undefined && !u32(re)) return undefined;
      if (!cidOk(v)) return undefined;
      if (typeof v.code !== 'string' || !ERROR_CODES.has(v.code)) return undefined;
      if (typeof v.message !== 'string' || v.message.length > MAX_ERROR_MESSAGE_CHARS) return undefined;
      const o: Rec = { t: 'error' };
      if ('re' in v) o.re = re;
      withCid(o, v);
      o.code = v.code;
      o.message = v.message;
      return o as unknown as Message;
    },
  };
}
