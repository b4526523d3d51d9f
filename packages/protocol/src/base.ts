/**
 * What every layer shares, defined once at the bottom of the stack (protocol ← kernel ← driver ←
 * node): the page size, and the two dependencies a library is handed instead of reaching for a
 * global — a {@link Logger} and a {@link Clock}. Only the daemon creates a real logger (pino, which
 * satisfies {@link Logger} as is); tests inject a fake clock (@sinonjs/fake-timers).
 */

/** Size of a page (a frame, a page on the wire, a PTE's span) in bytes. */
export const PAGE_SIZE = 4096;

/** Tiny logger interface, pino's argument order: structured fields first, then the message. */
export interface Logger {
  debug(fields: object, msg?: string): void;
  info(fields: object, msg?: string): void;
  warn(fields: object, msg?: string): void;
  error(fields: object, msg?: string): void;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Time source; injected so tests can drive time (@sinonjs/fake-timers). */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Resolves the globals at call time, so a fake-timers `install()` done later still takes effect. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Longest `cid` (a request's correlation id; fixed, not a configurable limit). */
export const MAX_CID_CHARS = 64;
/** Longest `error.message` (fixed, not a configurable limit). */
export const MAX_ERROR_MESSAGE_CHARS = 512;
