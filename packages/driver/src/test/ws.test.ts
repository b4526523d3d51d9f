/**
 * Across real OS processes over ws on 127.0.0.1: each instance (kernel + driver + ws PeerNetwork) is
 * its own Node process (ws-instance.js), driven over IPC. XPMEM's base scenario, permissions, many
 * writers, source exit, and the death of an instance (SIGKILL) holding the only dirty copy.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { attach, expectCode, type Status, source, wsCluster } from './ws-harness.js';

const cluster = wsCluster(['a', 'b', 'c']);
const [A, B, C] = cluster.nodes;
const all = () => [A, B, C];

before(() => cluster.start());
after(() => cluster.close());

test('ws, separate processes: base read-modify, permission refusal, detach shrinks the home map', async () => {
  const s = await source(A, 3);
  const b = await attach(B, s.segid, 'rw', 3);
  assert.equal(await B.call('read32', { pid: b.pid, addr: b.va + 2 * PAGE_SIZE }), 0x102);
  await B.call('write32', { pid: b.pid, addr: b.va + PAGE_SIZE, value: 0xdead });
  assert.equal(await A.call('read32', { pid: s.pid, addr: s.va + PAGE_SIZE }), 0xdead);
  const cpid = await C.call<number>('spawn', { uid: 2000, gid: 2000 });
  await expectCode(C.call('get', { pid: cpid, segid: s.segid, access: 'r' }), 'E_PERM');
  await B.call('detach', { pid: b.pid, va: b.va });
  await B.call('release', { pid: b.pid, apid: b.apid });
  const st = await A.call<Status>('status');
  assert.equal(st.rmap.entries, 0);
  await A.call('remove', { segid: s.segid });
});

test('ws, separate processes: many-to-one writers and source exit → SIGBUS', async () => {
  const s = await source(A, 1);
  const b = await attach(B, s.segid, 'rw', 1);
  const c = await attach(C, s.segid, 'rw', 1);
  await Promise.all([
    B.call('incr', { pid: b.pid, addr: b.va + 8, times: 20 }),
    C.call('incr', { pid: c.pid, addr: c.va + 8, times: 20 }),
    A.call('incr', { pid: s.pid, addr: s.va + 8, times: 20 }),
  ]);
  assert.equal(await A.call('read32', { pid: s.pid, addr: s.va + 8 }), 60);
  await A.call('exit', { pid: s.pid });
  await expectCode(B.call('read32', { pid: b.pid, addr: b.va }), 'SIGBUS');
  await expectCode(C.call('read32', { pid: c.pid, addr: c.va }), 'SIGBUS');
  for (const r of all()) assert.deepEqual(await r.call('check'), [], `${r.name}: kernel invariants`);
});

test('ws, separate processes: an instance killed with the only dirty copy is fenced; the page reverts', async () => {
  const s = await source(A, 1);
  const c = await attach(C, s.segid, 'rw', 1);
  await C.call('write32', { pid: c.pid, addr: c.va, value: 0xc0ffee });
  C.child.kill('SIGKILL');
  // the home notices (heartbeats / closed socket), fences c and reverts the page
  assert.equal(await A.call('read32', { pid: s.pid, addr: s.va }), 0x100);
  const st = await A.call<Status>('status');
  assert.equal(st.counters.lostDirtyPages, 1);
  assert.equal(st.rmap.entries, 0);
  assert.deepEqual(await A.call('check'), []);
  await A.call('remove', { segid: s.segid });
});
