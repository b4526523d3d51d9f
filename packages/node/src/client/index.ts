/**
 * `@xpmesh/node/client`: a small client of one instance's admin API for JavaScript programs (what
 * `xpmesh ctl` uses). It loads no kernel, driver or load-tester code: only `fetch` and, for input
 * checking, the operations' zod schemas.
 *
 * ```js
 * import { Xpmesh } from '@xpmesh/node/client';
 * const home = new Xpmesh('http://127.0.0.1:7500');
 * const { pid } = await home.spawn();
 * const { addr } = await home.mmap(pid, 4096);
 * await home.writeWords(pid, addr, 'u32', [1, 2, 3]);
 * console.log(await home.readWords(pid, addr, 'u32', 3)); // [1, 2, 3]
 * ```
 *
 * Every failure is an {@link AdminCallError} with a stable `code` (docs/errors.md) and `status`.
 */
import { AdminCallError, AdminClient, type SseEvent } from '../daemon/admin-client.js';
import type { OpName } from '../daemon/ops.js';
import { decodeWords, encodeWords, toHex, type WordKind, wordSize } from './words.js';

export * from './words.js';
export type { OpName };
export { AdminCallError, AdminClient, type SseEvent };

type Addr = number | string;

/** Typed wrappers over {@link AdminClient.op}; `client` is there for anything not wrapped. */
export class Xpmesh {
  readonly client: AdminClient;
  constructor(url: string, token?: string, timeoutMs?: number) {
    this.client = new AdminClient(url, token, timeoutMs);
  }
  op<T = Record<string, unknown>>(name: OpName, body: object = {}): Promise<T> {
    return this.client.op<T>(name, body);
  }
  status<T = Record<string, unknown>>(): Promise<T> {
    return this.client.get<T>('/status');
  }
  pages<T = Record<string, unknown>>(segid: string): Promise<T> {
    return this.client.get<T>(`/pages?segid=${encodeURIComponent(segid)}`);
  }
  spawn(opts: { uid?: number; gid?: number; name?: string; catchSignals?: boolean } = {}) {
    return this.op<{ pid: number }>('spawn', opts);
  }
  mmap(pid: number, len: number, prot: 'none' | 'r' | 'rw' = 'rw') {
    return this.op<{ addr: number }>('mmap', { pid, len, prot });
  }
  write(pid: number, addr: Addr, bytes: Uint8Array) {
    return this.op('write', { pid, addr, hex: toHex(bytes) });
  }
  async read(pid: number, addr: Addr, len: number): Promise<Uint8Array> {
    const r = await this.op<{ hex: string }>('read', { pid, addr, len });
    return new Uint8Array(Buffer.from(r.hex, 'hex'));
  }
  writeWords(pid: number, addr: Addr, kind: WordKind, words: ReadonlyArray<number | bigint | string>) {
    return this.write(pid, addr, encodeWords(kind, words));
  }
  async readWords(pid: number, addr: Addr, kind: WordKind, count: number): Promise<Array<number | string>> {
    return decodeWords(kind, await this.read(pid, addr, count * wordSize(kind)));
  }
  make(pid: number, addr: Addr, size: number, mode: number | string = 0o600) {
    return this.op<{ segid: string }>('make', { pid, addr, size, mode });
  }
  get(pid: number, segid: string, access: 'r' | 'rw' = 'rw') {
    return this.op<{ apid: string }>('get', { pid, segid, access });
  }
  attach(pid: number, apid: string, size: number, offset = 0) {
    return this.op<{ addr: number }>('attach', { pid, apid, size, offset });
  }
  detach(pid: number, addr: Addr) {
    return this.op('detach', { pid, addr });
  }
  release(pid: number, apid: string) {
    return this.op('release', { pid, apid });
  }
  remove(segid: string) {
    return this.op('remove', { segid });
  }
  exit(pid: number) {
    return this.op('exit', { pid });
  }
}
