/**
 * xpmesh wire messages: one type per message, discriminated by `t`.
 *
 * CONTRACT STATUS: this union is the agreement between the protocol package (codec, validation,
 * links) and the driver. Additive changes are fine; keep field names stable. Every field has a
 * doc comment; docs/protocol.md is generated from / kept in step with this file.
 *
 * Conventions:
 * - Requests carry `id` (uint32, unique per link session, chosen by the sender). Replies carry
 *   `re` (the id of the request they answer). One-way messages carry neither.
 * - `cid` is an optional correlation id (string ≤ 64 chars) for following one operation across
 *   instances in logs; replies echo it.
 * - Page payloads are `Uint8Array` of exactly PAGE_SIZE (4096) bytes.
 * - Segment ids (`segid`) are strings "<home node id>:<n>"; access ids (`apid`) likewise name the
 *   home instance that granted them: "<home node id>:a<n>".
 */

import type { WireErrorCode } from './error-table.js';

export const PROTOCOL_VERSIONS = [2] as const;
export type ProtocolVersion = (typeof PROTOCOL_VERSIONS)[number];

/** Access mode of a permit or a mapping. */
export type Access = 'r' | 'rw';

/** Why an invalidation is sent. */
/*
 * export type InvalidateReason =
 *   | 'reclaim' // the home reclaims (swaps out) the page
 *   | 'migrate' // the home migrates the page to another frame
 *   | 'clean' // page_mkclean at the home: writers must write back and drop write access
 *   | 'unmap' // the source munmapped the range
 *   | 'protection' // the source mprotected the range
 *   | 'cow' // copy-on-write in the source (fork, or a write breaking COW)
 *   | 'release' // the source address space exited
 *   | 'remove' // the segment was removed
 *   | 'upgrade' // another instance (or the home) wants to write the page
 *   | 'recall' // the home wants to read or write a page a remote holds for writing
 *   | 'fence';
 */
export const INVALIDATE_REASONS = [
  'reclaim',
  'migrate',
  'clean',
  'unmap',
  'protection',
  'cow',
  'release',
  'remove',
  'upgrade',
  'recall',
  'fence',
] as const;
/** Why an invalidation is sent (each value documented in docs/protocol.md). */
export type InvalidateReason = (typeof INVALIDATE_REASONS)[number]; // the receiver was fenced; its mappings are void

/** One page of data with its version (the home bumps a page's version on every completed write-back). */
export interface PageData {
  /** Page index within the segment. */
  page: number;
  /** Version of the data (monotonic per page at the home). */
  version: number;
  /** Exactly 4096 bytes. */
  data: Uint8Array;
}

/** A run of pages: [first page index, count]. */
export type PageRange = [first: number, count: number];

// ---- link-level: handshake ----------------------------------------------------------------------

/** Client → server, first frame. */
export interface Hello {
  t: 'hello';
  /** Protocol versions the client speaks, ascending. */
  versions: number[];
  /** Client's node id (1-64 chars, [A-Za-z0-9._-]). */
  node: string;
  /** Client's session epoch (a new session after a fence or restart uses a larger epoch). */
  epoch: number;
  /**
   * Client's incarnation: the same in every session of one process lifetime, larger after a
   * restart (ours: the start value of the epoch counter). Optional (added within version 2); absent means
   * `epoch`. A second connection of the incarnation whose session is up is refused (4009).
   */
  boot?: number;
  /** Client challenge: 32 random bytes. */
  nonce: Uint8Array;
}

/** Server → client, answer to hello. */
export interface Welcome {
  t: 'welcome';
  /** The version chosen (highest common). */
  version: number;
  /** Server's node id. */
  node: string;
  /** Server's session epoch. */
  epoch: number;
  /** Server's incarnation (see Hello.boot). */
  boot?: number;
  /** Server challenge: 32 random bytes. */
  nonce: Uint8Array;
  /** HMAC-SHA256(clusterKey, "xpmesh-server" ‖ client nonce ‖ server nonce ‖ client node ‖ server node). */
  proof: Uint8Array;
}

/** Client → server: the client's proof. */
export interface Auth {
  t: 'auth';
  /** HMAC-SHA256(clusterKey, "xpmesh-client" ‖ server nonce ‖ client nonce ‖ client node ‖ server node). */
  proof: Uint8Array;
}

/** Server → client: the session is established. */
export interface Ready {
  t: 'ready';
  /** The epoch the server recorded for the client's session. */
  epoch: number;
}

// ---- driver: permits ----------------------------------------------------------------------------

/** Attacher → home: ask for an access permit to a segment (xpmem_get). */
export interface Get {
  t: 'get';
  id: number;
  cid?: string;
  /** The segment. */
  segid: string;
  /** Requested access. */
  access: Access;
  /** Credentials of the requesting process, checked against the segment's mode bits. */
  uid: number;
  gid: number;
}

/** Home → attacher: permit granted. */
export interface GetOk {
  t: 'get-ok';
  re: number;
  cid?: string;
  /** Access permit id, valid until released or the segment goes. */
  apid: string;
  /** Segment size in bytes. */
  size: number;
  /** Access granted. */
  access: Access;
}

/** Attacher → home: give a permit back (xpmem_release). Reply: ok. */
export interface Release {
  t: 'release';
  id: number;
  cid?: string;
  apid: string;
}

// ---- driver: remote faults ---------------------------------------------------------------------

/** Attacher → home: map pages of a segment (a remote page fault, or a prefault of several pages). */
export interface MapReq {
  t: 'map';
  id: number;
  cid?: string;
  /** The permit. */
  apid: string;
  /** First page index within the segment. */
  page: number;
  /** Number of pages (1..limits.maxPagesPerMessage). */
  count: number;
  /** 'r' for a read copy, 'rw' for exclusive write access (an upgrade if a read copy is held). */
  access: Access;
}

/** Home → attacher: the pages, granted with `access`. */
export interface MapOk {
  t: 'map-ok';
  re: number;
  cid?: string;
  /** Access granted (may be 'r' when 'rw' was asked only if the permit is read-only: then error). */
  access: Access;
  /** The pages, in order. */
  pages: PageData[];
  /**
   * Grant id of each page (same order and length as `pages`). Ids increase at the home with every
   * grant it makes. An `invalidate` whose `upTo` is ≥ a page's grant id revokes that copy, also when
   * the invalidate overtakes this reply: the receiver then drops the page instead of installing it.
   */
  grants: number[];
}

// ---- driver: invalidation ----------------------------------------------------------------------

/** Home → mapper: drop (or downgrade) your copies of these pages, then ack. */
export interface Invalidate {
  t: 'invalidate';
  id: number;
  cid?: string;
  /** The segment. */
  segid: string;
  /** Pages, as ranges. */
  ranges: PageRange[];
  /** Why. */
  reason: InvalidateReason;
  /** True if pages held for writing must send their data back in the ack. */
  writeback: boolean;
  /** True if the mapper may keep a read-only copy (downgrade) instead of dropping it. */
  downgrade: boolean;
  /**
   * The home's latest grant id when it decided this invalidation: copies of these pages granted with
   * an id ≤ upTo are covered (also one whose map-ok is still on its way); later grants are not.
   */
  upTo: number;
}

/** Mapper → home: done; the copies are gone (or read-only); dirty pages enclosed. */
export interface InvalidateAck {
  t: 'invalidate-ack';
  re: number;
  cid?: string;
  /** Pages that were held for writing, with their data (only when writeback was asked). */
  dirty: PageData[];
}

/** Attacher → home: the attacher dropped its mapping of these pages (detach, exit, or eviction). */
export interface Detach {
  t: 'detach';
  id: number;
  cid?: string;
  apid: string;
  ranges: PageRange[];
  /** Data of pages that were held for writing (nothing is lost on detach). */
  dirty: PageData[];
}

/** Home → every mapper: the segment is gone (source exit or remove); next touch gets SIGBUS. One-way. */
export interface SegmentGone {
  t: 'segment-gone';
  cid?: string;
  segid: string;
  reason: 'remove' | 'exit' | 'unmap';
}

// ---- generic replies ---------------------------------------------------------------------------

/** Generic success reply. */
export interface Ok {
  t: 'ok';
  re: number;
  cid?: string;
}

/** Error reply (with `re`) or unsolicited error (without). */
export interface ErrorMsg {
  t: 'error';
  re?: number;
  cid?: string;
  code: WireErrorCode;
  /** Human-readable, ≤ 512 chars. */
  message: string;
}

export type Message =
  | Hello
  | Welcome
  | Auth
  | Ready
  | Get
  | GetOk
  | Release
  | MapReq
  | MapOk
  | Invalidate
  | InvalidateAck
  | Detach
  | SegmentGone
  | Ok
  | ErrorMsg;

export type MessageType = Message['t'];

/** Requests of the driver protocol and their successful reply types. */
export interface RequestReplyMap {
  get: GetOk;
  release: Ok;
  map: MapOk;
  invalidate: InvalidateAck;
  detach: Ok;
}
export type RequestMessage = Get | Release | MapReq | Invalidate | Detach;
export type ReplyMessage = GetOk | Ok | MapOk | InvalidateAck | ErrorMsg;
export type OneWayMessage = SegmentGone | ErrorMsg;
