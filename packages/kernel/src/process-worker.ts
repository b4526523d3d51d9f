/**
 * Worker entry of a process. Everything the process does to memory goes through its page table
 * (access.ts); a page fault is a message to the kernel followed by a sleep on the control word.
 * Runs compiled JS from dist (new Worker(new URL('./process-worker.js', import.meta.url))).
 */
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { ProcessKilled, UserAccess } from './access.js';
import { KernelError } from './api.js';
import type { ProcessContext, ToKernel, ToProcess } from './process-messages.js';

interface Init {
  mem: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  root: number;
  pid: number;
  faultTimeoutMs: number;
  /** Page descriptors (a PTE_LEASED entry's lease slot is in its frame's descriptor). */
  desc: SharedArrayBuffer;
  /** The lease table (lease.ts). */
  leases: SharedArrayBuffer;
}

const init = workerData as Init;
const port = parentPort!;
const post = (m: ToKernel) => port.postMessage(m);

const access = new UserAccess(
  init.mem,
  init.ctl,
  init.root,
  (address, write) => post({ t: 'fault', address, write }),
  init.faultTimeoutMs,
  init.desc,
  init.leases,
);

class ProcessExit extends Error {}

const ctx: ProcessContext = {
  pid: init.pid,
  read: (addr, len) => access.read(addr, len),
  readInto: (addr, dst) => access.readInto(addr, dst),
  write: (addr, bytes) => access.write(addr, bytes),
  read32: (addr) => access.read32(addr),
  write32: (addr, v) => access.write32(addr, v),
  cas32: (addr, expect, v) => access.cas32(addr, expect, v),
  exit: (code = 0) => {
    post({ t: 'exit', code });
    throw new ProcessExit();
  },
  physMemForBaseline: () => init.mem,
};

async function runOp(m: Extract<ToProcess, { t: 'op' }>): Promise<unknown> {
  switch (m.op) {
    case 'read':
      return access.read(m.addr, m.len);
    case 'write':
      access.write(m.addr, m.bytes);
      return undefined;
    case 'read32':
      return access.read32(m.addr);
    case 'write32':
      access.write32(m.addr, m.value);
      return undefined;
    case 'cas32':
      return access.cas32(m.addr, m.expect, m.value);
    case 'run': {
      const mod = (await import(pathToFileURL(m.modulePath).href)) as Record<string, unknown>;
      const fn = mod[m.exportName];
      if (typeof fn !== 'function') throw new KernelError('EINVAL', `${m.exportName} is not a function`);
      return await (fn as (c: ProcessContext, a: unknown) => unknown)(ctx, m.args);
    }
  }
}

port.on('message', (m: ToProcess) => {
  if (m.t !== 'op') return;
  runOp(m).then(
    (value) => post({ t: 'done', id: m.id, value }),
    (err: unknown) => {
      if (err instanceof ProcessExit) return;
      if (err instanceof ProcessKilled) {
        post({ t: 'err', id: m.id, code: 'ESRCH', message: 'process killed', signal: false });
        return;
      }
      const code = (err as { code?: unknown })?.code;
      const message = err instanceof Error ? err.message : String(err);
      const signal = code === 'SIGSEGV' || code === 'SIGBUS';
      post({ t: 'err', id: m.id, code: typeof code === 'string' ? code : 'EFAULT', message, signal });
    },
  );
});
post({ t: 'ready' });
