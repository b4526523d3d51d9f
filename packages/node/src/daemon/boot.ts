/**
 * Boots the layers of one instance from its configuration: the kernel, the peer network, and the
 * XPmem driver loaded into the kernel as a module. Returns them as the daemon's ports.
 */
import type { NodeConfig } from './config.js';
import type { InstanceParts } from './instance.js';
import type { Logger } from './logger.js';

// TEMPORARY: the kernel and the driver are being written; resolved at run time until they exist.
const KERNEL = '../kernel/index.js';
const PROTOCOL = '@xpmesh/protocol';
const DRIVER = '@xpmesh/driver';

/** The protocol package logs `(message, fields)`; pino wants `(fields, message)`. */
export function messageFirst(l: Logger) {
  return {
    debug: (msg: string, fields?: Record<string, unknown>) => l.debug(fields ?? {}, msg),
    info: (msg: string, fields?: Record<string, unknown>) => l.info(fields ?? {}, msg),
    warn: (msg: string, fields?: Record<string, unknown>) => l.warn(fields ?? {}, msg),
    error: (msg: string, fields?: Record<string, unknown>) => l.error(fields ?? {}, msg),
  };
}

export async function bootLayers(config: NodeConfig, logger: Logger): Promise<InstanceParts> {
  const { createKernel } = await import(KERNEL);
  const { createWsPeerNetwork } = await import(PROTOCOL);
  const { createXpmemDriver } = await import(DRIVER);
  const kernel = await createKernel({
    name: config.node,
    frames: config.frames,
    swapPath: config.swapPath,
    logger: logger.child({ layer: 'kernel' }),
  });
  const scheme = config.tlsCert ? 'wss' : 'ws';
  const net = await createWsPeerNetwork({
    self: config.node,
    listen: { host: config.listenHost, port: config.listenPort },
    peers: config.peers.map((p) => ({
      url: `${scheme}://${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port}`,
    })),
    clusterKey: config.clusterKey,
    heartbeatMs: config.heartbeatMs,
    missedBeats: config.missedBeats,
    requestTimeoutMs: config.requestTimeoutMs,
    tls: config.tlsCert && config.tlsKey ? { certFile: config.tlsCert, keyFile: config.tlsKey } : undefined,
    logger: messageFirst(logger.child({ layer: 'protocol' })),
  });
  const driver = createXpmemDriver({
    net,
    logger: logger.child({ layer: 'driver' }),
    ackTimeoutMs: config.ackTimeoutMs,
    prefault: config.prefault,
  });
  await kernel.loadModule(driver);
  return { kernel, net, driver };
}
