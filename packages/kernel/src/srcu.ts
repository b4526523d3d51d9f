/**
 * SRCU-like notifier registrations (mainline moved mmu notifiers to SRCU in 3.7 because callbacks
 * sleep). A registration counts its in-flight callbacks; `unregister` marks it dead (no callback
 * starts after that), then waits, bounded, until every in-flight callback has ended.
 *
 * Called from inside one of its own callbacks, `unregister` does not deadlock: it waits for the
 * OTHER in-flight callbacks only, and resolves while the calling callback is still running (that
 * callback is the one still "in flight"; nothing new starts). Called from inside `release`
 * (per-mm notifiers) it is refused with EBUSY, as mainline forbids it.
 *
 * Which callbacks the caller of `unregister` is inside is known exactly: every callback run is an
 * Invocation (a token, `done` once the callback has ended), and the caller's context is the set of
 * invocations it runs inside — the synchronous stack of callbacks running right now, plus, across
 * awaits, the invocations an AsyncLocalStorage carried into this async context. A token that is
 * `done` counts for nothing, so work a callback left running after it ended (a detached promise) is
 * not "inside" it any more, however the context got there.
 *
 * Cost, and what is tracked how. On Node 20 an enabled AsyncLocalStorage installs promise hooks for
 * the whole process: every promise anywhere (swap writes, the protocol, faults) then pays for
 * context propagation (~0.1 us per promise, ~6 us per swap write's promise chain), and switching
 * them on and off is dear too: ~2-3 us for the pair of calls, and measured with the async work that
 * follows, ~25 us more CPU than that work alone (a 64-chain batch of awaits on Node 20). So:
 * - Callbacks that are synchronous by contract (`callSync`: mmu invalidatePage, invalidateRangeEnd,
 *   clearFlushYoung) never touch the AsyncLocalStorage: while one runs, its invocation is on a plain
 *   synchronous stack, which is all an `unregister` called from inside it can observe (it has no
 *   async part; one that returns a promise anyway breaks its contract, is counted by the caller,
 *   and is held in flight until the promise settles, but its continuations carry no context).
 * - Callbacks of a registration that promised never to unregister itself from inside
 *   (`contextFree`, RmapNotifierOps/MmuNotifierOps.contextFree: the driver's notifiers) are run like those:
 *   the one thing the context buys is that such an unregister does not wait for its own caller.
 * - Other callbacks that may sleep (`call`: invalidateRangeStart, release, the rmap invalidatePage(s))
 *   run inside the AsyncLocalStorage, which is on only while at least one of them is in flight. When
 *   the last one ends it is switched off at the next microtask checkpoint (not a whole turn later:
 *   the continuations queued behind it — a reclaim batch's swap writes after its rmap notifier call,
 *   the rest of a batch's unmaps after their invalidateRangeStart calls — then create their promises
 *   with the hooks off), which still merges the on/off pair of the callbacks of one synchronous pass
 *   (a batch's per-page invalidateRangeStart calls) into one. Switching off is safe whenever no
 *   such callback is in flight (rechecked when it happens): a context read later can only hold
 *   invocations that are done, which count for nothing.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { KernelError } from './api.js';

/** One run of one callback of one registration (a token; `done` once the callback has ended). */
interface Invocation {
  readonly reg: Registration<unknown>;
  readonly what: string;
  done: boolean;
}

/** Invocations of may-sleep callbacks carried across awaits (outermost first). */
const current = new AsyncLocalStorage<readonly Invocation[]>();
/** Invocations whose callback is running synchronously right now (innermost last). */
const syncStack: Invocation[] = [];
/** May-sleep callbacks in flight, all registrations together (the context is on while this is > 0). */
let inflightTracked = 0;
let disableQueued = false;

/** Switch the AsyncLocalStorage (and so the promise hooks) off at the next microtask checkpoint. */
function disableSoon(): void {
  if (disableQueued) return;
  disableQueued = true;
  queueMicrotask(() => {
    disableQueued = false;
    if (inflightTracked === 0) {
      current.disable();
      contextOn = false;
    }
  });
}

/** Invocations the caller runs inside, still in flight (not done). */
function callerFrames(): Invocation[] {
  const out: Invocation[] = [];
  for (const f of current.getStore() ?? []) if (!f.done) out.push(f);
  for (const f of syncStack) if (!f.done && !out.includes(f)) out.push(f);
  return out;
}

/**
 * True while the AsyncLocalStorage may be on: from the first may-sleep callback's run() until the
 * disable that follows the last one (tests: the promise hooks must not outlive the callbacks).
 */
export function notifierContextOn(): boolean {
  return contextOn;
}
let contextOn = false;

export class Registration<Ops> {
  dead = false;
  unregistered = false;
  /** Invocations of this registration in flight. */
  private readonly running = new Set<Invocation>();
  /** Callbacks started after unregister resolved: must stay 0 (checked by kernel.check()). */
  static violations = 0;
  private drained: Array<() => void> = [];

  constructor(
    readonly ops: Ops,
    private readonly list: NotifierList<Ops>,
    /**
     * The registration's callbacks never unregister it (RmapNotifierOps.contextFree): `call` runs
     * them as `callSync` does (counted in flight until their promise settles, no AsyncLocalStorage).
     */
    readonly contextFree = false,
  ) {}

  get inflight(): number {
    return this.running.size;
  }

  /**
   * Run a callback that may sleep, counting it in flight until its promise (if any) settles; its
   * invocation is carried across its awaits. Returns the callback's raw result.
   */
  call<R>(what: string, fn: (ops: Ops) => R): R {
    return this.invoke(what, fn, !this.contextFree);
  }

  /**
   * Run a callback that is synchronous by contract: in flight while it runs (and, if it breaks the
   * contract and returns a promise, until that settles), without the AsyncLocalStorage.
   */
  callSync<R>(what: string, fn: (ops: Ops) => R): R {
    return this.invoke(what, fn, false);
  }

  private invoke<R>(what: string, fn: (ops: Ops) => R, tracked: boolean): R {
    if (this.unregistered) Registration.violations++;
    const inv: Invocation = { reg: this as Registration<unknown>, what, done: false };
    this.running.add(inv);
    if (tracked) inflightTracked++;
    syncStack.push(inv);
    let result: R;
    try {
      if (tracked) {
        contextOn = true;
        const outer = current.getStore();
        result = current.run(outer ? [...outer, inv] : [inv], fn, this.ops);
      } else {
        result = fn(this.ops);
      }
    } catch (e) {
      syncStack.pop();
      this.exit(inv, tracked);
      throw e;
    }
    syncStack.pop();
    if (result && typeof (result as { then?: unknown }).then === 'function') {
      (result as unknown as Promise<unknown>).then(
        () => this.exit(inv, tracked),
        () => this.exit(inv, tracked),
      );
    } else {
      this.exit(inv, tracked);
    }
    return result;
  }

  private exit(inv: Invocation, tracked: boolean): void {
    inv.done = true;
    this.running.delete(inv);
    if (tracked && --inflightTracked === 0) disableSoon(); // re-enabled by the next call's run()
    if (this.drained.length > 0) for (const d of this.drained.splice(0)) d();
  }

  async unregister(timeoutMs: number): Promise<void> {
    const mine = callerFrames().filter((f) => f.reg === (this as Registration<unknown>));
    if (mine.some((f) => f.what === 'release')) {
      throw new KernelError('EBUSY', 'unregister called from inside release');
    }
    if (!this.dead) {
      this.dead = true;
      this.list.remove(this);
    }
    // Wait for every in-flight invocation but the caller's own (exactly those, not a count: the
    // caller's callback may end before the others do).
    const others = () => {
      for (const inv of this.running) if (!mine.includes(inv)) return true;
      return false;
    };
    const deadline = Date.now() + timeoutMs;
    while (others()) {
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
  /**
   * Copy-on-write: add and remove replace the array, never change it, so an array handed out by
   * live() is a snapshot however callbacks register or unregister while it is iterated (a dispatch
   * calls exactly the registrations live when it began). Registration is rare; dispatch is per page.
   */
  private regs: readonly Registration<Ops>[] = [];

  add(ops: Ops, opts: { contextFree?: boolean } = {}): Registration<Ops> {
    const r = new Registration(ops, this, opts.contextFree === true);
    this.regs = [...this.regs, r];
    return r;
  }

  remove(r: Registration<Ops>): void {
    this.regs = this.regs.filter((x) => x !== r);
  }

  /**
   * Live registrations at this instant: a snapshot (see regs), no copy. A registration is removed in
   * the same synchronous step that marks it dead (unregister), so none in it is dead.
   */
  live(): readonly Registration<Ops>[] {
    return this.regs;
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
