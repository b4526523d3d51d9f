/** The PeerNetwork over WebSocket: what the daemon uses. */
import { resolveLimits } from './limits.js';
import { type PeerNetworkOptions, TransportPeerNetwork } from './network.js';
import { type TlsOptions, wsTransport } from './ws-transport.js';

export interface WsPeerNetworkOptions extends Omit<PeerNetworkOptions, 'transport'> {
  /** Where to accept connections (port 0: any free port; see `network.address`). Omit to only dial. */
  listen?: { host: string; port: number };
  tls?: TlsOptions;
}

/** Creates the network, starts listening (resolves once bound) and starts dialing its peers. */
export async function createWsPeerNetwork(opts: WsPeerNetworkOptions): Promise<TransportPeerNetwork> {
  const limits = resolveLimits(opts.limits);
  let net: TransportPeerNetwork | undefined;
  const transport = wsTransport({
    listen: opts.listen,
    maxFrameBytes: limits.maxFrameBytes,
    tls: opts.tls,
    logger: opts.logger,
    handshakeTimeoutMs: limits.handshakeTimeoutMs,
    maxPendingConnections: limits.maxPendingConnections,
    onRefused: () => net?.connectionRefused(),
  });
  const { listen, tls, ...rest } = opts;
  net = new TransportPeerNetwork({ ...rest, transport });
  await net.start(listen !== undefined);
  return net;
}
