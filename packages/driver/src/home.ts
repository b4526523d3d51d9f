/**
 * The home side: resolving a remote fault (map), local accesses that fault into the driver (device
 * entries on the source, faults of same-instance attachments), detach, and segment teardown.
 *
 * Grant protocol for one page (serialised per segment page by seg.mutex):
 *   1. wait until no invalidation of the page is in flight;
 *   2. resolve conflicts: a write grant invalidates every other copy (upgrade); a read grant recalls
 *      a remote writer with downgrade (its dirty data comes back in the ack);
 *   3. mmuIntervalReadBegin, then getUserPage in the source mm (swap-in / COW break) — a pin;
 *   4. put the source PTE in the right device mode ('readonly' for read copies, 'none' for a remote
 *      writer) so a home access faults into the driver;
 *   5. lockPage, then re-check: no invalidation of the page (our per-page gen) and none of the mm
 *      (mmuIntervalReadRetry with the sequence read before step 3), else undo and retry;
 *   6. exportPage (PG_external_rmap, lock held) BEFORE adding the reverse-map entry; copy the data;
 *      unlockPage; putPage.
 */
import type { DriverFault } from '@xpmesh/kernel';
import { KernelError } from '@xpmesh/kernel';
import type { Detach, MapOk, MapReq, Ok, PageData, PeerSession } from '@xpmesh/protocol';
import { codeOf, DriverError, fail } from './errors.js';
import { invalidatePages, writeBack } from './invalidate.js';
import { copyPage, giveStage, takeStage } from './page-copy.js';
import { PM_OTHER, PM_OTHER_WRITE } from './rmap.js';
import { devModeAt, devOf, pageAddr, setHomeDevice, syncHomePte } from './source-pte.js';
import type { DriverState } from './state.js';
import { type Attachment, DEV_CLEAR, DEV_NONE, DEV_READONLY, type Permit, type Segment } from './state.js';
import { unexportIfEmpty } from './unexport.js';

const GRANT_RETRIES = 32;
/** Node index of this instance: never in the reverse map (local attachers map frames directly). */
export const SELF = 0;

/**
 * Copies held by other instances that conflict with an access by `requester` (SELF for the home's own
 * processes and local attachers): a write needs every other copy gone, a read needs no remote writer.
 */
export function resolveConflicts(
  d: DriverState,
  seg: Segment,
  p: number,
  requester: number,
  write: boolean,
): Promise<unknown> | undefined {
  const pfn = seg.pfn[p];
  // no entry at all (the usual first grant): nothing to resolve, and no promise to wait for
  if (d.rmap.isEmpty(pfn)) return undefined;
  if (write) {
    const own = d.rmap.find(pfn, requester, seg.slot, p);
    if (own >= 0 && !d.rmap.isWrite(own)) {
      // upgrade of the requester's own read copy: it goes too (the grant brings the data back), so no
      // instance can read a stale copy while the home frame is briefly writable during the COW break
      d.counters.upgrades++;
      return invalidatePages(d, seg, [p], { reason: 'upgrade', writeback: true, downgrade: false });
    }
  }
  const m = d.rmap.pageMask(pfn, seg.slot, p, requester);
  if (!(m & PM_OTHER)) return undefined;
  if (write) {
    if (requester === SELF) d.counters.recalls++;
    else d.counters.upgrades++;
    return invalidatePages(d, seg, [p], {
      reason: requester === SELF ? 'recall' : 'upgrade',
      writeback: true,
      downgrade: false,
      except: requester,
    });
  }
  if (m & PM_OTHER_WRITE) {
    d.counters.recalls++;
    return invalidatePages(d, seg, [p], {
      reason: 'recall',
      writeback: true,
      downgrade: true,
      except: requester,
      onlyWriters: true,
    });
  }
  return undefined;
}

/**
 * Same-instance attachers map the source frame directly: a remote grant write-protects or zaps them.
 * Returns undefined (no promise to wait for) when none maps the page.
 */
export function fenceLocalAttachers(
  d: DriverState,
  seg: Segment,
  p: number,
  write: boolean,
): Promise<void> | undefined {
  for (const att of d.attachments.values()) {
    if (!att.grant.local || att.grant.segid !== seg.segid) continue;
    const i = p - att.firstPage;
    if (i < 0 || i >= att.npages || att.mapped[i] === 0) continue;
    if (write || att.mapped[i] === 2) return fenceLocalAttachersNow(d, seg, p, write);
  }
  return undefined;
}

async function fenceLocalAttachersNow(
  d: DriverState,
  seg: Segment,
  p: number,
  write: boolean,
): Promise<void> {
  const k = d.kernel;
  for (const att of d.attachments.values()) {
    if (!att.grant.local || att.grant.segid !== seg.segid) continue;
    const i = p - att.firstPage;
    if (i < 0 || i >= att.npages || att.mapped[i] === 0) continue;
    const a = att.vaddr + i * k.pageSize;
    if (write) {
      att.mapped[i] = 0;
      await k.zapDriverRange(att.mm, a, a + k.pageSize);
    } else if (att.mapped[i] === 2) {
      att.mapped[i] = 1;
      await k.wrprotectDriverRange(att.mm, a, a + k.pageSize);
    }
  }
}

/** Pages the grant protocol is resolving right now (getUserPage may touch our own device entry). */
const inGup = new WeakMap<Segment, Map<number, boolean>>();

/**
 * Steps 1-6 above for one page, for remote instance `node` holding `permit`. The returned promise
 * settles with the grant; the page itself stays held (its mutex) until `hold` settles, which the
 * caller guarantees: handleMap resolves it unconditionally (in the `finally` of an allSettled, one
 * setImmediate later) once the map-ok is queued on the link. Safety does
 * not depend on this (a grant overtaken by an invalidation is dropped by its grant id), liveness
 * does: released at once, the next conflicting request's invalidate was queued BEFORE the map-ok it
 * covers, so the copy was dropped on arrival, the fault retried and invalidated the next grant in
 * turn — with 8 instances writing one page almost no grant was ever used.
 */
export function grantPage(
  d: DriverState,
  seg: Segment,
  p: number,
  permit: Permit,
  write: boolean,
  hold?: Promise<void>,
): Promise<{ pd: PageData; grant: number }> {
  return new Promise((resolve, reject) => {
    seg.mutex
      .run(p, async () => {
        let r: { pd: PageData; grant: number };
        try {
          r = await grantPageLocked(d, seg, p, permit, write);
        } catch (e) {
          reject(e);
          return;
        }
        resolve(r);
        // no timer of its own: `hold` always settles (see above), and a timer per granted page was
        // measurable on the fault path
        if (hold) await hold;
      })
      .catch(reject);
  });
}

/** grantPage's work, with the page mutex held by the caller. */
async function grantPageLocked(
  d: DriverState,
  seg: Segment,
  p: number,
  permit: Permit,
  write: boolean,
): Promise<{ pd: PageData; grant: number }> {
  const k = d.kernel;
  const node = d.nodeIdx(permit.node);
  const addr = pageAddr(d, seg, p);
  for (let attempt = 0; attempt < GRANT_RETRIES; attempt++) {
    if (seg.removed) fail('E_NO_SEGMENT', `segment ${seg.segid} removed`);
    if (d.permits.get(permit.apid) !== permit)
      d.refuse('no_permit', 'E_NO_PERMIT', `permit ${permit.apid} revoked`);
    // Steps 1-2 and the source PTE: each returns a promise only when it has something to wait for
    // (the uncontended first grant of a page has nothing), so the usual case takes no turn here.
    if (!seg.mayGrant(p)) await seg.waitIdle(p);
    const conflicts = resolveConflicts(d, seg, p, node, write);
    if (conflicts) await conflicts;
    const fenced = fenceLocalAttachers(d, seg, p, write);
    if (fenced) await fenced;
    // the source PTE must agree with the copies that are left BEFORE getUserPage: after a recall with
    // downgrade the former writer still reads, and a 'none' entry cleared by our own getUserPage
    // would leave the home writable under that read copy
    const synced = syncHomePte(d, seg, p);
    if (synced) await synced;
    // mainline order: the sequence number is read BEFORE getUserPage, so an invalidation that
    // starts or ends while we resolve the page (a migration that moves it, a munmap) forces a retry.
    // Both are taken in this turn when they have nothing to wait for (the ...Now forms return exactly
    // what the awaited ones would, without the promise hops); every re-check below is unchanged.
    let seq = k.mmuIntervalReadBeginNow(seg.mm);
    if (seq < 0) seq = await k.mmuIntervalReadBegin(seg.mm);
    const gen = seg.readBegin(p);
    let pfn: number;
    const busy = inGup.get(seg) ?? new Map<number, boolean>();
    inGup.set(seg, busy);
    busy.set(p, write);
    try {
      pfn = k.getUserPageNow(seg.mm, addr, { write });
      if (pfn < 0) pfn = await k.getUserPage(seg.mm, addr, { write });
    } catch (e) {
      throw gupError(e, seg, p);
    } finally {
      busy.delete(p);
    }
    d.counters.pins++;
    let granted = false;
    try {
      if (seg.readRetry(p, gen)) continue;
      if (seg.pfn[p] !== pfn) {
        if (!d.rmap.hasPage(seg.pfn[p], seg.slot, p)) seg.pfn[p] = pfn;
        else continue; // stale entries on an old frame: an invalidation is coming (gen will move)
      }
      try {
        const set = setHomeDevice(d, seg, p, write ? DEV_NONE : DEV_READONLY);
        if (set) await set;
      } catch {
        continue;
      }
      // uncontended, the page lock is taken at once (trylock); else sleep for it (bounded)
      if (!k.trylockPage(pfn)) await k.lockPage(pfn, d.ackTimeoutMs);
      try {
        // the page lock keeps reclaim and migration off the entry from here to the rmap entry
        const devOk = devModeAt(d, seg, p, pfn) === (write ? DEV_NONE : DEV_READONLY);
        if (seg.readRetry(p, gen) || k.mmuIntervalReadRetry(seg.mm, seq) || seg.removed || !devOk) {
          continue;
        }
        if (!k.pageExported(pfn)) k.exportPage(pfn); // PG_external_rmap first, lock held
        d.rmap.add(pfn, node, seg.slot, p, permit.slot, permit.epoch, write);
        const grant = ++d.grantSeq;
        seg.transition(p, write ? 'grant-write' : 'grant-read');
        const data = copyPage(k.pageBytes(pfn));
        granted = true;
        d.counters.mapsGranted++;
        return { pd: { page: p, version: seg.version[p], data }, grant };
      } finally {
        k.unlockPage(pfn);
      }
    } finally {
      k.putPage(pfn);
      d.counters.unpins++;
      if (!granted) await syncHomePte(d, seg, p);
    }
  }
  fail('E_BUSY', `page ${p} of ${seg.segid} stayed contended`);
}

function gupError(e: unknown, seg: Segment, p: number): DriverError {
  const c = codeOf(e);
  if (c === 'EFAULT' || c === 'SIGBUS' || c === 'SIGSEGV')
    return new DriverError('E_FAULT', `page ${p} of ${seg.segid}: hole`);
  if (c === 'EACCES') return new DriverError('E_ACCESS', `page ${p} of ${seg.segid}: source protection`);
  if (c === 'ESRCH') return new DriverError('E_NO_SEGMENT', `source of ${seg.segid} exited`);
  if (c === 'ENOMEM') return new DriverError('E_BUSY', 'home out of memory');
  return new DriverError('E_BUSY', `getUserPage: ${c}`);
}

type GrantResult = PromiseSettledResult<{ pd: PageData; grant: number }>;

/**
 * Steps 1-6 for the `count` pages from `first` as ONE ranged operation (a map with prefault): every
 * page mutex of the range is held (taken in ascending page order: the only holder of several, so no
 * lock-order cycle; all at once when none is held, see KeyedMutex.runAll) from the start until `hold`
 * settles, exactly as grantPage holds one; then steps 1-2 per page (usually nothing to wait for), ONE
 * mmuIntervalReadBegin, ONE getUserPages for the range, ONE setDeviceEntries (one TLB shootdown) per
 * run of pages, and step 5-6 per page with the same re-checks under its own page lock (one page lock
 * at a time, as grantPage). A page that fails a re-check in the ranged pass is granted afterwards by
 * grantPageLocked (its mutex still held), so the ordering guarantees are grantPage's for every page:
 * no grant while an invalidation of the page is in flight (inval/busy/gen re-checked under the page
 * lock), PG_external_rmap before the reverse-map entry, grant ids in order. Results per page, in order.
 *
 * The data of a page is copied under its page lock, as grantPage copies it, into page i of ONE
 * staging buffer for the range (page-copy.ts takeStage: aligned, not shared, reused). Not a view of
 * the frame handed to the encoder: frames live in a SharedArrayBuffer, and V8 copies out of one with
 * relaxed atomic loads, a machine word at a time only when both sides are word aligned — a `bin`
 * payload in a map-ok frame sits at whatever offset the message puts it, so the encoder copied a
 * 64-page prefault byte by byte (~190-370 us of the home's encode, measured per hop). Aligned copies
 * into the stage plus the encoder's plain memcpy cost a fraction of that. With the data copied, the
 * frames need not stay pinned until the reply is encoded: each pin is dropped at once, as in
 * grantPage.
 *
 * The stage goes back to the pool only once `hold` settled, i.e. a macrotask after the reply was
 * queued, by which time the link has encoded it (the link flushes in the microtasks of the turn the
 * reply is queued in, handleMap's continuation: a protocol contract pinned by
 * protocol/src/test/reply-encoded-in-turn.test.ts); so no other grant writes into it while a view of
 * it can still be read. If grantRangeLocked throws, no view of it left the function and it goes back
 * at once. ranged-grant.test.ts ("map-ok carries the data as of the grant", "concurrent ranged grants
 * of different data") checks the data each attacher gets.
 */
async function grantRange(
  d: DriverState,
  seg: Segment,
  first: number,
  count: number,
  permit: Permit,
  write: boolean,
  hold: Promise<void>,
): Promise<GrantResult[]> {
  const pages: number[] = new Array(count);
  for (let i = 0; i < count; i++) pages[i] = first + i;
  return new Promise((resolve, reject) => {
    seg.mutex
      .runAll(pages, () => grantRangeHeld(d, seg, pages, permit, write, hold, resolve, reject))
      .catch(reject);
  });
}

/** grantRange's work with every page mutex of the range held; returns once `hold` settled. */
async function grantRangeHeld(
  d: DriverState,
  seg: Segment,
  pages: number[],
  permit: Permit,
  write: boolean,
  hold: Promise<void>,
  resolve: (r: GrantResult[]) => void,
  reject: (e: unknown) => void,
): Promise<void> {
  const ps = d.kernel.pageSize;
  const stage = takeStage(pages.length, ps);
  let out: GrantResult[];
  try {
    out = await grantRangeLocked(d, seg, pages, permit, write, stage);
  } catch (e) {
    giveStage(stage, ps); // no view of it left this function
    reject(e);
    return;
  }
  resolve(out);
  try {
    await hold;
  } finally {
    // the reply carrying views of `stage` has been encoded by now (see grantRange)
    giveStage(stage, ps);
  }
}

async function grantRangeLocked(
  d: DriverState,
  seg: Segment,
  pages: number[],
  permit: Permit,
  write: boolean,
  stage: Uint8Array,
): Promise<GrantResult[]> {
  const k = d.kernel;
  const node = d.nodeIdx(permit.node);
  const n = pages.length;
  const out: Array<GrantResult | undefined> = new Array(n);
  const retry: number[] = [];
  const mode = write ? DEV_NONE : DEV_READONLY;
  const ps = k.pageSize;
  if (seg.removed) fail('E_NO_SEGMENT', `segment ${seg.segid} removed`);
  if (d.permits.get(permit.apid) !== permit)
    d.refuse('no_permit', 'E_NO_PERMIT', `permit ${permit.apid} revoked`);
  // steps 1-2 and the source PTE, per page (each usually synchronous: nothing to wait for)
  for (const p of pages) {
    if (!seg.mayGrant(p)) await seg.waitIdle(p);
    const conflicts = resolveConflicts(d, seg, p, node, write);
    if (conflicts) await conflicts;
    const fenced = fenceLocalAttachers(d, seg, p, write);
    if (fenced) await fenced;
    const synced = syncHomePte(d, seg, p);
    if (synced) await synced;
  }
  // step 3 for the range: the sequence number BEFORE getUserPages (mainline order)
  const seq = await k.mmuIntervalReadBegin(seg.mm);
  // (plain loops, no per-call closures in this file's per-page paths: V8 re-optimised such closures
  // on every call)
  const gens = new Uint32Array(n);
  for (let i = 0; i < n; i++) gens[i] = seg.readBegin(pages[i]);
  const busy = inGup.get(seg) ?? new Map<number, boolean>();
  inGup.set(seg, busy);
  for (const p of pages) busy.set(p, write);
  let pfns: number[];
  try {
    pfns = await k.getUserPages(seg.mm, pageAddr(d, seg, pages[0]), n, { write });
  } catch (e) {
    throw gupError(e, seg, pages[0]);
  } finally {
    for (const p of pages) busy.delete(p);
  }
  d.counters.pins += pfns.length;
  const granted = new Array<boolean>(n).fill(false);
  try {
    // pages past a short getUserPages: a hole (the first page's error was thrown above)
    for (let i = pfns.length; i < n; i++)
      out[i] = {
        status: 'rejected',
        reason: new DriverError('E_FAULT', `page ${pages[i]} of ${seg.segid}: hole`),
      };
    // which pages go on in the ranged pass (the others are retried one by one)
    const ok = new Array<boolean>(pfns.length).fill(false);
    for (let i = 0; i < pfns.length; i++) {
      const p = pages[i];
      if (seg.readRetry(p, gens[i])) continue;
      if (seg.pfn[p] !== pfns[i]) {
        if (!d.rmap.hasPage(seg.pfn[p], seg.slot, p)) seg.pfn[p] = pfns[i];
        else continue; // stale entries on an old frame: an invalidation is coming
      }
      ok[i] = true;
    }
    // step 4: device entries, one ranged update (one shootdown) per run of pages that need one; the
    // entries as they are now, read in one ranged call (deviceEntryAt per page before)
    const cur = seg.mm.exiting
      ? new Uint8Array(pfns.length)
      : k.deviceEntryModes(seg.mm, pageAddr(d, seg, pages[0]), pfns.length, d.deviceOwner);
    const need = new Array<boolean>(pfns.length);
    for (let i = 0; i < pfns.length; i++) need[i] = ok[i] && devOf(cur[i]) !== mode;
    for (let i = 0; i < pfns.length; ) {
      if (!need[i]) {
        i++;
        continue;
      }
      let j = i;
      while (j < pfns.length && need[j]) {
        // a page in the other device mode is cleared first (only adds access: no shootdown)
        if (cur[j] !== 0) k.clearDeviceEntry(seg.mm, pageAddr(d, seg, pages[j]));
        j++;
      }
      try {
        const set = await k.setDeviceEntries(
          seg.mm,
          pageAddr(d, seg, pages[i]),
          j - i,
          d.deviceOwner,
          write ? 'none' : 'readonly',
        );
        for (let x = i; x < j; x++) {
          if (set[x - i] === null) ok[x] = false;
          else seg.dev[pages[x]] = mode;
        }
      } catch {
        for (let x = i; x < j; x++) ok[x] = false;
      }
      i = j;
    }
    // steps 5-6 per page under its page lock, with every re-check of grantPage
    for (let i = 0; i < pfns.length; i++) {
      if (!ok[i]) continue;
      const p = pages[i];
      const pfn = pfns[i];
      if (!k.trylockPage(pfn)) {
        try {
          await k.lockPage(pfn, d.ackTimeoutMs);
        } catch (e) {
          out[i] = { status: 'rejected', reason: new DriverError('E_BUSY', `page ${p}: ${codeOf(e)}`) };
          continue;
        }
      }
      try {
        const devOk = devModeAt(d, seg, p, pfn) === mode;
        if (seg.readRetry(p, gens[i]) || k.mmuIntervalReadRetry(seg.mm, seq) || seg.removed || !devOk)
          continue;
        if (!k.pageExported(pfn)) k.exportPage(pfn); // PG_external_rmap first, lock held
        d.rmap.add(pfn, node, seg.slot, p, permit.slot, permit.epoch, write);
        const grant = ++d.grantSeq;
        seg.transition(p, write ? 'grant-write' : 'grant-read');
        // copied under the page lock, into the staging buffer (see grantRange)
        const data = stage.subarray(i * ps, (i + 1) * ps);
        data.set(k.pageBytes(pfn));
        granted[i] = true;
        d.counters.mapsGranted++;
        out[i] = { status: 'fulfilled', value: { pd: { page: p, version: seg.version[p], data }, grant } };
      } finally {
        k.unlockPage(pfn);
      }
    }
  } finally {
    for (let i = 0; i < pfns.length; i++) {
      k.putPage(pfns[i]);
      d.counters.unpins++;
    }
    for (let i = 0; i < pfns.length; i++) {
      if (granted[i]) continue;
      if (!out[i]) retry.push(i);
      await syncHomePte(d, seg, pages[i]);
    }
  }
  // pages that failed a re-check: granted one by one, as grantPage would (their mutexes are held)
  for (const i of retry) {
    try {
      out[i] = { status: 'fulfilled', value: await grantPageLocked(d, seg, pages[i], permit, write) };
    } catch (e) {
      out[i] = { status: 'rejected', reason: e };
    }
  }
  return out as GrantResult[];
}

/** Remote fault: `map` from an attacher. Pages after the first are best effort (prefault). */
/** How many permits of removed segments a home remembers (see DriverState.removedPermits). */
export const REMOVED_PERMITS_KEPT = 4096;

function rememberRemovedPermit(d: DriverState, p: Permit): void {
  if (p.node === d.self) return;
  d.removedPermits.set(p.apid, { node: p.node, segid: p.seg.segid });
  if (d.removedPermits.size > REMOVED_PERMITS_KEPT) {
    const oldest = d.removedPermits.keys().next().value;
    if (oldest !== undefined) d.removedPermits.delete(oldest);
  }
}

/** (issue 17) The segment of a permit dropped with its segment, if `node` held it. */
export function removedSegmentOf(d: DriverState, apid: string, node: string): string | undefined {
  const r = d.removedPermits.get(apid);
  return r && r.node === node ? r.segid : undefined;
}

export async function handleMap(d: DriverState, from: PeerSession, msg: MapReq): Promise<Omit<MapOk, 're'>> {
  const permit = d.permits.get(msg.apid);
  if (!permit) {
    const gone = removedSegmentOf(d, msg.apid, from.node);
    if (gone !== undefined) fail('E_NO_SEGMENT', `segment ${gone} removed`);
  }
  if (!permit || permit.node !== from.node || permit.epoch !== from.epoch) {
    d.refuse('no_permit', 'E_NO_PERMIT', `no permit ${msg.apid} for ${from.node}@${from.epoch}`);
  }
  const seg = permit.seg;
  if (seg.removed) fail('E_NO_SEGMENT', `segment ${seg.segid} removed`);
  if (msg.access === 'rw' && permit.access !== 'rw') fail('E_ACCESS', `permit ${msg.apid} is read-only`);
  if (!Number.isInteger(msg.page) || !Number.isInteger(msg.count) || msg.count < 1 || msg.page < 0) {
    fail('E_RANGE', 'bad page range');
  }
  if (msg.page + msg.count > seg.npages)
    fail('E_RANGE', `pages ${msg.page}+${msg.count} outside ${seg.npages}`);
  // Pages are independent (one mutex each): grant them concurrently, reply with the run that
  // succeeded from the first page (the faulting one; the rest is prefault and best effort). The
  // pages stay held until the reply is queued: the protocol queues it in the continuations of this
  // handler's promise (microtasks), so a macrotask later it is on the link, ahead of any invalidate
  // of these pages.
  let release!: () => void;
  const queued = new Promise<void>((r) => {
    release = r;
  });
  const write = msg.access === 'rw';
  const results: Array<PromiseSettledResult<{ pd: PageData; grant: number }>> =
    msg.count === 1
      ? await Promise.allSettled([grantPage(d, seg, msg.page, permit, write, queued)]).finally(() =>
          setImmediate(release),
        )
      : await grantRange(d, seg, msg.page, msg.count, permit, write, queued).finally(() =>
          setImmediate(release),
        );
  const first = results[0];
  if (first.status === 'rejected') {
    // later pages may have been granted: they stay in the map as if prefetched and dropped
    throw first.reason;
  }
  const pages: PageData[] = [];
  const grants: number[] = [];
  for (const r of results) {
    if (r.status === 'rejected') break;
    pages.push(r.value.pd);
    grants.push(r.value.grant);
  }
  return { t: 'map-ok', access: msg.access, pages, grants };
}

/** An attacher dropped pages (detach, exit, eviction): write its dirty data back, shrink the map. */
export async function handleDetach(d: DriverState, from: PeerSession, msg: Detach): Promise<Omit<Ok, 're'>> {
  const permit = d.permits.get(msg.apid);
  if (!permit) {
    const gone = removedSegmentOf(d, msg.apid, from.node);
    if (gone !== undefined) fail('E_NO_SEGMENT', `segment ${gone} removed`);
  }
  if (!permit || permit.node !== from.node || permit.epoch !== from.epoch) {
    d.refuse('no_permit', 'E_NO_PERMIT', `no permit ${msg.apid} for ${from.node}@${from.epoch}`);
  }
  const seg = permit.seg;
  const node = d.nodeIdx(from.node);
  const dirty = new Map(msg.dirty.map((pd) => [pd.page, pd]));
  for (const [first, count] of msg.ranges) {
    if (first < 0 || count < 1 || first + count > seg.npages) fail('E_RANGE', 'detach range outside segment');
  }
  for (const [first, count] of msg.ranges) {
    for (let p = first; p < first + count; p++) {
      await seg.mutex.run(p, async () => {
        const i = d.rmap.find(seg.pfn[p], node, seg.slot, p);
        if (i < 0) return;
        const e = d.rmap.entry(i, seg.pfn[p]);
        const pd = dirty.get(p);
        if (e.write && pd) writeBack(d, seg, p, pd.data);
        d.rmap.remove(e.pfn, node, seg.slot, p);
        const left = d.rmap.entries(e.pfn, seg.slot, p).length;
        seg.transition(p, left ? 'drop' : 'drop-last');
        unexportIfEmpty(d, e.pfn, false);
        await syncHomePte(d, seg, p);
      });
    }
  }
  return { t: 'ok' };
}

/** Segments of `mm` covering `address`. */
export function segmentsAt(d: DriverState, mmId: number, address: number): Segment[] {
  const rec = d.mms.get(mmId);
  if (!rec) return [];
  return [...rec.segs].filter((s) => !s.removed && address >= s.vaddr && address < s.vaddr + s.size);
}

/**
 * A home process touched a device entry (HMM migrate_to_ram analogue): bring the page home. A write
 * invalidates every remote copy (recalling a writer's data); a read recalls a writer with downgrade.
 */
export async function handleDeviceFault(d: DriverState, f: DriverFault): Promise<void> {
  const k = d.kernel;
  d.counters.homeFaults++;
  const segs = segmentsAt(d, f.mm.id, f.address);
  for (const seg of segs) {
    const p = (f.address - seg.vaddr) / k.pageSize;
    const gupWrite = inGup.get(seg)?.get(p);
    if (gupWrite !== undefined) {
      // A grant (which holds the page mutex) is inside getUserPage. The fault is its own, or one of
      // the source's processes touching the page meanwhile. With no copy anywhere, clearing the
      // entry is safe (the grant sets the final mode, with a shootdown, before it copies the data).
      // With copies left it must not be cleared (the home would be writable under them): let the
      // access try again shortly, after the grant.
      if (d.rmap.entries(seg.pfn[p], seg.slot, p).length === 0) {
        k.clearDeviceEntry(seg.mm, f.address);
        seg.dev[p] = DEV_CLEAR;
      } else {
        await new Promise<void>((resolve) => d.clock.setTimeout(resolve, 1));
      }
      continue;
    }
    await seg.mutex.run(p, async () => {
      await seg.waitIdle(p);
      await resolveConflicts(d, seg, p, SELF, f.write);
      await syncHomePte(d, seg, p);
    });
  }
  if (segs.length === 0) k.clearDeviceEntry(f.mm, f.address);
}

/** A same-instance attachment faulted: map the source frame directly (after resolving remote copies). */
export async function localAttachFault(
  d: DriverState,
  seg: Segment,
  p: number,
  att: Attachment,
  index: number,
  address: number,
  write: boolean,
): Promise<number> {
  const mmAttacher = att.mm;
  const k = d.kernel;
  const addr = pageAddr(d, seg, p);
  return seg.mutex.run(p, async () => {
    for (let attempt = 0; attempt < GRANT_RETRIES; attempt++) {
      if (seg.removed) throw new KernelError('SIGBUS', `segment ${seg.segid} removed`);
      await seg.waitIdle(p);
      await resolveConflicts(d, seg, p, SELF, write);
      await syncHomePte(d, seg, p);
      const seq = await k.mmuIntervalReadBegin(seg.mm);
      const gen = seg.readBegin(p);
      let pfn: number;
      try {
        pfn = await k.getUserPage(seg.mm, addr, { write });
      } catch (e) {
        throw new KernelError('SIGBUS', `page ${p} of ${seg.segid}: ${codeOf(e)}`);
      }
      d.counters.pins++;
      try {
        if (seg.readRetry(p, gen) || seg.removed || k.mmuIntervalReadRetry(seg.mm, seq)) continue;
        if (d.rmap.entries(seg.pfn[p], seg.slot, p).some((e) => e.write || write)) continue;
        if (k.installPte(mmAttacher, address, pfn, { write })) {
          // recorded before the page mutex is released: the next grant's fenceLocalAttachers must
          // see this PTE (it zaps or write-protects only what `mapped` says is there)
          const m = write ? 2 : 1;
          att.mapped[index] = Math.max(att.mapped[index], m);
          return m;
        }
      } finally {
        k.putPage(pfn);
        d.counters.unpins++;
      }
    }
    return 0;
  });
}

/** Drop a permit at the home: its node's entries made through it stay until detach or fence. */
export async function dropPermit(d: DriverState, p: Permit): Promise<void> {
  d.permits.delete(p.apid);
  d.permitBySlot.delete(p.slot);
}

/**
 * Source exit, remove, or unload: every remote copy is invalidated, local attachments are zapped and
 * marked gone, every instance that held a permit gets segment-gone (its next touch is SIGBUS).
 */
export async function teardownSegment(d: DriverState, seg: Segment, why: 'remove' | 'exit'): Promise<void> {
  const k = d.kernel;
  if (seg.removed) return;
  seg.removed = true;
  for (let p = 0; p < seg.npages; p++) seg.bumpSeq(p);
  const pages = [];
  for (let p = 0; p < seg.npages; p++) if (!d.rmap.isEmpty(seg.pfn[p])) pages.push(p);
  await invalidatePages(d, seg, pages, {
    reason: why === 'exit' ? 'release' : 'remove',
    writeback: false,
    downgrade: false,
  });
  for (const att of d.attachments.values()) {
    if (att.grant.local && att.grant.segid === seg.segid) {
      att.gone = true;
      att.mapped.fill(0);
      await k.zapDriverRange(att.mm, att.vaddr, att.vaddr + att.size).catch(() => undefined);
    }
  }
  for (let p = 0; p < seg.npages; p++) {
    if (seg.dev[p] !== DEV_CLEAR || devModeAt(d, seg, p) !== DEV_CLEAR) {
      if (!seg.mm.exiting) {
        try {
          k.clearDeviceEntry(seg.mm, pageAddr(d, seg, p));
        } catch {}
      }
      seg.dev[p] = DEV_CLEAR;
    }
  }
  for (const node of seg.permitNodes) {
    if (node !== d.self)
      d.sendOneWay(node, { t: 'segment-gone', segid: seg.segid, reason: why, cid: d.newCid() });
  }
  for (const p of [...d.permits.values()]) {
    if (p.seg !== seg) continue;
    rememberRemovedPermit(d, p);
    await dropPermit(d, p);
  }
  d.segments.delete(seg.segid);
  d.segBySlot.delete(seg.slot);
  const rec = d.mms.get(seg.mm.id);
  rec?.segs.delete(seg);
  if (rec && rec.segs.size === 0 && !seg.mm.exiting) {
    d.mms.delete(seg.mm.id);
    await rec.reg?.unregister();
  }
}
