/**
 * The raw history as JSON lines (`xpmesh load --history FILE`), and reading it back for
 * `xpmesh check-history FILE`. docs/load.md ("History files") documents the format:
 *
 *   {"xpmesh":"history","version":1,"workload":"mixed","clockSlackMs":0.02,"initialValue":0,...}
 *   {"process":"n1/pid1","address":3,"kind":"w","value":1048577,"invokeTs":…,"responseTs":…}
 *   {"lost":{"process":"n2/pid1","chunk":4,"error":"run:E_TIMEOUT","maxOps":5000,"writeValues":…}}
 *
 * The first line describes the history; every other line is one operation (ordered by
 * invocation) or one lost chunk. Any line may be read on its own.
 */
import { closeSync, createReadStream, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { type HistoryOp, INITIAL_VALUE, type LostChunk } from './history.js';

export const HISTORY_FORMAT_VERSION = 1;

export interface HistoryMeta {
  xpmesh: 'history';
  version: number;
  workload: string;
  /** The checker widens every interval by this much (ms) on both sides. */
  clockSlackMs: number;
  initialValue: number;
  startedAt?: string;
  ops?: number;
  /** Open model: ops carry `intendedTs`. */
  model?: string;
}

export const HISTORY_LIMITS = {
  maxLineBytes: 64 * 1024,
  maxOps: 20_000_000,
  maxLost: 100_000,
  maxProcessName: 256,
} as const;

/** Write a history file; returns the number of lines written. */
export function writeHistoryFile(
  file: string,
  meta: Omit<HistoryMeta, 'xpmesh' | 'version' | 'initialValue'>,
  ops: readonly HistoryOp[],
  lost: readonly LostChunk[] = [],
): number {
  const fd = openSync(file, 'w');
  try {
    const head: HistoryMeta = {
      xpmesh: 'history',
      version: HISTORY_FORMAT_VERSION,
      initialValue: INITIAL_VALUE,
      ...meta,
      ops: ops.length,
    };
    writeSync(fd, `${JSON.stringify(head)}\n`);
    const sorted = [...ops].sort((a, b) => a.invokeTs - b.invokeTs);
    let buf: string[] = [];
    const flush = () => {
      if (buf.length) writeSync(fd, `${buf.join('\n')}\n`);
      buf = [];
    };
    for (const op of sorted) {
      const line: HistoryOp = {
        process: op.process,
        address: op.address,
        kind: op.kind,
        value: op.value,
        invokeTs: op.invokeTs,
        responseTs: op.responseTs,
      };
      if (op.intendedTs !== undefined) line.intendedTs = op.intendedTs;
      buf.push(JSON.stringify(line));
      if (buf.length >= 10_000) flush();
    }
    for (const l of lost) buf.push(JSON.stringify({ lost: l }));
    flush();
    return 1 + ops.length + lost.length;
  } finally {
    closeSync(fd);
  }
}

export class HistoryFileError extends Error {
  readonly code = 'E_HISTORY_FORMAT';
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isInt = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

function parseOp(o: Record<string, unknown>, where: string): HistoryOp {
  const bad = (what: string) => new HistoryFileError(`${where}: ${what}`);
  if (
    typeof o.process !== 'string' ||
    o.process.length === 0 ||
    o.process.length > HISTORY_LIMITS.maxProcessName
  )
    throw bad(`"process" must be a string of 1..${HISTORY_LIMITS.maxProcessName} characters`);
  if (!isInt(o.address, 0, Number.MAX_SAFE_INTEGER)) throw bad('"address" must be a non-negative integer');
  if (o.kind !== 'r' && o.kind !== 'w') throw bad('"kind" must be "r" or "w"');
  if (!isInt(o.value, 0, 0xffffffff)) throw bad('"value" must be an integer in 0..2^32-1');
  if (!isNum(o.invokeTs) || !isNum(o.responseTs))
    throw bad('"invokeTs" and "responseTs" must be numbers (ms)');
  if (o.responseTs < o.invokeTs) throw bad('"responseTs" is before "invokeTs"');
  const op: HistoryOp = {
    process: o.process,
    address: o.address,
    kind: o.kind,
    value: o.value,
    invokeTs: o.invokeTs,
    responseTs: o.responseTs,
  };
  if (o.intendedTs !== undefined) {
    if (!isNum(o.intendedTs)) throw bad('"intendedTs" must be a number (ms)');
    op.intendedTs = o.intendedTs;
  }
  return op;
}

function parseLost(o: unknown, where: string): LostChunk {
  const l = o as Record<string, unknown>;
  const bad = (what: string) => new HistoryFileError(`${where}: lost chunk: ${what}`);
  if (!l || typeof l !== 'object') throw bad('must be an object');
  if (typeof l.process !== 'string' || l.process.length > HISTORY_LIMITS.maxProcessName)
    throw bad('"process" must be a string');
  if (!isInt(l.chunk, 0, Number.MAX_SAFE_INTEGER)) throw bad('"chunk" must be an integer');
  if (typeof l.error !== 'string' || l.error.length > 200) throw bad('"error" must be a string');
  if (l.maxOps !== null && !isInt(l.maxOps, 0, Number.MAX_SAFE_INTEGER))
    throw bad('"maxOps" must be an integer or null');
  const wv = l.writeValues as Record<string, unknown> | null;
  if (wv !== null && !(wv && isInt(wv.from, 0, 0xffffffff) && isInt(wv.to, 0, 0xffffffff)))
    throw bad('"writeValues" must be {from, to} or null');
  return {
    process: l.process,
    chunk: l.chunk,
    error: l.error,
    maxOps: l.maxOps as number | null,
    writeValues: wv === null ? null : { from: wv.from as number, to: wv.to as number },
  };
}

/** Read a history file (streamed, bounded); throws HistoryFileError naming the line at fault. */
export async function readHistoryFile(
  file: string,
): Promise<{ meta: HistoryMeta | undefined; ops: HistoryOp[]; lost: LostChunk[] }> {
  const ops: HistoryOp[] = [];
  const lost: LostChunk[] = [];
  let meta: HistoryMeta | undefined;
  const input = createReadStream(file, { encoding: 'utf8' });
  const rl = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  let n = 0;
  try {
    for await (const line of rl) {
      n++;
      const where = `${file}:${n}`;
      if (line.length > HISTORY_LIMITS.maxLineBytes)
        throw new HistoryFileError(`${where}: line longer than ${HISTORY_LIMITS.maxLineBytes} bytes`);
      if (line.trim() === '') continue;
      let o: unknown;
      try {
        o = JSON.parse(line);
      } catch (e) {
        throw new HistoryFileError(`${where}: not JSON (${(e as Error).message})`);
      }
      if (!o || typeof o !== 'object' || Array.isArray(o))
        throw new HistoryFileError(`${where}: not a JSON object`);
      const r = o as Record<string, unknown>;
      if (r.xpmesh === 'history') {
        if (meta) throw new HistoryFileError(`${where}: a second header line`);
        if (r.version !== HISTORY_FORMAT_VERSION)
          throw new HistoryFileError(
            `${where}: format version ${String(r.version)} (this checker reads ${HISTORY_FORMAT_VERSION})`,
          );
        if (
          r.clockSlackMs !== undefined &&
          !(isNum(r.clockSlackMs) && r.clockSlackMs >= 0 && r.clockSlackMs <= 1000)
        )
          throw new HistoryFileError(`${where}: "clockSlackMs" must be a number in 0..1000`);
        if (r.initialValue !== undefined && r.initialValue !== INITIAL_VALUE)
          throw new HistoryFileError(`${where}: "initialValue" must be ${INITIAL_VALUE}`);
        meta = r as unknown as HistoryMeta;
      } else if ('lost' in r) {
        if (lost.length >= HISTORY_LIMITS.maxLost)
          throw new HistoryFileError(`${where}: more than ${HISTORY_LIMITS.maxLost} lost chunks`);
        lost.push(parseLost(r.lost, where));
      } else {
        if (ops.length >= HISTORY_LIMITS.maxOps)
          throw new HistoryFileError(`${where}: more than ${HISTORY_LIMITS.maxOps} operations`);
        ops.push(parseOp(r, where));
      }
    }
  } finally {
    rl.close();
    input.destroy();
  }
  return { meta, ops, lost };
}
