/**
 * User memory access as a process (worker thread) performs it: walk the page table in shared
 * memory, set young/dirty with compareExchange, copy the bytes, or trap to the kernel.
 *
 * In-flight protocol (the TLB-shootdown half that lives in the process): every access to one page
 * runs inside a window announced in the per-process control word C_SEQ, which is odd while the
 * window is open. The window opens BEFORE the PTE is read and closes AFTER the data access. A
 * kernel path that changed a PTE waits (tlb.ts) until C_SEQ is even or has moved on, so no access
 * that could have used the old entry is still running when it frees, reuses, copies or writes out
 * the frame. A window never spans a page fault (the fault is taken with the window closed).
 *
 * Leases: an entry with PTE_LEASED (a driver frame held under a lease from its home instance) is used
 * only if the lease recorded in the frame's descriptor (D_PRIVATE = slot) is valid on this thread's
 * own clock; otherwise the access leaves its window and takes the page fault exactly as for a missing
 * entry (the driver's fault op waits for renewal). Checked inside the window, so it holds even when
 * the kernel thread has not run since the lease ran out (a stopped and continued instance). Only
 * leased entries pay for it: one descriptor load, the table read (lease.ts) and one clock read.
 */
import { KernelError, PAGE_SIZE } from './api.js';
import { readLeaseDeadline } from './lease.js';
import { D_PRIVATE, DESC_WORDS } from './page.js';
import {
  L1_SHIFT,
  PT_ENTRIES,
  PTE_DIRTY,
  PTE_LEASED,
  PTE_PFN_SHIFT,
  PTE_PRESENT,
  PTE_WRITE,
  PTE_YOUNG,
} from './pagetable.js';

/** Control words shared between one process and the kernel. */
export const C_SEQ = 0;
/** Number of kernel shootdowns waiting on C_SEQ: the process notifies only when non-zero. */
export const C_SHOOT_WAITERS = 1;
/** 1 while a fault is pending in the kernel; the kernel stores 0 and notifies when resolved. */
export const C_FAULT_STATE = 2;
export const C_FAULT_RESULT = 3;
/** Set by the kernel when the process is being killed: pending and future faults end it. */
export const C_KILLED = 4;
export const CTL_WORDS = 8;

export const FAULT_RETRY = 0;
export const FAULT_SIGSEGV = 1;
export const FAULT_SIGBUS = 2;
export const FAULT_KILLED = 3;

export type FaultPoster = (address: number, write: boolean) => void;

/** Thrown inside the process when it is being killed; never caught by programs' signal handlers. */
export class ProcessKilled extends Error {
  constructor() {
    super('process killed');
    this.name = 'ProcessKilled';
  }
}

export class UserAccess {
  private readonly bytes: Uint8Array;
  private readonly words: Int32Array;
  private readonly ctl: Int32Array;
  private readonly rootBase: number;
  private readonly desc: Int32Array;
  private readonly leaseDeadlines: Float64Array;
  private readonly leaseEpoch: Int32Array;
  private readonly clockOrigin = performance.timeOrigin;

  constructor(
    mem: SharedArrayBuffer,
    ctl: SharedArrayBuffer,
    rootPfn: number,
    private readonly postFault: FaultPoster,
    private readonly faultTimeoutMs: number,
    desc: SharedArrayBuffer,
    leases: SharedArrayBuffer,
  ) {
    this.bytes = new Uint8Array(mem);
    this.words = new Int32Array(mem);
    this.ctl = new Int32Array(ctl);
    this.rootBase = rootPfn * PT_ENTRIES;
    this.desc = new Int32Array(desc);
    this.leaseDeadlines = new Float64Array(leases);
    this.leaseEpoch = new Int32Array(leases, 0, 1);
  }

  /**
   * The lease of a PTE_LEASED entry is valid now (on this thread's clock; see lease.ts). The slot is
   * a plain (not Atomics) read of the descriptor: the kernel stores it before the PTE that refers to
   * it, and this thread read that PTE with Atomics.load, so the store happens-before this read (and
   * int32 reads do not tear). Cost: this read, the lease-table read, one clock read.
   */
  private leaseHeld(pte: number): boolean {
    const slot = this.desc[(pte >>> PTE_PFN_SHIFT) * DESC_WORDS + D_PRIVATE];
    const deadline = readLeaseDeadline(this.leaseDeadlines, this.leaseEpoch, slot);
    return deadline > this.clockOrigin + performance.now();
  }

  /**
   * Open the window for one page and translate `va`. Returns the byte offset in physical memory of
   * `va`; the window is then open and the caller MUST call `leave()` right after its data access.
   */
  private enter(va: number, write: boolean): number {
    const words = this.words;
    const ctl = this.ctl;
    for (;;) {
      Atomics.add(ctl, C_SEQ, 1);
      const r = Atomics.load(words, this.rootBase + (va >>> L1_SHIFT));
      if (r & PTE_PRESENT) {
        const pi = (r >>> PTE_PFN_SHIFT) * PT_ENTRIES + ((va >>> 12) & (PT_ENTRIES - 1));
        let pte = Atomics.load(words, pi);
        while (pte & PTE_PRESENT && (!write || pte & PTE_WRITE)) {
          if (pte & PTE_LEASED && !this.leaseHeld(pte)) break; // expired: fault as if not present
          const want = pte | PTE_YOUNG | (write ? PTE_DIRTY : 0);
          if (want === pte) return (pte >>> PTE_PFN_SHIFT) * PAGE_SIZE + (va & (PAGE_SIZE - 1));
          const prev = Atomics.compareExchange(words, pi, pte, want);
          if (prev === pte) return (pte >>> PTE_PFN_SHIFT) * PAGE_SIZE + (va & (PAGE_SIZE - 1));
          pte = prev;
        }
      }
      this.leave();
      this.fault(va, write);
    }
  }

  private leave(): void {
    Atomics.add(this.ctl, C_SEQ, 1);
    if (Atomics.load(this.ctl, C_SHOOT_WAITERS) !== 0) Atomics.notify(this.ctl, C_SEQ);
  }

  /** Trap to the kernel and sleep until it resolves the fault. Throws the signal it delivers. */
  private fault(va: number, write: boolean): void {
    const ctl = this.ctl;
    if (Atomics.load(ctl, C_KILLED)) throw new ProcessKilled();
    Atomics.store(ctl, C_FAULT_STATE, 1);
    this.postFault(va, write);
    const deadline = Date.now() + this.faultTimeoutMs;
    while (Atomics.load(ctl, C_FAULT_STATE) === 1) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new KernelError('SIGBUS', `page fault at 0x${va.toString(16)} not resolved in time`);
      Atomics.wait(ctl, C_FAULT_STATE, 1, left);
    }
    const res = Atomics.load(ctl, C_FAULT_RESULT);
    if (res === FAULT_RETRY) return;
    if (res === FAULT_KILLED) throw new ProcessKilled();
    const sig = res === FAULT_SIGSEGV ? 'SIGSEGV' : 'SIGBUS';
    throw new KernelError(sig, `${write ? 'write' : 'read'} at 0x${va.toString(16)}`);
  }

  private static checkRange(addr: number, len: number): void {
    if (!Number.isInteger(addr) || !Number.isInteger(len) || addr < 0 || len < 0 || addr + len > 2 ** 32) {
      throw new KernelError('EFAULT', `bad user range 0x${Number(addr).toString(16)}+${len}`);
    }
  }

  readInto(addr: number, dst: Uint8Array): void {
    UserAccess.checkRange(addr, dst.length);
    const bytes = this.bytes;
    let done = 0;
    const len = dst.length;
    while (done < len) {
      const va = addr + done;
      const n = Math.min(len - done, PAGE_SIZE - (va & (PAGE_SIZE - 1)));
      const off = this.enter(va, false);
      dst.set(bytes.subarray(off, off + n), done);
      this.leave();
      done += n;
    }
  }

  read(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.readInto(addr, out);
    return out;
  }

  write(addr: number, src: Uint8Array): void {
    UserAccess.checkRange(addr, src.length);
    const bytes = this.bytes;
    let done = 0;
    const len = src.length;
    while (done < len) {
      const va = addr + done;
      const n = Math.min(len - done, PAGE_SIZE - (va & (PAGE_SIZE - 1)));
      const off = this.enter(va, true);
      bytes.set(src.subarray(done, done + n), off);
      this.leave();
      done += n;
    }
  }

  private static checkWord(addr: number): void {
    UserAccess.checkRange(addr, 4);
    if (addr & 3) throw new KernelError('EINVAL', `unaligned 32-bit access at 0x${addr.toString(16)}`);
  }

  read32(addr: number): number {
    UserAccess.checkWord(addr);
    const off = this.enter(addr, false);
    const v = Atomics.load(this.words, off >>> 2);
    this.leave();
    return v;
  }

  write32(addr: number, v: number): void {
    UserAccess.checkWord(addr);
    const off = this.enter(addr, true);
    Atomics.store(this.words, off >>> 2, v | 0);
    this.leave();
  }

  /** Compare-and-swap a 32-bit word; returns the old value. Takes a write fault even if it fails. */
  cas32(addr: number, expect: number, v: number): number {
    UserAccess.checkWord(addr);
    const off = this.enter(addr, true);
    const old = Atomics.compareExchange(this.words, off >>> 2, expect | 0, v | 0);
    this.leave();
    return old;
  }
}
