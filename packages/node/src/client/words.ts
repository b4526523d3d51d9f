/**
 * Typed words for `xpmesh ctl read/write` and the client library: integers packed little-endian
 * (the byte order of every platform xpmesh simulates), so a script can write `--u32 1,2,3` instead
 * of hand-encoding hex.
 */

export const WORD_KINDS = ['u8', 'u16', 'u32', 'i32', 'u64'] as const;
export type WordKind = (typeof WORD_KINDS)[number];
/** How `read` can answer: one of the byte encodings or a word kind. */
export const READ_AS = ['hex', 'text', 'base64', ...WORD_KINDS] as const;
export type ReadAs = (typeof READ_AS)[number];

const SIZE: Record<WordKind, number> = { u8: 1, u16: 2, u32: 4, i32: 4, u64: 8 };
const RANGE: Record<Exclude<WordKind, 'u64'>, [number, number]> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffff_ffff],
  i32: [-0x8000_0000, 0x7fff_ffff],
};

export class WordError extends Error {
  readonly code = 'E_BAD_REQUEST';
  constructor(message: string) {
    super(message);
    this.name = 'WordError';
  }
}

export function isWordKind(s: string): s is WordKind {
  return (WORD_KINDS as readonly string[]).includes(s);
}

export function wordSize(kind: WordKind): number {
  return SIZE[kind];
}

/** Pack words little-endian. u64 takes bigint, or a decimal / 0x string, or a safe integer. */
export function encodeWords(kind: WordKind, values: ReadonlyArray<number | bigint | string>): Uint8Array {
  const out = new Uint8Array(values.length * SIZE[kind]);
  const view = new DataView(out.buffer);
  values.forEach((raw, i) => {
    const at = i * SIZE[kind];
    if (kind === 'u64') {
      let v: bigint;
      try {
        v = BigInt(raw);
      } catch {
        throw new WordError(`u64 word ${i}: "${String(raw)}" is not an integer`);
      }
      if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new WordError(`u64 word ${i}: ${v} is out of range`);
      view.setBigUint64(at, v, true);
      return;
    }
    const v =
      typeof raw === 'number' ? raw : /^-?(0x[0-9a-f]+|\d+)$/i.test(String(raw)) ? Number(raw) : Number.NaN;
    const [min, max] = RANGE[kind];
    if (!Number.isInteger(v) || v < min || v > max)
      throw new WordError(`${kind} word ${i}: "${String(raw)}" is not an integer in ${min}..${max}`);
    if (kind === 'u8') view.setUint8(at, v);
    else if (kind === 'u16') view.setUint16(at, v, true);
    else if (kind === 'u32') view.setUint32(at, v, true);
    else view.setInt32(at, v, true);
  });
  return out;
}

/** Parse a comma-separated list (`1,2,0x10`) into words. */
export function parseWordList(kind: WordKind, text: string): Uint8Array {
  const items = text.split(',').map((s) => s.trim());
  if (text.trim() === '' || items.some((s) => s === ''))
    throw new WordError(`--${kind} needs a list like 1,2,3`);
  return encodeWords(kind, items);
}

/** Unpack little-endian words; u64 words come back as decimal strings (JSON has no 64-bit integers). */
export function decodeWords(kind: WordKind, bytes: Uint8Array): Array<number | string> {
  if (bytes.length % SIZE[kind] !== 0)
    throw new WordError(`${bytes.length} bytes are not a whole number of ${kind} words`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Array<number | string> = [];
  for (let at = 0; at < bytes.length; at += SIZE[kind]) {
    if (kind === 'u8') out.push(view.getUint8(at));
    else if (kind === 'u16') out.push(view.getUint16(at, true));
    else if (kind === 'u32') out.push(view.getUint32(at, true));
    else if (kind === 'i32') out.push(view.getInt32(at, true));
    else out.push(view.getBigUint64(at, true).toString());
  }
  return out;
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Turn a `read` answer ({ hex, ... }) into the one encoding asked for. */
export function readAnswerAs(as: ReadAs, answer: { hex: string }): { [k: string]: unknown } {
  const bytes = Buffer.from(answer.hex, 'hex');
  if (as === 'hex') return { hex: answer.hex };
  if (as === 'text') return { text: bytes.toString('utf8') };
  if (as === 'base64') return { base64: bytes.toString('base64') };
  return { [as]: decodeWords(as, bytes) };
}
