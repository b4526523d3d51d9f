/**
 * The conformance kit in CI: `xpmesh conformance` against our own instance (a real OS process on
 * 127.0.0.1) passes every rule; against a deliberately broken home (it grants write access without
 * invalidating the readers) the coherence rule fails and the exit code says so.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createWsPeerNetwork, type TransportPeerNetwork } from '@xpmesh/protocol';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import { RULES, runKit } from './kit.js';

const SHIM = fileURLToPath(new URL('../../bin/xpmesh.js', import.meta.url));
const KEY = 'conformance-test-key-0123456789';

function xpmesh(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SHIM, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe('xpmesh conformance against our own instance', { timeout: 180_000 }, () => {
  let c: LocalCluster;
  let segid = '';
  before(async () => {
    c = await launchCluster({ nodes: 1, frames: 256, clusterKey: KEY });
    const home = c.client(0);
    const { pid } = await home.op<{ pid: number }>('spawn', {});
    const { addr } = await home.op<{ addr: number }>('mmap', { pid, len: 2 * 4096 });
    await home.op('write', { pid, addr, text: 'conformance page 0' });
    segid = (await home.op<{ segid: string }>('make', { pid, addr, size: 2 * 4096, mode: 0o666 })).segid;
  });
  after(async () => {
    await c?.stop();
  });

  it('passes every rule, one line per rule with its section, exit 0', async () => {
    const url = `ws://127.0.0.1:${c.nodes[0].peerPort}/`;
    const r = await xpmesh(['conformance', '--url', url, '--key', KEY, '--segid', segid]);
    const lines = r.out.split('\n').filter((l) => /^(PASS|FAIL) /.test(l));
    assert.equal(lines.length, RULES.length, r.out + r.err);
    assert.deepEqual(
      lines.filter((l) => l.startsWith('FAIL')),
      [],
      r.out,
    );
    for (const l of lines) assert.match(l, /§\d/, 'each line names the doc section it checks');
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, new RegExp(`${RULES.length} of ${RULES.length} rules held`));
    // the home is left as the kit found it: no permit, no remote mapping
    const st = await c
      .client(0)
      .get<{ driver: { segments: Array<{ permits: number }>; rmap: { entries: number } } }>('/status');
    assert.equal(st.driver.rmap.entries, 0, 'no page left mapped by the kit');
    assert.equal(st.driver.segments[0].permits, 0, 'no permit left by the kit');
    const check = await c.client(0).op<{ ok: boolean; violations: string[] }>('check');
    assert.deepEqual(check.violations, []);
  });

  it('answers bad usage with exit 2', async () => {
    const r = await xpmesh(['conformance', '--url', 'http://x', '--key', KEY, '--segid', 's']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--url ws:\/\//);
  });
});

describe('xpmesh conformance against a broken home', { timeout: 60_000 }, () => {
  let net: TransportPeerNetwork;
  before(async () => {
    // A home that speaks the wire protocol correctly (our protocol package) but breaks coherence:
    // it grants every map at once, write access included, and never invalidates anybody.
    net = await createWsPeerNetwork({
      self: 'broken',
      clusterKey: KEY,
      listen: { host: '127.0.0.1', port: 0 },
    });
    let grant = 0;
    let permit = 0;
    net.onRequest(async (_from, msg) => {
      if (msg.t === 'get')
        return { t: 'get-ok', apid: `broken:a${++permit}`, size: 2 * 4096, access: msg.access };
      if (msg.t === 'map') {
        const pages = Array.from({ length: msg.count }, (_, i) => ({
          page: msg.page + i,
          version: 0,
          data: new Uint8Array(4096),
        }));
        return { t: 'map-ok', access: msg.access, pages, grants: pages.map(() => ++grant) };
      }
      return { t: 'ok' };
    });
  });
  after(async () => {
    await net?.close();
  });

  it('fails the coherence rule (a reader must be invalidated before a writer is granted)', async () => {
    const results = await runKit({
      url: net.address ?? '',
      key: KEY,
      segid: 'broken:1',
      only: ['get-ok', 'coherence-invalidate-before-grant'],
    });
    const by = new Map(results.map((r) => [r.rule, r]));
    assert.equal(by.get('hs-ok')?.ok, true, JSON.stringify(results));
    assert.equal(by.get('get-ok')?.ok, true, JSON.stringify(results));
    const co = by.get('coherence-invalidate-before-grant');
    assert.equal(co?.ok, false, 'the broken home passed the coherence rule');
    assert.match(co?.detail ?? '', /no invalidate/);
  });
});
