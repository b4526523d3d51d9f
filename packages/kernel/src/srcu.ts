/**
 * SRCU-like notifier registrations (mainline moved mmu notifiers to SRCU in 3.7 because callbacks
 * sleep). A registration counts its in-flight callbacks; `unregister` marks it dead (no callback
 * starts after that), then waits, bounded, until the in-flight count drains.
 *
 * Called from inside one of its own callbacks, `unregister` does not deadlock: it waits for the
 * OTHER in-flight callbacks only, and resolves while the calling callback is still running (that
 * callback is the one still "in flight"; nothing new starts). Called from inside `release`
 * (per-mm notifiers) it is refused with EBUSY, as mainline forbids it.
 *
 * Which registrations' callbacks are on the current async stack is tracked with AsyncLocalStorage,
 * so the rule holds across awaits inside a callback.
 *
 * Cost. On Node 20 an enabled AsyncLocalStorage installs promise hooks for the whole process: every
 * promise anywhere (the protocol, faults, the driver) then pays for context propagation — measured
 * at 15-20 us of a ~190 us remote read fault. Only code running inside a callback ever needs the
 * context, so it is enabled while at least one callback is in flight (any registration, any list)
 * and disabled again a turn after the last one ends (disableSoon). Nothing is lost by disabling then: no callback is
 * running, so every context that could be read later belongs to a callback that has finished, and
 * for such a frame unregister's answer is the same with or without it (it waits for the in-flight
 * callbacks: none of that registration).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { KernelError } from './api.js';

type Frames = ReadonlyMap<Registration<unknown>, string>;
const current = new AsyncLocalStorage<Frames>();
/** Callbacks in flight, all registrations together (the context is on while this is > 0). */
let inflightAll = 0;
let disableQueued = false;

/**
 * Switch the context off once no callback is in flight, a turn later rather than at once: enabling
 * and disabling Node 20's promise hooks costs ~2-3 us per pair, which a synchronous callback paid
 * on every call (invalidateRangeEnd per invalidation, invalidatePage per cleared PTE,
 * clearFlushYoung per scanned page), against ~0.05 us for a run() while the hooks are on. Leaving
 * them on a turn longer is the conservative side (the context is complete while on); switching
 * off is safe whenever nothing is in flight (see the header), which is rechecked when it happens.
 */
function disableSoon(): void {
  if (disableQueued) return;
  disableQueued = true;
  setImmediate(() => {
    disableQueued = false;
    if (inflightAll === 0) current.disable();
  }).unref();
}

export class Registration<Ops> {
  dead = false;
  unregistered = false;
  inflight = 0;
  /** Callbacks started after unregister resolved: must stay 0 (checked by kernel.check()). */
  static violations = 0;
  private drained: Array<() => void> = [];

  constructor(
    readonly ops: Ops,
    private readonly list: NotifierList<Ops>,
  ) {}

  /**
   * Run one callback of this registration, counting it in flight until its promise (if any)
   * settles. Returns the callback's raw result.
   */
  call<R>(what: string, fn: (ops: Ops) => R): R {
    if (this.unregistered) Registration.violations++;
    this.inflight++;
    inflightAll++;
    const outer = current.getStore();
    const frames = new Map(outer ?? []);
    frames.set(this as Registration<unknown>, what);
    let result: R;
    try {
      result = current.run(frames, () => fn(this.ops));
    } catch (e) {
      this.exit();
      throw e;
    }
    if (result && typeof (result as { then?: unknown }).then === 'function') {
      (result as unknown as Promise<unknown>).then(
        () => this.exit(),
        () => this.exit(),
      );
    } else {
      this.exit();
    }
    return result;
  }

  private exit(): void {
    this.inflight--;
    if (--inflightAll === 0) disableSoon(); // re-enabled by the next call's run()
    for (const d of this.drained.splice(0)) d();
  }

  async unregister(timeoutMs: number): Promise<void> {
    const frame = current.getStore()?.get(this as Registration<unknown>);
    if (frame === 'release') {
      throw new KernelError('EBUSY', 'unregister called from inside release');
    }
    if (!this.dead) {
      this.dead = true;
      this.list.remove(this);
    }
    const self = frame !== undefined ? 1 : 0;
    const deadline = Date.now() + timeoutMs;
    while (this.inflight > self) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new KernelError('ETIMEDOUT', `unregister: ${this.inflight} callback(s) still running`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.drained.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    this.unregistered = true;
  }
}

export class NotifierList<Ops> {
  private regs: Registration<Ops>[] = [];

  add(ops: Ops): Registration<Ops> {
    const r = new Registration(ops, this);
    this.regs.push(r);
    return r;
  }

  remove(r: Registration<Ops>): void {
    this.regs = this.regs.filter((x) => x !== r);
  }

  /** Live registrations at this instant (a copy: callbacks may unregister while we iterate). */
  live(): Registration<Ops>[] {
    return this.regs.filter((r) => !r.dead);
  }

  get size(): number {
    return this.regs.length;
  }
}

/** Resolve `p`, or 'deadline' after `ms`. The timer never keeps the process alive. */
export function withDeadline<T>(p: Promise<T>, ms: number): Promise<T | 'deadline'> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve('deadline'), ms);
    t.unref?.();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
