/**
 * The lease table: when the lease of each slot expires, shared by the kernel thread (the only
 * writer: `setLease`) and every process worker (readers: access.ts checks a PTE_LEASED entry's
 * lease before using it).
 *
 * Layout: one SharedArrayBuffer of LEASE_SLOTS float64 elements. Element `slot` (1 .. LEASE_SLOTS-1)
 * is the deadline in milliseconds on the clock `performance.timeOrigin + performance.now()` (the
 * same wall-anchored monotonic clock in every thread of the process, so a worker compares it with its
 * own clock reading). Slot 0 is never a lease ("not leased"); its 8 bytes hold, as int32 word 0, the
 * lease epoch.
 *
 * Visibility and tearing. Float64 stores on shared memory are not atomic: the ECMAScript memory
 * model lets a racing float64 read tear (no 64-bit platform does, but the model allows it), and a
 * plain store is only guaranteed visible to a thread that synchronizes with the writer afterwards.
 * So every deadline store is bracketed by the epoch, a sequence lock:
 *   writer: Atomics.add(epoch, 1) (odd: store in progress) → deadlines[slot] = d → Atomics.add(epoch, 1)
 *   reader: e = Atomics.load(epoch) (even) → d = deadlines[slot] → Atomics.load(epoch) === e, else retry
 * The reader's first epoch load reads from the writer's closing add (or a later one), which makes the
 * deadline store happen-before the deadline load: a reader that starts after `setLease` returned sees
 * the new deadline, never an older one (this is what bounds how long a process can go on using an
 * expired lease: its next access window). An unchanged even epoch around the load means no store
 * overlapped it, so the value is not torn. A reader that cannot get a stable reading within a few
 * tries (the writer thread was descheduled between its two adds) treats the lease as expired: the
 * access takes the page fault and the kernel sorts it out; that errs on the safe side.
 *
 * A lease check never waits for in-flight accesses: an access whose window opened while the lease
 * was valid completes (like an access that started just before a deadline). A driver that must be
 * sure no process still uses a frame zaps the PTEs (zapDriverRange: TLB shootdown).
 */
import { KernelError } from './api.js';

/** Number of lease slots (slot 0 = not leased; valid slots 1 .. LEASE_SLOTS-1). */
export const LEASE_SLOTS = 256;
/** Int32 index of the lease epoch (the storage of slot 0). */
export const LEASE_EPOCH = 0;
/** Reader tries before an unsettled epoch counts as "expired". */
const READ_TRIES = 64;

/** The lease clock: milliseconds, comparable across the threads of one process. */
export function leaseClock(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * The deadline of `slot` read under the epoch (see the file comment); -Infinity if no stable
 * reading was possible or the slot is not a lease slot. Usable from any thread.
 */
export function readLeaseDeadline(deadlines: Float64Array, epoch: Int32Array, slot: number): number {
  if (!(slot >= 1 && slot < LEASE_SLOTS)) return Number.NEGATIVE_INFINITY;
  for (let i = 0; i < READ_TRIES; i++) {
    const e = Atomics.load(epoch, LEASE_EPOCH);
    const d = deadlines[slot];
    if ((e & 1) === 0 && Atomics.load(epoch, LEASE_EPOCH) === e) return d;
  }
  return Number.NEGATIVE_INFINITY;
}

/** The kernel side of the table. Kernel thread only (the single writer). */
export class LeaseTable {
  readonly sab = new SharedArrayBuffer(LEASE_SLOTS * 8);
  readonly deadlines = new Float64Array(this.sab);
  readonly epoch = new Int32Array(this.sab, 0, 1);

  constructor() {
    // Every lease slot starts expired (slot 0's storage is the epoch: leave it 0).
    for (let s = 1; s < LEASE_SLOTS; s++) this.deadlines[s] = Number.NEGATIVE_INFINITY;
  }

  static checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 1 || slot >= LEASE_SLOTS)
      throw new KernelError('EINVAL', `lease slot ${String(slot)} not in 1..${LEASE_SLOTS - 1}`);
  }

  /** The lease of `slot` expires `remainingMs` from now (≤ 0: expired now; Infinity: never). */
  set(slot: number, remainingMs: number): void {
    LeaseTable.checkSlot(slot);
    if (typeof remainingMs !== 'number' || Number.isNaN(remainingMs))
      throw new KernelError('EINVAL', `bad lease time ${String(remainingMs)}`);
    // Expired is -Infinity, not "now": a worker whose clock reading lags ours by a few microseconds
    // must not see a lease we just expired as still valid.
    const d = remainingMs <= 0 ? Number.NEGATIVE_INFINITY : leaseClock() + remainingMs;
    Atomics.add(this.epoch, LEASE_EPOCH, 1);
    this.deadlines[slot] = d;
    Atomics.add(this.epoch, LEASE_EPOCH, 1);
  }

  valid(slot: number): boolean {
    LeaseTable.checkSlot(slot);
    return this.deadlines[slot] > leaseClock();
  }
}
