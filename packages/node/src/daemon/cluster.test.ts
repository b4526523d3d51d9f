/**
 * End to end on real OS processes over loopback: a 3-instance local cluster driven through the
 * admin API and `xpmesh ctl`, the narrated demo, an instance killed while the others serve, and
 * clean shutdown leaving no process behind. Only 127.0.0.1; only processes these tests started.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/protocol/base';
import { runScenario } from '../cli/demo.js';
import type { AdminCallError } from './admin-client.js';
import { type LocalCluster, launchCluster, MAIN_JS } from './launcher.js';

const logDir = mkdtempSync(join(tmpdir(), 'xpmesh-cluster-test-'));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function dumpLogs(): string {
  return readdirSync(logDir)
    .map((f) => `--- ${f}\n${readFileSync(join(logDir, f), 'utf8').split('\n').slice(-30).join('\n')}`)
    .join('\n');
}

function ctl(
  url: string,
  ...args: string[]
): { code: number | null; json: Record<string, unknown>; err: string } {
  const r = spawnSync(process.execPath, [MAIN_JS, 'ctl', '--url', url, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout);
  } catch {
    // not JSON (an error)
  }
  return { code: r.status, json, err: r.stderr };
}

async function peersUp(c: LocalCluster, i: number, n: number) {
  return until(`${c.nodes[i].id} to see ${n} peers up`, 15_000, async () => {
    const s = await c.client(i).get<{ peers: Array<{ state: string }> }>('/status');
    return s.peers.filter((p) => p.state === 'up').length >= n ? s : undefined;
  });
}

describe('a local 3-instance cluster', { timeout: 120_000 }, () => {
  let c: LocalCluster;
  before(async () => {
    c = await launchCluster({
      nodes: 3,
      output: 'files',
      logDir,
      logLevel: 'debug',
      heartbeatMs: 200,
      missedBeats: 3,
      ackTimeoutMs: 1000,
    });
    for (let i = 0; i < 3; i++) await peersUp(c, i, 2);
  });
  after(async () => {
    if (c) await c.stop(5000);
  });

  it('runs the narrated demo scenario to success', async () => {
    const lines: string[] = [];
    const io = { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l) };
    const code = await runScenario(
      c.nodes.map((n) => n.adminUrl),
      undefined,
      io,
      false,
    );
    assert.equal(code, 0, `${lines.join('\n')}\n${dumpLogs()}`);
    assert.match(lines.join('\n'), /Demo passed/);
    assert.match(lines.join('\n'), /invalidate/, 'the narration shows the invalidations');
    // issue 17: the merged log is causal (a reply after its request) and the happy path has no error
    const REPLY = new Set(['ok', 'get-ok', 'map-ok', 'invalidate-ack', 'error']);
    const msgs = lines.filter((l) => / → \S+ {2}\S+/.test(l));
    const parsed = msgs.map((l) => ({
      l,
      type: / → \S+ {2}(\S+)/.exec(l)?.[1] ?? '',
      cid: /cid=([^\s)]+)/.exec(l)?.[1],
    }));
    parsed.forEach((m, i) => {
      if (!REPLY.has(m.type) || m.cid === undefined) return;
      const req = parsed.findIndex((r) => r.cid === m.cid && !REPLY.has(r.type));
      assert.ok(req < i, `"${m.l}" is listed before its request`);
    });
    assert.deepEqual(
      msgs.filter((l) => / {2}error /.test(l) || / {2}error$/.test(l)),
      [],
      'no error message on the wire in the happy path (release after segment-gone sends nothing)',
    );
  });

  it('is operated by hand with xpmesh ctl', () => {
    const [a, b] = c.nodes.map((n) => n.adminUrl);
    const pa = ctl(a, 'spawn', '--name', 'src');
    assert.equal(pa.code, 0, pa.err);
    const pid = String(pa.json.pid);
    const m = ctl(a, 'mmap', '--pid', pid, '--len', String(2 * PAGE_SIZE));
    assert.equal(m.code, 0, m.err);
    const addr = String(m.json.addr);
    assert.equal(ctl(a, 'write', '--pid', pid, '--addr', addr, '--text', 'by hand').code, 0);
    assert.equal(ctl(a, 'read', '--pid', pid, '--addr', addr, '--len', '7').json.text, 'by hand');
    const pf = ctl(a, 'pfn', '--pid', pid, '--addr', addr);
    assert.equal(pf.code, 0, pf.err);
    const segid = String(
      ctl(a, 'make', '--pid', pid, '--addr', addr, '--size', String(2 * PAGE_SIZE), '--mode', '0644').json
        .segid,
    );
    assert.match(segid, /^n1:/);

    const pb = String(ctl(b, 'spawn').json.pid);
    const apid = String(ctl(b, 'get', '--pid', pb, '--segid', segid, '--access', 'r').json.apid);
    const at = ctl(b, 'attach', '--pid', pb, '--apid', apid, '--size', String(2 * PAGE_SIZE));
    assert.equal(at.code, 0, at.err);
    const baddr = String(at.json.addr);
    assert.equal(ctl(b, 'read', '--pid', pb, '--addr', baddr, '--len', '7').json.text, 'by hand');

    const pages = spawnSync(process.execPath, [MAIN_JS, 'ctl', '--url', a, 'pages', '--segid', segid], {
      encoding: 'utf8',
    });
    assert.equal(pages.status, 0, pages.stderr);
    assert.match(pages.stdout, /n2/, 'the home lists n2 as a sharer of page 0');

    const rec = ctl(a, 'reclaim', '--pid', pid, '--addr', addr);
    assert.equal(rec.code, 0, rec.err);
    assert.equal(rec.json.outcome, 'reclaimed', 'an exported page can be reclaimed (after invalidate + ack)');
    assert.equal(
      ctl(b, 'read', '--pid', pb, '--addr', baddr, '--len', '7').json.text,
      'by hand',
      'data survives reclaim',
    );
    const mig = ctl(a, 'migrate', '--pid', pid, '--addr', addr);
    assert.equal(mig.code, 0, mig.err);
    assert.notEqual(mig.json.from, mig.json.to, 'the page moved to another frame');
    assert.equal(
      ctl(b, 'read', '--pid', pb, '--addr', baddr, '--len', '7').json.text,
      'by hand',
      'data survives migration',
    );

    const st = ctl(b, 'status');
    assert.equal(st.code, 0, st.err);
    assert.ok(JSON.stringify(st.json).includes(apid), 'status lists the attachment');
    assert.equal(ctl(b, 'detach', '--pid', pb, '--addr', baddr).code, 0);
    assert.equal(ctl(b, 'release', '--pid', pb, '--apid', apid).code, 0);
    assert.equal(ctl(a, 'remove', '--segid', segid).code, 0);
    const gone = ctl(a, 'remove', '--segid', segid);
    assert.equal(gone.code, 1);
    assert.match(gone.err, /E_NO_SEGMENT|EINVAL|ENOENT/);
    assert.equal(ctl(a, 'exit', '--pid', pid).code, 0);
    assert.equal(ctl(b, 'exit', '--pid', pb).code, 0);
    const metrics = spawnSync(process.execPath, [MAIN_JS, 'ctl', '--url', a, 'metrics'], {
      encoding: 'utf8',
    });
    assert.match(metrics.stdout, /xpmesh_messages_total\{type="map",direction="in"/);
    assert.match(metrics.stdout, /xpmesh_reclaim_total/);
  });

  it('keeps serving when an instance is killed, fences it, and shows it in /status', async () => {
    const [A, B] = [c.client(0), c.client(1)];
    const pid = (await A.op<{ pid: number }>('spawn')).pid;
    const addr = (await A.op<{ addr: number }>('mmap', { pid, len: PAGE_SIZE })).addr;
    await A.op('write', { pid, addr, text: 'still here' });
    const segid = (await A.op<{ segid: string }>('make', { pid, addr, size: PAGE_SIZE, mode: 0o644 })).segid;
    // n3 maps the page for writing, then dies without a goodbye.
    const C = c.client(2);
    const pc = (await C.op<{ pid: number }>('spawn')).pid;
    const apc = (await C.op<{ apid: string }>('get', { pid: pc, segid, access: 'rw' })).apid;
    const ac = (await C.op<{ addr: number }>('attach', { pid: pc, apid: apc, size: PAGE_SIZE })).addr;
    assert.equal((await C.op<{ text: string }>('read', { pid: pc, addr: ac, len: 10 })).text, 'still here');
    const killed = c.nodes[2].pid;
    const t0 = Date.now();
    await c.kill(2, 'SIGKILL');
    assert.equal(alive(killed), false);

    await until('n1 to report n3 down', 10_000, async () => {
      const s = await A.get<{ peers: Array<{ node: string; state: string; epoch: number }> }>('/status');
      const p = s.peers.find((x) => x.node === 'n3');
      return p?.state !== 'up' ? s : undefined;
    });
    const detectMs = Date.now() - t0;
    assert.ok(detectMs < 5000, `n3 noticed gone after ${detectMs} ms`);
    // The survivors keep serving: n2 attaches and reads the same page; the home reads and writes.
    const pb = (await B.op<{ pid: number }>('spawn')).pid;
    const apb = (await B.op<{ apid: string }>('get', { pid: pb, segid, access: 'rw' })).apid;
    const ab = (await B.op<{ addr: number }>('attach', { pid: pb, apid: apb, size: PAGE_SIZE })).addr;
    assert.equal((await B.op<{ text: string }>('read', { pid: pb, addr: ab, len: 10 })).text, 'still here');
    await B.op('write', { pid: pb, addr: ab, text: 'after kill' });
    assert.equal((await A.op<{ text: string }>('read', { pid, addr, len: 10 })).text, 'after kill');
    const driverPeers = (
      await A.get<{ driver: { peers: Array<{ node: string; state: string }> } }>('/status')
    ).driver.peers;
    assert.notEqual(driverPeers.find((p) => p.node === 'n3')?.state, 'up', '/status shows n3 is not up');
    const metrics = await A.get<string>('/metrics');
    assert.match(metrics, /xpmesh_peers\{state="up",node="n1"\} 1/);
    await assert.rejects(C.get('/healthz'), (e: AdminCallError) => e.code === 'E_CONNECT');
  });

  it('stops on SIGTERM with exit 0 and leaves no process behind', async () => {
    const pids = c.nodes.map((n) => n.pid);
    const codes = await c.stop(8000);
    assert.deepEqual(codes.slice(0, 2), [0, 0], `exit codes ${codes.join(',')}\n${dumpLogs()}`);
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} still alive`);
  });
});

describe('xpmesh cluster (the command)', { timeout: 60_000 }, () => {
  it('prints admin URLs and stops every instance on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [MAIN_JS, 'cluster', '--nodes', '2', '--quiet', '--frames', '256'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await until('the cluster to be up', 30_000, async () =>
        out.includes('cluster of 2 up') ? true : undefined,
      );
      const pids = [...out.matchAll(/pid (\d+) {2}admin (http:\/\/127\.0\.0\.1:\d+)/g)].map((m) =>
        Number(m[1]),
      );
      assert.equal(pids.length, 2, out);
      for (const pid of pids) assert.ok(alive(pid));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, out);
      for (const pid of pids)
        assert.equal(alive(pid), false, `instance pid ${pid} outlived the cluster command`);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('xpmesh demo runs on its own local cluster and exits 0', { timeout: 90_000 }, () => {
    const r = spawnSync(process.execPath, [MAIN_JS, 'demo'], { encoding: 'utf8', timeout: 80_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /Demo passed/);
    assert.match(r.stdout, /Local cluster stopped \(exit codes 0, 0, 0\)/);
  });
});
