/**
 * Hand-written MessagePack writer for the session messages a link sends on its hot path (requests,
 * replies, one-way messages). It produces the same standard MessagePack as the codec's msgpackr
 * configuration (codec.ts, docs/protocol.md "Encoding"): fixmap headers sized to the entry count,
 * string keys, an absent (undefined) optional field omitted, integers in the smallest msgpack int
 * type (integers above 2^32 as float64, like msgpackr), byte arrays as `bin`. Byte for byte, the
 * frame equals msgpackr's encoding of the message with its fields in the order the schema lists them
 * (the order the validator outputs); test/fast-encode.test.ts proves that with fast-check, and that
 * msgpackr decodes every frame to what it decodes from msgpackr's own encoding.
 *
 * What it gains over msgpackr's generic writer: named (monomorphic) field reads instead of a
 * `for…in` + keyed read per field, no key array per object, constant keys copied as precomputed
 * bytes. Only the fields of the message's type are written: an extra property on a message object
 * (never valid on the wire: the receiver drops unknown fields) does not leave the process.
 *
 * Anything it does not recognise (handshake messages, a field of an unexpected JS type: a local
 * bug that outgoing validation reports) makes `encodeFast` return undefined and the caller encodes
 * with msgpackr, so a frame is never different in meaning from msgpackr's.
 */
import { PAGE_SIZE } from './base.js';
import type { Message } from './messages.js';

/** Thrown (and caught in encodeFast) when a value is not one the writer handles. */
const UNSUPPORTED = Symbol('unsupported');

/** Slab size: room for several of the largest frames a link sends (a 64-page map-ok is ~262 KB; a
 * batch frame is cut at ~16 KB of estimate, so a big frame is one page-carrying message), so that
 * such a frame is not the one that always falls off the end of a slab. Untouched pages of a slab
 * cost no memory (allocUnsafeSlow: not zeroed). */
const SLAB = 2 * 1024 * 1024;
/** Room one page takes in a frame, at most: map header, keys, two numbers, bin header, the data. */
const PAGE_ROOM = PAGE_SIZE + 48;

/**
 * One slab and the frames of it that someone may still read.
 *
 * Frames are `subarray`s of the current slab. A frame is handed out either pinned (encodeFast: its
 * holder may keep it for ever) or leased (encodeFastLeased: whoever holds it last gives it back with
 * `release`, once, when nobody reads it anymore; Conn.send's `done`). `held` counts the frames of
 * this slab handed out and not given back: every pinned one for ever, every leased one until its
 * release. Writing restarts at the slab's start only when `held` is 0 (see write()); so:
 *
 *   Proof that no reader of a frame ever sees its bytes change. A frame's bytes are written only
 *   while it is being encoded (between its write() and its hand-out); after that, bytes of its slab
 *   are written only at `pos` and beyond, and `pos` only grows, except at a rewind. A rewind needs
 *   held === 0, i.e. every frame ever handed out from this slab was leased and has been released;
 *   a release is, by the lease's contract, the holder's promise that nobody reads that frame
 *   anymore. So at a rewind no frame of the slab has a reader, and every frame handed out later is
 *   counted again. A lease that is never released (a holder that cannot tell, a tap that keeps
 *   frames, an exception between hand-out and send) only keeps the slab from rewinding: a new slab
 *   is taken when it is full, as before leases existed. The one misuse this cannot survive is a
 *   release before the last read or a second release of one frame: Conn.send's contract (transport.ts)
 *   and the write-callback contract of the ws transport (ws-transport.ts) rule it out;
 *   test/slab-reuse.test.ts checks every interleaving of encodes and releases (fast-check) and
 *   frames held by ws's write queue, by a tap and by the memory transport.
 */
class Slab {
  held = 0;
  constructor(readonly buf: Buffer) {}
  /** Gives back one leased frame of this slab (one call per leased frame; see above). */
  readonly release = (): void => {
    this.held--;
  };
}

let slab = new Slab(Buffer.allocUnsafeSlow(SLAB));
let buf: Buffer = slab.buf;
let view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
let start = 0;
let pos = 0;

/** Makes room for `n` more bytes, moving the frame written so far to a new slab if needed (the old
 * slab stays with the frames handed out of it, collected when none is referenced anymore). */
function ensure(n: number): void {
  if (pos + n <= buf.length) return;
  const used = pos - start;
  const next = Buffer.allocUnsafeSlow(Math.max(SLAB, (used + n) * 2));
  buf.copy(next, 0, start, pos);
  slab = new Slab(next);
  buf = next;
  view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  start = 0;
  pos = used;
}

/** Precomputed msgpack bytes of a constant string (fixstr: every key and type name is < 32 bytes). */
function k(s: string): Uint8Array {
  const b = Buffer.from(s, 'utf8');
  if (b.length >= 32) throw new Error(`constant ${s} too long`);
  const out = new Uint8Array(b.length + 1);
  out[0] = 0xa0 | b.length;
  out.set(b, 1);
  return out;
}

/** Copies a precomputed key (or `t` and its value), with room for the number or boolean after it. */
function raw(b: Uint8Array): void {
  const n = b.length;
  ensure(n + 9);
  for (let i = 0; i < n; i++) buf[pos + i] = b[i];
  pos += n;
}

/** Any JS number, exactly as msgpackr writes it (useRecords: false, no float32). */
function num(v: unknown): void {
  if (typeof v !== 'number') throw UNSUPPORTED;
  if (v >>> 0 === v) {
    if (v < 0x80) buf[pos++] = v;
    else if (v < 0x100) {
      buf[pos++] = 0xcc;
      buf[pos++] = v;
    } else if (v < 0x10000) {
      buf[pos++] = 0xcd;
      buf[pos++] = v >> 8;
      buf[pos++] = v & 0xff;
    } else {
      buf[pos++] = 0xce;
      view.setUint32(pos, v);
      pos += 4;
    }
  } else if (v >> 0 === v) {
    if (v >= -0x20) buf[pos++] = 0x100 + v;
    else if (v >= -0x80) {
      buf[pos++] = 0xd0;
      buf[pos++] = v + 0x100;
    } else if (v >= -0x8000) {
      buf[pos++] = 0xd1;
      view.setInt16(pos, v);
      pos += 2;
    } else {
      buf[pos++] = 0xd2;
      view.setInt32(pos, v);
      pos += 4;
    }
  } else {
    buf[pos++] = 0xcb;
    view.setFloat64(pos, v);
    pos += 8;
  }
}

function bool(v: unknown): void {
  if (v === true) buf[pos++] = 0xc3;
  else if (v === false) buf[pos++] = 0xc2;
  else throw UNSUPPORTED;
}

/** A string as UTF-8 (a lone surrogate becomes U+FFFD, as in msgpackr and Buffer). */
function str(v: unknown): void {
  if (typeof v !== 'string') throw UNSUPPORTED;
  const n = v.length;
  if (n < 32) {
    ensure(1 + n);
    let p = pos + 1;
    let i = 0;
    for (; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c >= 0x80) break;
      buf[p++] = c;
    }
    if (i === n) {
      buf[pos] = 0xa0 | n;
      pos = p;
      return;
    }
  }
  const len = Buffer.byteLength(v, 'utf8');
  ensure(5 + len);
  if (len < 32) buf[pos++] = 0xa0 | len;
  else if (len < 0x100) {
    buf[pos++] = 0xd9;
    buf[pos++] = len;
  } else if (len < 0x10000) {
    buf[pos++] = 0xda;
    buf[pos++] = len >> 8;
    buf[pos++] = len & 0xff;
  } else {
    buf[pos++] = 0xdb;
    view.setUint32(pos, len);
    pos += 4;
  }
  pos += buf.write(v, pos, len, 'utf8');
}

function bin(v: unknown): void {
  if (!(v instanceof Uint8Array)) throw UNSUPPORTED;
  const len = v.byteLength;
  ensure(5 + len);
  if (len < 0x100) {
    buf[pos++] = 0xc4;
    buf[pos++] = len;
  } else if (len < 0x10000) {
    buf[pos++] = 0xc5;
    buf[pos++] = len >> 8;
    buf[pos++] = len & 0xff;
  } else {
    buf[pos++] = 0xc6;
    view.setUint32(pos, len);
    pos += 4;
  }
  buf.set(v, pos);
  pos += len;
}

function arrayHeader(v: unknown): number {
  if (!Array.isArray(v)) throw UNSUPPORTED;
  const n = v.length;
  ensure(5);
  if (n < 0x10) buf[pos++] = 0x90 | n;
  else if (n < 0x10000) {
    buf[pos++] = 0xdc;
    buf[pos++] = n >> 8;
    buf[pos++] = n & 0xff;
  } else {
    buf[pos++] = 0xdd;
    view.setUint32(pos, n);
    pos += 4;
  }
  return n;
}

const K_T = k('t');
const K_ID = k('id');
const K_RE = k('re');
const K_CID = k('cid');
const K_APID = k('apid');
const K_SEGID = k('segid');
const K_PAGE = k('page');
const K_COUNT = k('count');
const K_ACCESS = k('access');
const K_PAGES = k('pages');
const K_GRANTS = k('grants');
const K_VERSION = k('version');
const K_DATA = k('data');
const K_RANGES = k('ranges');
const K_REASON = k('reason');
const K_WRITEBACK = k('writeback');
const K_DOWNGRADE = k('downgrade');
const K_UPTO = k('upTo');
const K_DIRTY = k('dirty');
const K_UID = k('uid');
const K_GID = k('gid');
const K_SIZE = k('size');
const K_CODE = k('code');
const K_MESSAGE = k('message');

/** `t` and its value, precomputed per type. */
function tv(t: string): Uint8Array {
  const a = K_T;
  const b = k(t);
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
const T_GET = tv('get');
const T_GET_OK = tv('get-ok');
const T_RELEASE = tv('release');
const T_MAP = tv('map');
const T_MAP_OK = tv('map-ok');
const T_INVALIDATE = tv('invalidate');
const T_INVALIDATE_ACK = tv('invalidate-ack');
const T_DETACH = tv('detach');
const T_SEGMENT_GONE = tv('segment-gone');
const T_OK = tv('ok');
const T_ERROR = tv('error');

type Rec = Record<string, unknown>;

/** Map header for `n` fields (n < 16 for every type here). */
function mapHeader(n: number): void {
  buf[pos++] = 0x80 | n;
}

function pages(v: unknown): void {
  const n = arrayHeader(v);
  const a = v as Rec[];
  // Room for every page before the first is written: if the slab is too full, the frame moves to a
  // new slab now, while only its first bytes are written (not once it holds most of its pages).
  // A hint only (bounded: an oversized array is a local bug that outgoing validation reports): each
  // page still makes sure of its own room below.
  ensure(Math.min(n * PAGE_ROOM, SLAB / 2));
  for (let i = 0; i < n; i++) {
    const p = a[i];
    // A plain (or null-prototype) object; anything else is msgpackr's business.
    if (typeof p !== 'object' || p === null || (p.constructor !== Object && p.constructor !== undefined))
      throw UNSUPPORTED;
    const page = p.page;
    const version = p.version;
    const data = p.data;
    if (page === undefined || version === undefined || data === undefined) throw UNSUPPORTED;
    ensure(1);
    mapHeader(3);
    raw(K_PAGE);
    num(page);
    raw(K_VERSION);
    num(version);
    raw(K_DATA);
    bin(data);
  }
}

function ranges(v: unknown): void {
  const n = arrayHeader(v);
  const a = v as unknown[];
  for (let i = 0; i < n; i++) {
    const r = a[i];
    if (!Array.isArray(r) || r.length !== 2) throw UNSUPPORTED;
    ensure(20);
    buf[pos++] = 0x92;
    num(r[0]);
    num(r[1]);
  }
}

function numbers(v: unknown): void {
  const n = arrayHeader(v);
  const a = v as unknown[];
  for (let i = 0; i < n; i++) {
    ensure(9);
    num(a[i]);
  }
}

/** Writes `cid` if present; returns 1 if it was written (for the header count). */
function cidCount(m: Rec): number {
  return m.cid === undefined ? 0 : 1;
}
function cid(m: Rec): void {
  const c = m.cid;
  if (c === undefined) return;
  raw(K_CID);
  str(c);
}

/** Every required field must be present: a missing one is msgpackr's business (and a local bug). */
function need(v: unknown): void {
  if (v === undefined) throw UNSUPPORTED;
}

function message(m: Rec): void {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw UNSUPPORTED;
  ensure(1);
  switch (m.t) {
    case 'map': {
      need(m.id);
      need(m.apid);
      need(m.page);
      need(m.count);
      need(m.access);
      mapHeader(6 + cidCount(m));
      raw(T_MAP);
      raw(K_ID);
      num(m.id);
      cid(m);
      raw(K_APID);
      str(m.apid);
      raw(K_PAGE);
      num(m.page);
      raw(K_COUNT);
      num(m.count);
      raw(K_ACCESS);
      str(m.access);
      return;
    }
    case 'map-ok': {
      need(m.re);
      need(m.access);
      need(m.pages);
      need(m.grants);
      mapHeader(5 + cidCount(m));
      raw(T_MAP_OK);
      raw(K_RE);
      num(m.re);
      cid(m);
      raw(K_ACCESS);
      str(m.access);
      raw(K_PAGES);
      pages(m.pages);
      raw(K_GRANTS);
      numbers(m.grants);
      return;
    }
    case 'invalidate': {
      need(m.id);
      need(m.segid);
      need(m.ranges);
      need(m.reason);
      need(m.writeback);
      need(m.downgrade);
      need(m.upTo);
      mapHeader(8 + cidCount(m));
      raw(T_INVALIDATE);
      raw(K_ID);
      num(m.id);
      cid(m);
      raw(K_SEGID);
      str(m.segid);
      raw(K_RANGES);
      ranges(m.ranges);
      raw(K_REASON);
      str(m.reason);
      raw(K_WRITEBACK);
      bool(m.writeback);
      raw(K_DOWNGRADE);
      bool(m.downgrade);
      raw(K_UPTO);
      num(m.upTo);
      return;
    }
    case 'invalidate-ack': {
      need(m.re);
      need(m.dirty);
      mapHeader(3 + cidCount(m));
      raw(T_INVALIDATE_ACK);
      raw(K_RE);
      num(m.re);
      cid(m);
      raw(K_DIRTY);
      pages(m.dirty);
      return;
    }
    case 'ok': {
      need(m.re);
      mapHeader(2 + cidCount(m));
      raw(T_OK);
      raw(K_RE);
      num(m.re);
      cid(m);
      return;
    }
    case 'get': {
      need(m.id);
      need(m.segid);
      need(m.access);
      need(m.uid);
      need(m.gid);
      mapHeader(6 + cidCount(m));
      raw(T_GET);
      raw(K_ID);
      num(m.id);
      cid(m);
      raw(K_SEGID);
      str(m.segid);
      raw(K_ACCESS);
      str(m.access);
      raw(K_UID);
      num(m.uid);
      raw(K_GID);
      num(m.gid);
      return;
    }
    case 'get-ok': {
      need(m.re);
      need(m.apid);
      need(m.size);
      need(m.access);
      mapHeader(5 + cidCount(m));
      raw(T_GET_OK);
      raw(K_RE);
      num(m.re);
      cid(m);
      raw(K_APID);
      str(m.apid);
      raw(K_SIZE);
      num(m.size);
      raw(K_ACCESS);
      str(m.access);
      return;
    }
    case 'release': {
      need(m.id);
      need(m.apid);
      mapHeader(3 + cidCount(m));
      raw(T_RELEASE);
      raw(K_ID);
      num(m.id);
      cid(m);
      raw(K_APID);
      str(m.apid);
      return;
    }
    case 'detach': {
      need(m.id);
      need(m.apid);
      need(m.ranges);
      need(m.dirty);
      mapHeader(5 + cidCount(m));
      raw(T_DETACH);
      raw(K_ID);
      num(m.id);
      cid(m);
      raw(K_APID);
      str(m.apid);
      raw(K_RANGES);
      ranges(m.ranges);
      raw(K_DIRTY);
      pages(m.dirty);
      return;
    }
    case 'segment-gone': {
      need(m.segid);
      need(m.reason);
      mapHeader(3 + cidCount(m));
      raw(T_SEGMENT_GONE);
      cid(m);
      raw(K_SEGID);
      str(m.segid);
      raw(K_REASON);
      str(m.reason);
      return;
    }
    case 'error': {
      need(m.code);
      need(m.message);
      const hasRe = m.re !== undefined;
      mapHeader(3 + (hasRe ? 1 : 0) + cidCount(m));
      raw(T_ERROR);
      if (hasRe) {
        raw(K_RE);
        num(m.re);
      }
      cid(m);
      raw(K_CODE);
      str(m.code);
      raw(K_MESSAGE);
      str(m.message);
      return;
    }
    default:
      throw UNSUPPORTED;
  }
}

/**
 * Encodes one message or a batch (2+ messages: a msgpack array) into a frame, or returns undefined
 * if something in it is not handled here (the caller then uses msgpackr).
 */
/** Writes one frame at `pos` (from the slab's start when nothing of it is held: see Slab) and
 * returns it, not yet counted in `held`; undefined if the writer does not handle the messages. */
function write(messages: Message | readonly Message[]): Uint8Array | undefined {
  if (slab.held === 0) pos = 0;
  start = pos;
  try {
    if (Array.isArray(messages)) {
      if (messages.length === 1) message(messages[0] as unknown as Rec);
      else {
        const n = arrayHeader(messages);
        for (let i = 0; i < n; i++) message(messages[i] as unknown as Rec);
      }
    } else message(messages as unknown as Rec);
  } catch (e) {
    pos = start;
    if (e === UNSUPPORTED) return undefined;
    throw e;
  }
  const frame = buf.subarray(start, pos);
  start = pos;
  return frame;
}

/** Encodes `messages` as one frame, or returns undefined if this writer does not handle them (the
 * caller then uses msgpackr). The frame is pinned: its bytes never change, whoever keeps it. */
export function encodeFast(messages: Message | readonly Message[]): Uint8Array | undefined {
  const frame = write(messages);
  if (frame !== undefined) slab.held++;
  return frame;
}

let lastRelease: (() => void) | undefined;

/**
 * Like encodeFast, but the frame is leased: `takeRelease()`, called right after, returns the function
 * that gives it back (undefined if this call returned undefined). Whoever holds the frame last calls
 * it once, when nobody reads the frame anymore; from then on its bytes may be reused by a later frame
 * (see Slab). Never calling it is always safe (the frame stays as it is).
 */
export function encodeFastLeased(messages: Message | readonly Message[]): Uint8Array | undefined {
  const frame = write(messages);
  if (frame === undefined) {
    lastRelease = undefined;
    return undefined;
  }
  slab.held++;
  lastRelease = slab.release;
  return frame;
}

/** The release of the frame the last encodeFastLeased returned (once: a second call returns undefined). */
export function takeRelease(): (() => void) | undefined {
  const r = lastRelease;
  lastRelease = undefined;
  return r;
}
