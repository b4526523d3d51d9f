/**
 * Boots the layers of one instance from its configuration: the kernel, the peer network, and the
 * XPmem driver loaded into the kernel as a module. Returns them as the daemon's ports.
 */
import { access, unlink } from 'node:fs/promises';
import { createXpmemDriver } from '@xpmesh/driver';
import { createKernel } from '@xpmesh/kernel';
import { createWsPeerNetwork } from '@xpmesh/protocol';
import type { NodeConfig } from './config.js';
import { type CredentialAction, withCredentialPolicy } from './cred-policy.js';
import type { InstanceParts } from './instance.js';
import type { DaemonLogger } from './logger.js';
import { DnsMembership, selfMatcher } from './membership.js';

/**
 * The swap file's name is removed as soon as the kernel has opened it: the kernel reads and writes
 * the swap area only through its open file descriptor (`SwapArea`), so the file stays usable until
 * the kernel closes it, and no way out of the process (signal, shutdown, an error during start-up,
 * a crash, SIGKILL) can leave it behind. Its space is freed when the descriptor is closed.
 */
export async function unlinkSwapFile(path: string, logger: DaemonLogger): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      logger.warn({ err, swapFile: path }, 'cannot remove the swap file; it stays after exit');
  }
}

export async function bootLayers(config: NodeConfig, logger: DaemonLogger): Promise<InstanceParts> {
  const existed = await access(config.swapPath).then(
    () => true,
    () => false,
  );
  let kernel: Awaited<ReturnType<typeof createKernel>>;
  try {
    kernel = await createKernel({
      name: config.node,
      frames: config.frames,
      swapPath: config.swapPath,
      logger: logger.child({ layer: 'kernel' }),
      // the rmap notifier may wait for an ack deadline and then a fenced instance's lease
      rmapNotifierTimeoutMs: config.ackTimeoutMs + Math.ceil(config.leaseMs * 1.1) + 2000,
    });
  } catch (err) {
    // The kernel may have created the file before it failed (e.g. sizing it): remove it, but never
    // a file that was there before.
    if (!existed) await unlink(config.swapPath).catch(() => undefined);
    throw err;
  }
  // a file the operator put there stays (the kernel overwrites its contents, the name is theirs)
  if (!existed) await unlinkSwapFile(config.swapPath, logger);
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
      limits: { maxPeers: config.maxPeers },
      tls: config.tlsCert && config.tlsKey ? { certFile: config.tlsCert, keyFile: config.tlsKey } : undefined,
      logger: logger.child({ layer: 'protocol' }),
    });
  } catch (err) {
    await closeLayers({ kernel }, logger);
    throw err;
  }
  try {
    // The home side of a remote get sees uid/gid as the credential policy rewrites them.
    const credCounts: Record<CredentialAction, number> = { trusted: 0, mapped: 0, denied: 0 };
    const driverNet = config.credPolicy
      ? withCredentialPolicy(net, config.credPolicy, (action, peer) => {
          credCounts[action]++;
          if (action === 'denied') logger.warn({ peer }, 'credential policy refused a get');
        })
      : net;
    const driver = createXpmemDriver({
      net: driverNet,
      logger: logger.child({ layer: 'driver' }),
      ackTimeoutMs: config.ackTimeoutMs,
      requestTimeoutMs: config.requestTimeoutMs,
      leaseMs: config.leaseMs,
      prefault: config.prefault + 1,
    });
    await kernel.loadModule(driver);
    return { kernel, net, driver, credCounts, membership: startMembership(config, net, logger) };
  } catch (err) {
    await closeLayers({ kernel, net }, logger);
    throw err;
  }
}

/** Membership from DNS (--peers-dns), started once the driver listens to the network. */
function startMembership(config: NodeConfig, net: DialTableNet, logger: DaemonLogger) {
  if (config.peersDns.length === 0) return undefined;
  const membership = new DnsMembership({
    names: config.peersDns,
    scheme: config.tlsCert ? 'wss' : 'ws',
    intervalMs: config.peersDnsIntervalMs,
    net,
    isSelf: selfMatcher(config.listenHost, config.listenPort),
    logger: logger.child({ layer: 'membership' }),
  });
  membership.start();
  return membership;
}
type DialTableNet = { addPeer(p: { url: string }): void; removePeer(url: string): boolean };

/**
 * Close what `bootLayers` started when the instance cannot start after all (e.g. the admin port is
 * taken), in the shutdown order: driver, peer links, kernel (its workers end, the swap area is
 * closed). Failures are logged, not thrown: the caller is already failing.
 */
export async function closeLayers(parts: Partial<InstanceParts>, logger: DaemonLogger): Promise<void> {
  const step = async (name: string, f: () => unknown) => {
    try {
      await f();
    } catch (err) {
      logger.warn({ err, step: name }, 'closing after a failed start: step failed');
    }
  };
  await step('membership', () => parts.membership?.stop());
  await step('driver', () => parts.driver?.unload?.());
  await step('net', () => parts.net?.close());
  await step('kernel', () => parts.kernel?.close());
}
