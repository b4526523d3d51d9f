/**
 * Fused reader for incoming session frames: it reads the MessagePack bytes of the session messages
 * (requests, replies, one-way messages: every type but the handshake's) straight into the validated
 * message, with no intermediate msgpackr object and no second object built by the validator.
 *
 * CONTRACT: `readFast` returns messages only for a frame that msgpackr (codec.ts options) followed
 * by the validator (validate.ts) would accept, and then returns exactly their output (same keys in
 * the same order, same values, byte arrays the same `subarray` views of the frame that msgpackr's
 * `copyBuffers: false` hands out). For anything else it returns undefined and the caller runs
 * msgpackr + the validator, which stay the authority and produce every error code and message.
 * It returns undefined, rather than deciding, for anything outside the narrow shape it knows:
 *
 * - a value other than one message map or an array of 1..maxBatch message maps;
 * - a map whose first key is not `t`, a type it does not read (handshake), a key the type does not
 *   have, a key twice, a key that is not a fixstr;
 * - a number that is not an integer in 0..2^53-1 (any width: fixint, uint/int 8..64, float32/64;
 *   a float holding an integer, -0 included, is read as msgpackr reads it and checked as the
 *   validator checks it);
 * - strings with a byte ≥ 0x80 (msgpackr's UTF-8 decoding is then not re-derived here), `nil`,
 *   extension types (msgpackr's `undefined` included), `bin` of any length but PAGE_SIZE;
 * - any value that fails its field's check (the same predicates as fast-validate.ts), a length
 *   header beyond the frame's end, trailing bytes.
 *
 * Bounded work: every header is checked against the bytes left before anything is read or
 * allocated (an array is allocated only when its count fits the limit AND the bytes left, at ≥ 1
 * byte per element), every byte is read at most a constant number of times. The allocations are
 * the output itself. test/fast-decode-diff.test.ts proves the contract with fast-check against
 * msgpackr + the validator (valid frames from both encoders, mutations, truncations, byte flips,
 * arbitrary msgpack values, duplicate keys, non-canonical widths, float-encoded integers).
 */
import { MAX_ERROR_MESSAGE_CHARS, PAGE_SIZE } from './base.js';
import { WIRE_ERROR_CODES } from './error-table.js';
import type { Limits } from './limits.js';
import { INVALIDATE_REASONS, type Message } from './messages.js';
import { APID_RE, MAX_CID_CHARS, SEGID_RE } from './validate.js';

const MAX_U32 = 0xffffffff;
const MAX_U53 = Number.MAX_SAFE_INTEGER;
const ERROR_CODES = new Set(Object.keys(WIRE_ERROR_CODES));

// The frame being read and the limits of this call (module state: one frame is read at a time, and
// nothing here calls out).
let src: Uint8Array = new Uint8Array(0);
let pos = 0;
let end = 0;
let maxPages = 0;
let maxRanges = 0;
let maxStr = 0;

/** Bytes of an ASCII constant, for matching keys and enum values without building a string. */
function ascii(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) throw new Error(`not ASCII: ${s}`);
    out.push(c);
  }
  if (out.length >= 32) throw new Error(`constant ${s} too long for a fixstr`);
  return out;
}

/** Whether the `len` bytes at `at` are `b`. */
function bytesAre(at: number, len: number, b: number[]): boolean {
  if (len !== b.length) return false;
  for (let i = 0; i < len; i++) if (src[at + i] !== b[i]) return false;
  return true;
}

/** A string of a fixed set (type names, enums): the set's own string if the next value is one of
 * them as a fixstr, else undefined. */
function readEnum(set: readonly (readonly [number[], string])[]): string | undefined {
  if (pos >= end) return undefined;
  const h = src[pos];
  if (h < 0xa0 || h > 0xbf) return undefined;
  const len = h - 0xa0;
  if (len > end - pos - 1) return undefined;
  for (let i = 0; i < set.length; i++) {
    if (bytesAre(pos + 1, len, set[i][0])) {
      pos += 1 + len;
      return set[i][1];
    }
  }
  return undefined;
}

/** The next value as an unsigned integer ≤ 2^53 - 1, or -1 (anything else). */
function readUint(): number {
  if (pos >= end) return -1;
  const h = src[pos];
  if (h < 0x80) {
    pos++;
    return h;
  }
  switch (h) {
    case 0xcc:
      if (end - pos < 2) return -1;
      pos += 2;
      return src[pos - 1];
    case 0xcd:
      if (end - pos < 3) return -1;
      pos += 3;
      return (src[pos - 2] << 8) | src[pos - 1];
    case 0xce:
      if (end - pos < 5) return -1;
      pos += 5;
      return u32At(pos - 4);
    case 0xcf:
    case 0xd3: {
      // uint64 / int64: msgpackr (int64AsType 'number') computes hi * 2^32 + lo, exact below 2^53;
      // a negative int64 has its top bit set, so it fails `hi < 2^21` like any value ≥ 2^53.
      if (end - pos < 9) return -1;
      const hi = u32At(pos + 1);
      if (hi >= 0x200000) return -1;
      const v = hi * 0x100000000 + u32At(pos + 5);
      pos += 9;
      return v;
    }
    case 0xd0:
      if (end - pos < 2 || src[pos + 1] >= 0x80) return -1; // a negative int8
      pos += 2;
      return src[pos - 1];
    case 0xd1:
      if (end - pos < 3 || src[pos + 1] >= 0x80) return -1;
      pos += 3;
      return (src[pos - 2] << 8) | src[pos - 1];
    case 0xd2:
      if (end - pos < 5 || src[pos + 1] >= 0x80) return -1;
      pos += 5;
      return u32At(pos - 4);
    case 0xca:
    case 0xcb: {
      // A float that holds an integer is one to msgpackr and the validator (even -0, which
      // Number.isInteger and `>= 0` accept): the same read (IEEE 754, big-endian) gives the same
      // double, the same predicate accepts it. NaN, ±Infinity and fractions fail it.
      const n = h === 0xca ? 4 : 8;
      if (end - pos <= n) return -1;
      for (let i = 0; i < n; i++) floatBytes[i] = src[pos + 1 + i];
      const v = n === 4 ? floatView.getFloat32(0) : floatView.getFloat64(0);
      if (!Number.isInteger(v) || v < 0 || v > MAX_U53) return -1;
      pos += 1 + n;
      return v;
    }
    default:
      return -1;
  }
}
const floatBytes = new Uint8Array(8);
const floatView = new DataView(floatBytes.buffer);

function u32At(at: number): number {
  return ((src[at] << 24) >>> 0) + ((src[at + 1] << 16) | (src[at + 2] << 8) | src[at + 3]);
}

/** The next value as an ASCII string of at most `max` bytes, or undefined. */
function readAscii(max: number): string | undefined {
  if (pos >= end) return undefined;
  const h = src[pos];
  let len: number;
  let at: number;
  if (h >= 0xa0 && h <= 0xbf) {
    len = h - 0xa0;
    at = pos + 1;
  } else if (h === 0xd9) {
    if (end - pos < 2) return undefined;
    len = src[pos + 1];
    at = pos + 2;
  } else if (h === 0xda) {
    if (end - pos < 3) return undefined;
    len = (src[pos + 1] << 8) | src[pos + 2];
    at = pos + 3;
  } else if (h === 0xdb) {
    if (end - pos < 5) return undefined;
    len = u32At(pos + 1);
    at = pos + 5;
  } else return undefined;
  if (len > max || len > end - at) return undefined;
  let s = '';
  for (let i = 0; i < len; i++) {
    const c = src[at + i];
    if (c >= 0x80) return undefined;
    s += String.fromCharCode(c);
  }
  pos = at + len;
  return s;
}

/** The last id string (apid or segid) read and found valid, and its bytes: a peer sends the same
 * few ids again and again, and bytes equal to these are the same string with the same verdict. */
interface IdCache {
  re: RegExp;
  bytes: Uint8Array;
  len: number;
  str: string;
}
const idCache = (re: RegExp): IdCache => ({ re, bytes: new Uint8Array(32), len: -1, str: '' });
const APID_CACHE = idCache(APID_RE);
const SEGID_CACHE = idCache(SEGID_RE);

/** The next value as an id of `c.re` (≤ maxStringChars, ASCII), or undefined. */
function readId(c: IdCache): string | undefined {
  if (pos < end) {
    const h = src[pos];
    const len = h - 0xa0;
    // fixstr, ≤ 31 bytes: compare with the cached one
    if (len === c.len && len <= maxStr && len < end - pos) {
      let i = 0;
      while (i < len && src[pos + 1 + i] === c.bytes[i]) i++;
      if (i === len) {
        pos += 1 + len;
        return c.str;
      }
    }
  }
  const at = pos;
  const s = readAscii(maxStr);
  if (s === undefined || !c.re.test(s)) return undefined;
  const len = pos - at - 1;
  if (src[at] === 0xa0 + len && len < 32) {
    for (let i = 0; i < len; i++) c.bytes[i] = src[at + 1 + i];
    c.len = len;
    c.str = s;
  }
  return s;
}

/** The next value as a count header of an array (fixarray, array16, array32), or -1. The count is
 * not checked here: callers bound it by their limit and by the bytes left. */
function readArrayHeader(): number {
  if (pos >= end) return -1;
  const h = src[pos];
  if (h >= 0x90 && h <= 0x9f) {
    pos++;
    return h - 0x90;
  }
  if (h === 0xdc) {
    if (end - pos < 3) return -1;
    pos += 3;
    return (src[pos - 2] << 8) | src[pos - 1];
  }
  if (h === 0xdd) {
    if (end - pos < 5) return -1;
    pos += 5;
    return u32At(pos - 4);
  }
  return -1;
}

/** Same for a map header (fixmap, map16, map32). */
function readMapHeader(): number {
  if (pos >= end) return -1;
  const h = src[pos];
  if (h >= 0x80 && h <= 0x8f) {
    pos++;
    return h - 0x80;
  }
  if (h === 0xde) {
    if (end - pos < 3) return -1;
    pos += 3;
    return (src[pos - 2] << 8) | src[pos - 1];
  }
  if (h === 0xdf) {
    if (end - pos < 5) return -1;
    pos += 5;
    return u32At(pos - 4);
  }
  return -1;
}

/** A page's data: `bin` of exactly PAGE_SIZE bytes, as the view msgpackr returns (`subarray`). */
function readPageBytes(): Uint8Array | undefined {
  if (end - pos < 5) return undefined;
  const h = src[pos];
  let len: number;
  let at: number;
  if (h === 0xc5) {
    len = (src[pos + 1] << 8) | src[pos + 2];
    at = pos + 3;
  } else if (h === 0xc6) {
    len = u32At(pos + 1);
    at = pos + 5;
  } else return undefined; // bin8 holds at most 255 bytes
  if (len !== PAGE_SIZE || len > end - at) return undefined;
  pos = at + len;
  return src.subarray(at, pos);
}

function readBool(): number {
  if (pos >= end) return -1;
  const h = src[pos];
  if (h !== 0xc2 && h !== 0xc3) return -1;
  pos++;
  return h - 0xc2;
}

/** The next fixstr key's length (its bytes follow at `pos`), or -1. */
function keyLen(): number {
  if (pos >= end) return -1;
  const h = src[pos];
  if (h < 0xa0 || h > 0xbf) return -1;
  const len = h - 0xa0;
  if (len > end - pos - 1) return -1;
  pos++;
  return len;
}

const K_PAGE = ascii('page');
const K_VERSION = ascii('version');
const K_DATA = ascii('data');

interface PageData {
  page: number;
  version: number;
  data: Uint8Array;
}

/** PageData[] of at most maxPages entries, each a map of exactly page, version, data (any order). */
function readPages(): PageData[] | undefined {
  const n = readArrayHeader();
  // A page takes far more than 16 bytes; the bound only has to keep the allocation honest.
  if (n < 0 || n > maxPages || n * 16 > end - pos) return undefined;
  const out: PageData[] = new Array(n);
  for (let i = 0; i < n; i++) {
    if (readMapHeader() !== 3) return undefined;
    let page = -1;
    let version = -1;
    let data: Uint8Array | undefined;
    for (let k = 0; k < 3; k++) {
      const len = keyLen();
      if (len < 0) return undefined;
      const at = pos;
      pos += len;
      if (page < 0 && bytesAre(at, len, K_PAGE)) {
        page = readUint();
        if (page < 0 || page > MAX_U32) return undefined;
      } else if (version < 0 && bytesAre(at, len, K_VERSION)) {
        version = readUint();
        if (version < 0) return undefined;
      } else if (data === undefined && bytesAre(at, len, K_DATA)) {
        data = readPageBytes();
        if (data === undefined) return undefined;
      } else return undefined; // unknown or repeated key
    }
    out[i] = { page, version, data: data as Uint8Array };
  }
  return out;
}

/** number[] of u53, at most maxPages. */
function readGrants(): number[] | undefined {
  const n = readArrayHeader();
  if (n < 0 || n > maxPages || n > end - pos) return undefined;
  const out: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const g = readUint();
    if (g < 0) return undefined;
    out[i] = g;
  }
  return out;
}

/** PageRange[]: 1..maxRanges pairs [u32 first, 1..2^32-1 count]. */
function readRanges(): [number, number][] | undefined {
  const n = readArrayHeader();
  if (n < 1 || n > maxRanges || n * 3 > end - pos) return undefined;
  const out: [number, number][] = new Array(n);
  for (let i = 0; i < n; i++) {
    if (pos >= end || src[pos] !== 0x92) return undefined;
    pos++;
    const first = readUint();
    if (first < 0 || first > MAX_U32) return undefined;
    const count = readUint();
    if (count < 1 || count > MAX_U32) return undefined;
    out[i] = [first, count];
  }
  return out;
}

const ACCESS = [
  [ascii('r'), 'r'],
  [ascii('rw'), 'rw'],
] as const;
const REASONS = INVALIDATE_REASONS.map((r) => [ascii(r), r] as const);
const GONE_REASONS = (['remove', 'exit', 'unmap'] as const).map((r) => [ascii(r), r] as const);

/** Field kinds; a field's value is read and checked by its kind. */
enum F {
  U32,
  U53,
  COUNT,
  ACCESS,
  APID,
  SEGID,
  CID,
  PAGES,
  GRANTS,
  RANGES,
  REASON,
  BOOL,
  GONE,
  CODE,
  MESSAGE,
}

interface TypeSpec {
  t: Message['t'];
  /** Bytes of the `t` value. */
  tb: number[];
  /** Fields other than `t`, in schema order. */
  keys: number[][];
  kinds: F[];
  /** Bit mask of the fields that must be present. */
  required: number;
  /** Builds the message from the values (indexed like keys; undefined = absent). */
  build(v: unknown[]): Message;
  /** Reads the `entries` after `t` if they are exactly the required fields in schema order (what
   * fast-encode writes without a cid), else undefined (and `pos` is anywhere). */
  exact?: (entries: number) => Message | undefined;
}

function spec(
  t: Message['t'],
  fields: [string, F, boolean][],
  build: (v: unknown[]) => Message,
  exact?: (entries: number) => Message | undefined,
): TypeSpec {
  let required = 0;
  fields.forEach(([, , req], i) => {
    if (req) required |= 1 << i;
  });
  return {
    t,
    tb: ascii(t),
    keys: fields.map(([k]) => ascii(k)),
    kinds: fields.map(([, kind]) => kind),
    required,
    build,
    exact,
  };
}

/** Whether the next value is the fixstr key `k`; if so, moves past it. */
function key(k: number[]): boolean {
  const len = k.length;
  if (end - pos < len + 1 || src[pos] !== 0xa0 + len) return false;
  for (let i = 0; i < len; i++) if (src[pos + 1 + i] !== k[i]) return false;
  pos += 1 + len;
  return true;
}
const K_ID = ascii('id');
const K_RE = ascii('re');
const K_APID = ascii('apid');
const K_COUNT = ascii('count');
const K_ACCESS = ascii('access');
const K_PAGES = ascii('pages');
const K_GRANTS = ascii('grants');
const K_SEGID = ascii('segid');
const K_RANGES = ascii('ranges');
const K_REASON = ascii('reason');
const K_WRITEBACK = ascii('writeback');
const K_DOWNGRADE = ascii('downgrade');
const K_UPTO = ascii('upTo');
const K_DIRTY = ascii('dirty');

// Exact-layout readers of the hot types: the same field checks as readField, in a straight line.
function exactMap(entries: number): Message | undefined {
  if (entries !== 5 || !key(K_ID)) return undefined;
  const id = readUint();
  if (id < 0 || id > MAX_U32 || !key(K_APID)) return undefined;
  const apid = readId(APID_CACHE);
  if (apid === undefined || !key(K_PAGE)) return undefined;
  const page = readUint();
  if (page < 0 || page > MAX_U32 || !key(K_COUNT)) return undefined;
  const count = readUint();
  if (count < 1 || count > maxPages || !key(K_ACCESS)) return undefined;
  const access = readEnum(ACCESS);
  if (access === undefined) return undefined;
  return { t: 'map', id, apid, page, count, access } as Message;
}
function exactMapOk(entries: number): Message | undefined {
  if (entries !== 4 || !key(K_RE)) return undefined;
  const re = readUint();
  if (re < 0 || re > MAX_U32 || !key(K_ACCESS)) return undefined;
  const access = readEnum(ACCESS);
  if (access === undefined || !key(K_PAGES)) return undefined;
  const pages = readPages();
  if (pages === undefined || !key(K_GRANTS)) return undefined;
  const grants = readGrants();
  if (grants === undefined) return undefined;
  return { t: 'map-ok', re, access, pages, grants } as Message;
}
function exactInvalidate(entries: number): Message | undefined {
  if (entries !== 7 || !key(K_ID)) return undefined;
  const id = readUint();
  if (id < 0 || id > MAX_U32 || !key(K_SEGID)) return undefined;
  const segid = readId(SEGID_CACHE);
  if (segid === undefined || !key(K_RANGES)) return undefined;
  const ranges = readRanges();
  if (ranges === undefined || !key(K_REASON)) return undefined;
  const reason = readEnum(REASONS);
  if (reason === undefined || !key(K_WRITEBACK)) return undefined;
  const writeback = readBool();
  if (writeback < 0 || !key(K_DOWNGRADE)) return undefined;
  const downgrade = readBool();
  if (downgrade < 0 || !key(K_UPTO)) return undefined;
  const upTo = readUint();
  if (upTo < 0) return undefined;
  return {
    t: 'invalidate',
    id,
    segid,
    ranges,
    reason,
    writeback: writeback === 1,
    downgrade: downgrade === 1,
    upTo,
  } as Message;
}
function exactInvalidateAck(entries: number): Message | undefined {
  if (entries !== 2 || !key(K_RE)) return undefined;
  const re = readUint();
  if (re < 0 || re > MAX_U32 || !key(K_DIRTY)) return undefined;
  const dirty = readPages();
  if (dirty === undefined) return undefined;
  return { t: 'invalidate-ack', re, dirty } as Message;
}

// The builders produce what fast-validate.ts produces (the validator's output): fields in schema
// order, `cid` (and error's `re`) only when present.
const SPECS: TypeSpec[] = [
  spec(
    'map',
    [
      ['id', F.U32, true],
      ['cid', F.CID, false],
      ['apid', F.APID, true],
      ['page', F.U32, true],
      ['count', F.COUNT, true],
      ['access', F.ACCESS, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'map', id: v[0], apid: v[2], page: v[3], count: v[4], access: v[5] }
        : { t: 'map', id: v[0], cid: v[1], apid: v[2], page: v[3], count: v[4], access: v[5] }) as Message,
    exactMap,
  ),
  spec(
    'map-ok',
    [
      ['re', F.U32, true],
      ['cid', F.CID, false],
      ['access', F.ACCESS, true],
      ['pages', F.PAGES, true],
      ['grants', F.GRANTS, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'map-ok', re: v[0], access: v[2], pages: v[3], grants: v[4] }
        : { t: 'map-ok', re: v[0], cid: v[1], access: v[2], pages: v[3], grants: v[4] }) as Message,
    exactMapOk,
  ),
  spec(
    'invalidate',
    [
      ['id', F.U32, true],
      ['cid', F.CID, false],
      ['segid', F.SEGID, true],
      ['ranges', F.RANGES, true],
      ['reason', F.REASON, true],
      ['writeback', F.BOOL, true],
      ['downgrade', F.BOOL, true],
      ['upTo', F.U53, true],
    ],
    (v) =>
      (v[1] === undefined
        ? {
            t: 'invalidate',
            id: v[0],
            segid: v[2],
            ranges: v[3],
            reason: v[4],
            writeback: v[5],
            downgrade: v[6],
            upTo: v[7],
          }
        : {
            t: 'invalidate',
            id: v[0],
            cid: v[1],
            segid: v[2],
            ranges: v[3],
            reason: v[4],
            writeback: v[5],
            downgrade: v[6],
            upTo: v[7],
          }) as Message,
    exactInvalidate,
  ),
  spec(
    'invalidate-ack',
    [
      ['re', F.U32, true],
      ['cid', F.CID, false],
      ['dirty', F.PAGES, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'invalidate-ack', re: v[0], dirty: v[2] }
        : { t: 'invalidate-ack', re: v[0], cid: v[1], dirty: v[2] }) as Message,
    exactInvalidateAck,
  ),
  spec(
    'ok',
    [
      ['re', F.U32, true],
      ['cid', F.CID, false],
    ],
    (v) => (v[1] === undefined ? { t: 'ok', re: v[0] } : { t: 'ok', re: v[0], cid: v[1] }) as Message,
  ),
  spec(
    'get',
    [
      ['id', F.U32, true],
      ['cid', F.CID, false],
      ['segid', F.SEGID, true],
      ['access', F.ACCESS, true],
      ['uid', F.U32, true],
      ['gid', F.U32, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'get', id: v[0], segid: v[2], access: v[3], uid: v[4], gid: v[5] }
        : { t: 'get', id: v[0], cid: v[1], segid: v[2], access: v[3], uid: v[4], gid: v[5] }) as Message,
  ),
  spec(
    'get-ok',
    [
      ['re', F.U32, true],
      ['cid', F.CID, false],
      ['apid', F.APID, true],
      ['size', F.U53, true],
      ['access', F.ACCESS, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'get-ok', re: v[0], apid: v[2], size: v[3], access: v[4] }
        : { t: 'get-ok', re: v[0], cid: v[1], apid: v[2], size: v[3], access: v[4] }) as Message,
  ),
  spec(
    'release',
    [
      ['id', F.U32, true],
      ['cid', F.CID, false],
      ['apid', F.APID, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'release', id: v[0], apid: v[2] }
        : { t: 'release', id: v[0], cid: v[1], apid: v[2] }) as Message,
  ),
  spec(
    'detach',
    [
      ['id', F.U32, true],
      ['cid', F.CID, false],
      ['apid', F.APID, true],
      ['ranges', F.RANGES, true],
      ['dirty', F.PAGES, true],
    ],
    (v) =>
      (v[1] === undefined
        ? { t: 'detach', id: v[0], apid: v[2], ranges: v[3], dirty: v[4] }
        : { t: 'detach', id: v[0], cid: v[1], apid: v[2], ranges: v[3], dirty: v[4] }) as Message,
  ),
  spec(
    'segment-gone',
    [
      ['cid', F.CID, false],
      ['segid', F.SEGID, true],
      ['reason', F.GONE, true],
    ],
    (v) =>
      (v[0] === undefined
        ? { t: 'segment-gone', segid: v[1], reason: v[2] }
        : { t: 'segment-gone', cid: v[0], segid: v[1], reason: v[2] }) as Message,
  ),
  spec(
    'error',
    [
      ['re', F.U32, false],
      ['cid', F.CID, false],
      ['code', F.CODE, true],
      ['message', F.MESSAGE, true],
    ],
    (v) => {
      const o: Record<string, unknown> = { t: 'error' };
      if (v[0] !== undefined) o.re = v[0];
      if (v[1] !== undefined) o.cid = v[1];
      o.code = v[2];
      o.message = v[3];
      return o as unknown as Message;
    },
  ),
];
const TYPES = SPECS.map((s) => [s.tb, s] as const);
const K_T = ascii('t');

/** Values of the message being read (reused: the builders copy them out). */
const vals: unknown[] = new Array(8);

/** Reads one field value of `kind`; undefined if it is not one the validator accepts. */
function readField(kind: F): unknown {
  switch (kind) {
    case F.U32: {
      const v = readUint();
      return v < 0 || v > MAX_U32 ? undefined : v;
    }
    case F.U53: {
      const v = readUint();
      return v < 0 ? undefined : v;
    }
    case F.COUNT: {
      const v = readUint();
      return v < 1 || v > maxPages ? undefined : v;
    }
    case F.ACCESS:
      return readEnum(ACCESS);
    case F.APID:
      return readId(APID_CACHE);
    case F.SEGID:
      return readId(SEGID_CACHE);
    case F.CID:
      return readAscii(MAX_CID_CHARS);
    case F.PAGES:
      return readPages();
    case F.GRANTS:
      return readGrants();
    case F.RANGES:
      return readRanges();
    case F.REASON:
      return readEnum(REASONS);
    case F.BOOL: {
      const b = readBool();
      return b < 0 ? undefined : b === 1;
    }
    case F.GONE:
      return readEnum(GONE_REASONS);
    case F.CODE: {
      const s = readAscii(64);
      return s !== undefined && ERROR_CODES.has(s) ? s : undefined;
    }
    case F.MESSAGE:
      // longer than the bound, or not ASCII: the validator decides (and refuses)
      return readAscii(MAX_ERROR_MESSAGE_CHARS);
  }
}

/** One message map, or undefined. */
function readMessage(): Message | undefined {
  const n = readMapHeader();
  if (n < 1) return undefined;
  if (keyLen() !== 1 || src[pos] !== K_T[0]) return undefined;
  pos++;
  let s: TypeSpec | undefined;
  {
    if (pos >= end) return undefined;
    const h = src[pos];
    if (h < 0xa0 || h > 0xbf) return undefined;
    const len = h - 0xa0;
    if (len > end - pos - 1) return undefined;
    for (let i = 0; i < TYPES.length; i++) {
      if (bytesAre(pos + 1, len, TYPES[i][0])) {
        s = TYPES[i][1];
        break;
      }
    }
    if (s === undefined) return undefined;
    pos += 1 + len;
  }
  if (s.exact !== undefined) {
    // Our writer's layout first (schema order, no cid); on any difference, back to the first key
    // and the general loop below, which reads any order.
    const at = pos;
    const m = s.exact(n - 1);
    if (m !== undefined) return m;
    pos = at;
  }
  const keys = s.keys;
  const nk = keys.length;
  if (n - 1 > nk) return undefined; // more entries than fields: an unknown or repeated key
  for (let i = 0; i < nk; i++) vals[i] = undefined;
  let seen = 0;
  let next = 0;
  for (let e = 1; e < n; e++) {
    const len = keyLen();
    if (len < 0) return undefined;
    const at = pos;
    pos += len;
    // The schema order first (what our writer sends), then any other.
    let f = -1;
    if (next < nk && bytesAre(at, len, keys[next])) f = next;
    else {
      for (let i = 0; i < nk; i++) {
        if (bytesAre(at, len, keys[i])) {
          f = i;
          break;
        }
      }
      if (f < 0) return undefined;
    }
    const bit = 1 << f;
    if ((seen & bit) !== 0) return undefined;
    seen |= bit;
    next = f + 1;
    const v = readField(s.kinds[f]);
    if (v === undefined) return undefined;
    vals[f] = v;
  }
  if ((seen & s.required) !== s.required) return undefined;
  return s.build(vals);
}

/**
 * The messages of `frame` if it is a session frame of the narrow shape this reader knows and valid
 * under `limits` (then equal to msgpackr + validator's output); otherwise undefined (the caller
 * decodes it the reference way, which decides and explains). The caller has checked the frame's size.
 */
export function readFast(frame: Uint8Array, limits: Limits): Message[] | undefined {
  src = frame;
  pos = 0;
  end = frame.length;
  maxPages = limits.maxPagesPerMessage;
  maxRanges = limits.maxRangesPerMessage;
  maxStr = limits.maxStringChars;
  try {
    let out: Message[] | undefined;
    const h = frame[0];
    if ((h >= 0x90 && h <= 0x9f) || h === 0xdc || h === 0xdd) {
      const n = readArrayHeader();
      // Every message takes more than 2 bytes: the bound keeps the allocation honest.
      if (n < 1 || n > limits.maxBatch || n * 2 > end - pos) return undefined;
      out = new Array(n);
      for (let i = 0; i < n; i++) {
        const m = readMessage();
        if (m === undefined) return undefined;
        out[i] = m;
      }
    } else {
      const m = readMessage();
      if (m === undefined) return undefined;
      out = [m];
    }
    return pos === end ? out : undefined;
  } finally {
    src = EMPTY;
    for (let i = 0; i < vals.length; i++) vals[i] = undefined;
  }
}
const EMPTY = new Uint8Array(0);
