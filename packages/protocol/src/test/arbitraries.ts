/** fast-check generators of valid messages (every type), shared by the property and fuzz tests. */
import fc from 'fast-check';
import { INVALIDATE_REASONS, type Message } from '../messages.js';

const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
const u53 = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.maxSafeNat());
const nodeId = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const segid = fc.tuple(nodeId, fc.integer({ min: 0, max: 1e12 })).map(([n, i]) => `${n}:${i}`);
const apid = fc.tuple(nodeId, fc.integer({ min: 0, max: 1e12 })).map(([n, i]) => `${n}:a${i}`);
const cid = fc.option(fc.string({ maxLength: 64 }), { nil: undefined });
const access = fc.constantFrom('r' as const, 'rw' as const);
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const page = fc.record({ page: u32, version: u53, data: bytes(4096) });
const pages = fc.array(page, { maxLength: 3 });
const ranges = fc.array(fc.tuple(u32, fc.integer({ min: 1, max: 2 ** 32 - 1 })), {
  minLength: 1,
  maxLength: 20,
});
const code = fc.constantFrom(
  'E_MALFORMED',
  'E_UNKNOWN_TYPE',
  'E_TOO_LARGE',
  'E_VERSION',
  'E_AUTH',
  'E_STATE',
  'E_TOO_MANY',
  'E_TIMEOUT',
  'E_STALE_EPOCH',
  'E_NO_SEGMENT',
  'E_NO_PERMIT',
  'E_PERM',
  'E_RANGE',
  'E_ACCESS',
  'E_FAULT',
  'E_BUSY',
  'E_INTERNAL',
) as fc.Arbitrary<'E_BUSY'>;
const reason = fc.constantFrom(...INVALIDATE_REASONS);

/** Drops keys whose value is undefined (the codec omits them, so a round trip does too). */
function clean<T extends object>(a: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return a.map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T);
}

export const arbitraries: Record<Message['t'], fc.Arbitrary<Message>> = {
  hello: clean(
    fc.record({
      t: fc.constant('hello' as const),
      versions: fc.array(fc.integer({ min: 1, max: 65535 }), { minLength: 1, maxLength: 16 }),
      node: nodeId,
      epoch: u53,
      boot: fc.option(u53, { nil: undefined }),
      nonce: bytes(32),
    }),
  ),
  welcome: clean(
    fc.record({
      t: fc.constant('welcome' as const),
      version: fc.integer({ min: 1, max: 65535 }),
      node: nodeId,
      epoch: u53,
      boot: fc.option(u53, { nil: undefined }),
      nonce: bytes(32),
      proof: bytes(32),
    }),
  ),
  auth: fc.record({ t: fc.constant('auth' as const), proof: bytes(32) }),
  ready: fc.record({ t: fc.constant('ready' as const), epoch: u53 }),
  get: clean(fc.record({ t: fc.constant('get' as const), id: u32, cid, segid, access, uid: u32, gid: u32 })),
  'get-ok': clean(fc.record({ t: fc.constant('get-ok' as const), re: u32, cid, apid, size: u53, access })),
  release: clean(fc.record({ t: fc.constant('release' as const), id: u32, cid, apid })),
  map: clean(
    fc.record({
      t: fc.constant('map' as const),
      id: u32,
      cid,
      apid,
      page: u32,
      count: fc.integer({ min: 1, max: 64 }),
      access,
    }),
  ),
  'map-ok': clean(
    fc.record({
      t: fc.constant('map-ok' as const),
      re: u32,
      cid,
      access,
      pages,
      grants: fc.array(fc.maxSafeNat(), { maxLength: 4 }),
    }),
  ),
  invalidate: clean(
    fc.record({
      t: fc.constant('invalidate' as const),
      id: u32,
      cid,
      segid,
      ranges,
      reason,
      writeback: fc.boolean(),
      downgrade: fc.boolean(),
      upTo: fc.maxSafeNat(),
    }),
  ),
  'invalidate-ack': clean(
    fc.record({ t: fc.constant('invalidate-ack' as const), re: u32, cid, dirty: pages }),
  ),
  detach: clean(fc.record({ t: fc.constant('detach' as const), id: u32, cid, apid, ranges, dirty: pages })),
  'segment-gone': clean(
    fc.record({
      t: fc.constant('segment-gone' as const),
      cid,
      segid,
      reason: fc.constantFrom('remove' as const, 'exit' as const, 'unmap' as const),
    }),
  ),
  ok: clean(fc.record({ t: fc.constant('ok' as const), re: u32, cid })),
  error: clean(
    fc.record({
      t: fc.constant('error' as const),
      re: fc.option(u32, { nil: undefined }),
      cid,
      code,
      message: fc.string({ maxLength: 512 }),
    }),
  ),
};

export const anyMessage: fc.Arbitrary<Message> = fc.oneof(...Object.values(arbitraries));
