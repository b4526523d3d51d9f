/** `xpmesh node`: run one instance until SIGTERM / SIGINT. */
import { bootLayers, closeLayers } from '../daemon/boot.js';
import { CONFIG_SETTINGS, ConfigError, configArgOptions, resolveConfig } from '../daemon/config.js';
import { startInstance } from '../daemon/instance.js';
import { createLogger } from '../daemon/logger.js';
import { type Env, EXIT_OK, type Io, parse, UsageError } from './usage.js';

export function nodeHelp(): string {
  const rows = CONFIG_SETTINGS.map(
    (s) => `  --${s.flag.padEnd(20)} ${s.env.padEnd(26)} ${s.help} [${s.default || 'none'}]`,
  );
  return [
    'usage: xpmesh node [options]',
    '',
    'Runs one xpmesh instance: a simulated kernel, its peer links and the XPmem driver, plus the',
    'admin HTTP API. Every option can also come from its environment variable (flags win).',
    'Logs are JSON lines on stdout: pipe through `npx pino-pretty` to read them.',
    '',
    '  flag                   environment                meaning [default]',
    ...rows,
  ].join('\n');
}

/** An address that cannot be bound is a configuration error (one line, exit 2), not a crash. */
function asConfigError(err: unknown, host: string, port: number): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e?.syscall === 'listen' || ['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES'].includes(e?.code ?? ''))
    return new UsageError(`cannot listen on ${host}:${port}: ${e.code ?? e.message}`);
  return err;
}

export async function runNode(argv: string[], env: Env, io: Io): Promise<number> {
  const p = parse(argv, configArgOptions());
  if (p.help) {
    io.out(nodeHelp());
    return EXIT_OK;
  }
  let config: ReturnType<typeof resolveConfig>;
  try {
    config = resolveConfig(p.values as Record<string, string | undefined>, env, process.pid);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
  const logger = createLogger(config.node, config.logLevel);
  logger.info(
    { listen: `${config.listenHost}:${config.listenPort}`, peers: config.peers, frames: config.frames },
    'starting',
  );
  // bootLayers removes the swap file's name once the kernel has it open (see unlinkSwapFile), so no
  // exit path below leaves it in the directory; on its own errors it closes what it started.
  const parts = await bootLayers(config, logger).catch((err) => {
    throw asConfigError(err, config.listenHost, config.listenPort);
  });
  let instance: Awaited<ReturnType<typeof startInstance>>;
  try {
    instance = await startInstance(config, logger, parts);
  } catch (err) {
    // e.g. the admin port is taken: close the kernel's workers and the peer links, or they would
    // keep the process alive after the error is reported.
    await closeLayers(parts, logger);
    throw asConfigError(err, config.adminHost, config.adminPort);
  }
  return new Promise<number>((resolve) => {
    let exiting = false;
    const shutdown = (why: string) => {
      if (exiting) return;
      exiting = true;
      const force = setTimeout(() => {
        logger.error({ why }, `shutdown took longer than ${config.shutdownMs} ms; exiting anyway`);
        resolve(1);
        // what did not stop in time (a socket, a worker) would keep the process alive: exit for real
        (logger as { flush?: () => void }).flush?.();
        process.exit(1);
      }, config.shutdownMs);
      force.unref();
      instance.stop(why).then(
        () => {
          clearTimeout(force);
          resolve(EXIT_OK);
        },
        (err) => {
          logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
    // Started by `xpmesh cluster` (an IPC channel): stop when the launcher goes away.
    if (process.channel) {
      process.on('disconnect', () => shutdown('launcher gone'));
      process.channel.unref();
    }
    // Only now: whoever waits for this line (or for /healthz) may signal at once, and the signal
    // must find the handlers above (without them SIGTERM kills the process outright, no shutdown).
    logger.info({ admin: instance.adminUrl }, 'ready');
  });
}
