/** Atomics.waitAsync (ES2024; Node 20 has it, the ES2023 lib typings do not). */
export type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };

export const waitAsync: (
  ta: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => WaitAsyncResult = (
  Atomics as unknown as {
    waitAsync(ta: Int32Array, index: number, value: number, timeoutMs?: number): WaitAsyncResult;
  }
).waitAsync;

/**
 * Sleep on ta[index] while it equals `value`, at most `timeoutMs`. A pending Atomics.waitAsync
 * does not keep Node's event loop alive, so a ref'd timer of the same length runs beside it.
 */
export function sleepOn(ta: Int32Array, index: number, value: number, timeoutMs: number): Promise<void> {
  const w = waitAsync(ta, index, value, timeoutMs);
  if (!w.async) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, timeoutMs + 1);
    w.value.then(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
