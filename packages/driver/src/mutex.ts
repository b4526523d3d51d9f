/**
 * A keyed async mutex: operations on one key run one at a time, in arrival order. An uncontended
 * `run` starts `fn` at once (in the caller's turn), with no promise hop before it; waiters queue
 * behind the holder and each is started by the one before it as that one finishes.
 */
export class KeyedMutex<K> {
  /**
   * Per held key: the waiters behind the holder, oldest first; null while nobody waits (no array per
   * uncontended hold: a 64-page grant holds 64 keys).
   */
  private readonly held = new Map<K, Array<() => void> | null>();

  async run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    if (!this.held.has(key)) this.held.set(key, null);
    else await new Promise<void>((resolve) => this.enqueue(key, resolve));
    try {
      return await fn();
    } finally {
      this.release(key);
    }
  }

  private enqueue(key: K, w: () => void): void {
    const q = this.held.get(key);
    if (q) q.push(w);
    else this.held.set(key, [w]);
  }

  /** Pass `key` to its next waiter (the key stays held), or free it. */
  private release(key: K): void {
    const next = this.held.get(key)?.shift();
    if (next) next();
    else this.held.delete(key);
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
    for (const k of keys) this.held.set(k, null);
    try {
      return await fn();
    } finally {
      for (const k of keys) this.release(k);
    }
  }

  get busy(): number {
    return this.held.size;
  }
}
