/**
 * Driver error codes. Every user operation either succeeds or throws a {@link DriverError} with one
 * of these stable codes and changes no state. Codes are data: match on `code`, never on class.
 * Every code is a row of the one error table (@xpmesh/protocol error-table.ts, docs/errors.md);
 * docs/driver.md says when each is raised.
 */
import type { ErrorCode } from '@xpmesh/protocol';

/** `T`, which must be codes of the error table (the compiler checks it). */
type TableCodes<T extends ErrorCode> = T;

export type DriverErrorCode = TableCodes<
  | 'EINVAL' // bad argument: unaligned or zero size, overflow, bad mode, unknown access, no attachment at vaddr
  | 'ESRCH' // no such process
  | 'E_NOT_LOADED' // the driver is not loaded into a kernel
  | 'E_NO_SEGMENT' // unknown or removed segment (also: double remove, remove of another instance's segment)
  | 'E_NO_PERMIT' // unknown, released or revoked apid (or an apid of another process)
  | 'E_PERM' // the segment's mode bits refuse the caller's uid/gid for the requested access
  | 'E_RANGE' // offset/size outside the segment
  | 'E_ACCESS' // access mode not allowed by the permit
  | 'E_FAULT' // the home could not resolve the page (hole, unmapped)
  | 'E_PEER' // the home instance is unreachable or its session ended
  | 'E_TIMEOUT' // a bounded wait expired
  | 'E_BUSY' // the page stayed contended for too long; retry
  | 'E_STALE_EPOCH' // message from a fenced / old session
>;

export class DriverError extends Error {
  readonly code: DriverErrorCode;
  constructor(code: DriverErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'DriverError';
    this.code = code;
  }
}

export function fail(code: DriverErrorCode, message: string): never {
  throw new DriverError(code, message);
}

/** The `code` of anything thrown (DriverError, KernelError, RequestError, `{code}` objects). */
export function codeOf(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string') {
    return (e as { code: string }).code;
  }
  return 'E_INTERNAL';
}
