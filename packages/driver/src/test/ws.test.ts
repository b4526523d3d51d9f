/**
 * Across real OS processes over ws on 127.0.0.1: each instance (kernel + driver + ws PeerNetwork) is
 * its own Node process (ws-instance.js), driven over IPC. XPMEM's base scenario, permissions, many
 * writers, source exit, and the death of an instance (SIGKILL) holding the only dirty copy.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { after, before, test } from 'node:test';

const PAGE = 4096;
const script = new URL('./ws-instance.js', import.meta.url).pathname;

class Remote {
  private seq = 1;
  private waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  readonly ready: Promise<void>;
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let ready!: () => void;
    this.ready = new Promise((r) => {
      ready = r;
    });
    child.on('message', (m: { id: number; value?: unknown; error?: { code: string; message: string } }) => {
      if (m.id === 0) return ready();
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.error)
        w?.reject(Object.assign(new Error(`${m.error.code}: ${m.error.message}`), { code: m.error.code }));
      else w?.resolve(m.value);
    });
    child.on('exit', () => {
      for (const w of this.waiting.values())
        w.reject(Object.assign(new Error('instance exited'), { code: 'EXITED' }));
      this.waiting.clear();
    });
  }
  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.seq++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, op, ...args });
    });
  }
}

async function expectCode(p: Promise<unknown>, code: string) {
  await assert.rejects(p, (e: { code?: string }) => {
    assert.equal(e.code, code, String(e));
    return true;
  });
}

let A: Remote;
let B: Remote;
let C: Remote;
const all = () => [A, B, C];

before(async () => {
  [A, B, C] = ['a', 'b', 'c'].map(
    (n) => new Remote(n, fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })),
  );
  await Promise.all(all().map((r) => r.ready));
  const urls = await Promise.all(all().map((r) => r.call<string>('init', { name: r.name })));
  await Promise.all(
    all().map((r, i) =>
      r.call('peers', { peers: all().flatMap((o, j) => (j === i ? [] : [{ node: o.name, url: urls[j] }])) }),
    ),
  );
});
after(async () => {
  for (const r of all()) {
    if (r.child.exitCode === null && !r.child.killed) await r.call('close').catch(() => undefined);
  }
});

async function source(pages: number, mode = 0o600) {
  const pid = await A.call<number>('spawn');
  const va = await A.call<number>('mmap', { pid, len: pages * PAGE });
  for (let i = 0; i < pages; i++) await A.call('write32', { pid, addr: va + i * PAGE, value: 0x100 + i });
  const segid = await A.call<string>('make', { pid, va, size: pages * PAGE, mode });
  return { pid, va, segid };
}

async function attach(r: Remote, segid: string, access: 'r' | 'rw', pages: number) {
  const pid = await r.call<number>('spawn');
  const apid = await r.call<string>('get', { pid, segid, access });
  const va = await r.call<number>('attach', { pid, apid, offset: 0, size: pages * PAGE });
  return { pid, apid, va };
}

test('ws, separate processes: base read-modify, permission refusal, detach shrinks the home map', async () => {
  const s = await source(3);
  const b = await attach(B, s.segid, 'rw', 3);
  assert.equal(await B.call('read32', { pid: b.pid, addr: b.va + 2 * PAGE }), 0x102);
  await B.call('write32', { pid: b.pid, addr: b.va + PAGE, value: 0xdead });
  assert.equal(await A.call('read32', { pid: s.pid, addr: s.va + PAGE }), 0xdead);
  const cpid = await C.call<number>('spawn', { uid: 2000, gid: 2000 });
  await expectCode(C.call('get', { pid: cpid, segid: s.segid, access: 'r' }), 'E_PERM');
  await B.call('detach', { pid: b.pid, va: b.va });
  await B.call('release', { pid: b.pid, apid: b.apid });
  const st = await A.call<{ rmap: { entries: number } }>('status');
  assert.equal(st.rmap.entries, 0);
  await A.call('remove', { segid: s.segid });
});

test('ws, separate processes: many-to-one writers and source exit → SIGBUS', async () => {
  const s = await source(1);
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
  const s = await source(1);
  const c = await attach(C, s.segid, 'rw', 1);
  await C.call('write32', { pid: c.pid, addr: c.va, value: 0xc0ffee });
  C.child.kill('SIGKILL');
  // the home notices (heartbeats / closed socket), fences c and reverts the page
  assert.equal(await A.call('read32', { pid: s.pid, addr: s.va }), 0x100);
  const st = await A.call<{
    counters: { lostDirtyPages: number; fences: number };
    rmap: { entries: number };
    lost: unknown[];
  }>('status');
  assert.equal(st.counters.lostDirtyPages, 1);
  assert.equal(st.rmap.entries, 0);
  assert.deepEqual(await A.call('check'), []);
  await A.call('remove', { segid: s.segid });
});
