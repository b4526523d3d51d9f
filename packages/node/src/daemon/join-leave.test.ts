/**
 * Join and leave at run time, with membership from a real DNS name, on real OS processes over
 * loopback: every instance listens on its own loopback address (127.0.0.1, .2, .3) on the SAME
 * port, and finds the others with `--peers-dns localhost:PORT` (localhost resolves to 127.0.0.1,
 * so 127.0.0.1 is the member everyone can find, and it skips itself). Only 127.0.0.0/8; only
 * processes this test started, ended by pid.
 *
 * - a later instance joins the running cluster, can get + attach a segment and export its own;
 * - SIGTERM makes it leave: its export goes (the attacher gets SIGBUS: segment-gone) and the page
 *   it dirtied through its attachment comes home (the home reads the data);
 * - started again with the same id it joins again with a new (larger) epoch;
 * - churn: with `--max-peers 2`, members under new node ids joining and leaving in turn are all
 *   admitted (departed entries are evicted; their epochs kept), the driver forgets them, and a
 *   departed one returns.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { type AdminCallError, AdminClient } from './admin-client.js';
import { freePorts, MAIN_JS } from './launcher.js';

const PAGE = 4096;

interface Proc {
  id: string;
  child: ChildProcess;
  admin: AdminClient;
  exited: Promise<number | string>;
  log: string[];
}

const started: Proc[] = [];
after(async () => {
  for (const p of started)
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await Promise.all(started.map((p) => p.exited));
});

async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startNode(
  id: string,
  host: string,
  peerPort: number,
  adminPort: number,
  extra: string[] = [],
): Promise<Proc> {
  const child = spawn(
    process.execPath,
    [
      MAIN_JS,
      'node',
      '--id',
      id,
      '--listen-host',
      host,
      '--listen-port',
      String(peerPort),
      '--peers-dns',
      `localhost:${peerPort}`,
      '--peers-dns-interval-ms',
      '200',
      '--admin-port',
      String(adminPort),
      '--frames',
      '256',
      '--heartbeat-ms',
      '200',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, XPMESH_ADMIN_TOKEN: '' } },
  );
  const log: string[] = [];
  const keep = (d: Buffer) => {
    log.push(...String(d).split('\n').filter(Boolean));
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | string>((r) => child.once('exit', (c, s) => r(c ?? s ?? 'unknown')));
  const p: Proc = { id, child, admin: new AdminClient(`http://127.0.0.1:${adminPort}`), exited, log };
  started.push(p);
  await Promise.race([
    p.admin.waitHealthy(20_000),
    exited.then((c) => {
      throw new Error(`${id} exited during start-up (${c}):\n${log.join('\n')}`);
    }),
  ]);
  return p;
}

interface PeerRow {
  node: string;
  state: string;
  epoch: number;
}
type Status = { peers: PeerRow[]; membership?: { urls: string[]; selfSkipped: number } };
const status = (p: Proc) => p.admin.get<Status>('/status');
const peerUp = (p: Proc, node: string) => async () =>
  (await status(p)).peers.find((x) => x.node === node && x.state === 'up');
const text = (r: { text?: string }) => (r.text ?? '').replace(/\0+$/, '');

describe('join and leave at run time (membership from DNS: localhost)', () => {
  it('a later instance joins, serves and exports; SIGTERM leaves cleanly; a restart is a new epoch', {
    timeout: 120_000,
  }, async () => {
    // one port free on 127.0.0.1; the others are distinct addresses, so the same port is free there
    const [peerPort, a1, a2, a3, a4] = await freePorts(5);
    const A = await startNode('alpha', '127.0.0.1', peerPort, a1);
    const B = await startNode('beta', '127.0.0.2', peerPort, a2);
    await until('beta up at alpha', 20_000, peerUp(A, 'beta'));
    await until('alpha up at beta', 20_000, peerUp(B, 'alpha'));
    const sa = await status(A);
    assert.deepEqual(sa.membership?.urls, [], 'alpha resolves localhost to itself and never dials it');
    assert.ok((sa.membership?.selfSkipped ?? 0) > 0);
    assert.deepEqual((await status(B)).membership?.urls, [`ws://127.0.0.1:${peerPort}`]);

    // alpha exports 2 pages
    const { pid: pa } = await A.admin.op<{ pid: number }>('spawn');
    const { addr: base } = await A.admin.op<{ addr: number }>('mmap', { pid: pa, len: 2 * PAGE });
    await A.admin.op('write', { pid: pa, addr: base, text: 'hello' });
    await A.admin.op('write', { pid: pa, addr: base + PAGE, text: 'page-1' });
    const { segid } = await A.admin.op<{ segid: string }>('make', {
      pid: pa,
      addr: base,
      size: 2 * PAGE,
      mode: 0o666,
    });

    // J joins later, knowing nothing but the name
    const J = await startNode('joiner', '127.0.0.3', peerPort, a3);
    await until('joiner up at alpha', 20_000, peerUp(A, 'joiner'));
    const epoch1 = (await until('joiner up at alpha', 20_000, peerUp(A, 'joiner'))).epoch;
    const { pid: pj } = await J.admin.op<{ pid: number }>('spawn');
    const { apid } = await J.admin.op<{ apid: string }>('get', { pid: pj, segid, access: 'rw' });
    const { addr: att } = await J.admin.op<{ addr: number }>('attach', { pid: pj, apid, size: 2 * PAGE });
    assert.equal(text(await J.admin.op('read', { pid: pj, addr: att, len: 5 })), 'hello', 'remote fault');
    await J.admin.op('write', { pid: pj, addr: att + PAGE, text: 'dirty!' }); // only copy: at J

    // J exports its own segment; alpha attaches it
    const { addr: jbase } = await J.admin.op<{ addr: number }>('mmap', { pid: pj, len: PAGE });
    await J.admin.op('write', { pid: pj, addr: jbase, text: 'from-j' });
    const { segid: jseg } = await J.admin.op<{ segid: string }>('make', {
      pid: pj,
      addr: jbase,
      size: PAGE,
      mode: 0o666,
    });
    assert.match(jseg, /^joiner:/);
    const { apid: ap2 } = await A.admin.op<{ apid: string }>('get', { pid: pa, segid: jseg, access: 'r' });
    const { addr: aatt } = await A.admin.op<{ addr: number }>('attach', { pid: pa, apid: ap2, size: PAGE });
    assert.equal(text(await A.admin.op('read', { pid: pa, addr: aatt, len: 6 })), 'from-j');

    // leave: SIGTERM
    J.child.kill('SIGTERM');
    assert.equal(await J.exited, 0, `joiner's exit code after SIGTERM\n${J.log.slice(-20).join('\n')}`);
    assert.equal(
      text(await A.admin.op('read', { pid: pa, addr: base + PAGE, len: 6 })),
      'dirty!',
      'the page the leaver dirtied came home with its detach',
    );
    const gone = await A.admin.op('read', { pid: pa, addr: aatt, len: 6 }).then(
      () => 'read succeeded',
      (e: AdminCallError) => e.code,
    );
    assert.equal(gone, 'SIGBUS', "the leaver's export is gone at its attacher");
    const metrics = (await A.admin.get<string>('/metrics')).split('\n');
    const count = (prefix: string, ...labels: string[]) =>
      metrics
        .filter((l) => l.startsWith(prefix) && labels.every((x) => l.includes(x)))
        .reduce((a, l) => a + Number(l.split(' ').pop()), 0);
    assert.ok(
      count('xpmesh_messages_total{', 'type="segment-gone"', 'direction="in"') >= 1,
      'the leaver told its attacher: segment-gone',
    );
    assert.ok(
      count('xpmesh_messages_total{', 'type="detach"', 'direction="in"') >= 1,
      'it detached (dirty data home)',
    );
    const lostDirty = metrics.find((l) => l.startsWith('xpmesh_lost_dirty_pages_total'));
    assert.ok(!lostDirty || / 0$/.test(lostDirty), `a graceful leave loses no dirty page: ${lostDirty}`);

    // return: same id, new incarnation, larger epoch; it serves again
    const J2 = await startNode('joiner', '127.0.0.3', peerPort, a4);
    const again = await until('joiner up again at alpha', 20_000, async () => {
      const r = await peerUp(A, 'joiner')();
      return r && r.epoch > epoch1 ? r : undefined;
    });
    assert.ok(again.epoch > epoch1);
    const { pid: pj2 } = await J2.admin.op<{ pid: number }>('spawn');
    const { apid: ap3 } = await J2.admin.op<{ apid: string }>('get', { pid: pj2, segid, access: 'r' });
    const { addr: att3 } = await J2.admin.op<{ addr: number }>('attach', {
      pid: pj2,
      apid: ap3,
      size: 2 * PAGE,
    });
    assert.equal(text(await J2.admin.op('read', { pid: pj2, addr: att3 + PAGE, len: 6 })), 'dirty!');

    for (const p of [J2, B, A]) p.child.kill('SIGTERM');
    for (const p of [J2, B, A]) assert.equal(await p.exited, 0, `${p.id} exit code`);
  });

  it('churn with --max-peers 2: members under new node ids joining and leaving in turn are all admitted; a departed one returns', {
    timeout: 120_000,
  }, async () => {
    const [peerPort, a1, a2, a3, a4, a5] = await freePorts(6);
    const A = await startNode('alpha', '127.0.0.1', peerPort, a1, ['--max-peers', '2']);
    const scrape = async (name: string, label = '') => {
      const line = (await A.admin.get<string>('/metrics'))
        .split('\n')
        .find((l) => l.startsWith(name) && l.includes(label));
      return Number(line?.split(' ').pop() ?? 0);
    };
    const epochs = new Map<string, number>();
    // three tasks, each under a new node id (as Swarm re-creates them): join, then leave
    for (const [i, admin] of [a2, a3, a4].entries()) {
      const id = `task${i}`;
      const J = await startNode(id, `127.0.0.${2 + i}`, peerPort, admin);
      epochs.set(id, (await until(`${id} up at alpha`, 20_000, peerUp(A, id))).epoch);
      J.child.kill('SIGTERM');
      assert.equal(await J.exited, 0, `${id} exit code`);
      await until(`alpha sees ${id} leave`, 20_000, async () => ((await peerUp(A, id)()) ? undefined : true));
    }
    assert.equal(await scrape('xpmesh_refusals_total{', 'kind="peer_table_full"'), 0, 'nobody refused 4012');
    assert.ok((await scrape('xpmesh_peers_evicted_total')) >= 1, 'departed entries were evicted');
    assert.ok((await status(A)).peers.length <= 2, 'the table stays within --max-peers');
    // the driver forgets the departed tasks too (once their fences waited out the lease)
    await until("alpha's driver forgot the departed tasks", 20_000, async () =>
      (await scrape('xpmesh_driver_nodes_pruned_total{')) >= 3 ? true : undefined,
    );
    assert.equal(await scrape('xpmesh_driver_nodes{'), 0, 'no per-node driver state left');
    // the first task returns (a restart: new incarnation, larger epoch): admitted, its old epoch remembered
    const R = await startNode('task0', '127.0.0.5', peerPort, a5);
    const back = await until('task0 up again at alpha', 20_000, peerUp(A, 'task0'));
    assert.ok(back.epoch > (epochs.get('task0') ?? 0));
    for (const p of [R, A]) p.child.kill('SIGTERM');
    for (const p of [R, A]) assert.equal(await p.exited, 0, `${p.id} exit code`);
  });

  it('two live instances claiming one node id: never silent (refused at the peer, logged, counted)', {
    timeout: 60_000,
  }, async () => {
    const [peerPort, a1, a2, a3] = await freePorts(4);
    const A = await startNode('alpha', '127.0.0.1', peerPort, a1);
    const T1 = await startNode('twin', '127.0.0.2', peerPort, a2);
    await until('twin up at alpha', 20_000, peerUp(A, 'twin'));
    const T2 = await startNode('twin', '127.0.0.3', peerPort, a3);
    const metric = async (p: Proc) => {
      const line = (await p.admin.get<string>('/metrics'))
        .split('\n')
        .find((l) => l.startsWith('xpmesh_refusals_total{') && l.includes('kind="node_id_collision"'));
      return Number(line?.split(' ').pop() ?? 0);
    };
    const count = await until('the collision counted at the superseded twin', 20_000, async () => {
      const n = await metric(T1);
      return n > 0 ? n : undefined;
    });
    assert.ok(count >= 1);
    assert.ok(
      T1.log.some((l) => l.includes('node id collision')),
      'logged as an error at the instance that lost its session',
    );
    // the peer keeps one twin and refuses the other: the superseded one never comes back up
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await status(T1)).peers.find((x) => x.node === 'alpha')?.state === 'up', false);
    assert.equal((await status(T2)).peers.find((x) => x.node === 'alpha')?.state, 'up');
    for (const p of [T1, T2, A]) p.child.kill('SIGTERM');
    await Promise.all([T1, T2, A].map((p) => p.exited));
  });
});
