/**
 * The frame codec. One msgpackr configuration, identical on every instance, chosen so that any
 * plain MessagePack library can speak the protocol (docs/protocol.md, "Encoding"):
 *
 * - `useRecords: false`: no msgpackr record/structure extension; every message is a plain msgpack
 *   map with string keys. (Records would be ~30% faster but a foreign client would have to
 *   implement msgpackr's ext 0x72 and the shared-structure negotiation.)
 * - `mapsAsObjects: true`: maps decode to plain objects (msgpackr renames a `__proto__` key).
 * - `variableMapSize: true`: fixmap/map16 headers sized to the entry count (standard msgpack).
 * - `skipValues: [undefined]`: an absent optional field is omitted, never sent as msgpackr's
 *   undefined extension.
 * - `bundleStrings: false`, `moreTypes: false`, `structuredClone: false`: no msgpackr-only extensions.
 * - `int64AsType: 'number'`: uint64/int64 decode to a JS number (our integers stay ≤ 2^53).
 * - `copyBuffers: false`: a decoded `bin` (page data, nonces) is a view into the received frame,
 *   not a copy. Safe because every transport hands us a frame buffer nobody else reuses (ws
 *   allocates per message; the memory transport delivers a private copy), and page data is copied
 *   exactly once, into the destination frame, by the consumer.
 *
 * Framing: one WebSocket binary message = one frame = one msgpack value, either a message (a map)
 * or a batch (an array of 1..limits.maxBatch maps), processed in order. Trailing bytes are an error.
 */
import type { Options } from 'msgpackr';
// `msgpackr/pack` (msgpackr's index.js under Node): the same Packr/Unpackr, without the entry point that
// installs the native string extractor (msgpackr-extract). That extractor, called at a frame's first
// string value, scans the rest of the frame: for a page-carrying frame it costs more than reading the
// few short strings in JavaScript, and for small frames it gains nothing (measured with
// bench/link-hops.js and an interleaved A/B, issue 15). Decoded values are the same either way. If
// another module loads the `msgpackr` entry point in the same process, the extractor is installed
// for every msgpackr user again (only speed changes).
import { Packr } from 'msgpackr/pack';
import type { WireErrorCode } from './error-table.js';
import { readFast } from './fast-decode.js';
import { encodeFast, encodeFastLeased, takeRelease } from './fast-encode.js';
import { type Limits, resolveLimits } from './limits.js';
import type { Message } from './messages.js';
import { Validator } from './validate.js';

export const PACKR_OPTIONS = Object.freeze({
  useRecords: false,
  mapsAsObjects: true,
  variableMapSize: true,
  skipValues: [undefined],
  bundleStrings: false,
  moreTypes: false,
  structuredClone: false,
  int64AsType: 'number' as const,
  copyBuffers: false,
});

// `skipValues` exists in msgpackr 2.x but is missing from its type declarations.
const packr = new Packr({ ...PACKR_OPTIONS, skipValues: [undefined] } as Options);
// msgpackr encodes into one slab and returns `subarray`s of it, moving on (never overwriting a frame
// it returned, so a frame still queued in a socket stays intact) and taking a new slab of the same
// size when the current one is nearly full. Its default 8 KiB slab makes every few page-carrying
// frames grow-and-copy; start with 256 KiB so a slab is allocated once per ~60 pages.
packr.useBuffer(Buffer.allocUnsafeSlow(256 * 1024));

/** Encodes one message or a batch into one frame. */
export function encodeFrame(messages: Message | readonly Message[]): Uint8Array {
  if (Array.isArray(messages)) {
    if (messages.length === 1) return packr.pack(messages[0]);
    return packr.pack(messages);
  }
  return packr.pack(messages);
}

/**
 * Encodes what a link sends: the hand-written writer (fast-encode.ts: the same standard MessagePack
 * as msgpackr, byte for byte in schema field order, only the type's own fields), or msgpackr for what
 * it declines (handshake messages, values of an unexpected type). `encodeFrame` stays msgpackr's
 * encoding of the object as given (tests and tools craft frames with it, extra fields included).
 */
export function encodeLinkFrame(messages: Message | readonly Message[]): Uint8Array {
  return encodeFast(messages) ?? encodeFrame(messages);
}

/**
 * encodeLinkFrame for a sender that can tell when the frame is no longer read: the frame, and the
 * function to call once then (undefined when msgpackr encoded it: nothing to give back). Calling it
 * lets a later frame reuse the bytes (fast-encode.ts Slab, with the proof); never calling it is safe.
 */
export function encodeLinkFrameLeased(messages: Message | readonly Message[]): {
  frame: Uint8Array;
  release: (() => void) | undefined;
} {
  const f = encodeFastLeased(messages);
  if (f !== undefined) leased.frame = f;
  else leased.frame = encodeFrame(messages);
  leased.release = takeRelease();
  return leased;
}
/** The one result object of encodeLinkFrameLeased (read at once by the caller; no object per frame). */
const leased: { frame: Uint8Array; release: (() => void) | undefined } = {
  frame: new Uint8Array(0),
  release: undefined,
};

/** Decodes a frame without validation (tests, tools). Throws on malformed msgpack. */
export function decodeRaw(frame: Uint8Array): unknown {
  return packr.unpack(frame);
}

export type DecodeResult =
  | { ok: true; messages: Message[] }
  | { ok: false; code: WireErrorCode; message: string; re?: number };

/** Decodes and validates a whole frame: all messages pass, or the frame is rejected. */
export class FrameDecoder {
  readonly limits: Limits;
  readonly validator: Validator;
  constructor(limits?: Partial<Limits>) {
    this.limits = resolveLimits(limits);
    this.validator = new Validator(this.limits);
  }

  decode(frame: Uint8Array): DecodeResult {
    if (frame.byteLength > this.limits.maxFrameBytes) {
      return { ok: false, code: 'E_TOO_LARGE', message: `frame of ${frame.byteLength} bytes` };
    }
    if (frame.byteLength === 0) return { ok: false, code: 'E_MALFORMED', message: 'empty frame' };
    // The fused reader (fast-decode.ts) takes the session frames it fully understands and finds
    // valid; everything else, valid or not, goes the reference way below, which decides and explains.
    const messages = readFast(frame, this.limits);
    if (messages !== undefined) return { ok: true, messages };
    return this.decodeReference(frame);
  }

  /** msgpackr, then the validator: the authority `decode`'s fused reader is proven equal to (tests
   * compare the two; tools may call it). Checks the frame's size like `decode`. */
  decodeReference(frame: Uint8Array): DecodeResult {
    if (frame.byteLength > this.limits.maxFrameBytes) {
      return { ok: false, code: 'E_TOO_LARGE', message: `frame of ${frame.byteLength} bytes` };
    }
    if (frame.byteLength === 0) return { ok: false, code: 'E_MALFORMED', message: 'empty frame' };
    let value: unknown;
    try {
      value = packr.unpack(frame);
    } catch (e) {
      return {
        ok: false,
        code: 'E_MALFORMED',
        message: `msgpack: ${String((e as Error)?.message ?? e).slice(0, 200)}`,
      };
    }
    if (Array.isArray(value)) {
      if (value.length === 0) return { ok: false, code: 'E_MALFORMED', message: 'empty batch' };
      if (value.length > this.limits.maxBatch) {
        return { ok: false, code: 'E_TOO_LARGE', message: `batch of ${value.length} messages` };
      }
      const out: Message[] = new Array(value.length);
      for (let i = 0; i < value.length; i++) {
        const msg = this.validator.accept(value[i]);
        if (msg !== undefined) {
          out[i] = msg;
          continue;
        }
        const r = this.validator.validate(value[i]);
        if (!r.ok) return { ok: false, code: r.code, message: `batch[${i}]: ${r.message}` };
        out[i] = r.msg;
      }
      return { ok: true, messages: out };
    }
    const msg = this.validator.accept(value);
    if (msg !== undefined) return { ok: true, messages: [msg] };
    const r = this.validator.validate(value);
    if (!r.ok) return r;
    return { ok: true, messages: [r.msg] };
  }
}

let defaultDecoder: FrameDecoder | undefined;
/** Decodes and validates with the default limits. */
export function decodeFrame(frame: Uint8Array, limits?: Partial<Limits>): DecodeResult {
  if (limits) return new FrameDecoder(limits).decode(frame);
  defaultDecoder ??= new FrameDecoder();
  return defaultDecoder.decode(frame);
}
