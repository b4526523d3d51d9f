import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveLimits } from '../limits.js';
import type { Release } from '../messages.js';
import { TransportPeerNetwork } from '../network.js';
import type { Conn, Transport } from '../transport.js';
import { createWsPeerNetwork } from '../ws.js';
import { type WsConn, wsTransport } from '../ws-transport.js';
import { complianceSuite, type Harness, KEY } from './compliance.js';

/** Wraps a ws transport to find the sockets of a node (to stall it). */
function tracked(inner: Transport, conns: Set<WsConn>): Transport {
  return {
    listen: (onConn) =>
      inner.listen((c) => {
        conns.add(c as WsConn);
        onConn(c);
      }),
    dial: async (a, t) => {
      const c = (await inner.dial(a, t)) as Conn;
      conns.add(c as WsConn);
      return c;
    },
  };
}

complianceSuite((): Harness => {
  const nets: TransportPeerNetwork[] = [];
  const conns = new Map<string, Set<WsConn>>();
  const addr = new Map<string, string>();
  const transportOf = (node: string, maxFrameBytes: number) => {
    const set = conns.get(node) ?? new Set();
    conns.set(node, set);
    return tracked(wsTransport({ listen: { host: '127.0.0.1', port: 0 }, maxFrameBytes }), set);
  };
  const sockets = (node: string) =>
    [...(conns.get(node) ?? [])].map(
      (c) => (c.ws as unknown as { _socket: import('node:net').Socket })._socket,
    );
  return {
    name: 'ws (127.0.0.1, real time)',
    async create(nodes, opts = {}) {
      const out: Record<string, TransportPeerNetwork> = {};
      for (const { node, ...o } of nodes) {
        const net = new TransportPeerNetwork({
          ...o,
          clusterKey: o.clusterKey ?? KEY,
          self: node,
          transport: transportOf(node, resolveLimits(o.limits).maxFrameBytes),
        });
        await net.listen();
        addr.set(node, net.address!);
        nets.push(net);
        out[node] = net;
      }
      // Default: lower ids dial higher ones by node id. mutual: everyone dials everyone by URL only.
      for (const x of nodes)
        for (const y of nodes)
          if (x.node !== y.node && (opts.mutual || x.node < y.node))
            out[x.node].addPeer({ node: opts.mutual ? undefined : y.node, url: addr.get(y.node)! });
      if (opts.connect !== false) for (const x of nodes) out[x.node].connect();
      return out;
    },
    address: (node) => addr.get(node)!,
    async createDialer({ node, ...o }, target) {
      const net = new TransportPeerNetwork({
        ...o,
        clusterKey: o.clusterKey ?? KEY,
        self: node,
        peers: [{ url: addr.get(target)! }],
        transport: transportOf(`${node}-dialer`, resolveLimits(o.limits).maxFrameBytes),
      });
      await net.start(false);
      nets.push(net);
      return net;
    },
    async createAt({ node, ...o }, address) {
      const port = Number(new URL(address).port);
      const maxFrameBytes = resolveLimits(o.limits).maxFrameBytes;
      const set = conns.get(node) ?? new Set();
      conns.set(node, set);
      const net = new TransportPeerNetwork({
        ...o,
        clusterKey: o.clusterKey ?? KEY,
        self: node,
        transport: tracked(wsTransport({ listen: { host: '127.0.0.1', port }, maxFrameBytes }), set),
      });
      await net.listen();
      addr.set(node, net.address!);
      nets.push(net);
      return net;
    },
    stall: (n) => {
      for (const s of sockets(n)) s.pause();
    },
    resume: (n) => {
      for (const s of sockets(n)) s.resume();
    },
    advance: (ms) => sleep(ms),
    transport: (n) => transportOf(n, 1 << 20),
    async closeAll() {
      for (const n of nets) await n.close();
    },
  };
});

it('TLS: wss with a self-signed certificate (generated with openssl)', async (t) => {
  const which = spawnSync('openssl', ['version']);
  if (which.status !== 0) {
    console.error('SKIP: openssl not found: the TLS test did not run');
    t.skip('openssl not found');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-tls-'));
  try {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    const r = spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    assert.equal(r.status, 0, r.stderr.toString());
    const tls = { certFile: cert, keyFile: key, caFile: cert };
    const b = await createWsPeerNetwork({
      self: 'b',
      listen: { host: '127.0.0.1', port: 0 },
      clusterKey: KEY,
      tls,
    });
    b.onRequest(async () => ({ t: 'ok' }));
    assert.match(b.address!, /^wss:/);
    const a = await createWsPeerNetwork({
      self: 'a',
      peers: [{ node: 'b', url: b.address! }],
      clusterKey: KEY,
      tls,
    });
    // A client without the CA refuses the certificate.
    const c = await createWsPeerNetwork({ self: 'c', peers: [{ url: b.address! }], clusterKey: KEY });
    try {
      await a.waitUp('b', 10_000);
      assert.equal((await a.request<Release>('b', { t: 'release', apid: 'b:a1' })).t, 'ok');
      for (let i = 0; i < 200 && c.metrics().dialFailures === 0; i++) await sleep(10);
      assert.ok(c.metrics().dialFailures > 0);
      assert.equal(c.sessions().length, 0);
    } finally {
      await c.close();
      await a.close();
      await b.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it('peer port: raw TCP connections, half-sent upgrades and silent WebSockets are closed by the handshake deadline; unauthenticated ones are capped and counted; the real peer is served throughout', async () => {
  const { connect } = await import('node:net');
  const limits = { handshakeTimeoutMs: 600, maxPendingConnections: 8 };
  const b = await createWsPeerNetwork({
    self: 'b',
    listen: { host: '127.0.0.1', port: 0 },
    clusterKey: KEY,
    limits,
    heartbeatMs: 100,
  });
  const a = await createWsPeerNetwork({
    self: 'a',
    peers: [{ node: 'b', url: b.address! }],
    clusterKey: KEY,
    limits,
    heartbeatMs: 100,
  });
  const socks: import('node:net').Socket[] = [];
  try {
    await a.waitUp('b', 10_000);
    const port = Number(new URL(b.address!).port);
    let closed = 0;
    const open = (first?: string) => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => closed++);
      if (first) s.on('connect', () => s.write(first));
      socks.push(s);
    };
    for (let i = 0; i < 40; i++) open();
    for (let i = 0; i < 10; i++) open('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n');
    // all 50 are closed by b: the extra ones at accept, the pending ones at the deadline
    for (let t = 0; t < 200 && closed < 50; t++) await sleep(50);
    assert.equal(closed, 50, 'every unauthenticated connection was closed');
    assert.ok(b.metrics().pendingRefused >= 50 - limits.maxPendingConnections);
    // a WebSocket that upgrades and never says hello: 4004 at the deadline
    const WebSocket = (await import('ws')).default;
    const ws = new WebSocket(b.address!);
    ws.on('error', () => {});
    const code = await new Promise<number>((res) => ws.once('close', (c) => res(c)));
    assert.equal(code, 4004);
    assert.equal(a.sessions().length, 1, 'the real session stayed up');
    assert.equal(b.status().length, 1, 'no peer-table entry for any of them');
  } finally {
    for (const s of socks) s.destroy();
    await a.close();
    await b.close();
  }
});
