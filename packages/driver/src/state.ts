/** The driver's records: segments and permits at the home, grants, attachments and the page cache at
 * the attacher. Per-page home state is kept in typed arrays per segment. */
import type { MmHandle, NotifierRegistration } from '@xpmesh/node/kernel';
import type { Access } from '@xpmesh/protocol';
import { KeyedMutex } from './mutex.js';
import { PAGE_STATES, type PageState } from './page-state.js';

/** Home device-entry mode of a page: none set, 'readonly', 'none'. */
export const DEV_CLEAR = 0;
export const DEV_READONLY = 1;
export const DEV_NONE = 2;

/** A segment exported by this instance (xpmem_make). */
export class Segment {
  readonly npages: number;
  /** PageState index per page. */
  readonly state: Uint8Array;
  /** Version of the page's data at the home: bumped on every completed write-back. */
  readonly version: Float64Array;
  /** Frame the directory last resolved for the page, -1 if unknown. */
  readonly pfn: Int32Array;
  /** Bumped by every invalidation that touches the page (our page-granular mmu_interval seq). */
  readonly gen: Uint32Array;
  /** Invalidations of the page in flight; no grant while > 0. */
  readonly inval: Uint16Array;
  /**
   * Kernel notifier brackets (per-mm range or rmap invalidatePage) working on the page; no grant
   * while > 0. Wider than `inval`: it also covers the bookkeeping after the acks (source PTE, frame
   * number), so a grant can never interleave with it.
   */
  readonly busy: Uint16Array;
  /** Device-entry mode currently installed in the source PTE (DEV_*). */
  readonly dev: Uint8Array;
  readonly mutex = new KeyedMutex<number>();
  readonly idle = new Map<number, Array<() => void>>();
  /** Invalidations waiting for the one in flight on the page to end (see waitInvalidations). */
  readonly invalDone = new Map<number, Array<() => void>>();
  /** Instances (node index) that hold or held a permit: they get segment-gone. */
  readonly permitNodes = new Set<string>();
  removed = false;

  constructor(
    readonly segid: string,
    readonly slot: number,
    readonly mm: MmHandle,
    readonly vaddr: number,
    readonly size: number,
    readonly mode: number,
    pageSize: number,
  ) {
    this.npages = size / pageSize;
    this.state = new Uint8Array(this.npages);
    this.version = new Float64Array(this.npages);
    this.pfn = new Int32Array(this.npages).fill(-1);
    this.gen = new Uint32Array(this.npages);
    this.inval = new Uint16Array(this.npages);
    this.busy = new Uint16Array(this.npages);
    this.dev = new Uint8Array(this.npages);
  }

  pageState(p: number): PageState {
    return PAGE_STATES[this.state[p]];
  }
}

/** A permit granted by this instance (the home) to some instance. */
export interface Permit {
  readonly apid: string;
  readonly slot: number;
  readonly seg: Segment;
  readonly node: string;
  readonly epoch: number;
  readonly access: Access;
}

/** A permit held by a local process (xpmem_get's result), for a local or a remote segment. */
export interface Grant {
  readonly apid: string;
  readonly pid: number;
  readonly segid: string;
  readonly home: string;
  readonly access: Access;
  readonly size: number;
  readonly local: boolean;
  /** The home's session epoch when granted (remote grants). */
  readonly homeEpoch: number;
  /**
   * (issue 17) The home said segment-gone (or its session ended): the home has dropped the permit
   * itself, so releasing it is a local no-op and sends no `release` (docs/protocol.md, release).
   */
  gone?: boolean;
}

/** An attachment: a driver VMA in a local process mapping [offset, offset+size) of a segment. */
export interface Attachment {
  readonly id: number;
  readonly grant: Grant;
  readonly mm: MmHandle;
  readonly vaddr: number;
  readonly size: number;
  /** First segment page mapped by the attachment. */
  readonly firstPage: number;
  readonly npages: number;
  /** What this attachment's PTE holds per page: 0 nothing, 1 read, 2 write. */
  readonly mapped: Uint8Array;
  /** The segment is gone or the home fenced us: next touch is SIGBUS. */
  gone: boolean;
  detached: boolean;
  /** xpmem_detach gave the pages back already (the VMA's close has nothing left to do). */
  released?: boolean;
}

/** A remote segment page cached at this instance (one frame per instance per page). */
export interface CachedPage {
  readonly segid: string;
  readonly home: string;
  readonly page: number;
  pfn: number;
  access: 'r' | 'w';
  version: number;
  /** Grant id of the home's latest grant of this copy (an invalidate with upTo ≥ it covers it). */
  grant: number;
}

/**
 * The attacher's page cache: one copy per (segment, page), indexed by segment id, then page number
 * (an invalidation of n pages looks them up by number, without building n string keys).
 */
export class PageCache {
  private readonly bySeg = new Map<string, Map<number, CachedPage>>();
  private n = 0;

  get size(): number {
    return this.n;
  }

  /** The pages cached for `segid` (a live view: do not change it directly). */
  segment(segid: string): ReadonlyMap<number, CachedPage> | undefined {
    return this.bySeg.get(segid);
  }

  get(segid: string, page: number): CachedPage | undefined {
    return this.bySeg.get(segid)?.get(page);
  }

  has(segid: string, page: number): boolean {
    return this.bySeg.get(segid)?.has(page) ?? false;
  }

  set(c: CachedPage): void {
    let m = this.bySeg.get(c.segid);
    if (!m) {
      m = new Map();
      this.bySeg.set(c.segid, m);
    }
    if (!m.has(c.page)) this.n++;
    m.set(c.page, c);
  }

  delete(segid: string, page: number): boolean {
    const m = this.bySeg.get(segid);
    if (!m?.delete(page)) return false;
    this.n--;
    if (m.size === 0) this.bySeg.delete(segid);
    return true;
  }

  /** Every cached page (a snapshot: the caller may delete while iterating). */
  all(): CachedPage[] {
    const out: CachedPage[] = [];
    for (const m of this.bySeg.values()) for (const c of m.values()) out.push(c);
    return out;
  }
}

/** A map request in flight for a page: invalidations that overtake its reply are recorded here. */
export interface InflightMap {
  /** Highest `upTo` of an invalidate (drop) of the page seen while the request was in flight. */
  dropUpTo: number;
  /** Highest `upTo` of a downgrade of the page seen meanwhile (a write grant arrives as read). */
  downgradeUpTo: number;
}

export interface MmRecord {
  readonly mm: MmHandle;
  readonly segs: Set<Segment>;
  reg?: NotifierRegistration;
}
