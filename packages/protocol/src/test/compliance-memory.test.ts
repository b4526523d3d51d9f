import FakeTimers from '@sinonjs/fake-timers';
import type { Clock } from '../base.js';
import { MemorySwitch } from '../memory.js';
import { TransportPeerNetwork } from '../network.js';
import { complianceSuite, type Harness } from './compliance.js';

complianceSuite((): Harness => {
  // A private fake clock: node:test keeps real timers, the network lives in fake time.
  const fake = FakeTimers.createClock(0, 10_000);
  const clock: Clock = {
    now: () => fake.now,
    setTimeout: (fn, ms) => fake.setTimeout(fn, ms),
    clearTimeout: (h) => fake.clearTimeout(h as number),
  };
  const sw = new MemorySwitch({ seed: 42, clock, defaults: { delayMs: 1, jitterMs: 1 } });
  const extra: TransportPeerNetwork[] = [];
  return {
    name: 'memory (fake time)',
    async create(nodes, opts = {}) {
      const all = nodes.map((n) => n.node);
      const nets: Record<string, TransportPeerNetwork> = {};
      for (const { node, ...o } of nodes) {
        // mutual: dial every other node by address only, as the daemon does (both ends dial)
        const peers = opts.mutual ? all.filter((m) => m !== node).map((url) => ({ url })) : undefined;
        nets[node] = await sw.join(node, { ...o, members: all, peers, clock } as never, false);
      }
      if (opts.connect !== false) for (const n of Object.values(nets)) n.connect();
      return nets;
    },
    address: (node) => node,
    async createDialer({ node, ...o }, target) {
      const net = new TransportPeerNetwork({
        ...(o as object),
        clusterKey: o.clusterKey ?? '',
        self: node,
        transport: sw.transport(`${node}-impostor`),
        peers: [{ url: target }],
        clock,
        random: sw.random,
      });
      await net.start(false);
      extra.push(net);
      return net;
    },
    async createAt({ node, ...o }, address) {
      const net = new TransportPeerNetwork({
        ...(o as object),
        clusterKey: o.clusterKey ?? '',
        self: node,
        transport: sw.transport(address),
        clock,
        random: sw.random,
      });
      await net.listen();
      extra.push(net);
      return net;
    },
    stall: (n) => sw.stall(n),
    resume: (n) => sw.resume(n),
    advance: async (ms) => {
      await fake.tickAsync(ms);
    },
    transport: (n) => sw.transport(n),
    async closeAll() {
      for (const e of extra) await e.close();
      await sw.close();
      await fake.runAllAsync().catch(() => {});
    },
  };
});
