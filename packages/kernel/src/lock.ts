/**
 * Sleeping locks of the kernel thread (async): the mmap lock of an mm is a reader-preferring
 * read/write semaphore. Reader-preferring so that a fault taken while another fault of the same mm
 * is in progress (a driver's getUserPage inside its fault handler) never queues behind a writer.
 * Every acquisition is bounded (ETIMEDOUT).
 */
import { KernelError } from './api.js';

interface Waiter {
  write: boolean;
  grant: () => void;
}

export class RwSem {
  private readers = 0;
  private writer = false;
  private readonly waiters: Waiter[] = [];

  constructor(private readonly name: string) {}

  get held(): boolean {
    return this.writer || this.readers > 0;
  }

  read(timeoutMs: number): Promise<() => void> {
    return Promise.resolve(this.tryRead() ?? this.enqueue(false, timeoutMs));
  }

  /** The read lock at once if no writer holds it (exactly read()'s fast path), else undefined. */
  tryRead(): (() => void) | undefined {
    if (this.writer) return undefined;
    this.readers++;
    return this.releaser(false);
  }

  write(timeoutMs: number): Promise<() => void> {
    if (!this.writer && this.readers === 0) {
      this.writer = true;
      return Promise.resolve(this.releaser(true));
    }
    return this.enqueue(true, timeoutMs);
  }

  private releaser(write: boolean): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (write) this.writer = false;
      else this.readers--;
      this.wake();
    };
  }

  private enqueue(write: boolean, timeoutMs: number): Promise<() => void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new KernelError('ETIMEDOUT', `${this.name}: ${write ? 'write' : 'read'} lock timed out`));
      }, timeoutMs);
      const w: Waiter = {
        write,
        grant: () => {
          clearTimeout(timer);
          resolve(this.releaser(write));
        },
      };
      this.waiters.push(w);
    });
  }

  private wake(): void {
    while (this.waiters.length > 0 && !this.writer) {
      const i = this.readers > 0 ? this.waiters.findIndex((w) => !w.write) : 0;
      if (i < 0) return;
      const w = this.waiters[i];
      if (w.write && this.readers > 0) return;
      this.waiters.splice(i, 1);
      if (w.write) this.writer = true;
      else this.readers++;
      w.grant();
    }
  }
}
