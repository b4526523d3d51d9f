/**
 * The attacher side of remote segments: faults of driver VMAs (coalesced, with optional prefault),
 * the page cache (one frame per instance per segment page, shared by every local attachment),
 * answering invalidations (zap or write-protect, then ack with dirty data), detach, segment-gone and
 * the loss of a home.
 */
import type { DriverFault, KernelModuleApi } from '@xpmesh/kernel';
import { KernelError } from '@xpmesh/kernel';
import type {
  Detach,
  Invalidate,
  InvalidateAck,
  MapReq,
  PageData,
  PageRange,
  PeerSession,
  SegmentGone,
} from '@xpmesh/protocol';
import { WireError } from '@xpmesh/protocol';
import { codeOf } from './errors.js';
import { homeOf, pageKey } from './ids.js';
import { copyPage } from './page-copy.js';
import { MAX_PAGES, normalRanges, toRanges } from './ranges.js';
import type { Attachment, DriverState, InflightMap } from './state.js';

const FAULT_ROUNDS = 8;

export async function attachmentFault(d: DriverState, att: Attachment, f: DriverFault): Promise<void> {
  const k = d.kernel;
  const ps = k.pageSize;
  d.counters.faults++;
  if (att.detached) throw new KernelError('SIGSEGV', `attachment at ${att.vaddr} detached`);
  if (f.mm.id !== att.mm.id) throw new KernelError('SIGBUS', 'attachments are not inherited across fork');
  if (att.gone) throw new KernelError('SIGBUS', `segment ${att.grant.segid} is gone`);
  if (f.write && att.grant.access !== 'rw')
    throw new KernelError('SIGSEGV', 'write to a read-only attachment');
  const i = Math.floor((f.address - att.vaddr) / ps);
  if (i < 0 || i >= att.npages) throw new KernelError('SIGSEGV', 'fault outside the attachment');
  const p = att.firstPage + i;
  if (att.grant.local) {
    d.counters.localFaults++;
    const seg = d.segments.get(att.grant.segid);
    if (!seg || seg.removed) throw new KernelError('SIGBUS', `segment ${att.grant.segid} is gone`);
    await d.homeSide.localFault(seg, p, att, i, f.address, f.write);
    return;
  }
  d.counters.remoteFaults++;
  const home = att.grant.home;
  for (let round = 0; round < FAULT_ROUNDS; round++) {
    if (att.detached) throw new KernelError('SIGSEGV', `attachment at ${att.vaddr} detached`);
    if (att.gone) throw new KernelError('SIGBUS', `segment ${att.grant.segid} is gone`);
    const slot = d.leaseSlotOf(home);
    if (!k.leaseValid(slot)) {
      // the copies from this home may be revoked behind our back: wait for a renewal (or for the
      // session to end, which revokes the attachment), then let the access try again
      await d.waitLease(home, d.requestTimeoutMs);
      return;
    }
    const c = d.cache.get(att.grant.segid, p);
    if (c && (!f.write || c.access === 'w')) {
      const w = c.access === 'w' && att.grant.access === 'rw';
      if (att.mapped[i] === (w ? 2 : 1) || (att.mapped[i] === 2 && !f.write)) {
        // the PTE is already what the copy allows: the access faulted on its lease, now renewed
        return;
      }
      if (att.mapped[i] !== 0) {
        // an existing PTE that is not good enough (read-only after an upgrade): replace it
        att.mapped[i] = 0;
        await k.zapDriverRange(att.mm, f.address, f.address + ps);
        continue;
      }
      if (k.installPte(att.mm, f.address, c.pfn, { write: w, lease: slot })) att.mapped[i] = w ? 2 : 1;
      return;
    }
    await fetchPage(d, att, p, f.write ? 'rw' : 'r');
  }
  // still contended: resolve without installing; the access faults again
}

/** One map request per page at a time: concurrent faults on a page join the request in flight. */
async function fetchPage(d: DriverState, att: Attachment, p: number, access: 'r' | 'rw'): Promise<void> {
  const key = pageKey(att.grant.segid, p);
  const pend = d.pendingFaults.get(key);
  if (pend) {
    d.counters.coalescedFaults++;
    if (pend.access === 'rw' || access === 'r') await pend.promise;
    else await pend.promise.catch(() => undefined);
    return;
  }
  const promise = requestPages(d, att, p, access);
  d.pendingFaults.set(key, { access, promise });
  try {
    await promise;
  } finally {
    if (d.pendingFaults.get(key)?.promise === promise) d.pendingFaults.delete(key);
  }
}

async function requestPages(
  d: DriverState,
  att: Attachment,
  p: number,
  access: 'r' | 'rw',
  prefault = d.prefault,
): Promise<void> {
  const g = att.grant;
  let count = 1;
  // (the page keys are strings: built only when the map to look in has anything at all)
  const pend = d.pendingFaults;
  const detaching = d.detachInFlight;
  const seg = d.cache.segment(g.segid);
  while (
    count < prefault &&
    p + count < att.firstPage + att.npages &&
    !seg?.has(p + count) &&
    (pend.size === 0 || !pend.has(pageKey(g.segid, p + count))) &&
    (detaching.size === 0 || !detaching.has(pageKey(g.segid, p + count)))
  ) {
    count++;
  }
  // A detach of the page still on its way to the home (or being applied there) would drop the copy
  // this request is about to be granted: ask only after the home has answered it.
  const detach = detaching.size === 0 ? undefined : detaching.get(pageKey(g.segid, p));
  if (detach) await detach;
  if (att.gone || att.detached) return;
  let pages: PageData[];
  let grants: number[];
  let granted: 'r' | 'rw';
  // invalidations that overtake the reply are noted per page (see handleInvalidate); noteAt[q - p]
  // is page q's note (the key strings are built once per page)
  const notes: Array<[string, InflightMap]> = [];
  const noteAt: Array<InflightMap | undefined> = new Array(count);
  for (let q = p; q < p + count; q++) {
    const key = pageKey(g.segid, q);
    if (d.inflightMaps.has(key)) continue; // a request of the same page is already noting it
    const rec: InflightMap = { dropUpTo: -1, downgradeUpTo: -1 };
    d.inflightMaps.set(key, rec);
    notes.push([key, rec]);
    noteAt[q - p] = rec;
  }
  try {
    try {
      const reply = await d.request<MapReq>(g.home, { t: 'map', apid: g.apid, page: p, count, access });
      pages = reply.pages;
      grants = reply.grants;
      granted = reply.access;
    } catch (e) {
      const code = codeOf(e);
      if (code === 'E_BUSY') return; // the access faults again
      throw new KernelError('SIGBUS', `map ${g.segid} page ${p}: ${code}`);
    }
    if (grants.length !== pages.length) {
      d.log.warn({ segid: g.segid, page: p }, 'xpmem: map-ok without a grant id per page; ignored');
      return;
    }
    installGranted(d, att, pages, grants, granted, p, noteAt);
  } finally {
    for (const [key, rec] of notes) if (d.inflightMaps.get(key) === rec) d.inflightMaps.delete(key);
  }
}

function installGranted(
  d: DriverState,
  att: Attachment,
  pages: PageData[],
  grants: number[],
  granted: 'r' | 'rw',
  first: number,
  noteAt: ReadonlyArray<InflightMap | undefined>,
): void {
  const k = d.kernel;
  const g = att.grant;
  if (att.gone) return;
  if (att.detached) {
    // detached while the grant was in flight: give the pages straight back
    void d.guard('give back', () =>
      giveBack(
        d,
        att,
        pages.map((pd) => pd.page),
      ),
    );
    return;
  }
  // Pages not cached yet get new frames from ONE ranged allocation (allocPages) after this pass;
  // the whole function is one synchronous section, so the cache cannot change between the passes.
  const fresh: number[] = [];
  const freshAcc: Array<'r' | 'w'> = [];
  for (let j = 0; j < pages.length; j++) {
    const pd = pages[j];
    const grant = grants[j];
    let acc: 'r' | 'w' = granted === 'rw' ? 'w' : 'r';
    const note = pd.page >= first ? noteAt[pd.page - first] : undefined;
    if (note && grant <= note.dropUpTo) {
      // the home invalidated this grant before its reply got here (and we acked having nothing)
      d.counters.overtakenGrants++;
      continue;
    }
    if (note && grant <= note.downgradeUpTo) acc = 'r'; // recalled for reading meanwhile
    const c = d.cache.get(g.segid, pd.page);
    if (c) {
      if (c.access === 'w' && acc === 'r') continue;
      k.writePageData(c.pfn, pd.data);
      c.access = acc;
      c.version = pd.version;
      c.grant = Math.max(c.grant, grant);
    } else {
      fresh.push(j);
      freshAcc.push(acc);
    }
  }
  for (let at = 0; at < fresh.length; ) {
    const run = fresh.slice(at, at + MAX_ALLOC_RUN);
    const datas = new Array<Uint8Array>(run.length);
    for (let x = 0; x < run.length; x++) datas[x] = pages[run[x]].data;
    // as many frames as there is memory for (ENOMEM if none), as allocPage page by page would
    const pfns = k.allocPages(datas);
    for (let x = 0; x < pfns.length; x++) {
      const pd = pages[run[x]];
      d.cache.set({
        segid: g.segid,
        home: g.home,
        page: pd.page,
        pfn: pfns[x],
        access: freshAcc[at + x],
        version: pd.version,
        grant: grants[run[x]],
      });
    }
    if (pfns.length < run.length) throw new KernelError('ENOMEM', 'no free frame');
    at += run.length;
  }
}

/** Pages one allocPages call takes (the kernel's bound for a ranged call). */
const MAX_ALLOC_RUN = 1024;

/** Prefault the first pages of a new remote attachment (one map request, read copies). */
export async function prefaultAttachment(d: DriverState, att: Attachment): Promise<void> {
  if (d.prefault <= 1 || att.grant.local) return;
  try {
    await requestPages(d, att, att.firstPage, 'r', Math.min(d.prefault, att.npages));
  } catch (e) {
    d.log.debug({ err: e }, 'xpmem: prefault failed (pages fault on touch)');
  }
}

/**
 * Zap (or write-protect) the pages of `ranges` (normalised) in every local attachment of `segid`,
 * one kernel call per run of mapped pages. Cost: the attachment's overlap with the ranges, never a
 * walk of the whole attachment for a small invalidate (reclaiming n pages one by one was O(n²)).
 */
async function unmapPages(
  d: DriverState,
  segid: string,
  ranges: readonly PageRange[],
  wrprotect: boolean,
): Promise<void> {
  const k = d.kernel;
  const ps = k.pageSize;
  const work: Promise<unknown>[] = [];
  const run = (att: Attachment, first: number, n: number) => {
    const a = att.vaddr + first * ps;
    work.push(
      wrprotect ? k.wrprotectDriverRange(att.mm, a, a + n * ps) : k.zapDriverRange(att.mm, a, a + n * ps),
    );
  };
  for (const att of d.attachments.values()) {
    if (att.grant.segid !== segid || att.grant.local) continue;
    const mapped = att.mapped;
    // indices come in ascending order (normalised ranges): runs are built as we go
    let runStart = -1;
    let runEnd = -1;
    for (const [first, count] of ranges) {
      const lo = Math.max(first - att.firstPage, 0);
      const hi = Math.min(first + count - att.firstPage, att.npages);
      for (let i = lo; i < hi; i++) {
        const m = mapped[i];
        if (m === 0 || (wrprotect && m !== 2)) continue;
        mapped[i] = wrprotect ? 1 : 0;
        if (i === runEnd) runEnd++;
        else {
          if (runStart >= 0) run(att, runStart, runEnd - runStart);
          runStart = i;
          runEnd = i + 1;
        }
      }
    }
    if (runStart >= 0) run(att, runStart, runEnd - runStart);
  }
  if (work.length === 1) await work[0];
  else if (work.length > 1) await Promise.all(work);
}

export async function handleInvalidate(
  d: DriverState,
  from: PeerSession,
  msg: Invalidate,
): Promise<Omit<InvalidateAck, 're'>> {
  const k = d.kernel;
  if (homeOf(msg.segid) !== from.node)
    throw new WireError('E_STATE', `${from.node} is not the home of ${msg.segid}`);
  const ranges = normalRanges(msg.ranges);
  // Order. The invalidate covers every grant with an id ≤ upTo. A map-ok still on its way (it may be
  // behind this message) is noted so that the copy it carries is dropped (or installed read-only)
  // when it arrives; copies already cached are forgotten synchronously, before anything awaits, so
  // no local fault can install them again. A copy granted after upTo is not ours to drop.
  const notes = d.inflightMaps.size > 0;
  const cached = d.cache.segment(msg.segid);
  /** Copies held for writing: their data goes back in the ack (write-back). */
  const written: Array<{ page: number; pfn: number; version: number }> = [];
  /** Frames of dropped copies: freed once the ack is on its way. */
  const drop: number[] = [];
  /** Their pages: forgotten together below, in this same synchronous section. */
  const gone: number[] = [];
  for (const [first, count] of ranges) {
    for (let p = first; p < first + count; p++) {
      if (notes) {
        const note = d.inflightMaps.get(pageKey(msg.segid, p));
        if (note) {
          if (msg.downgrade) note.downgradeUpTo = Math.max(note.downgradeUpTo, msg.upTo);
          else note.dropUpTo = Math.max(note.dropUpTo, msg.upTo);
        }
      }
      const c = cached?.get(p);
      if (!c) continue;
      if (c.grant > msg.upTo) continue;
      const wasWrite = c.access === 'w';
      if (msg.downgrade) {
        if (!wasWrite) continue;
        c.access = 'r';
      } else {
        gone.push(p);
        drop.push(c.pfn);
      }
      if (wasWrite && msg.writeback) written.push({ page: p, pfn: c.pfn, version: c.version });
    }
  }
  // still before any await: no local fault can find these copies once this returns
  d.cache.deletePages(msg.segid, gone);
  await unmapPages(d, msg.segid, ranges, msg.downgrade);
  const dirty: PageData[] = [];
  if (msg.writeback && d.detaching.size > 0) {
    for (const [first, count] of ranges) {
      for (let p = first; p < first + count; p++) {
        const pd = d.detaching.get(pageKey(msg.segid, p));
        if (pd) dirty.push(pd);
      }
    }
  }
  for (const w of written)
    dirty.push({ page: w.page, version: w.version, data: copyPage(k.pageBytes(w.pfn)) });
  // The dropped frames are unreachable now (no cache entry, every PTE zapped with its shootdown
  // complete, their data copied above): freeing them can wait until the ack is queued, which happens
  // in this turn's microtasks, before any setImmediate callback.
  if (drop.length === 1) k.putPage(drop[0]);
  else if (drop.length > 1) setImmediate(() => freeFrames(d, k, drop));
  return { t: 'invalidate-ack', dirty };
}

/** Frames freed per turn by freeFrames: the rest waits a turn, behind the I/O queued meanwhile. */
const FREE_BATCH = 128;

/**
 * Drop the driver's references to `pfns` (frames of cached copies no longer reachable), FREE_BATCH
 * per turn of the event loop from `from` on: a 1024-page invalidation's frees in one turn held up
 * the I/O behind them (in one process, the home reading the very ack this invalidation sent).
 */
function freeFrames(d: DriverState, k: KernelModuleApi, pfns: number[], from = 0): void {
  const end = Math.min(pfns.length, from + FREE_BATCH);
  for (let i = from; i < end; i++) {
    try {
      k.putPage(pfns[i]);
    } catch (e) {
      d.log.warn({ err: e, pfn: pfns[i] }, 'xpmem: freeing a dropped copy failed');
    }
  }
  if (end < pfns.length) setImmediate(() => freeFrames(d, k, pfns, end));
}

/**
 * Give up pages [from, to) (attachment indices) of an attachment: zap them (unless the kernel already
 * did), drop cached pages no other local attachment of the segment covers, and tell the home
 * (detach, with the data of pages held for writing).
 */
export async function releaseAttachmentPages(
  d: DriverState,
  att: Attachment,
  from: number,
  to: number,
  zapped: boolean,
) {
  const k = d.kernel;
  const ps = k.pageSize;
  att.mapped.fill(0, from, to);
  if (!zapped)
    await k.zapDriverRange(att.mm, att.vaddr + from * ps, att.vaddr + to * ps).catch(() => undefined);
  if (att.grant.local) return;
  const others = [...d.attachments.values()].filter(
    (a) => a !== att && !a.detached && a.grant.segid === att.grant.segid && a.mm.id !== -1,
  );
  const pages: number[] = [];
  const dirty: PageData[] = [];
  for (let i = from; i < to; i++) {
    const p = att.firstPage + i;
    if (others.some((a) => p >= a.firstPage && p < a.firstPage + a.npages)) continue;
    pages.push(p);
    const c = d.cache.get(att.grant.segid, p);
    if (!c) continue;
    d.cache.delete(att.grant.segid, p);
    if (c.access === 'w') dirty.push({ page: p, version: c.version, data: copyPage(k.pageBytes(c.pfn)) });
    k.putPage(c.pfn);
  }
  if (pages.length === 0 || att.gone) return;
  // Until the home has the detach, its data is also what an invalidate of these pages must return
  // (the home may recall the page before the detach arrives and would otherwise lose the write).
  for (const pd of dirty) d.detaching.set(pageKey(att.grant.segid, pd.page), pd);
  try {
    await sendDetach(d, att, pages, dirty);
  } finally {
    for (const pd of dirty) {
      const key = pageKey(att.grant.segid, pd.page);
      if (d.detaching.get(key) === pd) d.detaching.delete(key);
    }
  }
}

/** Run `send` (a detach of `pages` of `segid`) with the pages marked in d.detachInFlight meanwhile. */
async function trackDetach(d: DriverState, segid: string, pages: number[], send: () => Promise<void>) {
  const done = send();
  const mine = done.catch(() => undefined);
  const keys = pages.map((p) => pageKey(segid, p));
  for (const key of keys) d.detachInFlight.set(key, mine);
  try {
    await done;
  } finally {
    for (const key of keys) if (d.detachInFlight.get(key) === mine) d.detachInFlight.delete(key);
  }
}

function sendDetach(d: DriverState, att: Attachment, pages: number[], dirty: PageData[]): Promise<void> {
  return trackDetach(d, att.grant.segid, pages, () => sendDetachNow(d, att, pages, dirty));
}

async function sendDetachNow(
  d: DriverState,
  att: Attachment,
  pages: number[],
  dirty: PageData[],
): Promise<void> {
  // ranges cover every page (phantom grants included); dirty data goes in chunks of MAX_PAGES
  const ranges = toRanges(pages);
  for (let i = 0; i === 0 || i < dirty.length; i += MAX_PAGES) {
    const chunk = dirty.slice(i, i + MAX_PAGES);
    try {
      await d.request<Detach>(att.grant.home, {
        t: 'detach',
        apid: att.grant.apid,
        ranges: i === 0 ? ranges : toRanges(chunk.map((pd) => pd.page)),
        dirty: chunk,
      });
    } catch (e) {
      d.log.debug({ err: e, apid: att.grant.apid }, 'xpmem: detach not delivered');
      return;
    }
  }
}

/** Tell the home we do not hold `pages` (grants that arrived after a detach). */
async function giveBack(d: DriverState, att: Attachment, pages: number[]): Promise<void> {
  const others = [...d.attachments.values()].filter((a) => !a.detached && a.grant.segid === att.grant.segid);
  const free = pages.filter((p) => !others.some((a) => p >= a.firstPage && p < a.firstPage + a.npages));
  if (free.length === 0) return;
  await trackDetach(d, att.grant.segid, free, async () => {
    try {
      await d.request<Detach>(att.grant.home, {
        t: 'detach',
        apid: att.grant.apid,
        ranges: toRanges(free),
        dirty: [],
      });
    } catch (e) {
      d.log.debug({ err: e }, 'xpmem: give-back detach not delivered');
    }
  });
}

export async function handleSegmentGone(d: DriverState, from: PeerSession, msg: SegmentGone): Promise<void> {
  if (homeOf(msg.segid) !== from.node) return;
  await new Promise<void>((resolve) => setImmediate(resolve)); // after replies that arrived before it
  d.counters.segmentGone++;
  await revoke(d, (segid) => segid === msg.segid);
}

/** A home's session ended: its attachments are revoked (next touch SIGBUS), cached pages dropped. */
export async function attacherDown(d: DriverState, node: string, _why: string): Promise<void> {
  await revoke(d, (segid) => homeOf(segid) === node);
}

async function revoke(d: DriverState, match: (segid: string) => boolean): Promise<void> {
  const k = d.kernel;
  for (const c of d.cache.all()) {
    if (!match(c.segid)) continue;
    d.cache.delete(c.segid, c.page);
    k.putPage(c.pfn);
  }
  // (issue 17) the home dropped these permits with the segment: releasing them sends nothing
  for (const g of d.grants.values()) if (!g.local && match(g.segid)) g.gone = true;
  const zaps: Promise<unknown>[] = [];
  for (const att of d.attachments.values()) {
    if (att.grant.local || !match(att.grant.segid) || att.gone) continue;
    att.gone = true;
    att.mapped.fill(0);
    zaps.push(k.zapDriverRange(att.mm, att.vaddr, att.vaddr + att.size).catch(() => undefined));
  }
  await Promise.all(zaps);
}
