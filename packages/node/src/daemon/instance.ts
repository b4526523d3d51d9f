/**
 * One running instance: kernel + peer network + driver (a loaded kernel module) + admin API.
 * This file turns admin operations into kernel and driver calls, feeds metrics and the event
 * stream from the layers' events, and owns the shutdown order.
 */
import { EventEmitter } from 'node:events';
import { access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FenceEvent, LostDirtyEvent, MessageEvent, PageStateEvent } from '@xpmesh/driver';
import { type AdminBackend, type AdminEvent, AdminServer } from './admin.js';
import type { NodeConfig } from './config.js';
import type { DaemonLogger } from './logger.js';
import type { DnsMembership } from './membership.js';
import { type GaugeSnapshot, InstanceMetrics } from './metrics.js';
import { AdminError, decodeWriteBytes, encodeReadBytes, type OpHandlers } from './ops.js';
import type { DriverPort, KernelPort, NetPort, ProcessPort } from './ports.js';

const PROT = { none: 0, r: 1, rw: 3 } as const;

export interface InstanceParts {
  kernel: KernelPort;
  net: NetPort;
  driver: DriverPort;
  /** What the credential policy did to remote gets, by action (cred-policy.ts), if one is set. */
  credCounts?: Record<string, number>;
  /** Membership from DNS (--peers-dns), if configured. */
  membership?: DnsMembership;
}

export interface RunningInstance {
  readonly adminUrl: string;
  readonly metrics: InstanceMetrics;
  /** Stop accepting, detach attachments, answer pending invalidations, close everything. */
  stop(why: string): Promise<void>;
}

/** The gauges' counts, read from the layers' status. */
function gaugeSnapshot(parts: InstanceParts): GaugeSnapshot {
  const stats = parts.kernel.stats();
  const ds = parts.driver.status();
  const peers: Record<string, number> = { connecting: 0, up: 0, down: 0, fenced: 0 };
  for (const p of parts.net.status()) peers[p.state] = (peers[p.state] ?? 0) + 1;
  const net = parts.net.metrics?.();
  return {
    framesTotal: stats.frames,
    framesFree: stats.freeFrames,
    processes: [...parts.kernel.processes()].length,
    segments: ds.segments.length,
    attachments: ds.attachments.length,
    rmapEntries: ds.rmap.entries,
    exportedPages: ds.rmap.frames,
    peers,
    messages: net?.byType ?? {},
    credPolicy: { ...parts.credCounts },
    peersEvicted: net?.peersEvicted ?? 0,
    driverNodes: ds.nodes.known,
    driverNodesPruned: ds.counters.nodesPruned,
    refusals: {
      peer_auth: net?.authFailures ?? 0,
      peer_handshake: net?.handshakeFailures ?? 0,
      peer_version: net?.versionFailures ?? 0,
      peer_stale_epoch: net?.staleRefused ?? 0,
      peer_table_full: net?.peersRefused ?? 0,
      peer_pending_full: net?.pendingRefused ?? 0,
      frame_rejected: Object.values(net?.rejected ?? {}).reduce((a, b) => a + b, 0),
      abuse_close: net?.abuseCloses ?? 0,
      no_permit: ds.counters.refused.no_permit,
      access_denied: ds.counters.refused.access_denied,
      readonly_write: stats.counters.driverWriteDenied,
      node_id_collision: net?.idCollisions ?? 0,
    },
  };
}

export async function startInstance(
  config: NodeConfig,
  logger: DaemonLogger,
  parts: InstanceParts,
): Promise<RunningInstance> {
  const { kernel, net, driver } = parts;
  const started = Date.now();
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const emit = (ev: AdminEvent) => events.emit('event', ev);
  const metrics = new InstanceMetrics(config.node, () => gaugeSnapshot(parts));
  const protoLog = logger.child({ layer: 'protocol' });

  // ---- events from the layers → metrics, logs, the admin event stream -------------------------
  // One debug line per protocol message, with the correlation id it carries; reply latencies feed
  // the fault (map → map-ok) and invalidation (invalidate → invalidate-ack) histograms.
  driver.events.on('message', (m: MessageEvent) => {
    const msg = m.type;
    const direction = m.dir;
    const latencyMs = m.latencyMs;
    protoLog.debug(
      { type: msg, direction, peer: m.peer, cid: m.cid, latencyMs },
      `${direction === 'out' ? 'sent' : 'received'} ${msg}`,
    );
    if (latencyMs !== undefined && direction === 'in') {
      if (msg === 'map-ok' || msg === 'error')
        metrics.faultLatency.observe(
          { access: 'any', result: msg === 'error' ? 'error' : 'ok' },
          latencyMs / 1000,
        );
      if (msg === 'invalidate-ack')
        metrics.invalidationLatency.observe({ reason: 'any', result: 'ok' }, latencyMs / 1000);
    }
    emit({ ...m, type: 'message', msg, direction });
  });
  driver.events.on('page-state', (e: PageStateEvent) => emit({ ...e, type: 'page-state' }));
  driver.events.on('fence', (e: FenceEvent) => {
    metrics.fences.inc({ reason: e.why });
    logger.warn({ peer: e.node, epoch: e.epoch, why: e.why }, 'peer fenced');
    emit({ ...e, type: 'fence' });
  });
  driver.events.on('lost-dirty', (e: LostDirtyEvent) => {
    metrics.lostDirtyPages.inc(1);
    logger.warn(
      { ...e, node: undefined, peer: e.node },
      'dirty page lost with a fenced instance: reverted to last written-back data',
    );
    emit({ ...e, type: 'lost-dirty' });
  });
  net.on('up', ((peer: { node: string; epoch: number }) => {
    logger.info({ peer: peer.node, epoch: peer.epoch }, 'peer up');
    emit({ type: 'peer', peer: peer.node, epoch: peer.epoch, state: 'up' });
  }) as (...args: never[]) => void);
  net.on('down', ((peer: { node: string; epoch: number }, why: string) => {
    logger.warn({ peer: peer.node, epoch: peer.epoch, why }, 'peer down');
    emit({ type: 'peer', peer: peer.node, epoch: peer.epoch, state: 'down', why });
  }) as (...args: never[]) => void);

  // ---- operations ---------------------------------------------------------------------------------
  const proc = (pid: number): ProcessPort => {
    const p = kernel.process(pid);
    if (!p) throw new AdminError('ESRCH', `no process ${pid}`);
    return p;
  };
  const pfnOf = (pid: number, addr: number): number => {
    proc(pid);
    const pfn = kernel.pfnOf(pid, addr);
    if (pfn === undefined || pfn < 0)
      throw new AdminError('EFAULT', `no page is present at ${pid}:0x${addr.toString(16)}`);
    return pfn;
  };
  // /status lists live processes and the last EXITED_KEPT that exited (with the signal they died of).
  const exitedProcs: ProcessInfo[] = [];
  const watchExit = (p: ProcessPort) => {
    p.exited?.then(
      (s) => {
        exitedProcs.push({ ...processInfo(p), state: 'exited', code: s.code, signal: s.signal ?? null });
        if (exitedProcs.length > EXITED_KEPT) exitedProcs.shift();
      },
      () => undefined,
    );
  };
  const ops: OpHandlers = {
    spawn: async (i) => {
      const p = await kernel.spawn(i);
      watchExit(p);
      emit({ type: 'process', pid: p.pid, event: 'spawn' });
      return { pid: p.pid };
    },
    mmap: async (i) => ({ addr: await proc(i.pid).mmap(i.len, PROT[i.prot], i.addr) }),
    munmap: async (i) => {
      await proc(i.pid).munmap(i.addr, i.len);
      return { ok: true };
    },
    write: async (i) => {
      const bytes = decodeWriteBytes(i);
      await proc(i.pid).write(i.addr, bytes);
      return { ok: true, written: bytes.byteLength };
    },
    read: async (i) => encodeReadBytes(await proc(i.pid).read(i.addr, i.len)),
    fork: async (i) => {
      const child = await proc(i.pid).fork();
      watchExit(child);
      emit({ type: 'process', pid: child.pid, parent: i.pid, event: 'fork' });
      return { pid: child.pid };
    },
    exit: async (i) => {
      await proc(i.pid).exit(0);
      emit({ type: 'process', pid: i.pid, event: 'exit' });
      return { ok: true };
    },
    make: async (i) => ({ segid: await driver.make(i.pid, i.addr, i.size, i.mode) }),
    remove: async (i) => {
      await driver.remove(i.segid);
      return { ok: true };
    },
    get: async (i) => ({ apid: await driver.get(i.pid, i.segid, i.access) }),
    release: async (i) => {
      await driver.release(i.pid, i.apid);
      return { ok: true };
    },
    attach: async (i) => ({ addr: await driver.attach(i.pid, i.apid, i.offset, i.size, i.addr) }),
    detach: async (i) => {
      await driver.detach(i.pid, i.addr);
      return { ok: true };
    },
    reclaim: async (i) => {
      const pfn = pfnOf(i.pid, i.addr);
      const t0 = performance.now();
      const result = await kernel.reclaimPage(pfn);
      const outcome = reclaimOutcome(result);
      metrics.reclaim.inc({ outcome });
      logger.info({ pid: i.pid, addr: i.addr, pfn, outcome, ms: performance.now() - t0 }, 'forced reclaim');
      return { pfn, outcome, result };
    },
    pressure: async (i) => {
      if (typeof kernel.shrink !== 'function') throw new AdminError('EINVAL', 'this kernel cannot reclaim');
      const free = () => kernel.stats().freeFrames;
      const before = free();
      const t0 = performance.now();
      const r = await kernel.shrink(i.pages, {
        budgetMs: i.budgetMs,
        concurrency: i.concurrency,
        batches: i.batches,
      });
      const ms = performance.now() - t0;
      for (const [outcome, n] of Object.entries(r.outcomes)) metrics.reclaim.inc({ outcome }, n);
      logger.info(
        { pages: i.pages, reclaimed: r.reclaimed, scanned: r.scanned, stoppedBy: r.stoppedBy, ms },
        'memory pressure',
      );
      const memory = process.memoryUsage();
      return { requested: i.pages, ...r, ms, freeFrames: { before, after: free() }, memory };
    },
    migrate: async (i) => {
      const from = pfnOf(i.pid, i.addr);
      const result = await kernel.migratePage(from);
      if (typeof result !== 'number')
        throw new AdminError('EBUSY', `the kernel refused to migrate pfn ${from}: ${String(result)}`);
      logger.info({ pid: i.pid, addr: i.addr, from, to: result }, 'forced migration');
      return { from, to: result };
    },
    pfn: async (i) => {
      const pfn = pfnOf(i.pid, i.addr);
      return { pfn, page: kernel.pageInfo(pfn) };
    },
    check: async () => {
      const violations = kernel.violations();
      return { ok: violations.length === 0, violations };
    },
    run: async (i) => {
      const p = proc(i.pid) as ProcessPort & {
        run?: (modulePath: string, exportName: string, args?: unknown) => Promise<unknown>;
      };
      if (typeof p.run !== 'function') throw new AdminError('EINVAL', 'this kernel cannot run programs');
      // The schema allows only plain relative names, so the module stays inside dist/.
      const modulePath = fileURLToPath(new URL(`../${i.module}`, import.meta.url));
      // A missing module is the caller's mistake (404), not an import failure inside the worker.
      if (
        !(await access(modulePath).then(
          () => true,
          () => false,
        ))
      )
        throw new AdminError('E_NOT_FOUND', `no module ${i.module}`);
      return { result: (await p.run(modulePath, i.export, i.args)) ?? null };
    },
  };

  const backend: AdminBackend = {
    node: config.node,
    events,
    ops,
    status: () => ({
      node: config.node,
      pid: process.pid,
      uptimeMs: Date.now() - started,
      memory: kernel.stats(),
      processes: [...[...kernel.processes()].map(processInfo), ...exitedProcs],
      driver: driver.status(),
      peers: net.status(),
      membership: parts.membership?.stats(),
    }),
    pages: (segid) => driver.pageStates(segid),
  };
  const admin = new AdminServer(backend, {
    host: config.adminHost,
    port: config.adminPort,
    token: config.adminToken,
    metrics,
    logger: logger.child({ layer: 'admin' }),
  });
  const adminUrl = await admin.listen();

  let stopping: Promise<void> | undefined;
  const stop = (why: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ why }, 'shutting down: no new operations; detaching attachments');
      admin.beginShutdown();
      const step = async (name: string, f: () => unknown) => {
        try {
          await f();
        } catch (err) {
          logger.warn({ err, step: name }, 'shutdown step failed');
        }
      };
      // The driver's unload detaches local attachments (detach messages carry dirty data home) and
      // answers pending invalidations before the links close.
      // Leaving: stop dialling new members first; then the driver's unload removes our exports
      // (attachers get segment-gone) and detaches our attachments (dirty pages go home).
      await step('membership', () => parts.membership?.stop());
      await step('driver', () => driver.unload?.());
      await step('net', () => net.close());
      await step('kernel', () => kernel.close());
      await step('admin', () => admin.close());
      logger.info('stopped');
    })();
    return stopping;
  };
  return { adminUrl, metrics, stop };
}

/**
 * The `outcome` label of a reclaim result. The kernel answers its `ReclaimOutcome` string (listed in
 * docs/metrics.md), which passes through; other shapes (stand-in kernels) map onto the same names.
 */
export function reclaimOutcome(result: unknown): string {
  if (typeof result === 'string') return result;
  if (typeof result === 'boolean') return result ? 'reclaimed' : 'kept';
  if (result && typeof result === 'object') {
    const r = result as Record<string, unknown>;
    if (typeof r.outcome === 'string') return r.outcome;
    if (typeof r.result === 'string') return r.result;
    if (typeof r.ok === 'boolean') return r.ok ? 'reclaimed' : String(r.reason ?? 'kept');
  }
  return 'unknown';
}

/** How many exited processes /status keeps listing (oldest dropped first). */
export const EXITED_KEPT = 32;

/** One process as /status lists it. */
export interface ProcessInfo {
  pid: number;
  name: string | null;
  uid: number | null;
  gid: number | null;
  /** running, exiting (being torn down) or exited (then code, and signal: the signal it died of or null). */
  state: 'running' | 'exiting' | 'exited';
  code?: number;
  signal?: string | null;
}

function processInfo(p: ProcessPort): ProcessInfo {
  return {
    pid: p.pid,
    name: p.name ?? null,
    uid: p.kmm?.uid ?? null,
    gid: p.kmm?.gid ?? null,
    state: p.kmm?.exiting ? 'exiting' : 'running',
  };
}
