/**
 * ONE compliance suite for the peer network, run against every transport (memory with fake time,
 * ws on 127.0.0.1 with real time). A harness builds networks and injects faults; the assertions are
 * about behaviour a driver would notice, never about timing.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { clientProof, newNonce } from '../auth.js';
import { decodeRaw, encodeFrame } from '../codec.js';
import { CloseCode, WireError } from '../errors.js';
import { type Detach, type Get, PROTOCOL_VERSIONS, type Release } from '../messages.js';
import type { PeerNetworkOptions, TransportPeerNetwork } from '../network.js';
import { type PeerSession, RequestError } from '../peers.js';
import type { Conn, Transport } from '../transport.js';

export const KEY = 'compliance-cluster-key-0123456789';

export type NodeSpec = { node: string } & Partial<Omit<PeerNetworkOptions, 'self' | 'transport'>>;

export interface CreateOptions {
  /** Every node dials every other one by address only (node id unknown), like the daemon does:
   * both ends of each pair dial. Default: only the lower node id dials, knowing the other's id. */
  mutual?: boolean;
  /** Start dialing at once (default true). False: the test calls connect() on each network. */
  connect?: boolean;
}

export interface Harness {
  name: string;
  /** Creates networks, all listening, and (unless opts.connect is false) starts their dials. */
  create(nodes: NodeSpec[], opts?: CreateOptions): Promise<Record<string, TransportPeerNetwork>>;
  /** Where `node` (created by create) listens: what addPeer takes as url. */
  address(node: string): string;
  /** An extra network dialing `target` (unknown node id), e.g. an impostor with an old epoch. */
  createDialer(spec: NodeSpec, target: string): Promise<TransportPeerNetwork>;
  /** An extra network listening at `address` (where a closed node listened: a task re-created
   * behind the same DNS address under a new node id); it dials nobody. */
  createAt(spec: NodeSpec, address: string): Promise<TransportPeerNetwork>;
  /** `node` stops reading (its peers see a full pipe and no pongs). */
  stall(node: string): void;
  resume(node: string): void;
  /** Lets `ms` of (fake or real) time pass. */
  advance(ms: number): Promise<void>;
  transport(node: string): Transport;
  closeAll(): Promise<void>;
}

const fast = {
  heartbeatMs: 100,
  missedBeats: 3,
  requestTimeoutMs: 2000,
  reconnectMinMs: 20,
  reconnectMaxMs: 200,
};

async function until(h: Harness, cond: () => boolean, what: string, maxMs = 15_000): Promise<void> {
  for (let t = 0; t < maxMs; t += 10) {
    if (cond()) return;
    await h.advance(10);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Awaits `p` while letting (fake or real) time pass: memory deliveries need the clock to move. */
async function run<T>(h: Harness, p: Promise<T>, maxMs = 15_000): Promise<T> {
  let done = false;
  const q = p.finally(() => {
    done = true;
  });
  q.catch(() => {});
  for (let t = 0; t < maxMs && !done; t += 5) await h.advance(5);
  assert.ok(done, 'operation did not settle in time');
  return q;
}

async function rejects(h: Harness, p: Promise<unknown>): Promise<RequestError> {
  try {
    await run(h, p);
  } catch (e) {
    assert.ok(e instanceof RequestError, `expected RequestError, got ${e}`);
    return e;
  }
  assert.fail('expected a rejection');
}

const release = (apid = 'b:a1'): Omit<Release, 'id'> => ({ t: 'release', apid });

type SessionEvent = { k: 'up' | 'down'; node: string; epoch: number; why?: string };

/** Records a network's up and down events, in order. */
function watch(net: TransportPeerNetwork): SessionEvent[] {
  const ev: SessionEvent[] = [];
  net.on('up', (p) => ev.push({ k: 'up', node: p.node, epoch: p.epoch }));
  net.on('down', (p, why) => ev.push({ k: 'down', node: p.node, epoch: p.epoch, why }));
  return ev;
}

/** Every pair has exactly one session up, and its two ends name the same one: the epoch each end
 * sees for the other is the epoch the other announced in that session. */
function assertOneSessionPerPair(nets: Record<string, TransportPeerNetwork>, what: string): void {
  for (const [x, nx] of Object.entries(nets))
    for (const [y, ny] of Object.entries(nets)) {
      if (x === y) continue;
      const s = nx.sessions().filter((p) => p.node === y);
      assert.equal(s.length, 1, `${what}: ${x} has one session with ${y}`);
      assert.equal(s[0].epoch, ny.localEpoch(x), `${what}: ${x} and ${y} are in the same session`);
    }
}

/** A hand-driven connection to `target` that speaks the wire directly (an attacker, or a client
 * written from the docs): it records every message it receives and its close code. */
async function rawConn(h: Harness, target: string, from = 'mallory') {
  const conn: Conn = await run(h, h.transport(from).dial(h.address(target), 5000));
  const got: Array<Record<string, unknown>> = [];
  let closeCode: number | undefined;
  conn.setHandlers({
    onFrame: (f) => {
      const v = decodeRaw(f);
      for (const m of Array.isArray(v) ? v : [v]) got.push(m as Record<string, unknown>);
    },
    onPong: () => {},
    onClose: (code) => {
      closeCode = code;
    },
  });
  const nonce = newNonce();
  return {
    conn,
    got,
    nonce,
    closeCode: () => closeCode,
    hello(node: string, epoch: number) {
      conn.send(
        encodeFrame({ t: 'hello', versions: [...PROTOCOL_VERSIONS], node, epoch, boot: epoch, nonce }),
      );
    },
    /** Answers the welcome with a proof made with `key` (the wrong key: an attacker). */
    auth(key: string, node: string) {
      const w = got.find((m) => m.t === 'welcome') as { nonce: Uint8Array; node: string } | undefined;
      assert.ok(w, 'no welcome to answer');
      const proof = clientProof(Buffer.from(key), nonce, w.nonce, node, w.node);
      conn.send(encodeFrame({ t: 'auth', proof }));
    },
  };
}

const DUPLICATE = String(CloseCode.DUPLICATE);

export function complianceSuite(makeHarness: () => Harness): void {
  const h0 = makeHarness();
  describe(`peer network compliance: ${h0.name}`, () => {
    let h: Harness;
    const fresh = async (nodes: NodeSpec[], opts?: CreateOptions) => {
      if (h) await h.closeAll();
      h = makeHarness();
      return h.create(
        nodes.map((n) => ({ ...fast, clusterKey: KEY, ...n })),
        opts,
      );
    };
    after(async () => {
      if (h) await h.closeAll();
    });

    it('handshake: both ends see one session with the epoch the other announced', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'sessions up');
      assert.equal(n.a.sessions()[0].node, 'b');
      assert.equal(n.b.sessions()[0].node, 'a');
      const aSt = n.a.status()[0];
      assert.equal(aSt.state, 'up');
      assert.equal(aSt.version, PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.length - 1]);
      // Exactly one session per pair: only one connection was established.
      assert.equal(n.a.metrics().sessionsUp, 1);
      assert.equal(n.b.metrics().sessionsUp, 1);
    });

    it('crossing dials at start (both ends dial): one session per pair, both ends agree on it, no session that came up goes down', async () => {
      // The nodes start dialing `skew` apart, so the dials cross at every step of the handshake,
      // the higher id's dial first for two pairs (a-c, b-c) and the lower id's first for a-b.
      for (const skew of [0, 1, 2, 3, 4, 5, 6, 8, 12]) {
        const n = await fresh([{ node: 'a' }, { node: 'b' }, { node: 'c' }], {
          mutual: true,
          connect: false,
        });
        const ev = Object.fromEntries(Object.entries(n).map(([k, net]) => [k, watch(net)]));
        for (const net of [n.c, n.a, n.b]) {
          net.connect();
          await h.advance(skew);
        }
        await until(
          h,
          () => Object.values(n).every((x) => x.sessions().length === 2),
          `sessions up (skew ${skew})`,
        );
        await h.advance(500); // the dials that lost are refused and retried meanwhile: nothing may change
        assertOneSessionPerPair(n, `skew ${skew}`);
        for (const [k, e] of Object.entries(ev)) {
          const what = `${k}, skew ${skew}: ${JSON.stringify(e)}`;
          assert.deepEqual(
            e.map((x) => x.k),
            ['up', 'up'],
            `${what}: one up per peer, no down`,
          );
          assert.equal(n[k].metrics().sessionsUp, 2, what);
          assert.equal(n[k].metrics().sessionsDown, 0, what);
        }
      }
    });

    it('a second dial between the same two live processes is refused with 4009; the session that is up stays', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'sessions up');
      const before = { a: n.a.sessions(), b: n.b.sessions() };
      const ev = { a: watch(n.a), b: watch(n.b) };
      let handled = 0;
      n.b.onRequest(async () => {
        handled++;
        return { t: 'ok' };
      });
      // Both dial again by address (as after a restart of the dial loop): the lower id's dial
      // would win a crossing, the higher id's would lose one; neither may replace a session that is up.
      n.a.addPeer({ url: h.address('b') });
      n.b.addPeer({ url: h.address('a') });
      const dupes = (x: TransportPeerNetwork) => x.metrics().closesByCode[DUPLICATE] ?? 0;
      await until(h, () => dupes(n.a) >= 2 && dupes(n.b) >= 2, 'both duplicates refused');
      assert.equal((await run(h, n.a.request<Release>('b', release()))).t, 'ok');
      // The refused dialers learned whom they reached and do not dial while the session is up.
      const closes = { a: dupes(n.a), b: dupes(n.b) };
      await h.advance(1000);
      assert.deepEqual({ a: dupes(n.a), b: dupes(n.b) }, closes, 'no more duplicate dials');
      assert.deepEqual(ev, { a: [], b: [] }, 'no down, no new up');
      assert.deepEqual({ a: n.a.sessions(), b: n.b.sessions() }, before);
      assertOneSessionPerPair(n, 'after the duplicates');
      assert.equal(handled, 1);
    });

    it('a peer that restarted (new incarnation) replaces its old session even while the old one still looks up: down, then up with the new epoch', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'sessions up');
      const old = n.a.sessions()[0];
      const ev = watch(n.a);
      const oldDowns: string[] = [];
      n.b.on('down', (_p, why) => oldDowns.push(why));
      // b restarts without its old connection closing (a crash nobody reported yet): the new
      // process has a larger epoch (and incarnation) and dials a by address.
      const epoch = n.b.currentEpoch + 1_000_000;
      const b2 = await h.createDialer({ node: 'b', clusterKey: KEY, ...fast, epoch }, 'a');
      await until(h, () => b2.sessions().length === 1, 'the new incarnation is up');
      assert.deepEqual(
        ev.map((e) => e.k),
        ['down', 'up'],
        JSON.stringify(ev),
      );
      assert.deepEqual({ node: ev[0].node, epoch: ev[0].epoch }, old, 'the old session went down first');
      assert.match(ev[0].why ?? '', /SUPERSEDED/);
      assert.ok(ev[1].epoch > epoch, 'the new session carries the new epoch');
      assert.deepEqual(n.a.sessions(), [{ node: 'b', epoch: ev[1].epoch }]);
      assert.equal(b2.localEpoch('a'), ev[1].epoch);
      await until(h, () => oldDowns.length === 1, 'the old incarnation sees its session end');
      assert.match(oldDowns[0], /SUPERSEDED/);
      // The old incarnation can not come back: refused as stale, the new session untouched.
      const stale = n.a.metrics().staleRefused;
      n.b.addPeer({ url: h.address('a') });
      await until(h, () => n.a.metrics().staleRefused > stale, 'the old incarnation refused');
      assert.equal(n.b.sessions().length, 0);
      assert.deepEqual(n.a.sessions(), [{ node: 'b', epoch: ev[1].epoch }]);
      assert.equal(ev.length, 2);
    });

    it('after a session died on both ends, the crossing redials make exactly one new session', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }], { mutual: true });
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'sessions up');
      const old = { a: n.a.sessions()[0], b: n.b.sessions()[0] };
      const ev = { a: watch(n.a), b: watch(n.b) };
      const down = (e: SessionEvent[]) => e.some((x) => x.k === 'down');
      h.stall('b'); // nothing reaches b, b's pongs stop: both ends declare the session dead
      await until(h, () => down(ev.a) && down(ev.b), 'both ends declare the session dead');
      h.resume('b');
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'a new session');
      await h.advance(500);
      assertOneSessionPerPair(n, 'after the reconnect');
      for (const k of ['a', 'b'] as const) {
        const what = `${k}: ${JSON.stringify(ev[k])}`;
        assert.deepEqual(
          ev[k].map((x) => x.k),
          ['down', 'up'],
          what,
        );
        assert.equal(ev[k][0].epoch, old[k].epoch, what);
        assert.ok(ev[k][1].epoch > old[k].epoch, what);
      }
    });

    it('lease: answered pings move the lease basis forward (event), a stalled peer stops it, a fence ends it', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'sessions up');
      const seen: number[] = [];
      n.a.on('lease', (peer, age) => {
        assert.equal(peer.node, 'b');
        // the age of the answered ping: never negative (how large depends on the machine's load)
        assert.ok(Number.isFinite(age) && age >= 0, `age ${age}`);
        seen.push(age);
      });
      assert.equal(typeof n.a.leaseAge('b'), 'number');
      await until(h, () => seen.length >= 2, 'two lease renewals');
      assert.ok((n.a.leaseAge('b') as number) >= 0);
      // b stops answering: no renewal while it is stalled (its pongs do not come back)
      h.stall('b');
      await h.advance(150); // pongs already on their way may still arrive
      const during = seen.length;
      await h.advance(100);
      assert.equal(seen.length, during, 'no renewal from a stalled peer');
      h.resume('b');
      n.a.fence('b', 'test');
      assert.equal(n.a.leaseAge('b'), undefined, 'no lease without a session');
    });

    it('version negotiation picks the highest common version; none common: refused with 4001', async () => {
      let n = await fresh([
        { node: 'a', versions: [1, 2] },
        { node: 'b', versions: [2, 3] },
      ]);
      await until(h, () => n.a.sessions().length === 1, 'session up');
      assert.equal(n.a.status()[0].version, 2);
      assert.equal(n.b.status()[0].version, 2);
      n = await fresh([
        { node: 'a', versions: [1] },
        { node: 'b', versions: [2] },
      ]);
      await until(h, () => (n.a.metrics().closesByCode[CloseCode.VERSION] ?? 0) >= 2, 'version refusals');
      assert.ok(n.b.metrics().versionFailures >= 2);
      assert.equal(n.a.metrics().sessionsUp + n.b.metrics().sessionsUp, 0);
    });

    it('a wrong cluster key is refused with 4003 on both sides, and the key never travels', async () => {
      const frames: Uint8Array[] = [];
      const tap = (_d: 'in' | 'out', _n: string, f: Uint8Array) =>
        frames.push(Uint8Array.prototype.slice.call(f));
      const n = await fresh([
        { node: 'a', onFrame: tap },
        { node: 'b', clusterKey: 'another-cluster-key-9876543210', onFrame: tap },
      ]);
      await until(
        h,
        () => n.a.metrics().authFailures >= 2 && n.b.metrics().authFailures >= 2,
        'auth failures',
      );
      assert.equal(n.a.metrics().sessionsUp + n.b.metrics().sessionsUp, 0);
      assert.ok((n.a.metrics().closesByCode[CloseCode.AUTH] ?? 0) >= 2);
      const key = Buffer.from(KEY);
      for (const f of frames) assert.equal(Buffer.from(f).indexOf(key), -1, 'cluster key on the wire');
      assert.ok(frames.length > 0);
    });

    it('request/response: replies match their requests, cid passes through, error codes come back', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      n.b.onRequest(async (_from, msg) => {
        if (msg.t === 'get') {
          if (msg.segid === 'b:404') throw new WireError('E_NO_SEGMENT', 'no such segment');
          if (msg.segid === 'b:500') throw new Error('handler bug');
          return { t: 'get-ok', apid: `b:a${msg.uid}`, size: 4096 * msg.uid, access: msg.access };
        }
        return { t: 'ok' };
      });
      await until(h, () => n.a.sessions().length === 1, 'session up');
      const get = (uid: number, segid = 'b:1') =>
        n.a.request<Get>('b', { t: 'get', segid, access: 'r', uid, gid: 0, cid: `op-${uid}` });
      const replies = await run(h, Promise.all(Array.from({ length: 100 }, (_, i) => get(i + 1))));
      replies.forEach((r, i) => {
        assert.equal(r.apid, `b:a${i + 1}`);
        assert.equal(r.size, 4096 * (i + 1));
        assert.equal(r.cid, `op-${i + 1}`);
      });
      assert.equal((await rejects(h, get(1, 'b:404'))).code, 'E_NO_SEGMENT');
      assert.equal((await rejects(h, get(1, 'b:500'))).code, 'E_INTERNAL');
      assert.equal((await run(h, n.a.request<Release>('b', release()))).t, 'ok');
      // Invalid outgoing request: refused locally, nothing sent.
      const bad = n.a.request<Get>('b', { t: 'get', segid: 'nope', access: 'r', uid: 0, gid: 0 });
      assert.equal((await rejects(h, bad)).code, 'E_MALFORMED');
      assert.equal((await rejects(h, n.a.request<Release>('zz', release()))).code, 'E_STALE_EPOCH');
      assert.equal(n.b.metrics().byType.get.msgsIn, 102);
    });

    it('deadline: a request without a reply fails with E_TIMEOUT; the late reply is counted and ignored', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      let release1: (() => void) | undefined;
      n.b.onRequest(() => new Promise((resolve) => (release1 = () => resolve({ t: 'ok' }))));
      await until(h, () => n.a.sessions().length === 1, 'session up');
      let err: RequestError | undefined;
      n.a.request<Release>('b', release(), { timeoutMs: 300 }).catch((e) => (err = e));
      await until(h, () => err !== undefined, 'deadline');
      assert.equal(err?.code, 'E_TIMEOUT');
      assert.equal(n.a.metrics().requestTimeouts, 1);
      release1?.();
      await until(h, () => n.a.metrics().lateReplies === 1, 'late reply');
      assert.equal(n.a.sessions().length, 1, 'session survives a late reply');
    });

    it('heartbeat loss: a stalled peer is declared down, its requests fail, and it comes back as a new session', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      n.b.onRequest(async () => ({ t: 'ok' }));
      await until(h, () => n.a.sessions().length === 1, 'session up');
      const first = n.a.sessions()[0];
      const downs: [PeerSession, string][] = [];
      n.a.on('down', (p, why) => downs.push([p, why]));
      h.stall('b');
      let err: RequestError | undefined;
      n.a.request<Release>('b', release(), { timeoutMs: 60_000 }).catch((e) => (err = e));
      await until(h, () => downs.length === 1, 'a declares b down');
      assert.match(downs[0][1], /HEARTBEAT/);
      assert.deepEqual(downs[0][0], first);
      await until(h, () => err !== undefined, 'request rejected');
      assert.equal(err?.code, 'E_STALE_EPOCH');
      assert.equal(n.a.metrics().heartbeatDeaths, 1);
      h.resume('b');
      await until(h, () => n.a.sessions().length === 1 && n.b.sessions().length === 1, 'new session');
      assert.ok(n.a.sessions()[0].epoch > first.epoch, 'new session has a larger epoch');
      assert.equal((await run(h, n.a.request<Release>('b', release()))).t, 'ok');
    });

    it('an unauthenticated hello claiming a peer with the largest epoch cannot lock it out: after a fence the real peer comes back', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      const ups: PeerSession[] = [];
      n.b.on('up', (p) => ups.push(p));
      // Mallory claims to be a, with epoch 2^53-1, and never authenticates.
      const m = await rawConn(h, 'b');
      m.hello('a', Number.MAX_SAFE_INTEGER);
      await until(h, () => m.got.some((x) => x.t === 'welcome'), 'welcome to mallory');
      n.b.fence('a', 'test: a missed an ack');
      await until(h, () => ups.length === 1, 'a comes back after the fence', 8_000);
      assert.ok(ups[0].epoch < Number.MAX_SAFE_INTEGER);
      assert.equal(n.b.sessions()[0].node, 'a');
      m.conn.close(1000, 'done');
    });

    it('unauthenticated hellos with new node ids leave no trace in the peer table; neither does a wrong-key auth', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      const before = n.b.status().length;
      const ms: Awaited<ReturnType<typeof rawConn>>[] = [];
      for (let i = 0; i < 20; i++) {
        const m = await rawConn(h, 'b');
        m.hello(`ghost${i}`, 1 + i);
        ms.push(m);
      }
      await until(h, () => ms.every((m) => m.got.some((x) => x.t === 'welcome')), 'welcomes');
      assert.equal(n.b.status().length, before, 'hello added nothing');
      for (const [i, m] of ms.entries()) m.auth('not-the-cluster-key-at-all', `ghost${i}`);
      await until(h, () => ms.every((m) => m.closeCode() === CloseCode.AUTH), 'all refused 4003');
      assert.equal(n.b.status().length, before, 'a failed auth added nothing');
      assert.deepEqual(
        n.b.status().map((p) => p.node),
        ['a'],
      );
    });

    it('one wrong-key attempt counts once in authFailures (at the server that refused it)', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      const m = await rawConn(h, 'b');
      m.hello('mallory', 1);
      await until(h, () => m.got.some((x) => x.t === 'welcome'), 'welcome');
      m.auth('not-the-cluster-key-at-all', 'mallory');
      await until(h, () => m.closeCode() !== undefined, 'refused');
      assert.equal(m.closeCode(), CloseCode.AUTH);
      assert.equal(m.got.find((x) => x.t === 'error')?.code, 'E_AUTH');
      await h.advance(50);
      assert.equal(n.b.metrics().authFailures, 1);
      assert.equal(n.b.metrics().closesByCode[CloseCode.AUTH], 1);
    });

    it('an authenticated unknown node id joins as a member, up to limits.maxPeers; beyond it 4012, counted', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2 } }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      const x = await h.createDialer({ node: 'x', clusterKey: KEY, ...fast }, 'b');
      await until(h, () => n.b.sessions().length === 2, 'x joins b');
      assert.deepEqual(
        n.b
          .sessions()
          .map((p) => p.node)
          .sort(),
        ['a', 'x'],
      );
      assert.equal(x.sessions()[0]?.node, 'b');
      const y = await h.createDialer({ node: 'y', clusterKey: KEY, ...fast }, 'b');
      await until(h, () => n.b.metrics().peersRefused >= 1, 'y refused: the table is full');
      assert.ok((n.b.metrics().closesByCode[CloseCode.TOO_MANY_PEERS] ?? 0) >= 1);
      assert.equal(y.sessions().length, 0);
      assert.equal(n.b.status().length, 2);
      await x.close();
      await y.close();
    });

    /** `node` dials b (by address), comes up there, then leaves (closes); b sees it down. */
    const joinAndLeave = async (
      n: Record<string, TransportPeerNetwork>,
      node: string,
      extra: Partial<NodeSpec> = {},
    ) => {
      const x = await h.createDialer({ node, clusterKey: KEY, ...fast, ...extra }, 'b');
      await until(h, () => n.b.sessions().some((p) => p.node === node), `${node} joins b`);
      const epoch = n.b.sessions().find((p) => p.node === node)?.epoch ?? -1;
      await x.close();
      await until(h, () => !n.b.sessions().some((p) => p.node === node), `b sees ${node} leave`);
      return epoch;
    };

    it('membership churn: with maxPeers 2, node ids joining and leaving in turn are all admitted (departed entries are evicted, least recently up first)', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2 } }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      for (let i = 0; i < 5; i++) await joinAndLeave(n, `m${i}`);
      assert.equal(n.b.metrics().peersRefused, 0, 'nobody refused 4012');
      assert.equal(n.b.metrics().peersEvicted, 4);
      assert.equal(n.b.status().length, 2, 'the table stays within maxPeers');
      assert.deepEqual(
        n.b
          .status()
          .map((p) => p.node)
          .sort(),
        ['a', 'm4'],
        'a (up) is kept; of the departed, the most recent stays',
      );
      assert.equal(n.b.tombstoneCount, 4, 'the evicted ones had come up: their epochs are remembered');
      assert.equal(n.b.sessions()[0]?.node, 'a', 'the live session is untouched');
    });

    it('eviction keeps fencing: a fenced node whose entry was evicted is refused 4005 with its fenced epoch; an evicted node is refused 4005 with an epoch not larger than its last one; newer epochs come back', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2 } }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      const xEpoch = await joinAndLeave(n, 'x');
      n.b.fence('x', 'test: x missed an ack');
      const yEpoch = await joinAndLeave(n, 'y'); // evicts x (fenced)
      assert.ok(!n.b.status().some((p) => p.node === 'x'), 'x was evicted');
      assert.equal(n.b.metrics().peersEvicted, 1);
      const imp = await h.createDialer({ node: 'x', clusterKey: KEY, ...fast, epoch: xEpoch - 1 }, 'b');
      await until(h, () => n.b.metrics().staleRefused >= 1, 'x with its fenced epoch refused');
      assert.ok((n.b.metrics().closesByCode[CloseCode.STALE_EPOCH] ?? 0) >= 1);
      assert.equal(imp.sessions().length, 0);
      await imp.close();
      // The impostor authenticated (it has the key), so it took y's slot: y left unfenced, and its
      // last epoch is remembered all the same.
      assert.ok(!n.b.status().some((p) => p.node === 'y'), 'y was evicted');
      const stale = n.b.metrics().staleRefused;
      // boot = yEpoch - 1 (not older than y's incarnation), first epoch = yEpoch: not larger.
      const y2 = await h.createDialer({ node: 'y', clusterKey: KEY, ...fast, epoch: yEpoch - 1 }, 'b');
      await until(h, () => n.b.metrics().staleRefused > stale, 'y with its last epoch refused');
      assert.equal(y2.sessions().length, 0);
      await y2.close();
      // A fence of an evicted node (the driver fences late, after an ack deadline) is remembered too.
      const zEpoch = await joinAndLeave(n, 'z');
      await joinAndLeave(n, 'w');
      assert.ok(!n.b.status().some((p) => p.node === 'z'), 'z was evicted');
      const tombs = n.b.tombstoneCount;
      n.b.fence('z', 'test: late fence');
      assert.ok(
        !n.b.status().some((p) => p.node === 'z'),
        'a fence of an evicted node does not re-create it',
      );
      assert.equal(n.b.tombstoneCount, tombs);
      const stale2 = n.b.metrics().staleRefused;
      const z2 = await h.createDialer({ node: 'z', clusterKey: KEY, ...fast, epoch: zEpoch - 1 }, 'b');
      await until(h, () => n.b.metrics().staleRefused > stale2, 'z with its fenced epoch refused');
      assert.equal(z2.sessions().length, 0);
      await z2.close();
      // Newer epochs come back: nobody is refused 4012 on the way.
      const x2 = await h.createDialer({ node: 'x', clusterKey: KEY, ...fast, epoch: xEpoch + 1000 }, 'b');
      await until(h, () => n.b.sessions().some((p) => p.node === 'x'), 'x with a newer epoch returns');
      assert.equal(n.b.metrics().peersRefused, 0);
      await x2.close();
    });

    it('tombstones are bounded and never forgotten: when limits.maxPeerTombstones are full, an entry with epochs to remember is not evicted (4012)', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2, maxPeerTombstones: 1 } }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      await joinAndLeave(n, 'm0');
      await joinAndLeave(n, 'm1'); // evicts m0: the one tombstone
      assert.equal(n.b.tombstoneCount, 1);
      const m2 = await h.createDialer({ node: 'm2', clusterKey: KEY, ...fast }, 'b');
      await until(h, () => n.b.metrics().peersRefused >= 1, 'm2 refused: m1 cannot be forgotten');
      assert.equal(n.b.metrics().peersEvicted, 1);
      assert.deepEqual(
        n.b
          .status()
          .map((p) => p.node)
          .sort(),
        ['a', 'm1'],
      );
      await m2.close();
    });

    it('a node reached through an address still dialed (DNS membership) is not evicted while down; once removePeer drops the address it is', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2 } }, { node: 'c' }], {
        mutual: true,
      });
      await until(h, () => n.b.sessions().length === 2, 'b up with a and c');
      await n.c.close(); // c's task is gone; its address is still in the name (still dialed)
      await until(h, () => n.b.sessions().length === 1, 'b sees c down');
      const x = await h.createDialer({ node: 'x', clusterKey: KEY, ...fast }, 'b');
      await until(h, () => n.b.metrics().peersRefused >= 1, 'x refused: c is still dialed');
      assert.equal(n.b.metrics().peersEvicted, 0);
      assert.ok(n.b.removePeer(h.address('c')), 'the address left the name');
      await until(h, () => n.b.sessions().some((p) => p.node === 'x'), 'x admitted on its next dial');
      assert.equal(n.b.metrics().peersEvicted, 1);
      assert.ok(!n.b.status().some((p) => p.node === 'c'), 'c was evicted');
      await x.close();
    });

    it('a DNS address handed to a new node id: the dial follows whoever authenticates there (no 4010), and the node that left becomes evictable', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 3 } }, { node: 'c' }], {
        mutual: true,
      });
      await until(h, () => n.b.sessions().length === 2, 'b up with a and c');
      const at = h.address('c');
      await n.c.close(); // c's task is gone; its address stays in the name and is re-used...
      await until(h, () => n.b.sessions().length === 1, 'b sees c down');
      const y = await h.createAt({ node: 'y', clusterKey: KEY, ...fast }, at); // ...by a new task, y
      await until(h, () => n.b.sessions().some((p) => p.node === 'y'), "b's dial of c's address reaches y");
      assert.equal(n.b.metrics().closesByCode[CloseCode.WRONG_NODE] ?? 0, 0, 'nothing refused 4010');
      // c is no longer the node of a dialed address: evicted for an authenticated newcomer
      // (the table is full: a and y up, c down)
      assert.equal(n.b.status().length, 3);
      const x = await h.createDialer({ node: 'x', clusterKey: KEY, ...fast }, 'b');
      await until(h, () => n.b.sessions().some((p) => p.node === 'x'), 'x admitted');
      assert.ok(!n.b.status().some((p) => p.node === 'c'), 'c was evicted');
      assert.equal(n.b.metrics().peersRefused, 0);
      await x.close();
      await y.close();
    });

    it('a configured node id stays pinned: another node answering at its address is refused 4010', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      await until(h, () => n.a.sessions().length === 1, 'a up with b');
      const at = h.address('b');
      await n.b.close(); // a dials b by node id (configured)
      await until(h, () => n.a.sessions().length === 0, 'a sees b down');
      const w = await h.createAt({ node: 'w', clusterKey: KEY, ...fast }, at);
      await until(
        h,
        () => (n.a.metrics().closesByCode[CloseCode.WRONG_NODE] ?? 0) >= 2,
        'w refused 4010, twice',
      );
      assert.equal(n.a.sessions().length, 0, 'w never comes up in place of b');
      assert.ok(!n.a.status().some((p) => p.node === 'w'));
      await w.close();
    });

    it('an unauthenticated hello never evicts a peer-table entry', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2 } }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      await joinAndLeave(n, 'x'); // table full: a (up), x (down, evictable)
      const ms: Awaited<ReturnType<typeof rawConn>>[] = [];
      for (let i = 0; i < 10; i++) {
        const m = await rawConn(h, 'b');
        m.hello(`ghost${i}`, 1 + i);
        ms.push(m);
      }
      await until(h, () => ms.every((m) => m.got.some((x) => x.t === 'welcome')), 'welcomes');
      for (const [i, m] of ms.entries()) m.auth('not-the-cluster-key-at-all', `ghost${i}`);
      await until(h, () => ms.every((m) => m.closeCode() === CloseCode.AUTH), 'all refused 4003');
      assert.equal(n.b.metrics().peersEvicted, 0);
      assert.deepEqual(
        n.b
          .status()
          .map((p) => p.node)
          .sort(),
        ['a', 'x'],
      );
      // x was evictable all along: an authenticated newcomer does evict it.
      await joinAndLeave(n, 'y');
      assert.equal(n.b.metrics().peersEvicted, 1);
    });

    it('configured peers and live sessions are never evicted: the table full of them refuses a newcomer 4012', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b', limits: { maxPeers: 2 } }]);
      await until(h, () => n.b.sessions().length === 1, 'session up');
      // configured with its node id, never up (nothing listens at that address)
      const nowhere = h.address('a').startsWith('ws') ? 'ws://127.0.0.1:1' : 'q-nowhere';
      n.b.addPeer({ node: 'q', url: nowhere });
      const y = await h.createDialer({ node: 'y', clusterKey: KEY, ...fast }, 'b');
      await until(h, () => n.b.metrics().peersRefused >= 1, 'y refused: nothing evictable');
      assert.equal(n.b.metrics().peersEvicted, 0);
      assert.deepEqual(
        n.b
          .status()
          .map((p) => p.node)
          .sort(),
        ['a', 'q'],
      );
      await y.close();
    });

    it('fence: the session ends at once, outstanding requests fail, the peer returns with a larger epoch, an old epoch is refused', async () => {
      const n = await fresh([{ node: 'a' }, { node: 'b' }]);
      let handled = 0;
      n.b.onRequest(() => {
        handled++;
        return new Promise(() => {}); // never answers: the fence must release the waiter
      });
      await until(h, () => n.a.sessions().length === 1, 'session up');
      const old = n.a.sessions()[0];
      const ups: PeerSession[] = [];
      const bDowns: string[] = [];
      n.a.on('up', (p) => ups.push(p));
      n.b.on('down', (_p, why) => bDowns.push(why));
      const pending = n.a.request<Release>('b', release(), { timeoutMs: 60_000 });
      await until(h, () => handled === 1, 'request reached b');
      n.a.fence('b', 'ack deadline');
      assert.equal((await rejects(h, pending)).code, 'E_STALE_EPOCH');
      assert.equal(n.a.sessions().length, 0);
      assert.equal(n.a.status()[0].state, 'fenced');
      await until(h, () => bDowns.length === 1, 'b sees the fence');
      assert.match(bDowns[0], /FENCED/);
      await until(h, () => ups.length === 1, 'b reconnects');
      assert.ok(ups[0].epoch > old.epoch);
      // An impostor of b with the fenced (old) epoch is refused.
      const imp = await h.createDialer({ node: 'b', clusterKey: KEY, ...fast, epoch: old.epoch - 1 }, 'a');
      await until(h, () => n.a.metrics().staleRefused >= 1, 'stale refusal');
      assert.equal(imp.sessions().length, 0);
      assert.equal(n.a.sessions()[0].epoch, ups[0].epoch, 'the new session is untouched');
      await imp.close();
    });

    it('backpressure: a peer that stops reading makes requests fail fast with E_BUSY; nothing is lost', async () => {
      const hwm = 512 * 1024;
      // Heartbeats slow enough that the stall below is never taken for a dead peer on a busy CPU:
      // this test is about the send high-water mark, not heartbeat loss (that has its own test).
      const slowBeat = { heartbeatMs: 10_000, missedBeats: 3 };
      const n = await fresh([
        { node: 'a', ...slowBeat, limits: { sendHighWaterBytes: hwm, maxOutstandingRequests: 5000 } },
        { node: 'b', ...slowBeat, limits: { maxIncomingRequests: 5000 } },
      ]);
      let handled = 0;
      n.b.onRequest(async () => {
        handled++;
        return { t: 'ok' };
      });
      await until(h, () => n.a.sessions().length === 1, 'session up');
      h.stall('b');
      const dirty = Array.from({ length: 16 }, (_, i) => ({
        page: i,
        version: 1,
        data: new Uint8Array(4096),
      }));
      const accepted: Promise<unknown>[] = [];
      let busy: RequestError | undefined;
      for (let i = 0; i < 5000 && !busy; i++) {
        const p = n.a.request<Detach>(
          'b',
          { t: 'detach', apid: 'b:a1', ranges: [[0, 16]], dirty },
          { timeoutMs: 600_000 },
        );
        p.catch(() => {});
        try {
          await Promise.race([p.then(() => null), h.advance(1).then(() => null)]);
        } catch (e) {
          busy = e as RequestError;
          break;
        }
        accepted.push(p);
      }
      assert.equal(busy?.code, 'E_BUSY', 'the high-water mark was reached');
      assert.ok(n.a.metrics().busyRejections >= 1);
      h.resume('b');
      await until(h, () => handled === accepted.length, 'every accepted request handled');
      await run(h, Promise.all(accepted));
    });
  });
}
