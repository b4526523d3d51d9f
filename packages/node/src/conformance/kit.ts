/**
 * The conformance kit: the rules of docs/protocol.md checked over the wire against ANY
 * implementation of a home instance, given its address, the cluster key and a segment it exports
 * (at least 2 pages, mode 0666). Each rule opens its own sessions (random node ids, admitted by
 * key, docs/protocol.md §0), says which section it checks, and passes or fails with a reason.
 * Rules never depend on wall-clock speed except through the documented deadlines, with slack.
 */
import { randomBytes } from 'node:crypto';
import { DEFAULT_LEASE_MS, defaultLeaseMarginMs, TIMING_DEFAULTS } from '@xpmesh/protocol';
import { frame, type Handshake, handshake, type Msg, RawSocket } from './session.js';

export interface KitOptions {
  url: string;
  key: string;
  segid: string;
  /** The home's invalidate-ack deadline (bounds for the fencing rules). */
  ackTimeoutMs?: number;
  /** The home's lease on remote copies (a fenced mapper's copies count as gone after lease + margin). */
  leaseMs?: number;
  handshakeTimeoutMs?: number;
  /** Only rules whose id starts with one of these. */
  only?: string[];
  /** Per-reply deadline for ordinary requests. */
  replyMs?: number;
}

export interface RuleResult {
  rule: string;
  section: string;
  title: string;
  ok: boolean;
  detail: string;
  ms: number;
}

class RuleFailed extends Error {}

function check(cond: unknown, why: string): asserts cond {
  if (!cond) throw new RuleFailed(why);
}

const show = (m: Msg | undefined): string => {
  if (m === undefined) return 'nothing';
  return JSON.stringify(m, (_k, v) => (v instanceof Uint8Array ? `<${v.byteLength} bytes>` : v)).slice(
    0,
    200,
  );
};

const PAGE = 4096;

interface Held {
  access: 'r' | 'rw';
  data: Uint8Array;
  grant: number;
  version: number;
}

type AckMode = 'normal' | 'error' | 'silent';

/** A kit session acting as an attacher: it holds pages and answers invalidate per §4.1. */
class Mapper {
  readonly held = new Map<number, Held>();
  readonly invalidates: Array<{ at: number; m: Msg; ackedAt?: number }> = [];
  ackMode: AckMode = 'normal';
  ackDelayMs = 0;
  apid = '';

  constructor(
    readonly s: RawSocket,
    readonly name: string,
    readonly server: string,
    private readonly replyMs: number,
  ) {
    s.onRequest = async (m) => {
      const rec: { at: number; m: Msg; ackedAt?: number } = { at: performance.now(), m };
      this.invalidates.push(rec);
      if (this.ackMode === 'silent') return undefined;
      if (this.ackMode === 'error')
        return { t: 'error', code: 'E_INTERNAL', message: 'conformance kit: refusing' };
      if (this.ackDelayMs) await new Promise((r) => setTimeout(r, this.ackDelayMs));
      const upTo = Number(m.upTo);
      const dirty: Array<{ page: number; version: number; data: Uint8Array }> = [];
      for (const [first, count] of (m.ranges as Array<[number, number]>) ?? []) {
        for (let p = first; p < first + count; p++) {
          const h = this.held.get(p);
          if (!h || h.grant > upTo) continue;
          if (m.writeback === true && h.access === 'rw')
            dirty.push({ page: p, version: h.version, data: h.data });
          if (m.downgrade === true) h.access = 'r';
          else this.held.delete(p);
        }
      }
      rec.ackedAt = performance.now();
      return { t: 'invalidate-ack', dirty };
    };
  }

  async get(segid: string, access: 'r' | 'rw'): Promise<Msg> {
    const r = await this.s.request({ t: 'get', segid, access, uid: 1000, gid: 1000 }, this.replyMs);
    if (r.t === 'get-ok') this.apid = String(r.apid);
    return r;
  }

  /** map; on map-ok the pages are held (only those whose grant no invalidate has covered yet). */
  async map(page: number, count: number, access: 'r' | 'rw', timeoutMs = this.replyMs): Promise<Msg> {
    const sentAt = this.invalidates.length;
    const r = await this.s.request({ t: 'map', apid: this.apid, page, count, access }, timeoutMs);
    if (r.t === 'map-ok' && Array.isArray(r.pages)) {
      const grants = (r.grants as number[]) ?? [];
      (r.pages as Array<{ page: number; version: number; data: Uint8Array }>).forEach((pd, i) => {
        const grant = grants[i] ?? 0;
        // an invalidate that arrived meanwhile and covers this grant: drop it (§8)
        const covered = this.invalidates
          .slice(sentAt)
          .some((x) => Number(x.m.upTo) >= grant && covers(x.m, pd.page));
        if (!covered)
          this.held.set(pd.page, { access, data: new Uint8Array(pd.data), grant, version: pd.version });
      });
    }
    return r;
  }

  /** Give everything back (detach with the data of pages held rw, release) so later rules start clean. */
  async cleanup(): Promise<void> {
    if (this.s.closedWith) return;
    const pages = [...this.held.keys()].sort((a, b) => a - b);
    if (pages.length && this.apid) {
      const dirty = pages
        .filter((p) => this.held.get(p)?.access === 'rw')
        .map((p) => ({ page: p, version: this.held.get(p)!.version, data: this.held.get(p)!.data }));
      await this.s.request(
        { t: 'detach', apid: this.apid, ranges: pages.map((p) => [p, 1]), dirty },
        this.replyMs,
      );
      this.held.clear();
    }
    if (this.apid) await this.s.request({ t: 'release', apid: this.apid }, this.replyMs);
    this.s.close();
  }
}

function covers(inv: Msg, page: number): boolean {
  return ((inv.ranges as Array<[number, number]>) ?? []).some(([f, n]) => page >= f && page < f + n);
}

interface Rule {
  id: string;
  section: string;
  title: string;
  run(k: Kit): Promise<string | undefined>;
}

export class Kit {
  readonly ackTimeoutMs: number;
  readonly leaseMs: number;
  readonly handshakeTimeoutMs: number;
  readonly replyMs: number;
  /** The home's node id (learned from its welcome). */
  server = '';
  private readonly sockets: RawSocket[] = [];
  private readonly mappers: Mapper[] = [];

  constructor(readonly o: KitOptions) {
    this.ackTimeoutMs = o.ackTimeoutMs ?? TIMING_DEFAULTS.ackTimeoutMs;
    this.leaseMs = o.leaseMs ?? DEFAULT_LEASE_MS;
    this.handshakeTimeoutMs = o.handshakeTimeoutMs ?? TIMING_DEFAULTS.handshakeTimeoutMs;
    this.replyMs = o.replyMs ?? 5000;
  }

  /** Longest a fenced mapper can hold up an invalidation: ack deadline + lease + margin. */
  get fenceBoundMs(): number {
    return this.ackTimeoutMs + this.leaseMs + defaultLeaseMarginMs(this.leaseMs);
  }

  newId(role: string): string {
    return `kit-${role}-${randomBytes(4).toString('hex')}`;
  }

  async hs(o: Parameters<typeof handshake>[2]): Promise<Handshake> {
    const h = await handshake(this.o.url, this.o.key, o, this.handshakeTimeoutMs + 2000);
    this.sockets.push(h.socket);
    return h;
  }

  /** A session that is up (or the rule fails). */
  async session(role: string): Promise<RawSocket> {
    const h = await this.hs({ node: this.newId(role) });
    check(h.up, `handshake failed: ${show(h.error)} close ${h.close?.code ?? '-'}`);
    this.server ||= String(h.welcome?.node);
    return h.socket;
  }

  async mapper(role: string): Promise<Mapper> {
    const s = await this.session(role);
    const m = new Mapper(s, role, this.server, this.replyMs);
    this.mappers.push(m);
    return m;
  }

  /** One error message answering a bad frame (with `re` = id when given). */
  async errorFor(s: RawSocket, id: number | undefined, ms = this.replyMs): Promise<Msg | undefined> {
    return s.next((m) => m.t === 'error' && (id === undefined || m.re === id || m.re === undefined), ms);
  }

  async cleanup(): Promise<void> {
    for (const m of this.mappers.splice(0)) await m.cleanup().catch(() => undefined);
    for (const s of this.sockets.splice(0)) s.close();
  }
}

async function badRequest(k: Kit, value: Msg | Msg[], want: string, id?: number): Promise<string> {
  const s = await k.session('bad');
  s.send(value);
  const e = await k.errorFor(s, id);
  check(e?.code === want, `expected error ${want}, got ${show(e)}`);
  if (id !== undefined) check(e?.re === id, `the error should carry re=${id}: ${show(e)}`);
  // a rejected frame changes nothing and the session stays up
  const ok = await s.request({ t: 'get', segid: k.o.segid, access: 'r', uid: 1000, gid: 1000 }, k.replyMs);
  check(ok.t === 'get-ok', `after the rejected frame the session should still work: get → ${show(ok)}`);
  await s.request({ t: 'release', apid: ok.apid }, k.replyMs);
  return `error ${want}${id !== undefined ? ` re=${id}` : ''}`;
}

export const RULES: Rule[] = [
  // ---- handshake and authentication (§0, §5) ----------------------------------------------------
  {
    id: 'hs-ok',
    section: '§0 §5',
    title: 'an unknown node id with the key is admitted; welcome proves the key; version 2 chosen',
    async run(k) {
      const h = await k.hs({ node: k.newId('hello') });
      check(h.welcome, `no welcome: ${show(h.error)}`);
      check(h.welcome.version === 2, `welcome.version ${String(h.welcome.version)}`);
      check(h.serverProved, 'welcome.proof does not verify with the key (HMAC of §5)');
      check(h.up, `no ready after a correct auth: ${show(h.error)} close ${h.close?.code ?? '-'}`);
      k.server ||= String(h.welcome.node);
      return `server ${k.server}`;
    },
  },
  {
    id: 'hs-bad-proof',
    section: '§5',
    title: 'a wrong client proof gets error E_AUTH and close 4003',
    async run(k) {
      const h = await k.hs({ node: k.newId('proof'), badProof: true });
      check(!h.up, 'the session came up with a wrong proof');
      check(h.error?.code === 'E_AUTH', `expected error E_AUTH, got ${show(h.error)}`);
      check(h.close?.code === 4003, `expected close 4003, got ${h.close?.code ?? 'none'}`);
      return 'E_AUTH, 4003';
    },
  },
  {
    id: 'hs-version',
    section: '§5 §10',
    title: 'no common version: error E_VERSION and close 4001',
    async run(k) {
      const h = await k.hs({ node: k.newId('version'), versions: [1] });
      check(h.error?.code === 'E_VERSION', `expected error E_VERSION, got ${show(h.error)}`);
      check(h.close?.code === 4001, `expected close 4001, got ${h.close?.code ?? 'none'}`);
      return 'E_VERSION, 4001';
    },
  },
  {
    id: 'hs-own-id',
    section: '§5',
    title: "a hello with the server's own node id is refused with close 4010",
    async run(k) {
      check(k.server, 'server id unknown (hs-ok must run first)');
      const h = await k.hs({ node: k.server });
      check(!h.up, 'the session came up');
      check(h.close?.code === 4010, `expected close 4010, got ${h.close?.code ?? 'none'} (${show(h.error)})`);
      return '4010';
    },
  },
  {
    id: 'hs-first-frame',
    section: '§5',
    title: 'a first frame other than hello gets one error and close 4000',
    async run(k) {
      const s = await RawSocket.open(k.o.url, 5000);
      try {
        s.send({ t: 'get', id: 1, segid: k.o.segid, access: 'r', uid: 0, gid: 0 });
        const e = await s.next(() => true, k.replyMs);
        check(e?.t === 'error', `expected an error, got ${show(e)}`);
        const c = await s.closeWithin(3000);
        check(c?.code === 4000, `expected close 4000, got ${c?.code ?? 'none'}`);
        return `error ${String(e.code)}, 4000`;
      } finally {
        s.close();
      }
    },
  },
  {
    id: 'hs-timeout',
    section: '§5',
    title: 'a handshake that does not finish in handshakeTimeoutMs is closed 4004',
    async run(k) {
      const s = await RawSocket.open(k.o.url, 5000);
      try {
        const t0 = performance.now();
        const c = await s.closeWithin(k.handshakeTimeoutMs + 3000);
        check(
          c?.code === 4004,
          `expected close 4004 within ${k.handshakeTimeoutMs} ms, got ${c?.code ?? 'none'}`,
        );
        return `4004 after ${Math.round(performance.now() - t0)} ms`;
      } finally {
        s.close();
      }
    },
  },
  // ---- framing and bad input (§1, §2, §9) --------------------------------------------------------
  {
    id: 'bad-text-frame',
    section: '§1',
    title: 'a text frame gets E_MALFORMED; nothing changes',
    async run(k) {
      const s = await k.session('text');
      s.sendBytes('{"t":"ok"}', false);
      const e = await k.errorFor(s, undefined);
      check(e?.code === 'E_MALFORMED', `expected E_MALFORMED, got ${show(e)}`);
      return 'E_MALFORMED';
    },
  },
  {
    id: 'bad-trailing-bytes',
    section: '§1',
    title: 'bytes after the MessagePack value: E_MALFORMED',
    async run(k) {
      const s = await k.session('trailing');
      const f = frame({ t: 'get', id: 5, segid: k.o.segid, access: 'r', uid: 1000, gid: 1000 });
      s.sendBytes(Buffer.concat([f, Buffer.from([0xc0])]));
      const e = await k.errorFor(s, undefined);
      check(e?.code === 'E_MALFORMED', `expected E_MALFORMED, got ${show(e)}`);
      const stray = await s.next((m) => m.t === 'get-ok', 300);
      check(!stray, 'the request inside the rejected frame was acted on');
      return 'E_MALFORMED, not acted on';
    },
  },
  {
    id: 'bad-unknown-type',
    section: '§2',
    title: 'an unknown message type gets E_UNKNOWN_TYPE',
    async run(k) {
      const s = await k.session('unknown');
      s.send({ t: 'teleport', id: 9 });
      const e = await k.errorFor(s, undefined);
      check(e?.code === 'E_UNKNOWN_TYPE', `expected E_UNKNOWN_TYPE, got ${show(e)}`);
      return 'E_UNKNOWN_TYPE';
    },
  },
  {
    id: 'bad-nil',
    section: '§2',
    title: 'nil in place of an absent optional field is refused (E_MALFORMED, re = id)',
    run: (k) =>
      badRequest(
        k,
        { t: 'get', id: 11, cid: null, segid: k.o.segid, access: 'r', uid: 1000, gid: 1000 },
        'E_MALFORMED',
        11,
      ),
  },
  {
    id: 'bad-number-range',
    section: '§2',
    title: 'a number outside its type (uint32 ≥ 2^32) is E_MALFORMED',
    run: (k) =>
      badRequest(
        k,
        { t: 'map', id: 12, apid: `${k.server}:a1`, page: 2 ** 32, count: 1, access: 'r' },
        'E_MALFORMED',
        12,
      ),
  },
  {
    id: 'bad-negative',
    section: '§2',
    title: 'a negative number is E_MALFORMED',
    run: (k) =>
      badRequest(
        k,
        { t: 'map', id: 13, apid: `${k.server}:a1`, page: -1, count: 1, access: 'r' },
        'E_MALFORMED',
        13,
      ),
  },
  {
    id: 'bad-count-limit',
    section: '§2 limits.md',
    title: 'a count over maxPagesPerMessage (65) is E_TOO_LARGE',
    run: (k) =>
      badRequest(
        k,
        { t: 'map', id: 14, apid: `${k.server}:a1`, page: 0, count: 65, access: 'r' },
        'E_TOO_LARGE',
        14,
      ),
  },
  {
    id: 'bad-str-for-bin',
    section: '§2',
    title: 'page data as str instead of bin is E_MALFORMED',
    run: (k) =>
      badRequest(
        k,
        {
          t: 'detach',
          id: 15,
          apid: `${k.server}:a1`,
          ranges: [[0, 1]],
          dirty: [{ page: 0, version: 0, data: 'x'.repeat(PAGE) }],
        },
        'E_MALFORMED',
        15,
      ),
  },
  {
    id: 'bad-batch-element',
    section: '§1',
    title: 'a batch with one invalid element is rejected whole: nothing in it is acted on',
    async run(k) {
      const s = await k.session('batch');
      s.send([
        { t: 'get', id: 21, segid: k.o.segid, access: 'r', uid: 1000, gid: 1000 },
        { t: 'map', id: 22, apid: 'x', page: 'zero', count: 1, access: 'r' },
      ]);
      const e = await k.errorFor(s, undefined);
      check(e?.t === 'error', `expected one error, got ${show(e)}`);
      const stray = await s.next((m) => m.t === 'get-ok' || m.t === 'error', 500);
      check(!stray, `the batch was acted on in part, or answered twice: ${show(stray)}`);
      return `one error (${String(e.code)}), nothing acted on`;
    },
  },
  {
    id: 'bad-batch-size',
    section: '§1 limits.md',
    title: 'a batch of more than maxBatch (256) messages is E_TOO_LARGE',
    async run(k) {
      const s = await k.session('bigbatch');
      s.send(
        Array.from({ length: 257 }, () => ({
          t: 'segment-gone',
          segid: `${k.server}:999999`,
          reason: 'remove',
        })),
      );
      const e = await k.errorFor(s, undefined);
      check(e?.code === 'E_TOO_LARGE', `expected E_TOO_LARGE, got ${show(e)}`);
      return 'E_TOO_LARGE';
    },
  },
  {
    id: 'bad-abuse',
    section: '§9',
    title: 'more than malformedBurst (32) rejected frames in a burst close the session 4002',
    async run(k) {
      const s = await k.session('abuse');
      for (let i = 0; i < 48; i++) s.sendBytes(Buffer.from([0xc1]));
      const c = await s.closeWithin(5000);
      check(c?.code === 4002, `expected close 4002, got ${c?.code ?? 'none'}`);
      return '4002';
    },
  },
  {
    id: 'bad-frame-size',
    section: '§1 limits.md',
    title: 'a frame over maxFrameBytes (1 MiB) closes the connection 1009',
    async run(k) {
      const s = await k.session('huge');
      s.sendBytes(Buffer.alloc((1 << 20) + 1));
      const c = await s.closeWithin(5000);
      check(c?.code === 1009, `expected close 1009, got ${c?.code ?? 'none'}`);
      return '1009';
    },
  },
  // ---- get / map (§4, §4.1) ------------------------------------------------------------------------
  {
    id: 'get-ok',
    section: '§4.1',
    title: 'get answers get-ok with an apid of the home, the size and the access',
    async run(k) {
      const m = await k.mapper('get');
      const r = await m.get(k.o.segid, 'rw');
      check(r.t === 'get-ok', `expected get-ok, got ${show(r)} (the segment must be mode 0666)`);
      check(
        new RegExp(`^${k.server.replace(/[.]/g, '\\.')}:a\\d{1,15}$`).test(String(r.apid)),
        `apid ${String(r.apid)}`,
      );
      check(
        typeof r.size === 'number' && r.size >= 2 * PAGE && r.size % PAGE === 0,
        `size ${String(r.size)} (need ≥ 2 pages)`,
      );
      check(r.access === 'rw', `access ${String(r.access)}`);
      return `${String(r.apid)}, ${r.size} bytes`;
    },
  },
  {
    id: 'get-no-segment',
    section: '§4.1 errors.md',
    title: 'get of an unknown segment: E_NO_SEGMENT',
    async run(k) {
      const m = await k.mapper('nosegment');
      const r = await m.get(`${k.server}:999999999999`, 'r');
      check(r.t === 'error' && r.code === 'E_NO_SEGMENT', `expected E_NO_SEGMENT, got ${show(r)}`);
      return 'E_NO_SEGMENT';
    },
  },
  {
    id: 'map-read',
    section: '§4.1',
    title: 'map r of pages 0-1: map-ok with the pages in order, 4096 bytes each, one grant id per page',
    async run(k) {
      const m = await k.mapper('map');
      check((await m.get(k.o.segid, 'r')).t === 'get-ok', 'get failed');
      const r = await m.map(0, 2, 'r');
      check(r.t === 'map-ok', `expected map-ok, got ${show(r)}`);
      const pages = r.pages as Array<{ page: number; version: number; data: Uint8Array }>;
      const grants = r.grants as number[];
      check(Array.isArray(pages) && pages.length >= 1 && pages.length <= 2, `pages ${show(r)}`);
      check(
        pages[0].page === 0 && (pages.length === 1 || pages[1].page === 1),
        'pages not in order from page 0',
      );
      check(
        pages.every((p) => p.data instanceof Uint8Array && p.data.byteLength === PAGE),
        'page data is not 4096 bytes of bin',
      );
      check(Array.isArray(grants) && grants.length === pages.length, 'grants and pages differ in length');
      check(r.access === 'r', `access ${String(r.access)}`);
      return `${pages.length} page(s), grants ${grants.join(',')}`;
    },
  },
  {
    id: 'map-range',
    section: '§4.1',
    title: 'map outside the segment: E_RANGE',
    async run(k) {
      const m = await k.mapper('range');
      const g = await m.get(k.o.segid, 'r');
      check(g.t === 'get-ok', 'get failed');
      const r = await m.map(Number(g.size) / PAGE, 1, 'r');
      check(r.t === 'error' && r.code === 'E_RANGE', `expected E_RANGE, got ${show(r)}`);
      return 'E_RANGE';
    },
  },
  {
    id: 'map-no-permit',
    section: '§4.1',
    title: 'map with an apid the home never gave: E_NO_PERMIT',
    async run(k) {
      const m = await k.mapper('nopermit');
      m.apid = `${k.server}:a999999999999`;
      const r = await m.map(0, 1, 'r');
      check(r.t === 'error' && r.code === 'E_NO_PERMIT', `expected E_NO_PERMIT, got ${show(r)}`);
      return 'E_NO_PERMIT';
    },
  },
  {
    id: 'map-access',
    section: '§4.1',
    title: 'map rw with a read-only permit: E_ACCESS',
    async run(k) {
      const m = await k.mapper('access');
      check((await m.get(k.o.segid, 'r')).t === 'get-ok', 'get failed');
      const r = await m.map(0, 1, 'rw');
      check(r.t === 'error' && r.code === 'E_ACCESS', `expected E_ACCESS, got ${show(r)}`);
      return 'E_ACCESS';
    },
  },
  {
    id: 'release',
    section: '§4.1',
    title: 'release answers ok; the permit is gone after it (E_NO_PERMIT)',
    async run(k) {
      const m = await k.mapper('release');
      check((await m.get(k.o.segid, 'r')).t === 'get-ok', 'get failed');
      const r = await m.s.request({ t: 'release', apid: m.apid }, k.replyMs);
      check(r.t === 'ok', `expected ok, got ${show(r)}`);
      const again = await m.map(0, 1, 'r');
      check(again.t === 'error' && again.code === 'E_NO_PERMIT', `expected E_NO_PERMIT, got ${show(again)}`);
      m.apid = '';
      return 'ok, then E_NO_PERMIT';
    },
  },
  // ---- coherence with several sessions (§4.1, §8) --------------------------------------------------
  {
    id: 'coherence-invalidate-before-grant',
    section: '§4.1 §8',
    title: 'a reader is invalidated (and has acked) before a writer gets rw; upTo covers its grant',
    async run(k) {
      const reader = await k.mapper('reader');
      const writer = await k.mapper('writer');
      check((await reader.get(k.o.segid, 'r')).t === 'get-ok', 'reader get failed');
      check((await writer.get(k.o.segid, 'rw')).t === 'get-ok', 'writer get failed');
      const rr = await reader.map(1, 1, 'r');
      check(rr.t === 'map-ok', `reader map: ${show(rr)}`);
      const readerGrant = (rr.grants as number[])[0];
      reader.ackDelayMs = 300; // a slow reader: the writer must wait for it
      const wr = await writer.map(1, 1, 'rw', k.fenceBoundMs + 5000);
      const grantedAt = performance.now();
      check(wr.t === 'map-ok', `writer map: ${show(wr)}`);
      const inv = reader.invalidates.find((x) => covers(x.m, 1));
      check(inv, 'the reader got no invalidate for page 1 before the writer was granted');
      check(
        inv.ackedAt !== undefined && inv.ackedAt <= grantedAt,
        'the writer was granted before the reader acked',
      );
      check(
        Number(inv.m.upTo) >= readerGrant,
        `upTo ${String(inv.m.upTo)} does not cover the reader's grant ${readerGrant}`,
      );
      check(!reader.held.has(1), 'the reader still holds page 1');
      const wg = (wr.grants as number[])[0];
      check(wg > readerGrant, `grant ids must increase: writer ${wg} after reader ${readerGrant}`);
      return `invalidate reason=${String(inv.m.reason)} upTo=${String(inv.m.upTo)} ≥ ${readerGrant}; writer grant ${wg}`;
    },
  },
  {
    id: 'coherence-recall-writeback',
    section: '§4.1',
    title: "a reader's map recalls the writer's copy with writeback; the reader gets the writer's data",
    async run(k) {
      const writer = await k.mapper('writer');
      const reader = await k.mapper('reader');
      check((await writer.get(k.o.segid, 'rw')).t === 'get-ok', 'writer get failed');
      check((await reader.get(k.o.segid, 'r')).t === 'get-ok', 'reader get failed');
      const wr = await writer.map(1, 1, 'rw', k.fenceBoundMs + 5000);
      check(wr.t === 'map-ok', `writer map: ${show(wr)}`);
      const before = (wr.pages as Array<{ version: number }>)[0].version;
      // the writer writes its copy (in memory: a mapper's writes are local until written back)
      const mark = Buffer.from(`conformance ${randomBytes(8).toString('hex')}`);
      const h = writer.held.get(1);
      check(h, 'the writer holds no page 1');
      h.data.set(mark, 0);
      const rr = await reader.map(1, 1, 'r', k.fenceBoundMs + 5000);
      check(rr.t === 'map-ok', `reader map: ${show(rr)}`);
      const inv = writer.invalidates.find((x) => covers(x.m, 1));
      check(inv, 'the writer got no invalidate');
      check(inv.m.writeback === true, `the recall must ask for writeback: ${show(inv.m)}`);
      const got = Buffer.from((rr.pages as Array<{ data: Uint8Array }>)[0].data.subarray(0, mark.length));
      check(
        got.equals(mark),
        `the reader got "${got.toString()}" instead of the writer's "${mark.toString()}"`,
      );
      const after = (rr.pages as Array<{ version: number }>)[0].version;
      check(after > before, `the version should grow with the write-back: ${before} → ${after}`);
      return `reason=${String(inv.m.reason)} downgrade=${String(inv.m.downgrade)}; version ${before} → ${after}`;
    },
  },
  {
    id: 'coherence-error-fences',
    section: '§4.1',
    title: 'a mapper that answers invalidate with error is fenced at once (close 4007); the other is served',
    async run(k) {
      const bad = await k.mapper('erring');
      const other = await k.mapper('other');
      check((await bad.get(k.o.segid, 'rw')).t === 'get-ok', 'get failed');
      check((await other.get(k.o.segid, 'r')).t === 'get-ok', 'get failed');
      check((await bad.map(0, 1, 'rw', k.fenceBoundMs + 5000)).t === 'map-ok', 'map rw failed');
      bad.ackMode = 'error';
      const t0 = performance.now();
      const served = other.map(0, 1, 'r', k.fenceBoundMs + 5000);
      const c = await bad.s.closeWithin(k.ackTimeoutMs);
      const closedMs = performance.now() - t0;
      check(
        c?.code === 4007,
        `expected close 4007 soon after the error (well before the ${k.ackTimeoutMs} ms deadline), got ${c?.code ?? 'none'}`,
      );
      const r = await served;
      check(r.t === 'map-ok', `the other mapper was not served: ${show(r)}`);
      return `4007 after ${Math.round(closedMs)} ms; the reader served after ${Math.round(performance.now() - t0)} ms`;
    },
  },
  {
    id: 'coherence-ack-deadline',
    section: '§4.1 §8',
    title: 'a mapper that never acks is fenced after the ack deadline (close 4007); the other is served',
    async run(k) {
      const silent = await k.mapper('silent');
      const other = await k.mapper('other');
      check((await silent.get(k.o.segid, 'rw')).t === 'get-ok', 'get failed');
      check((await other.get(k.o.segid, 'r')).t === 'get-ok', 'get failed');
      check((await silent.map(0, 1, 'rw', k.fenceBoundMs + 5000)).t === 'map-ok', 'map rw failed');
      silent.ackMode = 'silent';
      const t0 = performance.now();
      const served = other.map(0, 1, 'r', k.fenceBoundMs + 5000);
      const c = await silent.s.closeWithin(k.ackTimeoutMs + 3000);
      const closedMs = performance.now() - t0;
      check(
        c?.code === 4007,
        `expected close 4007 after about ${k.ackTimeoutMs} ms, got ${c?.code ?? 'none'}`,
      );
      check(
        closedMs >= k.ackTimeoutMs * 0.9,
        `fenced after ${Math.round(closedMs)} ms, before the ${k.ackTimeoutMs} ms deadline`,
      );
      const r = await served;
      check(r.t === 'map-ok', `the other mapper was not served: ${show(r)}`);
      return `4007 after ${Math.round(closedMs)} ms; the reader served after ${Math.round(performance.now() - t0)} ms (bound ${k.fenceBoundMs} ms)`;
    },
  },
];

/** Run the rules in order (or those `only` names); each with its own sessions, cleaned up after. */
export async function runKit(o: KitOptions, onResult?: (r: RuleResult) => void): Promise<RuleResult[]> {
  const k = new Kit(o);
  const out: RuleResult[] = [];
  for (const rule of RULES) {
    if (o.only && !o.only.some((p) => rule.id.startsWith(p)) && rule.id !== 'hs-ok') continue;
    const t0 = performance.now();
    let ok = true;
    let detail = '';
    try {
      detail = (await rule.run(k)) ?? '';
    } catch (err) {
      ok = false;
      detail = err instanceof RuleFailed ? err.message : `error: ${(err as Error)?.message ?? String(err)}`;
    } finally {
      await k.cleanup();
    }
    const r = {
      rule: rule.id,
      section: rule.section,
      title: rule.title,
      ok,
      detail,
      ms: Math.round(performance.now() - t0),
    };
    out.push(r);
    onResult?.(r);
  }
  return out;
}
