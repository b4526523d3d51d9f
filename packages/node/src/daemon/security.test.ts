/**
 * Security checks of issue 7 against one real instance (kernel, ws peer network, driver, admin API
 * as `xpmesh node` boots them), each refused AND counted in /metrics:
 *
 * - a peer with no key (talks before authenticating) and a peer with a wrong key;
 * - a peer replaying another peer's recorded handshake (captured by a relay on loopback);
 * - a process without a permit (attach with another process's apid, get against the mode bits);
 * - a write through a read-only attachment;
 * - an admin call without the token on an address off the default loopback.
 *
 * Each refusal also changes nothing: the instance keeps serving a well-behaved peer and process.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CloseCode,
  createWsPeerNetwork,
  decodeRaw,
  encodeFrame,
  type TransportPeerNetwork,
} from '@xpmesh/protocol';
import WebSocket, { WebSocketServer } from 'ws';
import { parsePrometheus } from '../load/stats.js';
import { type AdminCallError, AdminClient } from './admin-client.js';
import { bootLayers } from './boot.js';
import { resolveConfig } from './config.js';
import { type RunningInstance, startInstance } from './instance.js';
import { freePorts } from './launcher.js';
import { silentLogger } from './logger.js';

const KEY = 'security-test-cluster-key-0123456789';
const TOKEN = 'security-test-admin-token';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let instance: RunningInstance;
let peerUrl: string;
/** Admin on 127.0.0.2 (off the default loopback address): the token is required. */
let admin: AdminClient;
let anon: AdminClient;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xpmesh-security-'));
  const [listenPort] = await freePorts(1);
  const config = resolveConfig(
    {
      id: 'sec',
      'listen-port': String(listenPort),
      'admin-host': '127.0.0.2',
      'admin-port': '0',
      'admin-token': TOKEN,
      'cluster-key': KEY,
      frames: '256',
      'heartbeat-ms': '200',
      'swap-file': join(dir, 'sec.swap'),
    },
    {},
  );
  const parts = await bootLayers(config, silentLogger);
  instance = await startInstance(config, silentLogger, parts);
  peerUrl = `ws://127.0.0.1:${listenPort}`;
  admin = new AdminClient(instance.adminUrl, TOKEN);
  anon = new AdminClient(instance.adminUrl);
});

after(async () => {
  await instance?.stop('test over').catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Value of one sample of /metrics (0 when absent). */
async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const want = { ...labels, node: 'sec' };
  const s = parsePrometheus(await admin.get<string>('/metrics')).find(
    (x) =>
      x.name === name &&
      Object.keys(x.labels).length === Object.keys(want).length &&
      Object.entries(want).every(([k, v]) => x.labels[k] === v),
  );
  return s?.value ?? 0;
}

/** A raw ws client: every frame it receives, and its close code. */
async function rawClient(url: string) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const got: Array<Record<string, unknown>> = [];
  ws.on('message', (d: Buffer) => got.push(decodeRaw(d) as Record<string, unknown>));
  const closed = new Promise<number>((res) => ws.once('close', (code) => res(code)));
  return {
    ws,
    got,
    closeCode: () => Promise.race([closed, sleep(10_000).then(() => -1)]),
    waitFor: async (t: string) => {
      for (let i = 0; i < 1000 && !got.some((m) => m.t === t); i++) await sleep(10);
      return got.find((m) => m.t === t);
    },
  };
}

/** A well-behaved peer can still bring a session up: the refusals changed nothing. */
async function goodPeerStillServed(name: string): Promise<void> {
  const p = await createWsPeerNetwork({
    self: name,
    clusterKey: KEY,
    listen: { host: '127.0.0.1', port: 0 },
    heartbeatMs: 200,
  });
  try {
    p.addPeer({ node: 'sec', url: peerUrl });
    await p.waitUp('sec', 10_000);
  } finally {
    await p.close();
  }
}

describe('security checks on a running instance', () => {
  it('a peer with no key (it talks before the handshake) is refused and counted', async () => {
    const before = await metric('xpmesh_refusals_total', { kind: 'peer_handshake' });
    const c = await rawClient(peerUrl);
    c.ws.send(encodeFrame({ t: 'get', id: 1, segid: 'sec:1', access: 'r', uid: 0, gid: 0 }));
    assert.equal(await c.closeCode(), CloseCode.HANDSHAKE);
    assert.equal(c.got[0]?.t, 'error');
    assert.ok((await metric('xpmesh_refusals_total', { kind: 'peer_handshake' })) > before);
    await goodPeerStillServed('ok1');
  });

  it('a peer with a wrong key is refused (the key never travels) and counted', async () => {
    const before = await metric('xpmesh_refusals_total', { kind: 'peer_auth' });
    const bad = await createWsPeerNetwork({
      self: 'intruder',
      clusterKey: 'a-wrong-cluster-key-0123456789abcdef',
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatMs: 200,
    });
    try {
      bad.addPeer({ node: 'sec', url: peerUrl });
      await assert.rejects(bad.waitUp('sec', 1500));
    } finally {
      await bad.close();
    }
    assert.ok((await metric('xpmesh_refusals_total', { kind: 'peer_auth' })) > before);
    await goodPeerStillServed('ok2');
  });

  it("a peer replaying another peer's recorded handshake is refused and counted", async () => {
    // A relay on loopback records what a legitimate peer sends while it authenticates.
    const recorded: Buffer[] = [];
    const relay = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await new Promise((r) => relay.once('listening', r));
    relay.on('connection', (down) => {
      const up = new WebSocket(peerUrl, { perMessageDeflate: false });
      const pending: Buffer[] = [];
      up.on('open', () => {
        for (const b of pending.splice(0)) up.send(b);
      });
      down.on('message', (d: Buffer) => {
        recorded.push(Buffer.from(d));
        if (up.readyState === WebSocket.OPEN) up.send(d);
        else pending.push(Buffer.from(d));
      });
      up.on('message', (d: Buffer) => down.readyState === WebSocket.OPEN && down.send(d));
      up.on('close', () => down.close());
      down.on('close', () => up.close());
      up.on('error', () => down.close());
    });
    const relayUrl = `ws://127.0.0.1:${(relay.address() as { port: number }).port}`;
    const victim: TransportPeerNetwork = await createWsPeerNetwork({
      self: 'pv',
      clusterKey: KEY,
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatMs: 200,
    });
    try {
      victim.addPeer({ node: 'sec', url: relayUrl });
      await victim.waitUp('sec', 10_000);
    } finally {
      await victim.close();
      await new Promise((r) => relay.close(r));
    }
    const hello = recorded.find((b) => (decodeRaw(b) as { t?: string }).t === 'hello');
    const auth = recorded.find((b) => (decodeRaw(b) as { t?: string }).t === 'auth');
    assert.ok(
      hello && auth,
      `recorded the handshake: ${recorded.map((b) => (decodeRaw(b) as { t?: string }).t)}`,
    );
    // the victim's session is gone at the instance (bounded wait)
    for (let i = 0; i < 500; i++) {
      const { peers } = await admin.get<{ peers: Array<{ node: string; state: string }> }>('/status');
      if (!peers.some((x) => x.node === 'pv' && x.state === 'up')) break;
      await sleep(20);
    }
    const refusedBefore = async () =>
      (await metric('xpmesh_refusals_total', { kind: 'peer_auth' })) +
      (await metric('xpmesh_refusals_total', { kind: 'peer_stale_epoch' }));
    // (a) the recording as it is: refused (its epoch is not newer than the session it came from,
    // or its proof answers an old challenge)
    let before = await refusedBefore();
    const a = await rawClient(peerUrl);
    a.ws.send(hello);
    if (await a.waitFor('welcome')) a.ws.send(auth);
    const codeA = await a.closeCode();
    assert.ok([CloseCode.AUTH, CloseCode.STALE_EPOCH].includes(codeA as never), `close code ${codeA}`);
    assert.ok((await refusedBefore()) > before);
    // (b) the same hello with a fresh epoch gets a fresh challenge, which the recorded proof does
    // not answer: the proof binds both nonces, so a recording is worth nothing
    before = await metric('xpmesh_refusals_total', { kind: 'peer_auth' });
    const h = decodeRaw(hello) as Record<string, unknown>;
    const b = await rawClient(peerUrl);
    b.ws.send(encodeFrame({ ...h, epoch: Number(h.epoch) + 1_000_000 } as never));
    assert.ok(await b.waitFor('welcome'), 'a fresh challenge for the replayed hello');
    b.ws.send(auth);
    assert.equal(await b.closeCode(), CloseCode.AUTH);
    assert.ok((await metric('xpmesh_refusals_total', { kind: 'peer_auth' })) > before);
    await goodPeerStillServed('ok3');
  });

  it('a process without a permit cannot attach; get is checked against the mode bits; both counted', async () => {
    const { pid: owner } = await admin.op<{ pid: number }>('spawn', { uid: 1000, gid: 1000 });
    const { addr } = await admin.op<{ addr: number }>('mmap', { pid: owner, len: 4096 });
    await admin.op('write', { pid: owner, addr, text: 'secret' });
    const { segid } = await admin.op<{ segid: string }>('make', {
      pid: owner,
      addr,
      size: 4096,
      mode: 0o600,
    });
    const { apid } = await admin.op<{ apid: string }>('get', { pid: owner, segid, access: 'rw' });
    const { pid: other } = await admin.op<{ pid: number }>('spawn', { uid: 2000, gid: 2000 });
    const noPermit = await metric('xpmesh_refusals_total', { kind: 'no_permit' });
    const denied = await metric('xpmesh_refusals_total', { kind: 'access_denied' });
    await assert.rejects(admin.op('attach', { pid: other, apid, size: 4096 }), (e: AdminCallError) => {
      assert.equal(e.code, 'E_NO_PERMIT');
      return true;
    });
    await assert.rejects(admin.op('get', { pid: other, segid, access: 'r' }), (e: AdminCallError) => {
      assert.equal(e.code, 'E_PERM');
      return true;
    });
    assert.ok((await metric('xpmesh_refusals_total', { kind: 'no_permit' })) > noPermit);
    assert.ok((await metric('xpmesh_refusals_total', { kind: 'access_denied' })) > denied);
    // nothing changed: the owner's attachment works, the stranger holds nothing
    const at = await admin.op<{ addr: number }>('attach', { pid: owner, apid, size: 4096 });
    assert.equal(
      (await admin.op<{ text: string }>('read', { pid: owner, addr: at.addr, len: 6 })).text,
      'secret',
    );
  });

  it('a write through a read-only attachment is refused (SIGSEGV), changes nothing, and is counted', async () => {
    const { pid: owner } = await admin.op<{ pid: number }>('spawn', { uid: 1000, gid: 1000 });
    const { addr } = await admin.op<{ addr: number }>('mmap', { pid: owner, len: 4096 });
    await admin.op('write', { pid: owner, addr, text: 'before' });
    const { segid } = await admin.op<{ segid: string }>('make', {
      pid: owner,
      addr,
      size: 4096,
      mode: 0o644,
    });
    const { pid: reader } = await admin.op<{ pid: number }>('spawn', { uid: 2000, gid: 2000 });
    const { apid } = await admin.op<{ apid: string }>('get', { pid: reader, segid, access: 'r' });
    const at = await admin.op<{ addr: number }>('attach', { pid: reader, apid, size: 4096 });
    const before = await metric('xpmesh_refusals_total', { kind: 'readonly_write' });
    await assert.rejects(
      admin.op('write', { pid: reader, addr: at.addr, text: 'after!' }),
      (e: AdminCallError) => {
        assert.equal(e.code, 'SIGSEGV');
        return true;
      },
    );
    assert.ok((await metric('xpmesh_refusals_total', { kind: 'readonly_write' })) > before);
    assert.equal((await admin.op<{ text: string }>('read', { pid: owner, addr, len: 6 })).text, 'before');
    assert.equal(
      (await admin.op<{ text: string }>('read', { pid: reader, addr: at.addr, len: 6 })).text,
      'before',
    );
  });

  it('an admin call without the token off the default loopback address is refused and counted', async () => {
    const before = await metric('xpmesh_admin_refused_total', { reason: 'no_token' });
    await assert.rejects(anon.op('spawn', {}), (e: AdminCallError) => {
      assert.equal(e.code, 'E_UNAUTHORIZED');
      return true;
    });
    const bad = new AdminClient(instance.adminUrl, 'not-the-token');
    await assert.rejects(bad.op('spawn', {}), (e: AdminCallError) => {
      assert.equal(e.code, 'E_UNAUTHORIZED');
      return true;
    });
    assert.equal(await metric('xpmesh_admin_refused_total', { reason: 'no_token' }), before + 1);
    assert.ok((await metric('xpmesh_admin_refused_total', { reason: 'bad_token' })) >= 1);
  });
});
