/**
 * What a newcomer touches first: the `xpmesh` bin link, `xpmesh cluster --json/--ports-file` and its
 * key, `xpmesh ctl` (what it loads, typed words, --json errors, script mode), the client library,
 * and /status's process list. Real OS processes on 127.0.0.1 only; only processes started here.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  AdminCallError,
  decodeWords,
  encodeWords,
  parseWordList,
  readAnswerAs,
  Xpmesh,
} from '../client/index.js';
import type { ClusterDescription } from './cluster.js';

const PKG = fileURLToPath(new URL('../../', import.meta.url));
const SHIM = join(PKG, 'bin', 'xpmesh.js');
const tmp = mkdtempSync(join(tmpdir(), 'xpmesh-scripting-test-'));

function xpmesh(args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [SHIM, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    input: opts.input,
    env: { ...process.env, ...opts.env },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('the xpmesh bin', () => {
  it('is a committed file (npm links it before the build runs) that starts the compiled CLI', () => {
    const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));
    assert.equal(
      pkg.bin.xpmesh,
      './bin/xpmesh.js',
      'bin must not point into dist/ (absent when npm links bins)',
    );
    assert.ok(statSync(SHIM).mode & 0o100, 'the bin file is executable');
    const r = xpmesh(['--help']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /usage: xpmesh/);
  });

  it('says how to build when the CLI is not built', () => {
    const dir = join(tmp, 'unbuilt', 'bin');
    mkdirSync(dir, { recursive: true });
    copyFileSync(SHIM, join(dir, 'xpmesh.js'));
    const r = spawnSync(process.execPath, [join(dir, 'xpmesh.js'), '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not built.*\n.*npm run build/);
  });
});

describe('xpmesh ctl start-up', () => {
  it('loads no kernel, driver, load tester or daemon code', () => {
    // A module-resolution hook records every module the ctl call loads.
    const log = join(tmp, 'loaded.txt');
    const hooks = join(tmp, 'hooks.mjs');
    writeFileSync(
      hooks,
      `import { appendFileSync } from 'node:fs';
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  appendFileSync(${JSON.stringify(log)}, r.url + '\\n');
  return r;
}`,
    );
    const register = join(tmp, 'register.mjs');
    writeFileSync(
      register,
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});`,
    );
    const r = spawnSync(
      process.execPath,
      ['--import', pathToFileURL(register).href, SHIM, 'ctl', '--url', 'http://127.0.0.1:1', 'status'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 1, r.stderr);
    const loaded = readFileSync(log, 'utf8').split('\n').filter(Boolean);
    assert.ok(
      loaded.some((u) => u.endsWith('/cli/ctl.js')),
      `the hook saw the ctl module load: ${loaded.join(' ')}`,
    );
    // The error table (a data module without imports) is the one protocol file a ctl call may load.
    const heavy = loaded.filter(
      (u) =>
        !u.endsWith('/packages/protocol/dist/error-table.js') &&
        /\/(kernel|load|fault|view)\/|@xpmesh\/(driver|protocol)|\/packages\/(driver|protocol)\/|\/daemon\/(instance|boot|admin|metrics|config)\.js|prom-client|pino|\/ws\//.test(
          u,
        ),
    );
    assert.deepEqual(heavy, [], 'a ctl call must not load these');
  });
});

describe('typed words', () => {
  it('packs and unpacks little-endian words, refusing out-of-range values', () => {
    assert.deepEqual([...parseWordList('u32', '1,2,0x10')], [1, 0, 0, 0, 2, 0, 0, 0, 16, 0, 0, 0]);
    assert.deepEqual(decodeWords('u32', encodeWords('u32', [0xffff_ffff, 7])), [0xffff_ffff, 7]);
    assert.deepEqual(decodeWords('i32', encodeWords('i32', [-1])), [-1]);
    assert.deepEqual(decodeWords('u64', encodeWords('u64', ['18446744073709551615'])), [
      '18446744073709551615',
    ]);
    assert.deepEqual(decodeWords('u16', encodeWords('u16', [513])), [513]);
    assert.throws(() => encodeWords('u32', [2 ** 32]), /not an integer in 0\.\.4294967295/);
    assert.throws(() => encodeWords('u8', [1.5]), /integer/);
    assert.throws(() => parseWordList('u32', '1,,2'), /list/);
    assert.throws(() => decodeWords('u32', new Uint8Array(3)), /whole number/);
    assert.deepEqual(readAnswerAs('u32', { hex: '0100000002000000' }), { u32: [1, 2] });
    assert.deepEqual(readAnswerAs('text', { hex: '6869' }), { text: 'hi' });
  });
});

describe('a cluster started with xpmesh cluster --json --ports-file --cluster-key', {
  timeout: 120_000,
}, () => {
  const key = 'a-key-someone-else-can-join-with';
  const portsFile = join(tmp, 'ports.json');
  let child: ReturnType<typeof spawn>;
  let out = '';
  let desc: ClusterDescription;
  let url: string;

  before(async () => {
    child = spawn(
      process.execPath,
      [SHIM, 'cluster', '--nodes', '2', '--frames', '256', '--quiet', '--json', '--ports-file', portsFile],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XPMESH_CLUSTER_KEY: key } },
    );
    child.stdout?.on('data', (d) => {
      out += d;
    });
    child.stderr?.on('data', (d) => {
      out += d;
    });
    const end = Date.now() + 60_000;
    while (!existsSync(portsFile) || !out.includes('\n')) {
      if (Date.now() > end || child.exitCode !== null) throw new Error(`cluster did not come up: ${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    desc = JSON.parse(readFileSync(portsFile, 'utf8'));
    url = desc.nodes[0].adminUrl;
  });

  after(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('prints the same JSON it writes to the ports file (mode 0600), with the key it was given', () => {
    assert.deepEqual(JSON.parse(out.split('\n')[0]), desc, 'stdout is one JSON object, the ports file');
    assert.equal(statSync(portsFile).mode & 0o777, 0o600);
    assert.equal(desc.clusterKey, key);
    assert.equal(desc.nodes.length, 2);
    for (const n of desc.nodes) {
      assert.match(n.adminUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(n.peerUrl, `ws://127.0.0.1:${n.peerPort}/`);
    }
    assert.ok(desc.viewUrl.startsWith(`${url}/view?nodes=`));
  });

  it('refuses a short cluster key as bad usage', () => {
    const r = xpmesh(['cluster', '--cluster-key', 'short']);
    assert.equal(r.code, 2);
    assert.match(r.err, /at least 16 characters/);
  });

  it('writes and reads typed words, and prints an error code once (JSON with --json)', () => {
    const env = { XPMESH_ADMIN_URL: url };
    const pid = String(JSON.parse(xpmesh(['ctl', 'spawn'], { env }).out).pid);
    const addr = String(JSON.parse(xpmesh(['ctl', 'mmap', '--pid', pid, '--len', '4096'], { env }).out).addr);
    const w = xpmesh(['ctl', 'write', '--pid', pid, '--addr', addr, '--u32', '1,2,0xdeadbeef'], { env });
    assert.equal(w.code, 0, w.err);
    const r = xpmesh(['ctl', '--json', 'read', '--pid', pid, '--addr', addr, '--count', '3', '--as', 'u32'], {
      env,
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(
      r.out,
      `${JSON.stringify({ u32: [1, 2, 0xdeadbeef] })}\n`,
      'one line, only the asked encoding',
    );

    const gone = xpmesh(['ctl', 'remove', '--segid', 'n1:99'], { env });
    assert.equal(gone.code, 1);
    assert.equal(gone.err.match(/E_NO_SEGMENT/g)?.length, 1, `the code appears once: ${gone.err}`);
    const goneJson = xpmesh(['ctl', 'remove', '--segid', 'n1:99', '--json'], { env });
    assert.equal(goneJson.code, 1);
    const e = JSON.parse(goneJson.err);
    assert.equal(e.error.code, 'E_NO_SEGMENT');
    assert.equal(e.error.status, 404);
    assert.doesNotMatch(e.error.message, /E_NO_SEGMENT/);
    const usage = xpmesh(['ctl', '--json', 'write', '--pid', pid, '--addr', addr, '--u32', '1,x'], { env });
    assert.equal(usage.code, 2);
    assert.equal(JSON.parse(usage.err).error.code, 'E_USAGE');
  });

  it('runs many operations in one process from JSON lines on stdin', () => {
    const lines = [
      { id: 'p', op: 'spawn', uid: 1234, gid: 99, name: 'scripted' },
      { id: 'm', op: 'mmap', pid: '$p.pid', len: 8192 },
      { op: 'write', pid: '$p.pid', addr: '$m.addr', u32: [10, 20, 30] },
      { op: 'read', pid: '$p.pid', addr: '$m.addr', len: 12, as: 'u32' },
      { id: 's', op: 'make', pid: '$p.pid', addr: '$m.addr', size: 8192 },
      { op: 'remove', segid: 'n1:nope' },
      { view: 'pages', segid: '$s.segid' },
      { op: 'read', pid: '$nobody.pid', addr: 0, len: 1 },
    ];
    const input = `${lines.map((l) => JSON.stringify(l)).join('\n')}\nnot json\n`;
    const r = xpmesh(['ctl', '--url', url, 'script'], { input });
    assert.equal(r.code, 1, 'a failed line makes the exit code 1');
    const answers = r.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(answers.length, lines.length + 1, r.out);
    assert.deepEqual(answers[3], { line: 4, ok: true, result: { u32: [10, 20, 30] } });
    assert.match(answers[4].result.segid, /^n1:/);
    assert.equal(answers[5].ok, false);
    assert.equal(answers[5].error.code, 'E_NO_SEGMENT');
    assert.equal(answers[6].ok, true, JSON.stringify(answers[6]));
    assert.equal(answers[7].error.code, 'E_BAD_REQUEST');
    assert.equal(answers[8].error.code, 'E_BAD_REQUEST');

    const stop = xpmesh(['ctl', '--url', url, 'script', '--stop-on-error'], { input });
    assert.equal(stop.out.trim().split('\n').length, 6, 'stops after the first failed line');
  });

  it('lists processes in /status with uid, gid, state and the signal one died of', async () => {
    const x = new Xpmesh(url);
    const { pid } = await x.spawn({ uid: 4321, gid: 77, name: 'victim', catchSignals: false });
    const { pid: ok } = await x.spawn({ uid: 5, gid: 6 });
    // A process that does not catch signals touches a hole in a segment's attachment? Simplest
    // fatal signal: SIGSEGV from touching unmapped memory.
    await assert.rejects(x.read(pid, 0x7000_0000, 4), (e: AdminCallError) => e instanceof AdminCallError);
    await x.exit(ok);
    const st = await x.status<{ processes: Array<Record<string, unknown>> }>();
    const victim = st.processes.find((p) => p.pid === pid);
    assert.deepEqual(
      { ...victim, code: undefined },
      { pid, name: 'victim', uid: 4321, gid: 77, state: 'exited', code: undefined, signal: 'SIGSEGV' },
    );
    const clean = st.processes.find((p) => p.pid === ok);
    assert.equal(clean?.state, 'exited');
    assert.equal(clean?.signal, null);
    const live = st.processes.find((p) => p.state === 'running');
    assert.ok(
      live && typeof live.uid === 'number' && typeof live.gid === 'number',
      JSON.stringify(st.processes),
    );
  });

  it('is usable from JavaScript through @xpmesh/node/client', async () => {
    const mod = await import('@xpmesh/node/client');
    assert.equal(mod.Xpmesh, Xpmesh, 'the package export is this module');
    const x = new mod.Xpmesh(url);
    const { pid } = await x.spawn();
    const { addr } = await x.mmap(pid, 4096);
    await x.writeWords(pid, addr, 'u32', [3, 1, 4, 1, 5]);
    assert.deepEqual(await x.readWords(pid, addr, 'u32', 5), [3, 1, 4, 1, 5]);
    const err = await x.remove('n1:gone').catch((e: unknown) => e);
    assert.ok(err instanceof AdminCallError);
    assert.equal(err.code, 'E_NO_SEGMENT');
    assert.equal(err.message.match(/E_NO_SEGMENT/g)?.length, 1);
  });
});
