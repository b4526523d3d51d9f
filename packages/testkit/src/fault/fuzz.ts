#!/usr/bin/env node
/**
 * The instance fuzzer: random, mutated and structurally valid but meaningless frames against a
 * RUNNING instance (kernel, ws peer network, driver, admin API, booted in this process exactly as
 * `xpmesh node` boots them), from an authenticated peer, for a bounded time and number of frames.
 *
 *   node packages/testkit/dist/fault/fuzz.js --duration-ms 300000 --seed 7 --json FILE
 *
 * Set-up, through the admin API: the instance (`n1`) exports an 8-page segment (mode 0600) written
 * with known bytes, holds a local permit and a local attachment; a second real instance (`n2`, the
 * well-behaved peer) gets the segment with the owner's uid, attaches its first 4 pages and reads
 * them (remote faults: reverse-map entries at `n1`, cached copies at `n2`). Then a snapshot: both
 * drivers' status (segments, permits, attachments, reverse map, cached pages, peers and epochs,
 * counters), the kernels' state and invariants, the per-page directory, the segment's bytes read
 * through the owner, /metrics.
 *
 * The fuzzer authenticates as its own node id with a client written from docs/protocol.md (ws +
 * msgpack + HMAC) and sends a seeded mix of (a) random bytes (and text frames, deep nesting, huge
 * container headers, extension types), (b) mutated valid frames (bit flips, truncation, trailing
 * and spliced bytes, wrong field types, huge / negative / fractional numbers, missing and extra
 * fields, wrong and unknown types, bad batches), (c) structurally valid requests with no meaning
 * for it (unknown segids and apids, permits of others, pages out of range, a get the 0600 mode
 * refuses, invalidations from a non-home, detach with "dirty" data, replies nobody asked for,
 * segment-gone for other homes, handshake messages after ready, batches of all of these).
 *
 * Every frame is predicted before it is sent, with the protocol's own decoder: a rejected frame
 * gets exactly one `error` with the decoder's code (and `re` when it names one); each request in a
 * valid frame gets exactly one `error` with the code its meaning calls for (E_NO_SEGMENT, E_PERM,
 * E_NO_PERMIT, E_STATE); replies and one-way messages get nothing. A frame that would legitimately
 * change state (a get the mode allows, an invalidate or segment-gone naming the fuzzer as home) is
 * never sent. The session's malformed-frame budget (limits.malformedBurst) is tracked: frames are
 * accounted exactly while it lasts, then the fuzzer spends it on purpose until the instance closes
 * the link 4002 (abuse), counts that, and re-authenticates with a larger epoch.
 *
 * Meanwhile `n2` keeps reading its attachment and cycling get → attach → read (remote faults) →
 * detach → release on the other 4 pages, and a local process at `n1` reads its attachment; all must
 * keep succeeding with the right bytes.
 *
 * At the end: no crash (no uncaught exception or unhandled rejection, /healthz answers), the state
 * snapshot unchanged (only counters move: the fuzzer's sessions fenced one by one, the good peer's
 * traffic, refusals and messages in /metrics), kernel invariants hold, the segment's bytes are
 * unchanged, `n2`'s session epoch unchanged (never fenced), pins == unpins, no reverse-map entry of
 * the fuzzer's node, no error-level log line. Prints one JSON summary on stdout; exit 0 iff every
 * check held. The first finding stops the storm; it is reported with the frame's bytes in hex.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { AdminClient } from '@xpmesh/node/daemon/admin-client';
import { bootLayers } from '@xpmesh/node/daemon/boot';
import { type NodeConfig, resolveConfig } from '@xpmesh/node/daemon/config';
import { type InstanceParts, type RunningInstance, startInstance } from '@xpmesh/node/daemon/instance';
import { freePorts } from '@xpmesh/node/daemon/launcher';
import { createLogger } from '@xpmesh/node/daemon/logger';
import { parsePrometheus } from '@xpmesh/node/load/stats';
import {
  CloseCode,
  decodeFrame,
  decodeRaw,
  encodeFrame,
  INVALIDATE_REASONS,
  isWireErrorCode,
  type Message,
  PROTOCOL_VERSIONS,
  seededRandom,
  WIRE_ERROR_CODES,
} from '@xpmesh/protocol';
import { PAGE_SIZE } from '@xpmesh/protocol/base';
import WebSocket from 'ws';
import { finishTool, type IntOptionSpec, intOptionOf, parseToolArgs, runIfMain } from './tool-cli.js';

export const FUZZ_LIMITS = { maxDurationMs: 3_600_000, maxFrames: 10_000_000 } as const;

/** The fuzzer's numeric options: flag, default and bounds (help, parser and docs come from here). */
export const FUZZ_OPTIONS = {
  durationMs: { flag: 'duration-ms', def: 10_000, min: 100, max: FUZZ_LIMITS.maxDurationMs },
  maxFrames: { flag: 'max-frames', def: FUZZ_LIMITS.maxFrames, min: 1, max: FUZZ_LIMITS.maxFrames },
  seed: { flag: 'seed', def: 1, min: 0, max: 2 ** 31 },
} as const;

export interface FuzzOptions {
  durationMs: number;
  maxFrames: number;
  seed: number;
  /** Progress lines on stderr. */
  quiet?: boolean;
}

const HOME = 'n1';
const GOOD = 'n2';
const FUZZER = 'fuzzer';
/** Pages of the segment; the good peer holds the first GOOD_HELD, cycles the rest. */
const NPAGES = 8;
const GOOD_HELD = 4;
const OWNER_UID = 1000;
const OWNER_GID = 1000;
const MODE = 0o600;
/** The instance's malformed-frame budget (limits.malformedBurst) minus a margin: frames that cost a
 * token are accounted exactly up to this many per session, then the budget is spent on purpose. */
const EXACT_TOKENS = 30;
const WINDOW_FRAMES = 64;
/** Requests in flight at once: well under limits.maxIncomingRequests (1024). */
const WINDOW_REQUESTS = 400;
/** A window's replies must all arrive within this; longer is a hang. */
const SETTLE_MS = 10_000;
/** Invalid frames sent after the exact budget without an abuse close: a finding. */
const MAX_TAIL_FRAMES = 400;
const HANDSHAKE_TYPES = new Set(['hello', 'welcome', 'auth', 'ready']);
/** Largest frame sent: well under limits.maxFrameBytes (1 MiB). */
const MAX_FRAME = 256 * 1024;

/**
 * Driver counters that may move during a run: at the home, one fence per fuzzer session (checked
 * exactly) and the good peer's remote faults (grants, each pinned and unpinned); at the good peer,
 * its own faults (remote, coalesced) and lease waits when the storm delays a renewal.
 */
const HOME_COUNTERS_MAY_MOVE = new Set([
  'fences',
  'mapsGranted',
  'pins',
  'unpins',
  // the refusals the storm provokes (checked exactly against the error codes it received)
  'refused.no_permit',
  'refused.access_denied',
  // each fuzzer session that ends is forgotten once its lease ran out (docs/driver.md "Per-node state")
  'nodesPruned',
]);
const GOOD_COUNTERS_MAY_MOVE = new Set(['faults', 'remoteFaults', 'coalescedFaults', 'leaseWaits']);

type Msg = Record<string, unknown>;
type Cls = 'random' | 'mutated' | 'structured';

interface Expectation {
  codes: readonly string[];
  frame: number;
}

export interface Prediction {
  /** Error replies the frame must get, in order (`re` when they carry one). */
  replies: Array<{ re?: number; codes: readonly string[] }>;
  /** Tokens of the malformed-frame budget it costs. */
  tokens: number;
  /** Requests it carries (each answered by one error). */
  requests: number;
  /** Messages in the frame when it decodes (0 when rejected). */
  messages: number;
  rejected: boolean;
}

interface Generated {
  frame: Uint8Array | string;
  cls: Cls;
  kind: string;
  pred: Prediction;
}

interface Finding {
  what: string;
  [k: string]: unknown;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const hex = (b: Uint8Array | string) =>
  typeof b === 'string' ? `text:${Buffer.from(b).toString('hex')}` : Buffer.from(b).toString('hex');
const homeOf = (id: string): string | undefined => {
  const i = id.lastIndexOf(':');
  return i <= 0 || i === id.length - 1 ? undefined : id.slice(0, i);
};
const inc = (o: Record<string, number>, k: string, n = 1) => {
  o[k] = (o[k] ?? 0) + n;
};

/** System V style mode check, as the driver documents it (no root override). */
function permitted(uid: number, gid: number, access: unknown): boolean {
  const bits = uid === OWNER_UID ? MODE >> 6 : gid === OWNER_GID ? MODE >> 3 : MODE;
  const need = access === 'rw' ? 6 : 4;
  return (bits & need) === need;
}

/** Short JSON of a received message for a report (byte strings as hex, long strings cut). */
function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) =>
    x instanceof Uint8Array
      ? `<${x.byteLength} bytes ${Buffer.from(x.subarray(0, 16)).toString('hex')}…>`
      : typeof x === 'string' && x.length > 120
        ? `${x.slice(0, 120)}…`
        : x,
  ).slice(0, 600);
}

// ---- HMAC challenge-response, byte-exact from docs/protocol.md §5 ---------------------------------

const ZERO = Buffer.from([0]);
function proof(
  key: Buffer,
  label: 'xpmesh-server' | 'xpmesh-client',
  a: Uint8Array,
  b: Uint8Array,
  cnode: string,
  snode: string,
): Buffer {
  return createHmac('sha256', key)
    .update(label)
    .update(ZERO)
    .update(a)
    .update(b)
    .update(cnode, 'utf8')
    .update(ZERO)
    .update(snode, 'utf8')
    .digest();
}

// ---- the world the fuzzer knows ------------------------------------------------------------------

export interface Known {
  segid: string;
  /** Every segment the instance exports (a get naming one is checked against its mode). */
  segids: Set<string>;
  /** Permits that exist at the instance (held by others). */
  apids: string[];
}

/**
 * What must happen to a frame, from the protocol's own decoder, or why it must not be sent (it
 * would legitimately change state).
 */
export function predictFrame(frame: Uint8Array, k: Known): Prediction | { unsafe: string } {
  const r = decodeFrame(frame);
  if (!r.ok)
    return { replies: [{ re: r.re, codes: [r.code] }], tokens: 1, requests: 0, messages: 0, rejected: true };
  const p: Prediction = { replies: [], tokens: 0, requests: 0, messages: r.messages.length, rejected: false };
  const req = (m: { id: number }, code: string) => {
    p.replies.push({ re: m.id, codes: [code] });
    p.requests++;
  };
  for (const m of r.messages) {
    switch (m.t) {
      case 'get':
        if (!k.segids.has(m.segid)) req(m, 'E_NO_SEGMENT');
        else if (permitted(m.uid, m.gid, m.access))
          return { unsafe: `get ${m.segid} uid ${m.uid} is allowed` };
        else req(m, 'E_PERM');
        break;
      case 'release':
      case 'map':
      case 'detach':
        // permits are per node: the fuzzer holds none
        req(m, 'E_NO_PERMIT');
        break;
      case 'invalidate':
        if (homeOf(m.segid) === FUZZER) return { unsafe: `invalidate of the fuzzer's own ${m.segid}` };
        req(m, 'E_STATE');
        break;
      case 'segment-gone':
        if (homeOf(m.segid) === FUZZER) return { unsafe: `segment-gone of the fuzzer's own ${m.segid}` };
        break;
      default:
        if (HANDSHAKE_TYPES.has(m.t)) {
          p.replies.push({ codes: ['E_STATE'] });
          p.tokens++;
        }
      // replies (the instance asked the fuzzer nothing) and one-way errors: ignored
    }
  }
  return p;
}

// ---- frame generation ----------------------------------------------------------------------------

class Generator {
  private readonly rnd: () => number;
  private readonly pageBufs: Uint8Array[];
  unsafeSkipped = 0;
  oversized = 0;
  constructor(
    seed: number,
    private readonly k: Known,
  ) {
    this.rnd = seededRandom(seed);
    this.pageBufs = [new Uint8Array(PAGE_SIZE), new Uint8Array(PAGE_SIZE).fill(0xff), this.bytes(PAGE_SIZE)];
  }

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  // values
  private uint32(): number {
    return this.pick([0, 1, 7, 8, 63, 64, 65, 1023, 1024, 2 ** 31, 2 ** 32 - 1, this.int(100)]);
  }
  private badUid(): number {
    for (;;) {
      const u = this.pick([0, 1, 999, 1001, 2000, 65534, 65535, 2 ** 31, 2 ** 32 - 1, this.int(1 << 20)]);
      if (u !== OWNER_UID) return u;
    }
  }
  private segidOther(): string {
    const n = Number(this.k.segid.slice(this.k.segid.lastIndexOf(':') + 1));
    return this.pick([
      `${HOME}:${n + 1 + this.int(5)}`,
      `${HOME}:0`,
      `${HOME}:999999999999999`,
      `${HOME}:0${n}`,
      `${GOOD}:1`,
      `${GOOD}:${this.int(50)}`,
      'x:1',
      `${'h'.repeat(64)}:${this.int(10)}`,
      `${FUZZER}2:3`,
    ]);
  }
  private segidAny(): string {
    return this.chance(0.5) ? this.k.segid : this.segidOther();
  }
  private apid(): string {
    return this.chance(0.5)
      ? this.pick(this.k.apids)
      : this.pick([
          `${HOME}:a${this.int(64)}`,
          `${HOME}:a999999999999999`,
          `${GOOD}:a1`,
          'x:a9',
          `${FUZZER}:a1`,
        ]);
  }
  private access(): 'r' | 'rw' {
    return this.chance(0.5) ? 'r' : 'rw';
  }
  private ranges(max: number): Array<[number, number]> {
    const n = this.chance(0.8) ? 1 + this.int(4) : 1 + this.int(max);
    return Array.from({ length: n }, () => [this.uint32(), 1 + this.pick([0, 1, 3, 7, 63, 2 ** 32 - 2])]);
  }
  private pageData(max: number): Array<{ page: number; version: number; data: Uint8Array }> {
    const n = this.chance(0.5) ? 0 : 1 + this.int(max);
    return Array.from({ length: n }, () => ({
      page: this.chance(0.7) ? this.int(NPAGES) : this.uint32(),
      version: this.pick([0, 1, 2 ** 53 - 1, this.int(1000)]),
      data: this.pick(this.pageBufs),
    }));
  }
  private cid(m: Msg): Msg {
    if (this.chance(0.3)) m.cid = `fz-${this.int(1e6)}`;
    return m;
  }

  /** (c) one structurally valid message with no meaning for the fuzzer, by kind. */
  private readonly structured: Record<string, (id: () => number) => Msg> = {
    'get-unknown-segment': (id) => ({
      t: 'get',
      id: id(),
      segid: this.segidOther(),
      access: this.access(),
      uid: this.pick([OWNER_UID, this.badUid()]),
      gid: this.pick([OWNER_GID, this.int(5000)]),
    }),
    'get-refused-by-mode': (id) => ({
      t: 'get',
      id: id(),
      segid: this.k.segid,
      access: this.access(),
      uid: this.badUid(),
      gid: this.pick([OWNER_GID, 0, this.int(5000)]),
    }),
    map: (id) => ({
      t: 'map',
      id: id(),
      apid: this.apid(),
      page: this.chance(0.5) ? this.int(NPAGES) : this.uint32(),
      count: 1 + this.int(64),
      access: this.access(),
    }),
    detach: (id) => ({
      t: 'detach',
      id: id(),
      apid: this.apid(),
      ranges: this.ranges(1024),
      dirty: this.pageData(4),
    }),
    release: (id) => ({ t: 'release', id: id(), apid: this.apid() }),
    'invalidate-not-home': (id) => ({
      t: 'invalidate',
      id: id(),
      segid: this.segidAny(),
      ranges: this.ranges(1024),
      reason: this.pick(INVALIDATE_REASONS),
      writeback: this.chance(0.5),
      downgrade: this.chance(0.5),
      upTo: this.pick([0, 1, 2 ** 53 - 1, this.int(1e6)]),
    }),
    'unsolicited-map-ok': () => {
      const pages = this.pageData(3);
      return {
        t: 'map-ok',
        re: this.uint32(),
        access: this.access(),
        pages,
        grants: pages.map(() => this.pick([0, 1, 2 ** 53 - 1])),
      };
    },
    'unsolicited-invalidate-ack': () => ({ t: 'invalidate-ack', re: this.uint32(), dirty: this.pageData(3) }),
    'unsolicited-reply': () =>
      this.pick([
        { t: 'ok', re: this.uint32() },
        { t: 'get-ok', re: this.uint32(), apid: this.apid(), size: NPAGES * PAGE_SIZE, access: 'rw' },
        { t: 'error', re: this.uint32(), code: this.pick(Object.keys(WIRE_ERROR_CODES)), message: 'nope' },
      ]),
    'segment-gone-other-home': () => ({
      t: 'segment-gone',
      segid: this.segidAny(),
      reason: this.pick(['remove', 'exit', 'unmap']),
    }),
    'error-one-way': () => ({
      t: 'error',
      code: this.pick(Object.keys(WIRE_ERROR_CODES)),
      message: 'x'.repeat(this.int(512)),
    }),
    'handshake-after-ready': () =>
      this.pick([
        {
          t: 'hello',
          versions: [...PROTOCOL_VERSIONS],
          node: FUZZER,
          epoch: Date.now(),
          nonce: this.bytes(32),
        },
        {
          t: 'welcome',
          version: 2,
          node: HOME,
          epoch: 1,
          nonce: this.bytes(32),
          proof: this.bytes(32),
        },
        { t: 'auth', proof: this.bytes(32) },
        { t: 'ready', epoch: this.int(1e9) },
      ]),
  };
  private readonly structuredKinds = Object.keys(this.structured);
  private readonly quietKinds = this.structuredKinds.filter((k) => k !== 'handshake-after-ready');

  private one(id: () => number, quiet = false): { kind: string; msg: Msg } {
    const kind = this.pick(quiet ? this.quietKinds : this.structuredKinds);
    return { kind, msg: this.cid(this.structured[kind](id)) };
  }

  private genStructured(id: () => number): { kind: string; value: unknown } {
    if (this.chance(0.12)) {
      const n = 2 + this.int(this.chance(0.8) ? 8 : 63);
      return { kind: 'batch', value: Array.from({ length: n }, () => this.one(id, true).msg) };
    }
    const { kind, msg } = this.one(id);
    return { kind, value: msg };
  }

  private weird(): unknown {
    return this.pick([
      -1,
      -(2 ** 31),
      2 ** 32,
      2 ** 53,
      2 ** 64,
      -(2 ** 63),
      1.5,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.MAX_VALUE,
      '',
      'x'.repeat(600),
      '\u0000',
      '\ud800',
      null,
      true,
      [],
      [[[]]],
      {},
      { t: 'get' },
      new Uint8Array(3),
      new Uint8Array(PAGE_SIZE + 1),
      this.int(1e6),
    ]);
  }

  /** (b) a mutation of a valid frame: at the value level or at the byte level. */
  private genMutated(id: () => number): { kind: string; frame: Uint8Array } {
    const base = this.genStructured(id);
    if (this.chance(0.45)) {
      const value = structuredClone(base.value) as unknown;
      const target = (Array.isArray(value) ? this.pick(value) : value) as Msg;
      const keys = Object.keys(target);
      let kind: string;
      switch (this.int(7)) {
        case 0:
          kind = 'wrong-type-or-number';
          target[this.pick(keys)] = this.weird();
          break;
        case 1:
          kind = 'missing-field';
          delete target[this.pick(keys)];
          break;
        case 2:
          kind = 'extra-fields';
          for (let i = 1 + this.int(3); i > 0; i--)
            Object.defineProperty(target, this.pick(['x', 'zz', '__proto__', 'id2', 't2', 're']), {
              value: this.weird(),
              enumerable: true,
              configurable: true,
              writable: true,
            });
          break;
        case 3:
          kind = 'wrong-message-type';
          target.t = this.pick([
            'get',
            'map',
            'ok',
            'ready',
            'invalidate',
            'segment-gone',
            'error',
            'nope',
            'GET',
            42,
            '',
          ]);
          break;
        case 4:
          kind = 'batch-too-big';
          return {
            kind,
            frame: Uint8Array.prototype.slice.call(
              encodeFrame(Array(257 + this.int(100)).fill(this.one(id, true).msg) as Message[]),
            ),
          };
        case 5:
          kind = 'nested-or-empty-batch';
          return {
            kind,
            frame: Uint8Array.prototype.slice.call(
              encodeFrame((this.chance(0.5) ? [] : [[target]]) as never),
            ),
          };
        default:
          kind = 'batch-with-bad-element';
          return {
            kind,
            frame: Uint8Array.prototype.slice.call(
              encodeFrame([target, { t: this.pick(['get', 'x', 'map']), id: -1 }] as never),
            ),
          };
      }
      return { kind, frame: Uint8Array.prototype.slice.call(encodeFrame(value as Message)) };
    }
    const f0: Uint8Array = Uint8Array.prototype.slice.call(encodeFrame(base.value as Message));
    switch (this.int(6)) {
      case 0: {
        for (let n = 1 + this.int(4); n > 0; n--) f0[this.int(f0.length)] ^= 1 << this.int(8);
        return { kind: 'bit-flips', frame: f0 };
      }
      case 1:
        return { kind: 'truncated', frame: f0.subarray(0, this.int(f0.length)) };
      case 2: {
        const extra = this.chance(0.5) ? this.bytes(1 + this.int(8)) : f0;
        const f = new Uint8Array(f0.length + extra.length);
        f.set(f0);
        f.set(extra, f0.length);
        return { kind: 'trailing-bytes', frame: f };
      }
      case 3: {
        const at = this.int(f0.length);
        f0.set(this.bytes(Math.min(1 + this.int(4), f0.length - at)), at);
        return { kind: 'spliced-bytes', frame: f0 };
      }
      case 4: {
        f0[this.int(f0.length)] = this.pick([
          0xc1, 0xc0, 0xcf, 0xd3, 0xdd, 0xdf, 0xc6, 0xd4, 0xc7, 0xcb, 0xff,
        ]);
        return { kind: 'type-byte', frame: f0 };
      }
      default:
        return { kind: 'bit-flips', frame: f0.map((b) => (this.chance(0.02) ? b ^ 0xff : b)) };
    }
  }

  /** (a) random and adversarial bytes. */
  private genRandom(): { kind: string; frame: Uint8Array | string } {
    switch (this.int(8)) {
      case 0:
        return { kind: 'text-frame', frame: 'x'.repeat(this.int(64)) };
      case 1: {
        const depth = this.pick([100, 1000, 10_000, 60_000]);
        const f = new Uint8Array(depth + 1).fill(this.pick([0x91, 0x81]));
        f[depth] = 0xc0;
        return { kind: 'deep-nesting', frame: f };
      }
      case 2: {
        const head = this.pick([
          [0xdd, 0xff, 0xff, 0xff, 0xff],
          [0xdf, 0xff, 0xff, 0xff, 0xff],
          [0xc6, 0xff, 0xff, 0xff, 0xff],
          [0xdb, 0xff, 0xff, 0xff, 0xff],
          [0xdc, 0xff, 0xff],
          [0xde, 0xff, 0xff],
          [0x81, 0xa1, 0x74, 0xdb, 0x7f, 0xff, 0xff, 0xff],
        ]);
        return { kind: 'huge-length', frame: Uint8Array.from([...head, ...this.bytes(this.int(16))]) };
      }
      case 3: {
        // extension types, msgpackr's own (records 0x72, bundled strings, …) included
        const type = this.pick([0x72, 0x73, 0x74, 0x65, 0x69, 0x70, 0x78, 0xff, 0x00, 0x42]);
        const f = this.pick([
          [0xd4, type, this.int(256)],
          [0xd5, type, this.int(256), this.int(256)],
          [0xd6, type, ...this.bytes(4)],
          [0xc7, 1 + this.int(40), type, ...this.bytes(1 + this.int(40))],
          [0x81, 0xa1, 0x74, 0xd4, type, this.int(256)],
        ]);
        return { kind: 'extension-type', frame: Uint8Array.from(f) };
      }
      default:
        return { kind: 'random-bytes', frame: this.bytes(this.int(300)) };
    }
  }

  /** The next frame (never one that would legitimately change state). */
  next(id: () => number, weights = [0.25, 0.35, 0.4]): Generated {
    for (;;) {
      const r = this.rnd();
      const cls: Cls = r < weights[0] ? 'random' : r < weights[0] + weights[1] ? 'mutated' : 'structured';
      let frame: Uint8Array | string;
      let kind: string;
      if (cls === 'random') ({ kind, frame } = this.genRandom());
      else if (cls === 'mutated') ({ kind, frame } = this.genMutated(id));
      else {
        const s = this.genStructured(id);
        kind = s.kind;
        frame = Uint8Array.prototype.slice.call(encodeFrame(s.value as Message));
      }
      // frames over limits.maxFrameBytes are closed by the transport (1009), not answered: not sent
      if (frame.length > MAX_FRAME) {
        this.oversized++;
        continue;
      }
      // a text frame is a frame the transport hands on as 0xc1 (rejected, E_MALFORMED)
      const pred = predictFrame(typeof frame === 'string' ? Uint8Array.of(0xc1) : frame, this.k);
      if ('unsafe' in pred) {
        this.unsafeSkipped++;
        continue;
      }
      return { frame, cls, kind, pred };
    }
  }

  /** A frame the decoder rejects (to spend the malformed budget). */
  nextRejected(id: () => number): Generated {
    for (;;) {
      const g = this.next(id, [0.5, 0.5, 0]);
      if (g.pred.rejected) return g;
    }
  }
}

// ---- the raw client ------------------------------------------------------------------------------

class RawSession {
  readonly byRe = new Map<number, Expectation[]>();
  readonly noRe: Expectation[] = [];
  pending = 0;
  tokens = 0;
  rejections = 0;
  nextId = 1;
  closed: { code: number; reason: string } | undefined;
  private wakeUp: (() => void) | undefined;
  onMessage: (m: Msg) => void = () => {};

  constructor(
    readonly ws: WebSocket,
    readonly epoch: number,
  ) {
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
  }

  id = (): number => {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    return id;
  };

  wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  /** Resolves true once cond() holds, false at the deadline. */
  async until(cond: () => boolean, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!cond()) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.wakeUp = () => {
          clearTimeout(t);
          r();
        };
      });
    }
    return true;
  }

  expect(p: Prediction, frame: number): void {
    for (const r of p.replies) {
      const e = { codes: r.codes, frame };
      if (r.re === undefined) this.noRe.push(e);
      else {
        const l = this.byRe.get(r.re);
        if (l) l.push(e);
        else this.byRe.set(r.re, [e]);
      }
      this.pending++;
    }
  }

  /** The expectation an error reply answers (undefined: nobody expected it). */
  take(re: unknown, code: string): Expectation | undefined {
    if (typeof re !== 'number') return this.noRe.shift();
    const l = this.byRe.get(re);
    if (!l) return undefined;
    const i = Math.max(
      0,
      l.findIndex((e) => e.codes.includes(code)),
    );
    const [e] = l.splice(i, 1);
    if (l.length === 0) this.byRe.delete(re);
    return e;
  }
}

/** hello → welcome (server proof checked) → auth → ready. Rejects with the close code or reason. */
async function openSession(url: string, key: Buffer, epoch: number, boot: number): Promise<RawSession> {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 20 });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.on('error', () => {}); // a close follows
  return await new Promise<RawSession>((resolve, reject) => {
    const cnonce = randomBytes(32);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('handshake timeout'));
    }, 10_000);
    const fail = (why: string) => {
      clearTimeout(timer);
      ws.off('message', onHandshake);
      ws.terminate();
      reject(new Error(why));
    };
    const onHandshake = (data: Buffer) => {
      let m: Msg;
      try {
        m = decodeRaw(data) as Msg;
      } catch (e) {
        fail(`undecodable handshake frame: ${(e as Error).message}`);
        return;
      }
      if (m.t === 'welcome') {
        const snonce = m.nonce as Uint8Array;
        const ps = proof(key, 'xpmesh-server', cnonce, snonce, FUZZER, HOME);
        if (m.node !== HOME || m.version !== 2 || !ps.equals(Buffer.from(m.proof as Uint8Array))) {
          fail(`bad welcome ${show(m)}`);
          return;
        }
        ws.send(encodeFrame({ t: 'auth', proof: proof(key, 'xpmesh-client', snonce, cnonce, FUZZER, HOME) }));
      } else if (m.t === 'ready' && m.epoch === epoch) {
        clearTimeout(timer);
        ws.off('message', onHandshake);
        ws.off('close', onClose);
        const s = new RawSession(ws, epoch);
        ws.on('message', (d: Buffer, isBinary: boolean) => {
          let v: unknown;
          try {
            v = isBinary ? decodeRaw(d) : { t: '<text frame>' };
          } catch (e) {
            v = { t: '<undecodable>', error: (e as Error).message, hex: d.toString('hex').slice(0, 200) };
          }
          for (const x of (Array.isArray(v) ? v : [v]) as Msg[]) s.onMessage(x);
          s.wake();
        });
        resolve(s);
      } else fail(`unexpected handshake message ${show(m)}`);
    };
    const onClose = (code: number, reason: Buffer) => fail(`closed ${code} ${reason.toString()}`);
    ws.on('message', onHandshake);
    ws.once('close', onClose);
    ws.send(
      encodeFrame({
        t: 'hello',
        versions: [...PROTOCOL_VERSIONS],
        node: FUZZER,
        epoch,
        boot,
        nonce: cnonce,
      }),
    );
  });
}

// ---- instances -----------------------------------------------------------------------------------

/** Counts an instance's log lines by level; keeps error-level lines and a histogram of warnings. */
class LogCounter {
  readonly errors: string[] = [];
  readonly warnings: Record<string, number> = {};
  stream(): Writable {
    let buf = '';
    return new Writable({
      write: (chunk: Buffer | string, _enc, cb) => {
        buf += chunk.toString();
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            const o = JSON.parse(line) as { level: number; msg?: string; node?: string };
            if (o.level >= 50) {
              if (this.errors.length < 20) this.errors.push(line.slice(0, 1000));
            } else if (o.level >= 40) inc(this.warnings, `${o.node}: ${o.msg}`);
          } catch {
            // not JSON: ignored
          }
        }
        cb();
      },
    });
  }
}

interface Booted {
  id: string;
  config: NodeConfig;
  parts: InstanceParts;
  instance: RunningInstance;
  admin: AdminClient;
  peerUrl: string;
  peerPort: number;
}

/** One instance, booted as `xpmesh node` boots it (bootLayers + startInstance), on 127.0.0.1. */
async function boot(
  id: string,
  dir: string,
  key: string,
  logs: LogCounter,
  peerPort?: number,
): Promise<Booted> {
  const [port] = await freePorts(1);
  const flags: Record<string, string> = {
    id,
    'listen-host': '127.0.0.1',
    'listen-port': String(port),
    'admin-host': '127.0.0.1',
    'admin-port': '0',
    'cluster-key': key,
    frames: '256',
    'swap-file': join(dir, `${id}.swap`),
  };
  if (peerPort !== undefined) flags.peers = `127.0.0.1:${peerPort}`;
  const config = resolveConfig(flags, {});
  const logger = createLogger(id, 'warn', logs.stream());
  const parts = await bootLayers(config, logger);
  const instance = await startInstance(config, logger, parts);
  return {
    id,
    config,
    parts,
    instance,
    admin: new AdminClient(instance.adminUrl),
    peerUrl: `ws://127.0.0.1:${port}`,
    peerPort: port,
  };
}

// ---- snapshots -----------------------------------------------------------------------------------

interface DriverView {
  segments: unknown[];
  grants: unknown[];
  attachments: unknown[];
  rmap: Record<string, number>;
  cachedPages: number;
  peers: Array<{ node: string; epoch: number; state: string; fencedBelow: number }>;
  counters: Record<string, number>;
}

interface StatusView {
  memory: Record<string, unknown> & { counters?: Record<string, number>; pins?: number };
  processes: unknown[];
  driver: DriverView;
}

interface Snapshot {
  /** Must be identical before and after. */
  state: Record<string, unknown>;
  homeCounters: Record<string, number>;
  goodCounters: Record<string, number>;
  homeKernelCounters: Record<string, number>;
  invariants: { home: string[]; good: string[] };
  metrics: Record<string, number>;
  goodEpochAtHome: number;
  homeEpochAtGood: number;
  fuzzerInRmap: boolean;
}

/** The samples of /metrics we follow, summed by a key (refusals by kind, messages by direction). */
function parseMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const { name, labels, value } of parsePrometheus(text)) {
    if (name === 'xpmesh_refusals_total') inc(out, `refusals.${labels.kind}`, value);
    else if (name === 'xpmesh_messages_total') inc(out, `messages.${labels.direction}`, value);
    else if (name === 'xpmesh_fences_total') inc(out, 'fences', value);
  }
  return out;
}

function memoryState(m: StatusView['memory']): Record<string, unknown> {
  const { counters: _c, rmapNotifiers, ...rest } = m as Record<string, unknown>;
  return { ...rest, rmapNotifiers: (rmapNotifiers as { registered?: number } | undefined)?.registered };
}

function driverState(d: DriverView, dropPeer: string): Record<string, unknown> {
  return {
    segments: d.segments,
    grants: d.grants,
    attachments: d.attachments,
    rmap: d.rmap,
    cachedPages: d.cachedPages,
    peers: d.peers.filter((p) => p.node !== dropPeer),
  };
}

function diffObjects(a: unknown, b: unknown, path = ''): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const out: string[] = [];
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)]))
      out.push(...diffObjects((a as Msg)[k], (b as Msg)[k], path ? `${path}.${k}` : k));
    return out;
  }
  return [`${path}: ${JSON.stringify(a)?.slice(0, 300)} → ${JSON.stringify(b)?.slice(0, 300)}`];
}

/** Nested counters as one level of dotted keys (numbers only). */
function flatten(o: unknown, prefix = '', out: Record<string, number> = {}): Record<string, number> {
  if (typeof o === 'number') out[prefix] = o;
  else if (o && typeof o === 'object')
    for (const [k, v] of Object.entries(o)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

function deltas(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

// ---- the run -------------------------------------------------------------------------------------

export async function fuzzInstance(o: FuzzOptions): Promise<Record<string, unknown>> {
  const log = (s: string) => {
    if (!o.quiet) process.stderr.write(`${new Date().toISOString()} fuzz: ${s}\n`);
  };
  const durationMs = Math.min(o.durationMs, FUZZ_LIMITS.maxDurationMs);
  const maxFrames = Math.min(o.maxFrames, FUZZ_LIMITS.maxFrames);
  const crashes: string[] = [];
  const onCrash = (what: string) => (e: unknown) => {
    crashes.push(`${what}: ${String((e as Error)?.stack ?? e).slice(0, 2000)}`);
  };
  const onUncaught = onCrash('uncaught exception');
  const onUnhandled = onCrash('unhandled rejection');
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUnhandled);
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-fuzz-'));
  const key = `fuzz-${randomBytes(16).toString('hex')}`;
  const keyBytes = Buffer.from(key, 'utf8');
  const logs = new LogCounter();
  const findings: Finding[] = [];
  const checks: Array<{ name: string; ok: boolean; detail: string }> = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  let home: Booted | undefined;
  let good: Booted | undefined;
  try {
    // ---- two instances and real state
    home = await boot(HOME, dir, key, logs);
    good = await boot(GOOD, dir, key, logs, home.peerPort);
    const H = home.admin;
    const G = good.admin;
    const peerUp = async (c: AdminClient, node: string) => {
      for (let i = 0; i < 200; i++) {
        const st = await c.get<{ peers: Array<{ node: string; state: string }> }>('/status');
        if (st.peers.some((p) => p.node === node && p.state === 'up')) return;
        await sleep(50);
      }
      throw new Error(`no session with ${node}`);
    };
    await peerUp(G, HOME);
    await peerUp(H, GOOD);
    const rnd = seededRandom(o.seed ^ 0x5eed);
    const data = Buffer.alloc(NPAGES * PAGE_SIZE);
    for (let i = 0; i < data.length; i++) data[i] = Math.floor(rnd() * 256);
    const dataHex = data.toString('hex');
    const pagesHex = (first: number, n: number) =>
      dataHex.slice(first * PAGE_SIZE * 2, (first + n) * PAGE_SIZE * 2);
    const { pid: owner } = await H.op<{ pid: number }>('spawn', {
      uid: OWNER_UID,
      gid: OWNER_GID,
      name: 'owner',
    });
    const { addr } = await H.op<{ addr: number }>('mmap', { pid: owner, len: NPAGES * PAGE_SIZE });
    await H.op('write', { pid: owner, addr, hex: dataHex });
    const { segid } = await H.op<{ segid: string }>('make', {
      pid: owner,
      addr,
      size: NPAGES * PAGE_SIZE,
      mode: MODE,
    });
    const { pid: local } = await H.op<{ pid: number }>('spawn', {
      uid: OWNER_UID,
      gid: OWNER_GID,
      name: 'local',
    });
    const { apid: localApid } = await H.op<{ apid: string }>('get', { pid: local, segid, access: 'r' });
    const { addr: localAddr } = await H.op<{ addr: number }>('attach', {
      pid: local,
      apid: localApid,
      size: NPAGES * PAGE_SIZE,
    });
    const readHex = async (c: AdminClient, pid: number, at: number, len: number) =>
      (await c.op<{ hex: string }>('read', { pid, addr: at, len })).hex;
    if ((await readHex(H, local, localAddr, NPAGES * PAGE_SIZE)) !== dataHex)
      throw new Error('set-up: the local attachment does not read the written bytes');
    const { pid: reader } = await G.op<{ pid: number }>('spawn', {
      uid: OWNER_UID,
      gid: OWNER_GID,
      name: 'reader',
    });
    const { apid: goodApid } = await G.op<{ apid: string }>('get', { pid: reader, segid, access: 'r' });
    const { addr: goodAddr } = await G.op<{ addr: number }>('attach', {
      pid: reader,
      apid: goodApid,
      size: GOOD_HELD * PAGE_SIZE,
    });
    if ((await readHex(G, reader, goodAddr, GOOD_HELD * PAGE_SIZE)) !== pagesHex(0, GOOD_HELD))
      throw new Error('set-up: the good peer does not read the written bytes');
    const { pid: cycler } = await G.op<{ pid: number }>('spawn', {
      uid: OWNER_UID,
      gid: OWNER_GID,
      name: 'cycler',
    });
    /** The good peer's legitimate remote traffic: get → attach → read (remote faults) → detach → release. */
    const goodCycle = async () => {
      const { apid } = await G.op<{ apid: string }>('get', { pid: cycler, segid, access: 'r' });
      const at = await G.op<{ addr: number }>('attach', {
        pid: cycler,
        apid,
        offset: GOOD_HELD * PAGE_SIZE,
        size: (NPAGES - GOOD_HELD) * PAGE_SIZE,
      });
      if (
        (await readHex(G, cycler, at.addr, (NPAGES - GOOD_HELD) * PAGE_SIZE)) !==
        pagesHex(GOOD_HELD, NPAGES - GOOD_HELD)
      )
        throw new Error(`${GOOD} read other bytes through a fresh attachment`);
      await G.op('detach', { pid: cycler, addr: at.addr });
      await G.op('release', { pid: cycler, apid });
    };
    // once before the snapshot: the cycler's first attachment allocates its page-table frames
    await goodCycle();
    log(
      `set-up: ${HOME} exports ${segid} (${NPAGES} pages, mode 0${MODE.toString(8)}); ${GOOD} maps pages 0-${GOOD_HELD - 1}`,
    );

    const snapshot = async (): Promise<Snapshot> => {
      const hs = await H.get<StatusView>('/status');
      const gs = await G.get<StatusView>('/status');
      const pages = await H.get<Array<{ sharers: string[]; writer: string | null }>>(
        `/pages?segid=${encodeURIComponent(segid)}`,
      );
      const hc = await H.op<{ violations: string[] }>('check');
      const gc = await G.op<{ violations: string[] }>('check');
      return {
        state: {
          home: {
            driver: driverState(hs.driver, FUZZER),
            memory: memoryState(hs.memory),
            processes: hs.processes,
            pages,
          },
          good: {
            driver: driverState(gs.driver, FUZZER),
            memory: memoryState(gs.memory),
            processes: gs.processes,
          },
          segmentBytes:
            (await readHex(H, owner, addr, NPAGES * PAGE_SIZE)) === dataHex ? 'as written' : 'CHANGED',
        },
        homeCounters: flatten(hs.driver.counters),
        goodCounters: flatten(gs.driver.counters),
        homeKernelCounters: flatten(hs.memory.counters ?? {}),
        invariants: { home: hc.violations, good: gc.violations },
        metrics: parseMetrics(await H.get<string>('/metrics')),
        goodEpochAtHome: hs.driver.peers.find((p) => p.node === GOOD)?.epoch ?? -1,
        homeEpochAtGood: gs.driver.peers.find((p) => p.node === HOME)?.epoch ?? -1,
        fuzzerInRmap: pages.some((p) => p.sharers.includes(FUZZER) || p.writer === FUZZER),
      };
    };
    const before = await snapshot();

    // ---- the storm and the good peer's legitimate work, concurrently
    const known: Known = { segid, segids: new Set([segid]), apids: [localApid, goodApid] };
    const gen = new Generator(o.seed, known);
    const byClass: Record<string, number> = {};
    const byKind: Record<string, number> = {};
    const codes: Record<string, number> = {};
    const closes: Record<string, number> = {};
    const ring: Array<{ i: number; cls: Cls; kind: string; frame: Uint8Array | string }> = [];
    const framesOf = (i: number) => {
      const r = ring.find((x) => x.i === i);
      return r ? { frame: i, class: r.cls, kind: r.kind, hex: hex(r.frame).slice(0, 4000) } : { frame: i };
    };
    const counts = {
      frames: 0,
      messages: 0,
      requests: 0,
      errorsExpected: 0,
      errorsReceived: 0,
      rejectedFrames: 0,
      tokens: 0,
      tailFrames: 0,
      tailUnanswered: 0,
      sessions: 0,
      reconnects: 0,
      abuseCloses: 0,
      handshakeFailures: 0,
      windows: 0,
    };
    const rejectionsBeforeAbuse: number[] = [];
    const goodOps = { reads: 0, localReads: 0, cycles: 0, failures: 0 };
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const t0 = Date.now();
    let stopped: 'time' | 'frames' | 'finding' | undefined;
    const stop = () => {
      if (stopped) return true;
      if (findings.length > 0 || crashes.length > 0) stopped = 'finding';
      else if (Date.now() - t0 >= durationMs) stopped = 'time';
      else if (counts.frames >= maxFrames) stopped = 'frames';
      return stopped !== undefined;
    };
    const finding = (f: Finding) => {
      if (findings.length < 20) findings.push(f);
    };

    const goodLoop = (async () => {
      let k = 0;
      while (!stop()) {
        try {
          if ((await readHex(G, reader, goodAddr, GOOD_HELD * PAGE_SIZE)) !== pagesHex(0, GOOD_HELD))
            throw new Error(`${GOOD} read other bytes through its attachment`);
          goodOps.reads++;
          const p = k++ % NPAGES;
          if ((await readHex(H, local, localAddr + p * PAGE_SIZE, PAGE_SIZE)) !== pagesHex(p, 1))
            throw new Error(`the local attachment read other bytes at page ${p}`);
          goodOps.localReads++;
          await goodCycle();
          goodOps.cycles++;
        } catch (e) {
          goodOps.failures++;
          finding({
            what: 'a legitimate operation of the good peer failed',
            error: String((e as Error).message ?? e),
          });
          return;
        }
        await sleep(5);
      }
    })();

    let epoch = Date.now();
    const bootEpoch = epoch;
    let lastProgress = Date.now();
    const send = (s: RawSession, g: Generated) => {
      const i = counts.frames++;
      ring.push({ i, cls: g.cls, kind: g.kind, frame: g.frame });
      if (ring.length > 4096) ring.splice(0, 1024);
      inc(byClass, g.cls);
      inc(byKind, `${g.cls}/${g.kind}`);
      counts.messages += g.pred.messages;
      counts.requests += g.pred.requests;
      counts.errorsExpected += g.pred.replies.length;
      if (g.pred.rejected) counts.rejectedFrames++;
      s.tokens += g.pred.tokens;
      counts.tokens += g.pred.tokens;
      s.rejections += g.pred.tokens;
      s.expect(g.pred, i);
      s.ws.send(g.frame, { binary: typeof g.frame !== 'string' });
    };
    const onMessage = (s: RawSession) => (m: Msg) => {
      if (m.t !== 'error') {
        finding({
          what: 'the instance sent something other than an error',
          message: show(m),
          recent: ring.slice(-3).map((r) => framesOf(r.i)),
        });
        return;
      }
      counts.errorsReceived++;
      const code = String(m.code);
      inc(codes, code);
      if (!isWireErrorCode(m.code))
        finding({ what: 'an error without a stable wire code', message: show(m) });
      const e = s.take(m.re, code);
      if (!e) {
        finding({
          what: 'an error reply nobody expected (a second reply?)',
          message: show(m),
          recent: ring.slice(-3).map((r) => framesOf(r.i)),
        });
        return;
      }
      s.pending--;
      if (!e.codes.includes(code))
        finding({
          what: 'a frame answered with another code than predicted',
          expected: e.codes,
          message: show(m),
          ...framesOf(e.frame),
        });
    };
    const unanswered = (s: RawSession) =>
      [...s.noRe, ...[...s.byRe.values()].flat()]
        .slice(0, 5)
        .map((e) => ({ expected: e.codes, ...framesOf(e.frame) }));

    while (!stop()) {
      // ---- a new authenticated session
      epoch = Math.max(Date.now(), epoch + 1);
      let s: RawSession;
      try {
        s = await openSession(home.peerUrl, keyBytes, epoch, bootEpoch);
      } catch (e) {
        counts.handshakeFailures++;
        if (counts.handshakeFailures > 20) {
          finding({ what: 'the fuzzer cannot authenticate any more', error: String((e as Error).message) });
          break;
        }
        await sleep(50);
        continue;
      }
      counts.sessions++;
      if (counts.sessions > 1) counts.reconnects++;
      s.onMessage = onMessage(s);
      let tail: Generated | undefined;
      // ---- exact accounting while the malformed budget lasts
      while (!stop()) {
        let reqs = 0;
        let n = 0;
        while (n < WINDOW_FRAMES && reqs < WINDOW_REQUESTS && counts.frames < maxFrames) {
          const g = gen.next(s.id);
          if (s.tokens + g.pred.tokens > EXACT_TOKENS) {
            if (g.pred.rejected) tail = g;
            break;
          }
          send(s, g);
          reqs += g.pred.requests;
          n++;
        }
        counts.windows++;
        const settled = await s.until(
          () => s.pending === 0 || s.closed !== undefined || findings.length > 0,
          SETTLE_MS,
        );
        if (findings.length > 0) break;
        if (s.closed) {
          finding({
            what: 'the link closed while the malformed budget was not spent',
            close: s.closed,
            tokens: s.tokens,
            unanswered: unanswered(s),
          });
          break;
        }
        if (!settled) {
          finding({
            what: `frames unanswered after ${SETTLE_MS} ms (a hang)`,
            pending: s.pending,
            unanswered: unanswered(s),
          });
          break;
        }
        if (tail || s.tokens >= EXACT_TOKENS) break;
        await new Promise((r) => setImmediate(r));
      }
      if (findings.length === 0 && !stopped && (tail || s.tokens >= EXACT_TOKENS)) {
        // ---- spend the rest of the budget: the instance must close the link for abuse (4002)
        let sent = 0;
        if (tail) {
          send(s, tail);
          sent++;
        }
        while (!s.closed && sent < MAX_TAIL_FRAMES && findings.length === 0 && counts.frames < maxFrames) {
          for (
            let i = 0;
            i < 4 && s.ws.readyState === WebSocket.OPEN && counts.frames < maxFrames;
            i++, sent++
          )
            send(s, gen.nextRejected(s.id));
          await s.until(() => s.closed !== undefined, 25);
        }
        counts.tailFrames += sent;
        // at the frame cap the budget may last: then every frame sent is answered, and we close
        const capped = counts.frames >= maxFrames;
        await s.until(
          () => s.closed !== undefined || findings.length > 0 || (capped && s.pending === 0),
          capped ? SETTLE_MS : 5000,
        );
        const closed = s.closed as RawSession['closed'];
        if (closed?.code === CloseCode.ABUSE) {
          counts.abuseCloses++;
          rejectionsBeforeAbuse.push(s.rejections);
          // the error of the frame that spent the budget, and frames after it, are not sent
          counts.tailUnanswered += s.pending;
        } else if (closed)
          finding({ what: 'the instance closed the link with another code than 4002', close: closed });
        else if (!capped || s.pending > 0)
          finding({
            what: `no abuse close after ${sent} invalid frames past the budget`,
            tokens: s.tokens,
            pending: s.pending,
          });
      } else if (findings.length === 0 && !s.closed) {
        // stopped: catch any late extra reply, then close normally
        await s.until(() => s.closed !== undefined, 250);
        if (s.pending > 0 && !s.closed)
          finding({ what: 'frames unanswered at the end', pending: s.pending, unanswered: unanswered(s) });
      }
      // every session ends here: closed by the instance, or now by us
      if (!s.closed) {
        s.ws.close(1000, 'fuzz over');
        await s.until(() => s.closed !== undefined, 5000);
      }
      const closed = s.closed as RawSession['closed'];
      if (closed) inc(closes, String(closed.code));
      else s.ws.terminate();
      if (Date.now() - lastProgress > 10_000) {
        lastProgress = Date.now();
        log(
          `${counts.frames} frames, ${counts.sessions} sessions, ${counts.abuseCloses} abuse closes, good peer ${goodOps.reads} reads / ${goodOps.cycles} cycles`,
        );
      }
    }
    stop();
    const elapsedMs = Date.now() - t0;
    await goodLoop;
    loopDelay.disable();
    log(`storm over (${stopped}): ${counts.frames} frames in ${elapsedMs} ms; settling`);

    // ---- the last fuzzer session is fenced and its lease waited out; then the state is compared
    let fuzzerPeer: unknown;
    const fenced = async () => {
      for (let i = 0; i < 400; i++) {
        const st = await H.get<StatusView & { peers: unknown[] }>('/status');
        const p = st.driver.peers.find((x) => x.node === FUZZER);
        fuzzerPeer = { driver: p, net: st.peers.find((x) => (x as { node?: string }).node === FUZZER) };
        if (p && p.fencedBelow > epoch && p.state !== 'up') return true;
        await sleep(25);
      }
      return false;
    };
    const lastFenced = await fenced();
    await sleep(home.config.leaseMs + Math.max(50, home.config.leaseMs / 10) + 500);
    let healthy = false;
    try {
      healthy = (await H.get<{ ok: boolean }>('/healthz')).ok === true;
    } catch {
      healthy = false;
    }
    const after = await snapshot();
    const warningsAtEnd = Object.fromEntries(Object.entries(logs.warnings).sort((a, b) => b[1] - a[1]));

    // ---- checks
    check(
      'no crash',
      crashes.length === 0 && healthy,
      `${crashes.length} uncaught exceptions/rejections; /healthz ${healthy ? 'ok' : 'NOT ok'}`,
    );
    check(
      'no finding',
      findings.length === 0,
      findings.length ? findings.map((f) => f.what).join('; ') : 'every frame answered as predicted',
    );
    check(
      'one error per rejected frame and per request',
      findings.length === 0 && counts.errorsReceived + counts.tailUnanswered === counts.errorsExpected,
      `${counts.errorsReceived} errors received of ${counts.errorsExpected} expected; ${counts.tailUnanswered} not sent because the link was closed for abuse`,
    );
    const stateDiff = diffObjects(before.state, after.state);
    check(
      'state unchanged',
      stateDiff.length === 0,
      stateDiff.length
        ? stateDiff.slice(0, 10).join('; ')
        : 'driver, kernel, directory and segment bytes as before',
    );
    check(
      'kernel invariants hold',
      after.invariants.home.length === 0 && after.invariants.good.length === 0,
      after.invariants.home.length + after.invariants.good.length === 0
        ? `${HOME} and ${GOOD}: check() found nothing`
        : [...after.invariants.home, ...after.invariants.good].slice(0, 5).join('; '),
    );
    check(
      'segment bytes unchanged',
      after.state.segmentBytes === 'as written',
      `${NPAGES} pages read through the owner: ${after.state.segmentBytes}`,
    );
    check(
      'good peer never fenced',
      after.goodEpochAtHome === before.goodEpochAtHome &&
        after.homeEpochAtGood === before.homeEpochAtGood &&
        after.homeCounters.fences - before.homeCounters.fences === counts.sessions &&
        (after.goodCounters.fences ?? 0) === (before.goodCounters.fences ?? 0),
      `${GOOD} session epoch at ${HOME} ${before.goodEpochAtHome} → ${after.goodEpochAtHome}; ${HOME} at ${GOOD} ${before.homeEpochAtGood} → ${after.homeEpochAtGood}; fences at ${HOME} +${after.homeCounters.fences - before.homeCounters.fences} (${counts.sessions} fuzzer sessions), at ${GOOD} +${(after.goodCounters.fences ?? 0) - (before.goodCounters.fences ?? 0)}`,
    );
    check(
      'good peer served',
      goodOps.failures === 0 && goodOps.reads > 0 && goodOps.cycles > 0,
      `${goodOps.reads} reads of its mapping, ${goodOps.cycles} get/attach/read/detach/release cycles, ${goodOps.localReads} local reads at ${HOME}, ${goodOps.failures} failures`,
    );
    check(
      'pins == unpins',
      after.homeCounters.pins === after.homeCounters.unpins &&
        after.goodCounters.pins === after.goodCounters.unpins,
      `${HOME} ${after.homeCounters.pins} = ${after.homeCounters.unpins}, ${GOOD} ${after.goodCounters.pins} = ${after.goodCounters.unpins}`,
    );
    check(
      'no reverse-map entry of the fuzzer',
      !after.fuzzerInRmap,
      after.fuzzerInRmap ? `${FUZZER} maps a page` : `no page of ${segid} names ${FUZZER}`,
    );
    const m = deltas(before.metrics, after.metrics);
    const peerRefusals = Object.entries(m).filter(([k]) => /^refusals\.peer_/.test(k));
    check(
      'refusals counted',
      (m['refusals.abuse_close'] ?? 0) === counts.abuseCloses &&
        (m['refusals.frame_rejected'] ?? 0) >= counts.tokens - counts.tailUnanswered &&
        (m['refusals.frame_rejected'] ?? 0) <= counts.tokens &&
        peerRefusals.length === 0,
      `abuse_close +${m['refusals.abuse_close'] ?? 0} (${counts.abuseCloses} seen), frame_rejected +${m['refusals.frame_rejected'] ?? 0} (${counts.tokens} sent, ${counts.tailUnanswered} after the budget ran out), peer refusals ${peerRefusals.length ? JSON.stringify(Object.fromEntries(peerRefusals)) : 'none'}`,
    );
    const homeMoved = deltas(before.homeCounters, after.homeCounters);
    check(
      'driver refusals counted',
      (homeMoved['refused.no_permit'] ?? 0) === (codes.E_NO_PERMIT ?? 0) &&
        (homeMoved['refused.access_denied'] ?? 0) === (codes.E_PERM ?? 0),
      `no_permit +${homeMoved['refused.no_permit'] ?? 0} (${codes.E_NO_PERMIT ?? 0} E_NO_PERMIT received), access_denied +${homeMoved['refused.access_denied'] ?? 0} (${codes.E_PERM ?? 0} E_PERM received)`,
    );
    const goodMoved = deltas(before.goodCounters, after.goodCounters);
    const unexpectedHome = Object.keys(homeMoved).filter((k) => !HOME_COUNTERS_MAY_MOVE.has(k));
    const unexpectedGood = Object.keys(goodMoved).filter((k) => !GOOD_COUNTERS_MAY_MOVE.has(k));
    check(
      'only the expected driver counters moved',
      unexpectedHome.length === 0 && unexpectedGood.length === 0,
      unexpectedHome.length + unexpectedGood.length === 0
        ? `${HOME}: ${JSON.stringify(homeMoved)}; ${GOOD}: ${JSON.stringify(goodMoved)}`
        : `unexpected: ${HOME} ${unexpectedHome.map((k) => `${k} +${homeMoved[k]}`).join(', ')}; ${GOOD} ${unexpectedGood.map((k) => `${k} +${goodMoved[k]}`).join(', ')}`,
    );
    check(
      'no error-level log line',
      logs.errors.length === 0,
      logs.errors.length ? logs.errors.slice(0, 3).join(' | ') : 'none',
    );
    check(
      'fuzzer session fenced at the end',
      lastFenced,
      `${lastFenced ? `${HOME} fenced ${FUZZER}'s last session (epoch ${epoch})` : `not fenced in 10 s (last epoch ${epoch})`}: ${JSON.stringify(fuzzerPeer)}`,
    );

    const ok = checks.every((c) => c.ok);
    const min = rejectionsBeforeAbuse.length ? Math.min(...rejectionsBeforeAbuse) : null;
    return {
      ok,
      seed: o.seed,
      limits: { durationMs, maxFrames },
      stoppedBy: stopped,
      durationMs: elapsedMs,
      instance: {
        node: HOME,
        goodPeer: GOOD,
        fuzzer: FUZZER,
        segid,
        pages: NPAGES,
        mode: `0${MODE.toString(8)}`,
        heartbeatMs: home.config.heartbeatMs,
        missedBeats: home.config.missedBeats,
        leaseMs: home.config.leaseMs,
      },
      /** Everything runs in one process: how long its event loop was held (ms). */
      eventLoopDelayMs: {
        p50: Math.round(loopDelay.percentile(50) / 1e6),
        p99: Math.round(loopDelay.percentile(99) / 1e6),
        max: Math.round(loopDelay.max / 1e6),
      },
      frames: {
        total: counts.frames,
        perSec: Math.round((counts.frames / elapsedMs) * 1000),
        messages: counts.messages,
        requests: counts.requests,
        rejected: counts.rejectedFrames,
        byClass,
        byKind: Object.fromEntries(Object.entries(byKind).sort((a, b) => b[1] - a[1])),
        unsafeSkipped: gen.unsafeSkipped,
        oversizedSkipped: gen.oversized,
      },
      replies: {
        expected: counts.errorsExpected,
        received: counts.errorsReceived,
        notSentAfterAbuseClose: counts.tailUnanswered,
        codes: Object.fromEntries(Object.entries(codes).sort((a, b) => b[1] - a[1])),
      },
      sessions: {
        opened: counts.sessions,
        reconnects: counts.reconnects,
        abuseCloses: counts.abuseCloses,
        closes,
        handshakeFailures: counts.handshakeFailures,
        windows: counts.windows,
        budgetFramesAfterExact: counts.tailFrames,
        minRejectionsBeforeAbuseClose: min,
      },
      goodPeer: { ...goodOps, epochAtHome: { before: before.goodEpochAtHome, after: after.goodEpochAtHome } },
      counters: {
        home: homeMoved,
        good: goodMoved,
        homeKernel: deltas(before.homeKernelCounters, after.homeKernelCounters),
        metrics: m,
        /** Every kind of xpmesh_refusals_total, moved or not. */
        refusals: Object.fromEntries(
          Object.keys({ ...before.metrics, ...after.metrics })
            .filter((k) => k.startsWith('refusals.'))
            .map((k) => [k.slice('refusals.'.length), (after.metrics[k] ?? 0) - (before.metrics[k] ?? 0)]),
        ),
      },
      /** Log lines of both instances up to the final snapshot (not the shutdown's). */
      logs: { errors: logs.errors.length, warnings: warningsAtEnd },
      checks,
      findings,
      crashes,
    };
  } catch (e) {
    return {
      ok: false,
      seed: o.seed,
      error: String((e as Error)?.stack ?? e),
      checks,
      findings,
      crashes,
    };
  } finally {
    await good?.instance.stop('fuzz over').catch(() => undefined);
    await home?.instance.stop('fuzz over').catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUnhandled);
  }
}

// ---- CLI -----------------------------------------------------------------------------------------

const HELP = `node packages/testkit/dist/fault/fuzz.js --duration-ms N [--max-frames N] [--seed S] [--json FILE]

Fuzzes a running instance (booted in this process, with a second instance as a well-behaved peer)
with random, mutated and structurally valid but meaningless frames from an authenticated peer, for
at most --duration-ms (≤ ${FUZZ_LIMITS.maxDurationMs}) and --max-frames (≤ ${FUZZ_LIMITS.maxFrames}).
Prints one JSON summary; exit 0 iff every check held.

  --duration-ms N     how long the storm lasts (default ${FUZZ_OPTIONS.durationMs.def})
  --max-frames N      at most this many frames (default ${FUZZ_OPTIONS.maxFrames.def})
  --seed S            seed of the frame generator (default ${FUZZ_OPTIONS.seed.def})
  --json FILE         also write the summary to FILE
  --quiet             no progress on stderr`;

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const v = parseToolArgs(
    argv,
    {
      'duration-ms': { type: 'string' },
      'max-frames': { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'string' },
      quiet: { type: 'boolean' },
    },
    HELP,
  );
  if (typeof v === 'number') return v;
  const opt = (o: IntOptionSpec) => intOptionOf(v, o);
  let o: FuzzOptions & { json?: string };
  try {
    o = {
      durationMs: opt(FUZZ_OPTIONS.durationMs),
      maxFrames: opt(FUZZ_OPTIONS.maxFrames),
      seed: opt(FUZZ_OPTIONS.seed),
      json: typeof v.json === 'string' ? v.json : undefined,
      quiet: v.quiet === true,
    };
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  return finishTool(await fuzzInstance(o), o.json);
}

runIfMain(import.meta.url, () => main());
