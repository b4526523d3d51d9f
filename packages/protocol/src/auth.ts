/**
 * Mutual challenge-response authentication with a shared cluster key. The key never travels; each
 * side proves knowledge of it by an HMAC over both nonces and both node ids (docs/protocol.md gives
 * the exact bytes):
 *
 *   server proof = HMAC-SHA256(key, "xpmesh-server" 0x00 cnonce snonce cnode 0x00 snode)
 *   client proof = HMAC-SHA256(key, "xpmesh-client" 0x00 snonce cnonce cnode 0x00 snode)
 *
 * Node ids are ASCII from [A-Za-z0-9._-], so the 0x00 separators make the input unambiguous.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { NONCE_BYTES } from './validate.js';

const ZERO = Buffer.from([0]);

export function clusterKeyBytes(key: string | Uint8Array): Buffer {
  const b = typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(key);
  if (b.length < 16) throw new RangeError('clusterKey must be at least 16 bytes');
  return b;
}

export function newNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

export function serverProof(
  key: Buffer,
  cnonce: Uint8Array,
  snonce: Uint8Array,
  cnode: string,
  snode: string,
) {
  return createHmac('sha256', key)
    .update('xpmesh-server')
    .update(ZERO)
    .update(cnonce)
    .update(snonce)
    .update(cnode, 'utf8')
    .update(ZERO)
    .update(snode, 'utf8')
    .digest();
}

export function clientProof(
  key: Buffer,
  cnonce: Uint8Array,
  snonce: Uint8Array,
  cnode: string,
  snode: string,
) {
  return createHmac('sha256', key)
    .update('xpmesh-client')
    .update(ZERO)
    .update(snonce)
    .update(cnonce)
    .update(cnode, 'utf8')
    .update(ZERO)
    .update(snode, 'utf8')
    .digest();
}

export function proofsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}
