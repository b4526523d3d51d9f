/**
 * The operations of a scenario instance (scenario-cluster.ts) on a kernel and a driver in this
 * process. The in-memory cluster calls them directly (cluster.ts `openMemoryCluster`); an instance
 * process calls them for its parent's IPC commands (ws-instance.ts). One implementation, so the two
 * transports differ only in what carries the peers' messages and the test's calls.
 */
import type { XpmemDriver } from '@xpmesh/driver';
import type * as instance from '@xpmesh/kernel';
import { PAGE_SIZE } from '@xpmesh/kernel';
import type { InstanceStatus, RmapEntryView, ScenarioInstance } from './scenario-cluster.js';

const PROT_RW = 3;

function codeError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

/**
 * No fence waiting out a lease, no ended session still being handled before its fence starts
 * (`leaseHold`: the driver's 'down' and new-session handlers revoke that peer's copies here first,
 * then fence it; without this a check at "quiescence" could run in between and see the reverse-map
 * entries of a node whose session is gone but whose fence has not begun), no invalidation or
 * notifier bracket in flight on any page.
 */
export function driverIdle(driver: XpmemDriver): boolean {
  return (
    driver.fencing.size === 0 &&
    driver.leaseHold.size === 0 &&
    [...driver.segments.values()].every(
      (seg) => seg.inval.every((x) => x === 0) && seg.busy.every((x) => x === 0),
    )
  );
}

export function localInstance(
  name: string,
  kernel: instance.Kernel,
  driver: XpmemDriver,
  frames: number,
): ScenarioInstance {
  const lost: unknown[] = [];
  const fences: unknown[] = [];
  driver.events.on('lost-dirty', (e: unknown) => lost.push(e));
  driver.events.on('fence', (e: unknown) => fences.push(e));

  const proc = (pid: number) => {
    const p = kernel.process(pid);
    if (!p) throw codeError('ESRCH', `no pid ${pid}`);
    return p;
  };
  const idle = () => driverIdle(driver);
  const exportedFrames = () => {
    const out: number[] = [];
    for (let pfn = 0; pfn < frames; pfn++) {
      try {
        if (kernel.api.pageExported(pfn)) out.push(pfn);
      } catch {
        // not a valid frame number for the module API
      }
    }
    return out;
  };

  return {
    name,
    async spawn(ids = {}) {
      return (await kernel.spawn({ uid: ids.uid ?? 1000, gid: ids.gid ?? 1000, catchSignals: true })).pid;
    },
    async fork(pid) {
      return (await proc(pid).fork()).pid;
    },
    async exit(pid) {
      await proc(pid).exit(0);
    },
    async exitAll() {
      const ps = kernel.processes();
      await Promise.all(ps.map((p) => p.exit(0)));
      return ps.map((p) => p.pid);
    },
    async processes() {
      return kernel.processes().map((p) => p.pid);
    },
    async mmap(pid, len) {
      return proc(pid).mmap(len, PROT_RW);
    },
    async munmap(pid, addr, len) {
      await proc(pid).munmap(addr, len);
    },
    async read32(pid, addr) {
      return proc(pid).read32(addr);
    },
    async write32(pid, addr, value) {
      await proc(pid).write32(addr, value);
    },
    async readWords(pid, addr, count, stride = PAGE_SIZE) {
      const p = proc(pid);
      const out: number[] = [];
      for (let i = 0; i < count; i++) out.push(await p.read32(addr + i * stride));
      return out;
    },
    async writeWords(pid, addr, values, stride = PAGE_SIZE) {
      const p = proc(pid);
      for (let i = 0; i < values.length; i++) await p.write32(addr + i * stride, values[i]);
    },
    async read(pid, addr, len) {
      return proc(pid).read(addr, len);
    },
    async write(pid, addr, bytes) {
      await proc(pid).write(addr, bytes);
    },
    async incr(pid, addr, times) {
      const p = proc(pid);
      for (let i = 0; i < times; i++) {
        for (;;) {
          const v = await p.read32(addr);
          if ((await p.cas32(addr, v, v + 1)) === v) break;
        }
      }
    },
    async pfnOf(pid, addr) {
      return kernel.pfnOf(pid, addr) ?? null;
    },

    async make(pid, va, size, mode) {
      return driver.make(pid, va, size, mode);
    },
    async get(pid, segid, access) {
      return driver.get(pid, segid, access);
    },
    async attach(pid, apid, offset, size) {
      return driver.attach(pid, apid, offset, size);
    },
    async detach(pid, va) {
      await driver.detach(pid, va);
    },
    async release(pid, apid) {
      await driver.release(pid, apid);
    },
    async remove(segid) {
      await driver.remove(segid);
    },
    async unload() {
      await driver.unload();
    },
    async load() {
      await kernel.loadModule(driver);
    },

    async status(): Promise<InstanceStatus> {
      const ks = kernel.stats();
      return {
        ...driver.status(),
        lost,
        fences,
        kernel: {
          frames: ks.frames,
          freeFrames: ks.freeFrames,
          processes: ks.processes,
          pins: ks.pins,
          driverFrames: ks.driverFrames,
          rmapNotifiers: ks.rmapNotifiers.registered,
        },
      };
    },
    async pageStates(segid) {
      return driver.pageStates(segid);
    },
    async rmapEntries(): Promise<RmapEntryView[]> {
      return driver.rmap
        .filter(() => true)
        .map((e) => ({
          pfn: e.pfn,
          segid: driver.segBySlot.get(e.seg)?.segid ?? `slot ${e.seg}`,
          page: e.page,
          node: driver.nodeNames[e.node],
          write: e.write,
        }));
    },
    async exportedFrames() {
      return exportedFrames();
    },
    async quiesce(timeoutMs = 10_000) {
      const t0 = Date.now();
      while (!idle()) {
        if (Date.now() - t0 > timeoutMs)
          throw codeError('E_TIMEOUT', `${name}: not quiescent after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async driverCheck(liveNames) {
      const live = new Set(liveNames);
      const errs: string[] = [];
      const inMap = new Set(driver.rmap.frames());
      for (const pfn of inMap)
        if (!kernel.api.pageExported(pfn)) errs.push(`pfn ${pfn} in rmap but not exported`);
      for (const pfn of exportedFrames())
        if (!inMap.has(pfn)) errs.push(`pfn ${pfn} flagged external_rmap with no rmap entry`);
      for (const e of driver.rmap.filter(() => true))
        if (!live.has(driver.nodeNames[e.node])) errs.push(`rmap entry for dead ${driver.nodeNames[e.node]}`);
      const s = driver.status();
      if (s.counters.pins !== s.counters.unpins)
        errs.push(`driver pins ${s.counters.pins} != unpins ${s.counters.unpins}`);
      for (const seg of driver.segments.values())
        for (let p = 0; p < seg.npages; p++)
          if (seg.inval[p] !== 0 || seg.busy[p] !== 0)
            errs.push(`${seg.segid} page ${p}: inval ${seg.inval[p]} busy ${seg.busy[p]}`);
      if (driver.fencing.size > 0) errs.push(`fencing in progress: ${[...driver.fencing.keys()].join(',')}`);
      return errs;
    },
    async kernelCheck() {
      return kernel.violations();
    },
  };
}
