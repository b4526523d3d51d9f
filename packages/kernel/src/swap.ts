/**
 * The swap area: a real file, one 4 KiB slot per page, and a slot allocator with per-slot
 * reference counts (a swap entry is shared by the PTEs that fork copied). A slot is free when its
 * count is 0 and it is not in the swap cache.
 */
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { KernelError, PAGE_SIZE } from './api.js';

export class SwapArea {
  private readonly refs: Uint16Array;
  private hint = 0;
  private used = 0;
  reads = 0;
  writes = 0;

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
    await fh.truncate(slots * PAGE_SIZE);
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
    const { bytesWritten } = await this.fh.write(data, 0, PAGE_SIZE, slot * PAGE_SIZE);
    if (bytesWritten !== PAGE_SIZE) throw new KernelError('EFAULT', `short swap write to slot ${slot}`);
  }

  async read(slot: number, into: Uint8Array): Promise<void> {
    this.reads++;
    const { bytesRead } = await this.fh.read(into, 0, PAGE_SIZE, slot * PAGE_SIZE);
    if (bytesRead !== PAGE_SIZE) throw new KernelError('EFAULT', `short swap read from slot ${slot}`);
  }

  async close(): Promise<void> {
    await this.fh.close();
    if (this.removeOnClose) await unlink(this.path).catch(() => undefined);
  }
}
