/** The total handler table for requests arriving from peers: the compiler proves every request type
 * of the protocol is handled. Validation of shape happens at ingress (protocol package). */
import type { PeerSession, RequestMessage, RequestReplyMap } from '@xpmesh/protocol';
import { handleInvalidate } from './attacher.js';
import { handleDetach, handleMap } from './home.js';
import type { DriverState } from './state.js';
import { handleGet } from './xpmem-get.js';
import { handleRelease } from './xpmem-release.js';

type Handler<T extends RequestMessage['t']> = (
  d: DriverState,
  from: PeerSession,
  msg: Extract<RequestMessage, { t: T }>,
) => Promise<Omit<RequestReplyMap[T], 're'>>;

export const requestHandlers: { [T in RequestMessage['t']]: Handler<T> } = {
  get: handleGet,
  release: handleRelease,
  map: handleMap,
  invalidate: handleInvalidate,
  detach: handleDetach,
};
