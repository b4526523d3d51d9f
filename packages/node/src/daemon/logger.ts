/**
 * Logging. Only the daemon creates pino; libraries below it (kernel, protocol, driver) receive the
 * tiny `Logger` interface of @xpmesh/protocol, which a pino logger satisfies as is.
 *
 * Output is one JSON object per line on stdout (pipe through `npx pino-pretty` to read it).
 * Protocol events are logged at `debug`, one line each, with the correlation id `cid` that travels
 * in the messages, so one invalidation can be followed across instances by grepping its cid.
 */
import { type Logger as PinoLogger, pino } from 'pino';
import type { LogLevel } from './config.js';

/**
 * The daemon's logger is pino itself: it satisfies the libraries' `Logger` (from
 * @xpmesh/protocol) as is, and adds `child()` (one per layer: `layer` bound on every line).
 */
export type DaemonLogger = PinoLogger;

/** The daemon's root logger: JSON lines on stdout, `node` bound on every line. */
export function createLogger(
  node: string,
  level: LogLevel,
  destination?: NodeJS.WritableStream,
): DaemonLogger {
  const opts = { level, base: { node }, timestamp: pino.stdTimeFunctions.isoTime };
  return destination ? pino(opts, destination) : pino(opts, pino.destination({ dest: 1, sync: true }));
}

/** A logger that drops everything (tests). */
export const silentLogger: DaemonLogger = pino({ level: 'silent' });
