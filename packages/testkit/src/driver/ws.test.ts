/**
 * What only real processes can show: an instance process killed with SIGKILL (no goodbye, its
 * sockets closed by the OS) while it holds the only dirty copy of a page. Three instances as
 * separate OS processes over ws on 127.0.0.1 with the default, fast failure detection (heartbeat
 * 100 ms × 5, lease 500 ms). The XPMEM scenarios run on both transports in scenarios.ts.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PAGE_SIZE } from '@xpmesh/kernel';
import { remoteInstance, wsCluster } from './ws-harness.js';

const cluster = wsCluster(['a', 'b', 'c']);
const [A, , C] = cluster.nodes.map(remoteInstance);

before(() => cluster.start());
after(() => cluster.close());

test('ws, separate processes: an instance killed with the only dirty copy is fenced; the page reverts', async () => {
  const pid = await A.spawn();
  const va = await A.mmap(pid, PAGE_SIZE);
  await A.write32(pid, va, 0x100);
  const segid = await A.make(pid, va, PAGE_SIZE, 0o600);
  const q = await C.spawn();
  const cva = await C.attach(q, await C.get(q, segid, 'rw'), 0, PAGE_SIZE);
  await C.write32(q, cva, 0xc0ffee);
  await cluster.nodes[2].kill('SIGKILL');
  // the home notices (heartbeats / closed socket), fences c and reverts the page
  assert.equal(await A.read32(pid, va), 0x100);
  const st = await A.status();
  assert.equal(st.counters.lostDirtyPages, 1);
  assert.equal(st.lost.length, 1, 'the lost-dirty event was reported');
  assert.equal(st.rmap.entries, 0);
  await A.quiesce();
  assert.deepEqual(await A.driverCheck(['a', 'b']), [], 'no reverse-map entry for the dead instance');
  assert.deepEqual(await A.kernelCheck(), []);
  await A.remove(segid);
});
