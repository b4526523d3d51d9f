/**
 * Membership from DNS with an injected resolver (a name whose answer the test changes): new
 * addresses are dialled, vanished ones no longer, our own address never, a failing resolution
 * keeps the last answer, the dial table is bounded; and the configuration's node id and
 * --peers-dns settings. The real name (`localhost`) and real processes: join-leave.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, nodeIdFromHostname, resolveConfig } from './config.js';
import { DnsMembership, type Resolver, selfMatcher } from './membership.js';

class FakeDialTable {
  readonly urls = new Set<string>();
  readonly log: string[] = [];
  addPeer(p: { url: string }): void {
    this.urls.add(p.url);
    this.log.push(`+${p.url}`);
  }
  removePeer(url: string): boolean {
    this.log.push(`-${url}`);
    return this.urls.delete(url);
  }
}

function fakeDns(initial: Record<string, string[] | Error>) {
  const answers = { ...initial };
  const resolve: Resolver = async (name) => {
    const a = answers[name];
    if (a === undefined) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    if (a instanceof Error) throw a;
    return [...a];
  };
  return { answers, resolve };
}

describe('DNS membership', () => {
  it('dials every address of the name except its own, by URL only', async () => {
    const dns = fakeDns({ 'tasks.node': ['10.0.0.2', '10.0.0.3', '10.0.0.4'] });
    const net = new FakeDialTable();
    const m = new DnsMembership({
      names: [{ host: 'tasks.node', port: 7400 }],
      scheme: 'ws',
      intervalMs: 1000,
      net,
      isSelf: selfMatcher('0.0.0.0', 7400, () => ['127.0.0.1', '10.0.0.3']),
      resolve: dns.resolve,
    });
    const r = await m.refresh();
    assert.deepEqual(r.added, ['ws://10.0.0.2:7400', 'ws://10.0.0.4:7400']);
    assert.deepEqual([...net.urls].sort(), ['ws://10.0.0.2:7400', 'ws://10.0.0.4:7400']);
    assert.equal(m.stats().selfSkipped, 1);
  });

  it('re-resolving dials new members once and stops dialling gone ones', async () => {
    const dns = fakeDns({ 'tasks.node': ['10.0.0.2'] });
    const net = new FakeDialTable();
    const m = new DnsMembership({
      names: [{ host: 'tasks.node', port: 7400 }],
      scheme: 'ws',
      intervalMs: 1000,
      net,
      isSelf: () => false,
      resolve: dns.resolve,
    });
    await m.refresh();
    dns.answers['tasks.node'] = ['10.0.0.2', '10.0.0.5'];
    assert.deepEqual(await m.refresh(), { added: ['ws://10.0.0.5:7400'], removed: [] });
    assert.deepEqual(await m.refresh(), { added: [], removed: [] }, 'no second dial of a known address');
    dns.answers['tasks.node'] = ['10.0.0.5'];
    assert.deepEqual(await m.refresh(), { added: [], removed: ['ws://10.0.0.2:7400'] });
    assert.deepEqual([...net.urls], ['ws://10.0.0.5:7400']);
    assert.deepEqual(net.log, ['+ws://10.0.0.2:7400', '+ws://10.0.0.5:7400', '-ws://10.0.0.2:7400']);
  });

  it('a failed resolution keeps the last answer; IPv6 addresses are bracketed', async () => {
    const dns = fakeDns({ a: ['fd00::2'], b: ['10.0.0.9'] });
    const net = new FakeDialTable();
    const m = new DnsMembership({
      names: [
        { host: 'a', port: 1 },
        { host: 'b', port: 2 },
      ],
      scheme: 'wss',
      intervalMs: 1000,
      net,
      isSelf: () => false,
      resolve: dns.resolve,
    });
    await m.refresh();
    assert.deepEqual([...net.urls].sort(), ['wss://10.0.0.9:2', 'wss://[fd00::2]:1']);
    dns.answers.b = new Error('SERVFAIL');
    assert.deepEqual(await m.refresh(), { added: [], removed: [] });
    assert.equal(net.urls.size, 2);
    assert.equal(m.stats().failures, 1);
  });

  it('the dial table is bounded against a huge answer', async () => {
    const many = Array.from({ length: 1000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
    const net = new FakeDialTable();
    const m = new DnsMembership({
      names: [{ host: 'big', port: 7400 }],
      scheme: 'ws',
      intervalMs: 1000,
      net,
      isSelf: () => false,
      resolve: async () => many,
      maxAddresses: 16,
    });
    await m.refresh();
    assert.equal(net.urls.size, 16);
    assert.equal(m.stats().overLimit, 1000 - 16);
  });

  it('start() resolves at once and again every interval; stop() ends it', async () => {
    let calls = 0;
    const net = new FakeDialTable();
    const m = new DnsMembership({
      names: [{ host: 'n', port: 1 }],
      scheme: 'ws',
      intervalMs: 20,
      net,
      isSelf: () => false,
      resolve: async () => {
        calls++;
        return [`10.0.0.${calls}`];
      },
    });
    m.start();
    const deadline = Date.now() + 5000;
    while (calls < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await m.stop();
    const after = calls;
    await new Promise((r) => setTimeout(r, 60));
    assert.ok(after >= 3, `resolved ${after} times`);
    assert.equal(calls, after, 'no resolution after stop()');
  });

  it('a bound listener is only its own address; a wildcard one is every interface', () => {
    const bound = selfMatcher('127.0.0.2', 7400, () => ['127.0.0.1', '127.0.0.2']);
    assert.equal(bound('127.0.0.2', 7400), true);
    assert.equal(bound('127.0.0.1', 7400), false);
    assert.equal(bound('127.0.0.2', 7401), false);
    const any = selfMatcher('0.0.0.0', 7400, () => ['127.0.0.1', '10.0.0.3']);
    assert.equal(any('10.0.0.3', 7400), true);
    assert.equal(any('10.0.0.4', 7400), false);
  });
});

describe('configuration for engines', () => {
  it('the node id defaults to the host name, made valid', () => {
    assert.equal(resolveConfig({}, {}, 1, 'node-3').node, 'node-3');
    assert.equal(resolveConfig({}, { XPMESH_NODE_ID: 'x1' }, 1, 'node-3').node, 'x1');
    assert.equal(nodeIdFromHostname('a b/c'), 'a-b-c');
    assert.equal(nodeIdFromHostname('x'.repeat(100)).length, 64);
    assert.equal(nodeIdFromHostname(''), 'n1');
  });

  it('--peers-dns parses NAME:PORT, needs a cluster key off loopback, interval bounded', () => {
    const c = resolveConfig({ 'peers-dns': 'tasks.node:7400' }, { XPMESH_CLUSTER_KEY: 'k'.repeat(16) });
    assert.deepEqual(c.peersDns, [{ host: 'tasks.node', port: 7400 }]);
    assert.equal(c.peersDnsIntervalMs, 5000);
    assert.throws(() => resolveConfig({ 'peers-dns': 'tasks.node:7400' }, {}), ConfigError);
    assert.deepEqual(resolveConfig({}, { XPMESH_PEERS_DNS: 'localhost:7400' }).peersDns, [
      { host: 'localhost', port: 7400 },
    ]);
    assert.throws(() => resolveConfig({ 'peers-dns': 'nope' }, {}), /host:port/);
    assert.throws(() => resolveConfig({ 'peers-dns-interval-ms': '5' }, {}), /between 100/);
  });
});
