/**
 * The swap file of `xpmesh node` never outlives the instance: its name is removed as soon as the
 * kernel has opened it (the kernel uses it through the open descriptor), so a normal stop, a signal,
 * the launcher going away, a failed start-up and even SIGKILL leave nothing in the directory; and
 * the kernel still swaps through the unlinked file.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runNode } from '../cli/node.js';
import { AdminClient } from './admin-client.js';
import { bootLayers } from './boot.js';
import { resolveConfig } from './config.js';
import { startInstance } from './instance.js';
import { freePorts, MAIN_JS } from './launcher.js';
import { silentLogger } from './logger.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function swapDir(): { dir: string; swap: string } {
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-swaptest-'));
  dirs.push(dir);
  return { dir, swap: join(dir, 'node.swap') };
}

/** Descriptors of this process open on `path` (Linux: /proc/self/fd; -1 where that is missing). */
function fdsOn(path: string): number {
  if (!existsSync('/proc/self/fd')) return -1;
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(path)) n++;
    } catch {
      // closed meanwhile (the fd of readdir itself)
    }
  }
  return n;
}

function holdPort(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}
const portOf = (s: Server) => (s.address() as { port: number }).port;
const closeServer = (s: Server) => new Promise((r) => s.close(r));

describe('swap file of an instance', () => {
  it('is gone from the directory once the kernel has it, still swaps, and is closed by stop', async () => {
    const { dir, swap } = swapDir();
    const [listenPort] = await freePorts(1);
    const config = resolveConfig(
      { id: 'sw1', 'listen-port': String(listenPort), 'admin-port': '0', frames: '64', 'swap-file': swap },
      {},
    );
    const parts = await bootLayers(config, silentLogger);
    const instance = await startInstance(config, silentLogger, parts);
    try {
      assert.deepEqual(readdirSync(dir), [], 'the name is removed right after the kernel opened the file');
      if (fdsOn(swap) >= 0) assert.equal(fdsOn(swap), 1, 'the kernel holds the unlinked file open');
      // Swap out and back in through the open descriptor.
      const c = new AdminClient(instance.adminUrl);
      const { pid } = await c.op<{ pid: number }>('spawn', {});
      const { addr } = await c.op<{ addr: number }>('mmap', { pid, len: 4096 });
      await c.op('write', { pid, addr, text: 'kept in swap' });
      const r = await c.op<{ outcome: string }>('reclaim', { pid, addr });
      assert.equal(r.outcome, 'reclaimed');
      assert.match(
        await c.get<string>('/metrics'),
        /xpmesh_reclaim_total\{outcome="reclaimed",node="sw1"\} 1\n/,
      );
      const st = await c.get<{ memory: { swap: { writes: number; reads: number } } }>('/status');
      assert.equal(st.memory.swap.writes, 1);
      const back = await c.op<{ text: string }>('read', { pid, addr, len: 12 });
      assert.equal(back.text, 'kept in swap');
      const st2 = await c.get<{ memory: { swap: { writes: number; reads: number } } }>('/status');
      assert.equal(st2.memory.swap.reads, 1, 'the page came back from the swap file');
    } finally {
      await instance.stop('test');
    }
    assert.deepEqual(readdirSync(dir), []);
    if (fdsOn(swap) >= 0) assert.equal(fdsOn(swap), 0, 'stop closed the swap file');
  });

  it('is not left behind when start-up fails after it was created (peer port taken)', async () => {
    const { dir, swap } = swapDir();
    const taken = await holdPort();
    try {
      const config = resolveConfig(
        {
          id: 'sw2',
          'listen-port': String(portOf(taken)),
          'admin-port': '0',
          frames: '64',
          'swap-file': swap,
        },
        {},
      );
      await assert.rejects(bootLayers(config, silentLogger), /EADDRINUSE/);
    } finally {
      await closeServer(taken);
    }
    assert.deepEqual(readdirSync(dir), []);
    if (fdsOn(swap) >= 0) assert.equal(fdsOn(swap), 0, 'the kernel was closed');
  });

  it('xpmesh node: is not left behind and everything is closed when the admin port is taken', async () => {
    const { dir, swap } = swapDir();
    const taken = await holdPort();
    const [listenPort] = await freePorts(1);
    try {
      const io = { out: () => {}, err: () => {} };
      const argv = [
        '--id',
        'sw3',
        '--listen-port',
        String(listenPort),
        '--admin-port',
        String(portOf(taken)),
      ];
      argv.push('--frames', '64', '--swap-file', swap, '--log-level', 'silent');
      await assert.rejects(runNode(argv, {}, io), /EADDRINUSE/);
    } finally {
      await closeServer(taken);
    }
    assert.deepEqual(readdirSync(dir), []);
    if (fdsOn(swap) >= 0) assert.equal(fdsOn(swap), 0, 'the kernel was closed');
    // The peer port was released too (the peer network was closed).
    const again = createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen(listenPort, '127.0.0.1', () => resolve());
    });
    await closeServer(again);
  });

  /** Start `xpmesh node` as a child process; resolves once it logged "ready". */
  async function startNode(
    swap: string,
    ipc: boolean,
  ): Promise<{ child: ChildProcess; exited: Promise<unknown> }> {
    const [listenPort] = await freePorts(1);
    const args = [MAIN_JS, 'node', '--id', 'sw4', '--listen-port', String(listenPort), '--admin-port', '0'];
    args.push('--frames', '64', '--swap-file', swap, '--log-level', 'info');
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc' as const] : [])],
    });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        out += d;
        if (/"msg":"ready"/.test(out)) {
          child.stdout?.off('data', onData);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', (d: Buffer) => {
        out += d;
      });
      child.once('exit', () => reject(new Error(`xpmesh node exited before it was ready:\n${out}`)));
    });
    child.stdout?.resume();
    return { child, exited };
  }

  for (const how of ['SIGTERM', 'SIGINT', 'launcher gone', 'SIGKILL'] as const) {
    it(`xpmesh node: nothing is left after it stops (${how})`, async () => {
      const { dir, swap } = swapDir();
      const { child, exited } = await startNode(swap, how === 'launcher gone');
      try {
        assert.deepEqual(readdirSync(dir), [], 'no swap file in the directory while it runs');
        if (how === 'launcher gone') child.disconnect();
        else child.kill(how);
        const status = await exited;
        assert.equal(status, how === 'SIGKILL' ? 'SIGKILL' : 0);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
      assert.deepEqual(readdirSync(dir), []);
    });
  }
});
