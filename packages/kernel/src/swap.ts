/**
 * The swap area: a real file, one 4 KiB slot per page, and a slot allocator with per-slot
 * reference counts (a swap entry is shared by the PTEs that fork copied). A slot is free when its
 * count is 0 and it is not in the swap cache.
 *
 * Writes of a reclaim batch go out together (writeBatch): one positioned vectored write (pwritev) per
 * run of consecutive slots, as Linux plugs a reclaim pass's swap bios and merges adjacent ones. Per
 * page, fs.write cost ~13 us of CPU (a threadpool round trip each); a 64-page writev ~2.5 us a page.
 */
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { KernelError, PAGE_SIZE } from './api.js';

/** Pages in one vectored write (Linux IOV_MAX is 1024; a reclaim batch is at most 64). */
const MAX_IOV = 256;

export class SwapArea {
  private readonly refs: Uint16Array;
  private hint = 0;
  private used = 0;
  reads = 0;
  /** Pages written. */
  writes = 0;
  /** Write system calls (a batch's run of consecutive slots is one). */
  writeCalls = 0;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly slots: number,
    private readonly removeOnClose: boolean,
  ) {
    this.refs = new Uint16Array(slots);
  }

  static async open(path: string, slots: number, removeOnClose: boolean): Promise<SwapArea> {
    if (!Number.isInteger(slots) || slots < 1 || slots >= 2 ** 24) {
      throw new KernelError('EINVAL', 'swapSlots must be in [1, 2^24)');
    }
    const fh = await open(path, 'w+');
    try {
      await fh.truncate(slots * PAGE_SIZE);
      // A private swap file (removeOnClose) leaves the directory at once: the open handle keeps the
      // file and its space until close() or process exit, so even a process killed outright (tests,
      // benchmarks under a timeout) leaves no file behind in the temporary directory.
      if (removeOnClose) await unlink(path);
    } catch (e) {
      await fh.close();
      if (removeOnClose) await unlink(path).catch(() => undefined);
      throw e;
    }
    return new SwapArea(fh, path, slots, removeOnClose);
  }

  get inUse(): number {
    return this.used;
  }

  /** Allocate a slot with reference count 0 (the caller adds references). -1 when full. */
  alloc(): number {
    for (let i = 0; i < this.slots; i++) {
      const s = (this.hint + i) % this.slots;
      if (this.refs[s] === 0 && !this.reserved.has(s)) {
        this.hint = s + 1;
        this.reserved.add(s);
        this.used++;
        return s;
      }
    }
    return -1;
  }
  /** Slots allocated but not yet referenced (held by the swap cache during writeout). */
  readonly reserved = new Set<number>();

  ref(slot: number): number {
    return this.refs[slot];
  }
  get(slot: number): void {
    if (this.refs[slot] === 0xffff) throw new KernelError('ENOMEM', 'swap slot refcount overflow');
    this.refs[slot]++;
  }
  /** Drop a reference; frees the slot when unreferenced and not reserved. */
  put(slot: number): void {
    if (this.refs[slot] === 0) throw new Error(`swap slot ${slot} refcount underflow`);
    this.refs[slot]--;
    if (this.refs[slot] === 0 && !this.reserved.has(slot)) this.used--;
  }
  /** End the swap cache's hold on a slot; frees it if no PTE references it. */
  unreserve(slot: number): void {
    if (!this.reserved.delete(slot)) return;
    if (this.refs[slot] === 0) this.used--;
  }

  async write(slot: number, data: Uint8Array): Promise<void> {
    this.writes++;
    this.writeCalls++;
    const { bytesWritten } = await this.fh.write(data, 0, PAGE_SIZE, slot * PAGE_SIZE);
    if (bytesWritten !== PAGE_SIZE) throw new KernelError('EFAULT', `short swap write to slot ${slot}`);
  }

  /**
   * Write `datas[i]` (one page each) to `slots[i]`, for every i, as one pwritev per run of consecutive
   * slots (at most MAX_IOV pages a call), every run in flight together. Resolves, per slot in the
   * order given, to null (written) or the error its run failed with (a short write is an error):
   * the caller treats each page on its own, as with write().
   */
  async writeBatch(slots: readonly number[], datas: readonly Uint8Array[]): Promise<Array<unknown>> {
    if (slots.length !== datas.length) throw new KernelError('EINVAL', 'writeBatch: slots and data differ');
    const out: unknown[] = new Array(slots.length).fill(null);
    const order = slots.map((_, i) => i).sort((x, y) => slots[x] - slots[y]);
    const runs: number[][] = [];
    let run: number[] = [];
    for (const i of order) {
      if (datas[i].byteLength !== PAGE_SIZE) {
        out[i] = new KernelError('EINVAL', `swap write of ${datas[i].byteLength} bytes to slot ${slots[i]}`);
        continue;
      }
      if (run.length > 0 && (slots[i] !== slots[run[run.length - 1]] + 1 || run.length === MAX_IOV)) {
        runs.push(run);
        run = [];
      }
      run.push(i);
    }
    if (run.length > 0) runs.push(run);
    await Promise.all(
      runs.map(async (r) => {
        this.writes += r.length;
        this.writeCalls++;
        const first = slots[r[0]];
        try {
          const { bytesWritten } = await this.fh.writev(
            r.map((i) => datas[i]),
            first * PAGE_SIZE,
          );
          if (bytesWritten !== r.length * PAGE_SIZE)
            throw new KernelError('EFAULT', `short swap write to slots ${first}..${first + r.length - 1}`);
        } catch (e) {
          for (const i of r) out[i] = e;
        }
      }),
    );
    return out;
  }

  async read(slot: number, into: Uint8Array): Promise<void> {
    this.reads++;
    const { bytesRead } = await this.fh.read(into, 0, PAGE_SIZE, slot * PAGE_SIZE);
    if (bytesRead !== PAGE_SIZE) throw new KernelError('EFAULT', `short swap read from slot ${slot}`);
  }

  async close(): Promise<void> {
    await this.fh.close();
    // (a private file was unlinked at open; this is for one that could not be)
    if (this.removeOnClose) await unlink(this.path).catch(() => undefined);
  }
}
