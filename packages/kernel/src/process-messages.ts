/** Messages between the kernel thread and a process worker, and the context a program receives. */

export type ToProcess =
  | { t: 'op'; id: number; op: 'read'; addr: number; len: number }
  | { t: 'op'; id: number; op: 'write'; addr: number; bytes: Uint8Array }
  | { t: 'op'; id: number; op: 'read32'; addr: number }
  | { t: 'op'; id: number; op: 'write32'; addr: number; value: number }
  | { t: 'op'; id: number; op: 'cas32'; addr: number; expect: number; value: number }
  | { t: 'op'; id: number; op: 'run'; modulePath: string; exportName: string; args: unknown };

export type ToKernel =
  | { t: 'ready' }
  | { t: 'fault'; address: number; write: boolean }
  | { t: 'done'; id: number; value: unknown }
  | { t: 'err'; id: number; code: string; message: string; signal: boolean }
  | { t: 'exit'; code: number };

/**
 * What a program run inside a process (Process.run) receives. Accesses are synchronous and go
 * through the page table; a refused access throws an Error whose `code` is 'SIGSEGV' or 'SIGBUS'
 * (catch it to survive; uncaught, it kills the process).
 */
export interface ProcessContext {
  readonly pid: number;
  read(addr: number, len: number): Uint8Array;
  readInto(addr: number, dst: Uint8Array): void;
  write(addr: number, bytes: Uint8Array): void;
  read32(addr: number): number;
  write32(addr: number, value: number): void;
  cas32(addr: number, expect: number, value: number): number;
  /** End the process with `code` (does not return). */
  exit(code?: number): never;
  /** The raw physical-memory buffer, ONLY for benchmarks measuring a raw-copy baseline. */
  physMemForBaseline(): SharedArrayBuffer;
}

/** A program: the named export of a module given to Process.run. */
export type Program<A = unknown, R = unknown> = (ctx: ProcessContext, args: A) => R | Promise<R>;
