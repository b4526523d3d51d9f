/**
 * The one error table: every stable error code of xpmesh, whichever layer raises it, with the wire
 * code it travels as when it escapes a request handler, the HTTP status the admin API answers with,
 * and its meaning. Codes are data: callers match on `code`, never on a class (a class does not
 * survive postMessage to a worker; a code does).
 *
 * Derived from it (never written by hand): the wire code type and texts (`WireErrorCode`,
 * `WIRE_ERROR_CODES`), the driver's kernel-code → wire-code mapping (`wireCodeOf`), the admin API's
 * status codes (`httpStatusOf`) and the table in docs/errors.md (`renderErrorTable`, written by
 * `node scripts/errors-doc.mjs`, checked by test/error-table.test.ts).
 */

/** Who raises the code. */
export type ErrorLayer = 'protocol' | 'kernel' | 'driver' | 'admin';

export interface ErrorRow {
  readonly code: string;
  readonly layer: ErrorLayer;
  /**
   * The code a peer receives when this error escapes a request handler; null: never sent (sent as
   * E_INTERNAL, and logged, if it ever escapes). A wire code maps to itself.
   */
  readonly wire: string | null;
  /** HTTP status of an admin API answer carrying the code. */
  readonly http: number;
  /** What it means. */
  readonly text: string;
  /** Who sends or raises it. */
  readonly by: string;
}

export const ERROR_TABLE = [
  // ---- wire codes of the protocol ---------------------------------------------------------------
  {
    code: 'E_MALFORMED',
    layer: 'protocol',
    wire: 'E_MALFORMED',
    http: 400,
    text: 'frame could not be decoded or failed validation, including `nil` for an absent field and a number outside its type (negative, not an integer, a uint32 ≥ 2^32)',
    by: 'receiver of the frame; also a local `request()` whose message is invalid, or a reply of the wrong type',
  },
  {
    code: 'E_UNKNOWN_TYPE',
    layer: 'protocol',
    wire: 'E_UNKNOWN_TYPE',
    http: 500,
    text: 'unknown message type `t`',
    by: 'receiver',
  },
  {
    code: 'E_TOO_LARGE',
    layer: 'protocol',
    wire: 'E_TOO_LARGE',
    http: 413,
    text: 'frame, batch, list, string or count over a configured limit (docs/limits.md)',
    by: 'receiver; admin API (a body over its limit: 413)',
  },
  {
    code: 'E_VERSION',
    layer: 'protocol',
    wire: 'E_VERSION',
    http: 500,
    text: 'no common protocol version',
    by: 'server, before closing 4001',
  },
  {
    code: 'E_AUTH',
    layer: 'protocol',
    wire: 'E_AUTH',
    http: 500,
    text: 'authentication failed',
    by: 'server, before closing 4003',
  },
  {
    code: 'E_STATE',
    layer: 'protocol',
    wire: 'E_STATE',
    http: 500,
    text: 'message not valid in the link state (a request before `ready`, `hello` after it), or from an instance that is not the one it concerns',
    by: 'receiver; driver (request before the driver is loaded, invalidate from an instance that is not the home)',
  },
  {
    code: 'E_TOO_MANY',
    layer: 'protocol',
    wire: 'E_TOO_MANY',
    http: 500,
    text: 'too many outstanding requests',
    by: 'receiver (peer over `maxIncomingRequests`), or locally (`maxOutstandingRequests`)',
  },
  {
    code: 'E_TIMEOUT',
    layer: 'protocol',
    wire: 'E_TIMEOUT',
    http: 504,
    text: "the request's deadline expired",
    by: 'local only (`request()`; the driver: the home did not answer in time)',
  },
  {
    code: 'E_STALE_EPOCH',
    layer: 'protocol',
    wire: 'E_STALE_EPOCH',
    http: 409,
    text: 'no session with the peer, or the session ended (closed, fenced, superseded, heartbeat) before the reply; a message from a fenced session',
    by: 'local (`request()`); driver (a request from a fenced session)',
  },
  {
    code: 'E_BUSY',
    layer: 'protocol',
    wire: 'E_BUSY',
    http: 409,
    text: 'temporarily refused: send queue over its high-water mark, no handler installed, a page stayed contended, the home driver holds state for as many node ids as it can index; retry later',
    by: 'local (`request()`), or receiver; driver (home)',
  },
  {
    code: 'E_INTERNAL',
    layer: 'protocol',
    wire: 'E_INTERNAL',
    http: 500,
    text: 'a bug (a handler threw without a code, or returned an invalid reply); logged',
    by: 'receiver; admin API',
  },
  // ---- wire codes of the driver (the home refuses a request) ------------------------------------
  {
    code: 'E_NO_SEGMENT',
    layer: 'driver',
    wire: 'E_NO_SEGMENT',
    http: 404,
    text: "unknown or removed segment; also `map` / `detach` with a permit that the segment's removal dropped",
    by: 'driver (home)',
  },
  {
    code: 'E_NO_PERMIT',
    layer: 'driver',
    wire: 'E_NO_PERMIT',
    http: 404,
    text: 'unknown, released or revoked apid',
    by: 'driver (home)',
  },
  {
    code: 'E_PERM',
    layer: 'driver',
    wire: 'E_PERM',
    http: 403,
    text: "permission denied by the segment's mode bits",
    by: 'driver (home)',
  },
  {
    code: 'E_RANGE',
    layer: 'driver',
    wire: 'E_RANGE',
    http: 400,
    text: 'page range outside the segment',
    by: 'driver (home)',
  },
  {
    code: 'E_ACCESS',
    layer: 'driver',
    wire: 'E_ACCESS',
    http: 403,
    text: 'access mode not allowed by the permit',
    by: 'driver (home)',
  },
  {
    code: 'E_FAULT',
    layer: 'driver',
    wire: 'E_FAULT',
    http: 409,
    text: 'the home could not resolve the page (hole, unmapped): SIGBUS at the attacher',
    by: 'driver (home)',
  },
  // ---- driver codes that stay local -------------------------------------------------------------
  {
    code: 'E_NOT_LOADED',
    layer: 'driver',
    wire: null,
    http: 503,
    text: 'the driver is not loaded into a kernel',
    by: 'driver (user operations)',
  },
  {
    code: 'E_PEER',
    layer: 'driver',
    wire: null,
    http: 409,
    text: 'the home is not connected, or its session ended mid-request',
    by: 'driver (user operations on a remote segment)',
  },
  // ---- kernel (errno-style; signals are delivered to the process) -------------------------------
  {
    code: 'EINVAL',
    layer: 'kernel',
    wire: 'E_MALFORMED',
    http: 400,
    text: 'bad argument: unaligned, zero length, overflow, unknown flag, malformed id',
    by: 'kernel; driver (user operations)',
  },
  {
    code: 'ENOMEM',
    layer: 'kernel',
    wire: 'E_BUSY',
    http: 507,
    text: 'no frame, no address space, no swap slot',
    by: 'kernel',
  },
  {
    code: 'EFAULT',
    layer: 'kernel',
    wire: 'E_FAULT',
    http: 404,
    text: 'address not covered by a VMA',
    by: 'kernel',
  },
  {
    code: 'EACCES',
    layer: 'kernel',
    wire: 'E_ACCESS',
    http: 403,
    text: 'access not permitted by the VMA protection',
    by: 'kernel',
  },
  {
    code: 'EPERM',
    layer: 'kernel',
    wire: null,
    http: 403,
    text: 'operation not permitted (e.g. exportPage without the page lock)',
    by: 'kernel',
  },
  {
    code: 'ESRCH',
    layer: 'kernel',
    wire: 'E_NO_SEGMENT',
    http: 404,
    text: 'no such process or mm',
    by: 'kernel; driver (user operations)',
  },
  {
    code: 'EBUSY',
    layer: 'kernel',
    wire: 'E_BUSY',
    http: 409,
    text: 'resource in use (page locked, notifier in callback ...)',
    by: 'kernel',
  },
  {
    code: 'EAGAIN',
    layer: 'kernel',
    wire: 'E_BUSY',
    http: 409,
    text: 'raced with an invalidation: retry',
    by: 'kernel',
  },
  {
    code: 'ETIMEDOUT',
    layer: 'kernel',
    wire: 'E_BUSY',
    http: 504,
    text: 'a bounded wait expired',
    by: 'kernel',
  },
  {
    code: 'SIGSEGV',
    layer: 'kernel',
    wire: 'E_FAULT',
    http: 409,
    text: 'access refused: delivered to the process as a signal',
    by: 'kernel',
  },
  {
    code: 'SIGBUS',
    layer: 'kernel',
    wire: 'E_FAULT',
    http: 409,
    text: 'access to a hole, a removed segment or a lost page: delivered to the process as a signal',
    by: 'kernel',
  },
  // ---- admin API ---------------------------------------------------------------------------------
  {
    code: 'E_BAD_REQUEST',
    layer: 'admin',
    wire: null,
    http: 400,
    text: 'body is not JSON or fails the schema',
    by: 'admin API',
  },
  {
    code: 'E_UNAUTHORIZED',
    layer: 'admin',
    wire: null,
    http: 401,
    text: 'operation needs the bearer token',
    by: 'admin API',
  },
  {
    code: 'E_NOT_FOUND',
    layer: 'admin',
    wire: null,
    http: 404,
    text: 'unknown path or operation',
    by: 'admin API',
  },
  {
    code: 'E_TOO_DEEP',
    layer: 'admin',
    wire: null,
    http: 400,
    text: 'body nested deeper than the admin limit',
    by: 'admin API',
  },
  { code: 'E_METHOD', layer: 'admin', wire: null, http: 405, text: 'wrong HTTP method', by: 'admin API' },
  {
    code: 'E_SHUTTING_DOWN',
    layer: 'admin',
    wire: null,
    http: 503,
    text: 'the instance is stopping',
    by: 'admin API',
  },
] as const satisfies readonly ErrorRow[];

type Row = (typeof ERROR_TABLE)[number];

/** Every stable error code. */
export type ErrorCode = Row['code'];

/** The codes carried on the wire (in `error` messages and as `RequestError.code`). */
export type WireErrorCode = Exclude<Row['wire'], null>;

/** The codes a layer raises. */
export type ErrorCodeOf<L extends ErrorLayer> = Extract<Row, { layer: L }>['code'];

const BY_CODE: ReadonlyMap<string, ErrorRow> = new Map(ERROR_TABLE.map((r) => [r.code, r]));

export function errorRow(code: string): ErrorRow | undefined {
  return BY_CODE.get(code);
}

/** The wire code a peer receives for an error with `code` escaping a request handler. */
export function wireCodeOf(code: string): WireErrorCode {
  return (BY_CODE.get(code)?.wire as WireErrorCode | null | undefined) ?? 'E_INTERNAL';
}

/** HTTP status of an admin API answer carrying `code` (500 for a code not in the table). */
export function httpStatusOf(code: string): number {
  return BY_CODE.get(code)?.http ?? 500;
}

/** The wire codes and their meaning. */
export const WIRE_ERROR_CODES: Readonly<Record<WireErrorCode, string>> = Object.freeze(
  Object.fromEntries(ERROR_TABLE.filter((r) => r.wire === r.code).map((r) => [r.code, r.text])) as Record<
    WireErrorCode,
    string
  >,
);

export function isWireErrorCode(s: unknown): s is WireErrorCode {
  return typeof s === 'string' && Object.hasOwn(WIRE_ERROR_CODES, s);
}

/** The markdown table of docs/errors.md (between its `error-table` markers). */
export function renderErrorTable(): string {
  const head = ['code', 'layer', 'on the wire', 'HTTP', 'meaning', 'raised by'];
  const rows = ERROR_TABLE.map((r) => [
    `\`${r.code}\``,
    r.layer,
    r.wire === null ? '— (E_INTERNAL)' : r.wire === r.code ? 'itself' : `\`${r.wire}\``,
    String(r.http),
    r.text.replaceAll('|', '\\|'),
    r.by.replaceAll('|', '\\|'),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(width[i])).join(' | ')} |`;
  return [line(head), `| ${width.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}
