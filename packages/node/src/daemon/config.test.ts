import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CONFIG_SETTINGS, ConfigError, DEV_CLUSTER_KEY, parsePeers, resolveConfig } from './config.js';
import { InstanceMetrics, metricNames } from './metrics.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

describe('configuration', () => {
  it('takes flags over environment over defaults', () => {
    const c = resolveConfig(
      { id: 'a1', 'listen-port': '7401' },
      {
        XPMESH_NODE_ID: 'ignored',
        XPMESH_FRAMES: '256',
        XPMESH_PEERS: 'h2:7402, h3:7403',
        XPMESH_CLUSTER_KEY: 'k-0123456789abcdef',
      },
      42,
    );
    assert.equal(c.node, 'a1');
    assert.equal(c.listenPort, 7401);
    assert.equal(c.frames, 256);
    assert.deepEqual(c.peers, [
      { host: 'h2', port: 7402 },
      { host: 'h3', port: 7403 },
    ]);
    assert.equal(c.adminHost, '127.0.0.1');
    assert.match(c.swapPath, /xpmesh-a1-42\.swap$/);
  });

  it('uses the development key only when everything is on loopback', () => {
    assert.equal(resolveConfig({}, {}).clusterKey, DEV_CLUSTER_KEY);
    assert.throws(() => resolveConfig({ peers: 'node2:7400' }, {}), ConfigError);
    assert.equal(
      resolveConfig({ peers: 'node2:7400' }, { XPMESH_CLUSTER_KEY: 'k-0123456789abcdef' }).clusterKey,
      'k-0123456789abcdef',
    );
    assert.throws(() => resolveConfig({ 'cluster-key': 'short' }, {}), /at least 16 bytes/);
  });

  it('refuses bad values with a message naming the setting', () => {
    assert.throws(() => resolveConfig({ frames: 'lots' }, {}), /--frames \(XPMESH_FRAMES\)/);
    assert.throws(() => resolveConfig({ id: 'bad id!' }, {}), /node id/);
    assert.throws(() => resolveConfig({ 'log-level': 'loud' }, {}), /log level/);
    assert.throws(() => resolveConfig({ 'listen-port': '70000' }, {}), /out of range/);
    assert.throws(() => parsePeers('justahost'), /host:port/);
    assert.throws(() => resolveConfig({ 'tls-cert': 'c.pem' }, {}), /go together/);
  });

  it('drops itself from the peer list', () => {
    assert.deepEqual(resolveConfig({ peers: '127.0.0.1:7400,127.0.0.1:7401' }, {}).peers, [
      { host: '127.0.0.1', port: 7401 },
    ]);
  });

  it('docs/configuration.md documents every flag and variable', () => {
    const doc = readFileSync(`${ROOT}/docs/configuration.md`, 'utf8');
    for (const s of CONFIG_SETTINGS) {
      assert.ok(doc.includes(`--${s.flag}`), `--${s.flag} missing from docs/configuration.md`);
      assert.ok(doc.includes(s.env), `${s.env} missing from docs/configuration.md`);
    }
  });

  it('docs/metrics.md documents every metric', () => {
    const doc = readFileSync(`${ROOT}/docs/metrics.md`, 'utf8');
    const names = metricNames(
      new InstanceMetrics('x', () => ({
        framesTotal: 0,
        framesFree: 0,
        processes: 0,
        segments: 0,
        attachments: 0,
        rmapEntries: 0,
        exportedPages: 0,
        peers: {},
        messages: {},
        refusals: {},
      })),
    );
    assert.ok(names.length >= 15);
    for (const n of names) assert.ok(doc.includes(`\`${n}\``), `${n} missing from docs/metrics.md`);
  });
});
