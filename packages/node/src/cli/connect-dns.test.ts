/**
 * `--connect dns:NAME:PORT` end to end on real processes: `localhost` resolves to 127.0.0.1, where
 * one instance's admin API listens; `xpmesh ctl --connect` runs a view on every instance behind the
 * name, `xpmesh load --connect` drives it, and a malformed spec is a usage error (exit 2).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { type LocalCluster, launchCluster, MAIN_JS } from '../daemon/launcher.js';

let cluster: LocalCluster;
before(async () => {
  cluster = await launchCluster({ nodes: 1 });
});
after(async () => {
  await cluster?.stop(10_000);
});

function xpmesh(...args: string[]) {
  return spawnSync(process.execPath, [MAIN_JS, ...args], { encoding: 'utf8', timeout: 60_000 });
}

describe('--connect dns:NAME:PORT', () => {
  it('ctl runs the command on every instance the name resolves to', () => {
    const port = new URL(cluster.nodes[0].adminUrl).port;
    const r = xpmesh('ctl', '--connect', `dns:localhost:${port}`, 'status');
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].url, `http://127.0.0.1:${port}`);
    assert.equal(lines[0].exit, 0);
    assert.equal(lines[0].output.node, 'n1');
  });

  it('load drives the instances behind the name', () => {
    const port = new URL(cluster.nodes[0].adminUrl).port;
    const r = xpmesh(
      'load',
      '--connect',
      `dns:localhost:${port}`,
      '--duration',
      '300',
      '--procs',
      '1',
      '--pages',
      '2',
    );
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`127\\.0\\.0\\.1:${port}`));
  });

  it('a malformed dns: spec is a usage error', () => {
    for (const args of [
      ['ctl', '--connect', 'dns:nope', 'status'],
      ['demo', '--connect', 'dns:localhost:0'],
      ['load', '--connect', 'dns:x'],
    ]) {
      const r = xpmesh(...args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /dns:NAME:PORT/);
    }
  });
});
