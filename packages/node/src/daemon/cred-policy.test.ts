/**
 * The per-peer credential policy (issue 13 point 10): unit rules, configuration errors, and end to
 * end on two in-process instances (kernel, ws peer network, driver, admin API as `xpmesh node`
 * boots them), where the home rewrites and refuses the uid a peer claims in `get`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parsePrometheus } from '../load/stats.js';
import { type AdminCallError, AdminClient } from './admin-client.js';
import { bootLayers } from './boot.js';
import { ConfigError, resolveConfig } from './config.js';
import { applyCredentialPolicy, parseCredentialPolicy } from './cred-policy.js';
import { type RunningInstance, startInstance } from './instance.js';
import { freePorts } from './launcher.js';
import { silentLogger } from './logger.js';

describe('credential policy rules', () => {
  const policy = parseCredentialPolicy(
    JSON.stringify({
      n2: { uids: { '2000': 1000 }, gids: { '2000': 1000 }, onlyUids: [[1000, 1999]] },
      n3: { squash: [65534, 65534] },
      n4: { deny: true },
      '*': { rootSquash: [65534, 65534] },
    }),
  );
  it('maps, squashes, root-squashes and refuses per peer; "*" covers peers without an entry', () => {
    assert.deepEqual(applyCredentialPolicy(policy, 'n2', { uid: 2000, gid: 2000 }), {
      cred: { uid: 1000, gid: 1000 },
      action: 'mapped',
    });
    assert.deepEqual(applyCredentialPolicy(policy, 'n2', { uid: 1500, gid: 7 }), {
      cred: { uid: 1500, gid: 7 },
      action: 'trusted',
    });
    assert.deepEqual(applyCredentialPolicy(policy, 'n2', { uid: 0, gid: 0 }), { action: 'denied' });
    assert.deepEqual(applyCredentialPolicy(policy, 'n3', { uid: 0, gid: 0 }).cred, {
      uid: 65534,
      gid: 65534,
    });
    assert.deepEqual(applyCredentialPolicy(policy, 'n4', { uid: 1000, gid: 1000 }), { action: 'denied' });
    assert.deepEqual(applyCredentialPolicy(policy, 'n9', { uid: 0, gid: 5 }).cred, { uid: 65534, gid: 5 });
    assert.deepEqual(applyCredentialPolicy({}, 'n9', { uid: 0, gid: 0 }), {
      cred: { uid: 0, gid: 0 },
      action: 'trusted',
    });
  });
  it('a bad policy is a configuration error naming the setting', () => {
    for (const bad of ['{', '{"n2": {"squash": [1]}}', '{"bad id!": {}}', '{"n2": {"frob": 1}}']) {
      assert.throws(
        () => resolveConfig({ 'cred-policy': bad }, {}),
        (e: Error) => e instanceof ConfigError && /--cred-policy \(XPMESH_CRED_POLICY\)/.test(e.message),
        bad,
      );
    }
    assert.ok(resolveConfig({}, { XPMESH_CRED_POLICY: '{"*": {"deny": true}}' }).credPolicy?.['*']?.deny);
  });
});

describe('credential policy end to end (two instances on loopback)', () => {
  let dir: string;
  const running: RunningInstance[] = [];
  let home: AdminClient;
  let att: AdminClient;
  let homeMetrics: () => Promise<string>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xpmesh-cred-'));
    const [hp, ap] = await freePorts(2);
    const common = { frames: '64', 'admin-port': '0', 'heartbeat-ms': '200', 'log-level': 'silent' };
    const homeCfg = resolveConfig(
      {
        ...common,
        id: 'home',
        'listen-port': String(hp),
        'swap-file': join(dir, 'home.swap'),
        // att may claim uids 1000-1999 as they are, and 2000 as 1000; anything else is refused
        'cred-policy': JSON.stringify({ att: { uids: { '2000': 1000 }, onlyUids: [[1000, 1999]] } }),
      },
      {},
    );
    const attCfg = resolveConfig(
      {
        ...common,
        id: 'att',
        'listen-port': String(ap),
        peers: `127.0.0.1:${hp}`,
        'swap-file': join(dir, 'att.swap'),
      },
      {},
    );
    for (const cfg of [homeCfg, attCfg]) {
      const parts = await bootLayers(cfg, silentLogger);
      running.push(await startInstance(cfg, silentLogger, parts));
    }
    home = new AdminClient(running[0].adminUrl);
    att = new AdminClient(running[1].adminUrl);
    homeMetrics = () => home.get<string>('/metrics');
    for (let i = 0; i < 500; i++) {
      const s = await att.get<{ peers: Array<{ node: string; state: string }> }>('/status');
      if (s.peers.some((p) => p.node === 'home' && p.state === 'up')) break;
      await sleep(20);
    }
  });

  after(async () => {
    for (const r of running.reverse()) await r.stop('test over').catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the home rewrites a mapped uid (allowed by 0600 as the owner) and refuses a uid outside the allowed range (even with 0606)', async () => {
    const { pid: owner } = await home.op<{ pid: number }>('spawn', { uid: 1000, gid: 1000 });
    const { addr } = await home.op<{ addr: number }>('mmap', { pid: owner, len: 8192 });
    await home.op('write', { pid: owner, addr, text: 'mapped-owner' });
    const { segid: privateSeg } = await home.op<{ segid: string }>('make', {
      pid: owner,
      addr,
      size: 4096,
      mode: '0600',
    });
    const { segid: openSeg } = await home.op<{ segid: string }>('make', {
      pid: owner,
      addr: addr + 4096,
      size: 4096,
      mode: '0606',
    });

    // uid 2000 at att is mapped to 1000 at the home: the owner of a 0600 segment. Without the
    // policy the mode bits refuse it (not the owner, no other bits).
    const { pid: mapped } = await att.op<{ pid: number }>('spawn', { uid: 2000, gid: 2000 });
    const { apid } = await att.op<{ apid: string }>('get', { pid: mapped, segid: privateSeg, access: 'rw' });
    const at = await att.op<{ addr: number }>('attach', { pid: mapped, apid, size: 4096 });
    assert.equal(
      (await att.op<{ text: string }>('read', { pid: mapped, addr: at.addr, len: 12 })).text,
      'mapped-owner',
    );

    // uid 0 at att is outside 1000-1999: refused, although 0606 lets any uid read and write.
    const { pid: root } = await att.op<{ pid: number }>('spawn', { uid: 0, gid: 0 });
    await assert.rejects(
      att.op('get', { pid: root, segid: openSeg, access: 'r' }),
      (e: AdminCallError) => e.code === 'E_PERM' && e.status === 403,
    );

    const samples = parsePrometheus(await homeMetrics()).filter((s) => s.name === 'xpmesh_cred_policy_total');
    const count = (action: string) => samples.find((s) => s.labels.action === action)?.value ?? 0;
    assert.equal(count('mapped'), 1);
    assert.equal(count('denied'), 1);
  });
});
