/**
 * Logging. Only the daemon creates pino; libraries below it (kernel, protocol, driver) receive the
 * tiny {@link Logger} interface, which a pino logger satisfies as is.
 *
 * Output is one JSON object per line on stdout (pipe through `npx pino-pretty` to read it).
 * Protocol events are logged at `debug`, one line each, with the correlation id `cid` that travels
 * in the messages, so one invalidation can be followed across instances by grepping its cid.
 */
import { pino } from 'pino';
import type { LogLevel } from './config.js';

export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}

export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

/** The daemon's root logger: JSON lines on stdout, `node` bound on every line. */
export function createLogger(node: string, level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const opts = { level, base: { node }, timestamp: pino.stdTimeFunctions.isoTime };
  return destination ? pino(opts, destination) : pino(opts, pino.destination({ dest: 1, sync: true }));
}

/** A logger that drops everything (tests, library defaults). */
export const silentLogger: Logger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
