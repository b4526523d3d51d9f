/**
 * The raw baselines of the driver benchmark: what the hops of a remote fault and of an invalidation
 * cost with nothing of ours in between (no kernel, no driver, no protocol).
 *
 *   hop chain           a worker thread traps the way a process's page fault does (stores 1 in an
 *                       Atomics word, postMessage to the main thread, Atomics.wait), the main thread
 *                       sends a raw 32 B ws request to the echo server, gets a 4 KiB reply, copies it
 *                       into a SharedArrayBuffer page, stores 0 and Atomics.notify; the worker wakes
 *                       and reads a word of the page. Timed inside the worker, like the driver fault
 *                       (programs.ts). The floor of a remote read fault.
 *   invalidation chain  the main thread sends a raw 32 B ws request; the echo server interrupts a
 *                       worker thread once (Atomics.notify; the worker notifies back, as a process
 *                       leaving its access window answers a TLB shootdown) and replies 32 B. Timed
 *                       at the main thread, like the driver's invalidate → ack. The floor of an
 *                       invalidation of one remote.
 *
 * The echo server runs in another process (peer-process.ts) or, for the one-process placement, in
 * this one. Request byte 0 selects the reply: REPLY_32, REPLY_4K, WAKE_THEN_32, or REPLY_64P (64 pages:
 * what a 64-page map-ok carries, the transport's own share of a 64-page map).
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import WebSocket, { WebSocketServer } from 'ws';

export const REPLY_32 = 0;
export const REPLY_4K = 1;
export const WAKE_THEN_32 = 2;
export const REPLY_64P = 3;
const PAGE = 4096;
const WORKER = new URL('./hop-worker.js', import.meta.url);
// Node 20 has Atomics.waitAsync; TypeScript's lib for our target does not declare it.
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      i: number,
      v: number,
      ms: number,
    ): { async: boolean; value: Promise<string> | string };
  }
).waitAsync;

export interface RawServer {
  port: number;
  close(): Promise<void>;
}

/** The echo server (see above). Its waker worker is the "process" an invalidation interrupts. */
export async function startRawServer(): Promise<RawServer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const small = new Uint8Array(32);
  const page = new Uint8Array(PAGE).fill(7);
  const pages64 = new Uint8Array(64 * PAGE).fill(7);
  // ctl[0]: interrupt count (main → worker), ctl[1]: answers (worker → main)
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const waker = new Worker(WORKER, { workerData: { role: 'waker', ctl: ctl.buffer } });
  waker.unref();
  wss.on('connection', (s) => {
    s.on('message', (data: Buffer) => {
      const kind = data[0];
      if (kind === REPLY_4K) s.send(page, { binary: true });
      else if (kind === REPLY_64P) s.send(pages64, { binary: true });
      else if (kind === WAKE_THEN_32) {
        const seen = Atomics.load(ctl, 1);
        Atomics.add(ctl, 0, 1);
        Atomics.notify(ctl, 0);
        const w = waitAsync(ctl, 1, seen, 5000);
        if (w.async) void (w.value as Promise<string>).then(() => s.send(small, { binary: true }));
        else s.send(small, { binary: true });
      } else s.send(small, { binary: true });
    });
  });
  const port = (wss.address() as { port: number }).port;
  return {
    port,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
      await waker.terminate();
    },
  };
}

/** A client of the echo server: plain round trips, the invalidation chain, the hop chain. */
export class RawClient {
  private waiter: ((data: Buffer) => void) | undefined;
  private readonly req = new Uint8Array(32);
  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => this.waiter?.(data));
  }

  static async connect(port: number): Promise<RawClient> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    return new RawClient(ws);
  }

  rt(kind: number): Promise<Buffer> {
    return new Promise((r) => {
      this.waiter = r;
      this.req[0] = kind;
      this.ws.send(this.req, { binary: true });
    });
  }

  /** n round trips of `kind`, timed at this thread (µs). */
  async timed(kind: number, n: number): Promise<number[]> {
    const lat: number[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await this.rt(kind);
      lat[i] = (performance.now() - t) * 1000;
    }
    return lat;
  }

  private trap: { w: Worker; ctl: Int32Array; page: Uint8Array } | undefined;
  private trapDone: ((lat: number[]) => void) | undefined;

  /** n hop chains (see above), timed inside the trapping worker (µs). */
  hopChain(n: number): Promise<number[]> {
    if (!this.trap) {
      const ctl = new Int32Array(new SharedArrayBuffer(8));
      const page = new Uint8Array(new SharedArrayBuffer(PAGE));
      const w = new Worker(WORKER, { workerData: { role: 'trap', ctl: ctl.buffer, page: page.buffer } });
      const onReply = (data: Buffer) => {
        page.set(data.subarray(0, PAGE));
        Atomics.store(ctl, 0, 0);
        Atomics.notify(ctl, 0);
      };
      w.on('message', (m: { t: 'fault' } | { t: 'done'; lat: number[] }) => {
        if (m.t === 'fault') {
          this.waiter = onReply;
          this.req[0] = REPLY_4K;
          this.ws.send(this.req, { binary: true });
        } else this.trapDone?.(m.lat);
      });
      this.trap = { w, ctl, page };
    }
    const trap = this.trap;
    return new Promise((resolve) => {
      this.trapDone = resolve;
      trap.w.postMessage(n);
    });
  }

  close(): void {
    void this.trap?.w.terminate();
    this.ws.close();
  }
}
