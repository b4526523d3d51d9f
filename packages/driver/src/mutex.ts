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

  get busy(): number {
    return this.held.size;
  }
}
