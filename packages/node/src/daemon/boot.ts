/**
 * Boots the layers of one instance from its configuration: the kernel, the peer network, and the
 * XPmem driver loaded into the kernel as a module. Returns them as the daemon's ports.
 */
import { createWsPeerNetwork, type PeerNetwork } from '@xpmesh/protocol';
import type { KernelModule } from '../kernel/api.js';
import { createKernel } from '../kernel/index.js';
import type { NodeConfig } from './config.js';
import type { InstanceParts } from './instance.js';
import type { Logger } from './logger.js';
import type { DriverPort } from './ports.js';

/**
 * The driver is loaded by module name at run time and typed by the daemon's own port. Why not a
 * static import: in one clean `tsc -b` of the whole solution, the kernel project (which shares
 * packages/node/package.json, where @xpmesh/driver is a dependency) looks the package up before
 * the driver is built, and tsc caches "packages/driver/dist/index.d.ts does not exist" for the
 * rest of the build, so a fresh clone would fail to compile once.
 */
const DRIVER_MODULE: string = '@xpmesh/driver';
interface DriverModule {
  createXpmemDriver(opts: {
    net: PeerNetwork;
    logger?: Logger;
    ackTimeoutMs?: number;
    leaseMs?: number;
    requestTimeoutMs?: number;
    prefault?: number;
  }): DriverPort & KernelModule;
}

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
  const kernel = await createKernel({
    name: config.node,
    frames: config.frames,
    swapPath: config.swapPath,
    logger: logger.child({ layer: 'kernel' }),
    // the rmap notifier may wait for an ack deadline and then a fenced instance's lease
    rmapNotifierTimeoutMs: config.ackTimeoutMs + Math.ceil(config.leaseMs * 1.1) + 2000,
  });
  const scheme = config.tlsCert ? 'wss' : 'ws';
  let net: Awaited<ReturnType<typeof createWsPeerNetwork>>;
  try {
    net = await createWsPeerNetwork({
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
  } catch (err) {
    await kernel.close();
    throw err;
  }
  const { createXpmemDriver } = (await import(DRIVER_MODULE)) as DriverModule;
  const driver = createXpmemDriver({
    net,
    logger: logger.child({ layer: 'driver' }),
    ackTimeoutMs: config.ackTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    leaseMs: config.leaseMs,
    prefault: config.prefault + 1,
  });
  await kernel.loadModule(driver);
  return { kernel, net, driver };
}
