import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { OP_NAMES } from '../daemon/ops.js';
import { writePortsFile } from './cluster.js';
import { buildBody, CTL_HELP } from './ctl.js';
import { causalOrder } from './demo.js';
import { UsageError } from './usage.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

function xpmesh(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    timeout: 15_000,
    env: { ...process.env, XPMESH_ADMIN_URL: 'http://127.0.0.1:1' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('xpmesh command line', () => {
  it('prints help for every command with exit 0', () => {
    for (const args of [
      ['--help'],
      ['node', '--help'],
      ['cluster', '--help'],
      ['demo', '--help'],
      ['ctl', '--help'],
      ['ctl', 'mmap', '--help'],
    ]) {
      const r = xpmesh(...args);
      if (args.includes('mmap')) {
        assert.equal(r.code, 2, 'field help for an op is a usage message');
        assert.match(r.err, /--pid --len --prot --addr/);
        continue;
      }
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.match(r.out, /usage: xpmesh/);
    }
    assert.match(xpmesh('node', '--help').out, /XPMESH_CLUSTER_KEY/);
  });

  it('answers bad arguments with a clear message and exit 2', () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /usage: xpmesh/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['node', '--bogus'], /Unknown option '--bogus'/],
      [['node', '--frames', 'lots'], /--frames \(XPMESH_FRAMES\) must be a non-negative integer/],
      [['node', '--peers', 'node2:7400'], /cluster key is required/],
      [['cluster', '--nodes', '0'], /--nodes must be between 1 and 16/],
      [['demo', '--connect', 'http://a:1,http://b:1'], /exactly 3 admin URLs/],
      [['ctl', 'mmap', '--pid', 'x', '--len', '4096'], /--pid/],
      [['ctl', 'teleport'], /unknown command "teleport"/],
    ];
    for (const [args, re] of cases) {
      const r = xpmesh(...args);
      assert.equal(r.code, 2, `xpmesh ${args.join(' ')} → ${r.code}: ${r.err}`);
      assert.match(r.out + r.err, re, `xpmesh ${args.join(' ')}`);
    }
  });

  it('every configuration error of `xpmesh node` is one line on stderr and exit 2, never a stack trace', async () => {
    const { createServer } = await import('node:net');
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = String((taken.address() as { port: number }).port);
    const spare = createServer();
    await new Promise<void>((r) => spare.listen(0, '127.0.0.1', () => r()));
    const free = String((spare.address() as { port: number }).port);
    await new Promise<void>((r) => spare.close(() => r()));
    try {
      const cases: Array<[string[], RegExp]> = [
        [['--cluster-key', 'short'], /cluster key must be at least 16 bytes/],
        [['--cluster-key-file', '/nonexistent/key'], /cannot read cluster key file/],
        [['--tls-cert', '/nonexistent/c.pem', '--tls-key', '/nonexistent/k.pem'], /--tls-cert .*cannot read/],
        [['--max-peers', '0'], /--max-peers must be at least 1/],
        [['--heartbeat-ms', '0'], /--heartbeat-ms must be at least 1/],
        [['--listen-port', port, '--admin-port', '0'], /cannot listen on 127.0.0.1:\d+: EADDRINUSE/],
        [['--admin-port', port, '--listen-port', free], /cannot listen on 127.0.0.1:\d+: EADDRINUSE/],
      ];
      for (const [args, re] of cases) {
        const r = xpmesh('node', '--log-level', 'silent', '--frames', '16', ...args);
        assert.equal(r.code, 2, `xpmesh node ${args.join(' ')} → ${r.code}: ${r.err}`);
        const lines = r.err.trimEnd().split('\n');
        assert.equal(lines.length, 1, `one line: ${r.err}`);
        assert.match(lines[0], re);
        assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
      }
    } finally {
      taken.close();
    }
  });

  it('reports an unreachable admin API as a failure (exit 1), not a usage error', () => {
    const r = xpmesh('ctl', 'status');
    assert.equal(r.code, 1);
    assert.match(r.err, /E_CONNECT/);
  });
});

describe('ctl argument mapping', () => {
  it('turns flags into a validated JSON body', () => {
    assert.deepEqual(buildBody('mmap', ['--pid', '3', '--len', '8192', '--addr', '0x10000']), {
      pid: 3,
      len: 8192,
      addr: '0x10000',
    });
    assert.deepEqual(buildBody('write', ['--pid', '3', '--addr', '4096', '--text', '123']), {
      pid: 3,
      addr: 4096,
      text: '123',
    });
    assert.deepEqual(buildBody('spawn', ['--catch-signals', 'false']), { catchSignals: false });
    assert.deepEqual(buildBody('make', ['--pid', '1', '--addr', '0', '--size', '4096', '--mode', '0400']), {
      pid: 1,
      addr: 0,
      size: 4096,
      mode: '0400',
    });
    assert.throws(() => buildBody('write', ['--pid', '3', '--addr', '0']), UsageError);
    assert.deepEqual(
      buildBody('run', ['--pid', '2', '--module', 'load/program.js', '--export', 'f', '--args', '{"n":3}']),
      { pid: 2, module: 'load/program.js', export: 'f', args: { n: 3 } },
    );
    assert.throws(
      () => buildBody('run', ['--pid', '2', '--module', 'a.js', '--export', 'f', '--args', '{']),
      /JSON/,
    );
    for (const op of OP_NAMES) assert.match(CTL_HELP, new RegExp(`\\n  ${op}\\b`), `ctl help lists ${op}`);
    assert.throws(() => buildBody('get', ['--pid', '1', '--segid', 's', '--access', 'x']), /--access/);
  });
});

describe('the demo log', () => {
  it('lists a reply after the request it answers, otherwise in arrival order', () => {
    const arrived = [
      { msg: 'invalidate-ack', cid: 'n1-5', at: 'n3' },
      { msg: 'invalidate', cid: 'n1-5', at: 'n1' },
      { msg: 'invalidate', cid: 'n1-6', at: 'n1' },
      { msg: 'invalidate-ack', cid: 'n1-6', at: 'n2' },
      { msg: 'map-ok', cid: 'n2-9', at: 'n1' },
      { msg: 'segment-gone', cid: 'n1-7', at: 'n1' },
    ];
    assert.deepEqual(
      causalOrder(arrived).map((e) => `${e.msg} ${e.cid}`),
      [
        'invalidate n1-5',
        'invalidate-ack n1-5',
        'invalidate n1-6',
        'invalidate-ack n1-6',
        'segment-gone n1-7',
        'map-ok n2-9', // its request was in an earlier step: listed last
      ],
    );
  });
});

describe('the ports file of xpmesh cluster', () => {
  it('replaces an older file whole, mode 0600 (it may hold the key), leaving nothing beside it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xpmesh-ports-'));
    try {
      const f = join(dir, 'ports.json');
      writeFileSync(f, 'old, readable by all\n');
      chmodSync(f, 0o644);
      writePortsFile(f, '{"nodes":[]}\n');
      assert.equal(readFileSync(f, 'utf8'), '{"nodes":[]}\n');
      assert.equal(statSync(f).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(dir), ['ports.json']);
      // a directory in the way: the error reaches the caller, no temporary file stays
      const d = join(dir, 'adir');
      mkdirSync(join(d, 'inside'), { recursive: true });
      assert.throws(() => writePortsFile(d, '{}\n'));
      assert.deepEqual(readdirSync(dir).sort(), ['adir', 'ports.json']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
