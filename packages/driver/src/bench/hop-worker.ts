/**
 * Worker threads of the raw baselines (raw.ts). 'trap': the faulting side of the hop chain, in the
 * same shape as a process's page fault (access.ts: store 1, postMessage, Atomics.wait until 0).
 * 'waker': the thread an invalidation-chain request interrupts once; it answers by notifying back.
 */
import { parentPort, workerData } from 'node:worker_threads';

const d = workerData as { role: 'trap' | 'waker'; ctl: SharedArrayBuffer; page?: SharedArrayBuffer };
const ctl = new Int32Array(d.ctl);

if (d.role === 'trap') {
  const words = new Int32Array(d.page!);
  let sink = 0;
  // one run of n chains per message from the parent (the worker lives as long as its client)
  parentPort!.on('message', (n: number) => {
    const lat: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      Atomics.store(ctl, 0, 1);
      parentPort!.postMessage({ t: 'fault', address: i * 4096, write: false });
      while (Atomics.load(ctl, 0) === 1) Atomics.wait(ctl, 0, 1, 5000);
      sink ^= Atomics.load(words, i & 1023);
      lat.push((performance.now() - t) * 1000);
    }
    parentPort!.postMessage({ t: 'done', lat, sink });
  });
} else {
  let seen = 0;
  for (;;) {
    Atomics.wait(ctl, 0, seen);
    seen = Atomics.load(ctl, 0);
    Atomics.add(ctl, 1, 1);
    Atomics.notify(ctl, 1);
  }
}
