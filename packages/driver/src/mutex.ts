/**
 * A keyed async mutex: operations on one key run one at a time, in arrival order. An uncontended
 * `run` starts `fn` at once (in the caller's turn), with no promise hop before it; waiters queue
 * behind the holder and each is started by the one before it as that one finishes.
 */
export class KeyedMutex<K> {
  /** Per held key: the waiters behind the holder, oldest first. */
  private readonly held = new Map<K, Array<() => void>>();

  async run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    const q = this.held.get(key);
    if (q === undefined) this.held.set(key, []);
    else await new Promise<void>((resolve) => q.push(resolve));
    try {
      return await fn();
    } finally {
      const waiters = this.held.get(key)!;
      const next = waiters.shift();
      if (next)
        next(); // ownership passes to the next waiter; the key stays held
      else this.held.delete(key);
    }
  }

  /**
   * Run `fn` holding every key of `keys` (ascending, no duplicates: the caller's lock order). When
   * none of them is held, all are taken at once, in this turn (no promise hop per key: taking n
   * free keys in one synchronous step is the same as taking them one by one in ascending order with
   * nothing in between). Otherwise they are taken one at a time in the given order, each waiting
   * behind its holder. Released (each passed to its next waiter) when `fn` settles.
   */
  async runAll<T>(keys: readonly K[], fn: () => Promise<T>): Promise<T> {
    let free = true;
    for (let i = 0; i < keys.length && free; i++) free = !this.held.has(keys[i]);
    if (!free) {
      const from = (i: number): Promise<T> =>
        i === keys.length ? fn() : this.run(keys[i], () => from(i + 1));
      return from(0);
    }
    for (const k of keys) this.held.set(k, []);
    try {
      return await fn();
    } finally {
      for (const k of keys) {
        const waiters = this.held.get(k)!;
        const next = waiters.shift();
        if (next) next();
        else this.held.delete(k);
      }
    }
  }

  get busy(): number {
    return this.held.size;
  }
}
