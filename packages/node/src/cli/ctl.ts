/**
 * `xpmesh ctl`: operate a running instance through its admin API, one operation per call or many
 * in one process (`xpmesh ctl script`, JSON lines on stdin). Loads only the admin client and the
 * operations' schemas: no kernel, driver or load tester (main.ts imports commands lazily).
 */
import { createInterface } from 'node:readline';
import {
  encodeWords,
  isWordKind,
  parseWordList,
  READ_AS,
  type ReadAs,
  readAnswerAs,
  toHex,
  WORD_KINDS,
  WordError,
} from '../client/words.js';
import { AdminCallError, AdminClient } from '../daemon/admin-client.js';
import { ConnectError, resolveConnect } from '../daemon/discover.js';
import { OP_NAMES, OP_SCHEMAS, type OpName } from '../daemon/ops.js';
import {
  type Env,
  EXIT_FAIL,
  EXIT_OK,
  EXIT_USAGE,
  type Io,
  type Options,
  parse,
  str,
  UsageError,
} from './usage.js';

const VIEWS = ['status', 'pages', 'metrics', 'events', 'healthz'] as const;

export const CTL_HELP = `usage: xpmesh ctl [--url URL | --connect dns:NAME:PORT] [--token TOKEN] [--json] COMMAND [--field value ...]
       xpmesh ctl [--url URL] [--token TOKEN] script [--stop-on-error] < ops.jsonl

Talks to one instance's admin API (URL from --url or XPMESH_ADMIN_URL, default
http://127.0.0.1:7500; token from --token or XPMESH_ADMIN_TOKEN). Prints JSON.
Errors print "xpmesh ctl OP: CODE: message" on stderr; with --json they are one JSON line on
stderr, {"error":{"code","message","status"}} (code E_USAGE for bad arguments), and successes one
JSON line on stdout. Exit codes: 0 success, 1 the instance refused or failed, 2 bad usage.
--connect dns:NAME:PORT runs COMMAND on every instance NAME resolves to (e.g. dns:tasks.node:7500
under Swarm) and prints one JSON object per instance: {"url", "exit", "output"}.

views:
  status                              memory, processes, segments, attachments, rmap, peers
  pages --segid S                     per-page state of a segment
  metrics                             Prometheus text
  events [--count N]                  follow the event stream (page states, messages)
  healthz
operations (addresses: decimal or 0x hex):
  spawn [--uid U] [--gid G] [--name N] [--catch-signals true|false]   → { pid }
  mmap --pid P --len BYTES [--prot none|r|rw] [--addr A]               → { addr }
  munmap --pid P --addr A --len BYTES
  write --pid P --addr A (--text S | --hex H | --base64 B | --u8|--u16|--u32|--i32|--u64 LIST)
                                  LIST: comma-separated integers, packed little-endian (--u32 1,2,0x10)
  read --pid P --addr A --len BYTES [--as ENC]                         → { text, hex, base64 }
                                  --as hex|text|base64|u8|u16|u32|i32|u64: answer only that,
                                  e.g. { "u32": [1, 2, 16] } (u64 words as decimal strings);
                                  with a word kind, --count N may replace --len
  fork --pid P                                                         → { pid }
  exit --pid P
  make --pid P --addr A --size BYTES [--mode 0600]                     → { segid }
  get --pid P --segid S [--access r|rw]                                → { apid }
  attach --pid P --apid A --size BYTES [--offset O] [--addr A]         → { addr }
  detach --pid P --addr A
  release --pid P --apid A
  remove --segid S
  reclaim --pid P --addr A        force reclaim (swap out) of the page behind P:A
  pressure --pages N [--budget-ms MS] [--concurrency C] [--batches B]
                                  LRU reclaim of up to N pages (bounded: budget 5000 ms, max 15000)
                                  → { reclaimed, scanned, outcomes, stoppedBy, ms, freeFrames, memory }
  migrate --pid P --addr A        force migration of that page to another frame
  pfn --pid P --addr A            which frame backs P:A, and its flags
  check                           run the kernel's invariant checker
  run --pid P --module M --export E [--args JSON]
                                  run an exported function of a compiled module (path relative to
                                  packages/node/dist, e.g. load/program.js) inside process P; --args
                                  is JSON                                → { result }

script (many operations, one process): one JSON object per stdin line, one JSON answer per
stdout line. {"op": NAME, ...fields} runs an operation (fields as in the admin API: camelCase,
numbers as numbers; write also takes "u32": [1,2] etc., read takes "as": "u32");
{"view": "status"|"pages"|"healthz"|"metrics", "segid"?} reads a view. "id": NAME names the
result; a later string "$NAME.field" is replaced by that field of it. Answers:
{"line":N,"id"?,"ok":true,"result":...} or {"line":N,"id"?,"ok":false,"error":{"code","message"}}.
Exit 1 if any line failed (--stop-on-error: stop at the first).

example:
  xpmesh ctl --url http://127.0.0.1:7500 spawn
  xpmesh ctl mmap --pid 1 --len 8192
  xpmesh ctl write --pid 1 --addr 0x10000000 --text hello
  xpmesh ctl write --pid 1 --addr 0x10000000 --u32 1,2,3
  xpmesh ctl read --pid 1 --addr 0x10000000 --count 3 --as u32
  printf '%s\\n' '{"id":"p","op":"spawn"}' '{"id":"m","op":"mmap","pid":"$p.pid","len":4096}' \\
    '{"op":"write","pid":"$p.pid","addr":"$m.addr","u32":[7]}' | xpmesh ctl script`;

const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Split argv into the global part (before the command) and the command's own arguments. */
function splitGlobal(argv: string[]): { global: string[]; command?: string; rest: string[] } {
  const withValue = new Set(['--url', '-u', '--token', '--connect']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (withValue.has(a)) {
      i++;
      continue;
    }
    if (!a.startsWith('-')) return { global: argv.slice(0, i), command: a, rest: argv.slice(i + 1) };
  }
  return { global: argv, rest: [] };
}

function schemaFields(op: OpName): string[] {
  const schema = OP_SCHEMAS[op] as unknown as { shape?: Record<string, unknown> };
  return Object.keys(schema.shape ?? {});
}

/** Turn `--field value` flags into the JSON body (numbers, booleans), validated locally. */
export function buildBody(op: OpName, args: string[]): Record<string, unknown> {
  return buildCall(op, args).body;
}

/** The body of one operation, and for `read` the encoding its answer is printed in. */
export function buildCall(op: OpName, args: string[]): { body: Record<string, unknown>; as?: ReadAs } {
  const fields = schemaFields(op);
  const options: Options = {};
  for (const f of fields) options[kebab(f)] = { type: 'string' };
  const extra = op === 'write' ? [...WORD_KINDS] : op === 'read' ? ['as', 'count'] : ([] as string[]);
  for (const f of extra) options[f] = { type: 'string' };
  const p = parse(args, options);
  if (p.help)
    throw new UsageError(
      `fields of ${op}: ${[...fields.map((f) => `--${kebab(f)}`), ...extra.map((f) => `--${f}`)].join(' ') || '(none)'}`,
    );
  const body: Record<string, unknown> = {};
  let as: ReadAs | undefined;
  for (const [k, v] of Object.entries(p.values)) {
    if (typeof v !== 'string') continue;
    if (op === 'write' && isWordKind(k)) {
      if (body.hex !== undefined)
        throw new UsageError('write: give one word list (--u8/--u16/--u32/--i32/--u64)');
      try {
        body.hex = toHex(parseWordList(k, v));
      } catch (err) {
        if (err instanceof WordError) throw new UsageError(`write: ${err.message}`);
        throw err;
      }
      continue;
    }
    if (op === 'read' && k === 'as') {
      if (!(READ_AS as readonly string[]).includes(v))
        throw new UsageError(`read: --as must be one of ${READ_AS.join('|')}, got "${v}"`);
      as = v as ReadAs;
      continue;
    }
    if (op === 'read' && k === 'count') continue;
    const key = camel(k);
    if (key === 'catchSignals') body[key] = v === 'true' ? true : v === 'false' ? false : v;
    else if (key === 'args') {
      try {
        body[key] = JSON.parse(v);
      } catch {
        throw new UsageError(`${op}: --args must be JSON (e.g. '{"n": 3}')`);
      }
    } else if (/^\d+$/.test(v) && !['text', 'hex', 'base64', 'segid', 'apid', 'name', 'mode'].includes(key))
      body[key] = Number(v);
    else body[key] = v;
  }
  const count = str(p, 'count');
  if (count !== undefined) {
    if (as === undefined || !isWordKind(as))
      throw new UsageError('read: --count needs --as with a word kind');
    if (body.len !== undefined) throw new UsageError('read: give --len or --count, not both');
    if (!/^\d+$/.test(count) || Number(count) < 1)
      throw new UsageError('read: --count must be a positive integer');
    body.len = Number(count) * encodeWords(as, [0]).length;
  }
  const checked = OP_SCHEMAS[op].safeParse(body);
  if (!checked.success) {
    throw new UsageError(
      `${op}: ${checked.error.issues.map((i) => `--${kebab(String(i.path[0] ?? ''))} ${i.message}`).join('; ')}`,
    );
  }
  return { body, as };
}

/** `--connect dns:NAME:PORT`: the command once per instance behind the name. */
async function ctlEach(
  connect: string,
  g: ReturnType<typeof parse>,
  command: string,
  rest: string[],
  env: Env,
  io: Io,
): Promise<number> {
  if (str(g, 'url') !== undefined) throw new UsageError('give --url or --connect, not both');
  if (command === 'events') throw new UsageError('events follows one instance: use --url');
  if (!connect.startsWith('dns:')) throw new UsageError('--connect takes dns:NAME:PORT (or use --url)');
  let urls: string[];
  try {
    urls = await resolveConnect(connect, { waitMs: 5000 });
  } catch (err) {
    if (err instanceof ConnectError) throw new UsageError(err.message);
    io.err(`xpmesh ctl: ${(err as Error).message}`);
    return EXIT_FAIL;
  }
  let worst = EXIT_OK;
  const token = str(g, 'token');
  for (const url of urls) {
    const lines: string[] = [];
    const errs: string[] = [];
    const sub: Io = { out: (l) => lines.push(l), err: (l) => errs.push(l) };
    const argv = ['--url', url, ...(token ? ['--token', token] : []), command, ...rest];
    const code = await runCtl(argv, env, sub);
    worst = Math.max(worst, code);
    const text = lines.join('\n');
    let output: unknown = text;
    try {
      output = JSON.parse(text);
    } catch {
      // not JSON (metrics text)
    }
    io.out(JSON.stringify({ url, exit: code, output, ...(errs.length ? { error: errs.join('\n') } : {}) }));
  }
  return worst;
}

export async function runCtl(argv: string[], env: Env, io: Io): Promise<number> {
  // --json may stand anywhere (before or after the command).
  const json = argv.includes('--json');
  const { global, command, rest } = splitGlobal(argv.filter((a) => a !== '--json'));
  const fail = (code: string, message: string, status: number, exit: number): number => {
    if (json) io.err(JSON.stringify({ error: { code, message, status } }));
    else io.err(`xpmesh ctl${command ? ` ${command}` : ''}: ${code}: ${message}`);
    return exit;
  };
  try {
    return await ctl(global, command, rest, env, io, json);
  } catch (err) {
    if (err instanceof AdminCallError)
      return fail(err.code, err.detail, err.status, err.code === 'E_BAD_REQUEST' ? EXIT_USAGE : EXIT_FAIL);
    if (err instanceof UsageError && json) return fail('E_USAGE', err.message, 0, EXIT_USAGE);
    throw err;
  }
}

async function ctl(
  global: string[],
  command: string | undefined,
  rest: string[],
  env: Env,
  io: Io,
  json: boolean,
): Promise<number> {
  const g = parse(global, {
    url: { type: 'string', short: 'u' },
    token: { type: 'string' },
    connect: { type: 'string' },
  });
  if (g.help || command === undefined || command === 'help') {
    io.out(CTL_HELP);
    return command === undefined && !g.help ? EXIT_USAGE : EXIT_OK;
  }
  const connect = str(g, 'connect');
  if (connect !== undefined) return ctlEach(connect, g, command, rest, env, io);
  const client = new AdminClient(
    str(g, 'url') ?? env.XPMESH_ADMIN_URL ?? 'http://127.0.0.1:7500',
    str(g, 'token') ?? env.XPMESH_ADMIN_TOKEN,
  );
  const print = (v: unknown) =>
    io.out(typeof v === 'string' ? v.trimEnd() : json ? JSON.stringify(v) : JSON.stringify(v, null, 2));
  if (command === 'script') {
    const p = parse(rest, { 'stop-on-error': { type: 'boolean' } });
    if (p.help) {
      io.out(CTL_HELP);
      return EXIT_OK;
    }
    return runScript(
      client,
      createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY }),
      io,
      {
        stopOnError: p.values['stop-on-error'] === true,
      },
    );
  }
  if ((VIEWS as readonly string[]).includes(command)) {
    const p = parse(rest, { segid: { type: 'string' }, count: { type: 'string' } });
    if (p.help) {
      io.out(CTL_HELP);
      return EXIT_OK;
    }
    switch (command) {
      case 'pages': {
        const segid = str(p, 'segid');
        if (!segid) throw new UsageError('pages needs --segid');
        print(await client.get(`/pages?segid=${encodeURIComponent(segid)}`));
        return EXIT_OK;
      }
      case 'events': {
        const max = Number(str(p, 'count') ?? Number.POSITIVE_INFINITY);
        let seen = 0;
        await new Promise<void>((resolve, reject) => {
          client
            .subscribe((ev) => {
              io.out(JSON.stringify({ event: ev.event, ...ev.data }));
              if (++seen >= max) resolve();
            })
            .then((sub) => {
              process.once('SIGINT', () => resolve());
              return sub;
            }, reject);
        });
        return EXIT_OK;
      }
      default:
        print(await client.get(`/${command}`));
        return EXIT_OK;
    }
  }
  if (!(OP_NAMES as string[]).includes(command)) {
    throw new UsageError(
      `unknown command "${command}" (try: ${[...VIEWS, ...OP_NAMES, 'script'].join(', ')})`,
    );
  }
  const op = command as OpName;
  const { body, as } = buildCall(op, rest);
  const answer = await client.op(op, body);
  print(as === undefined ? answer : readAnswerAs(as, answer as { hex: string }));
  return EXIT_OK;
}

/** A line source: readline's interface, or any async iterable of lines (tests). */
type Lines = AsyncIterable<string>;

/**
 * `xpmesh ctl script`: one JSON request per line, answered in order, one JSON line each. Requests
 * are run one at a time (a later line may name an earlier result: "$id.field").
 */
export async function runScript(
  client: AdminClient,
  lines: Lines,
  io: Io,
  opts: { stopOnError?: boolean; maxLines?: number } = {},
): Promise<number> {
  const results = new Map<string, unknown>();
  const maxLines = opts.maxLines ?? 1_000_000;
  let lineNo = 0;
  let failed = false;
  for await (const raw of lines) {
    lineNo++;
    if (raw.trim() === '' || raw.trimStart().startsWith('#')) continue;
    let id: string | undefined;
    try {
      if (lineNo > maxLines) throw new AdminCallError('E_BAD_REQUEST', 0, `more than ${maxLines} lines`);
      let req: unknown;
      try {
        req = JSON.parse(raw);
      } catch {
        throw new AdminCallError('E_BAD_REQUEST', 0, 'not a JSON object');
      }
      if (typeof req !== 'object' || req === null || Array.isArray(req))
        throw new AdminCallError('E_BAD_REQUEST', 0, 'not a JSON object');
      const r = req as Record<string, unknown>;
      if (r.id !== undefined) {
        if (typeof r.id !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(r.id))
          throw new AdminCallError('E_BAD_REQUEST', 0, '"id" must be a name like p1');
        id = r.id;
      }
      const result = await scriptStep(client, resolveRefs(r, results) as Record<string, unknown>);
      if (id !== undefined) results.set(id, result);
      io.out(JSON.stringify({ line: lineNo, ...(id ? { id } : {}), ok: true, result }));
    } catch (err) {
      const e =
        err instanceof AdminCallError
          ? { code: err.code, message: err.detail }
          : err instanceof WordError || err instanceof UsageError
            ? { code: 'E_BAD_REQUEST', message: err.message }
            : { code: 'E_INTERNAL', message: (err as Error)?.message ?? String(err) };
      io.out(JSON.stringify({ line: lineNo, ...(id ? { id } : {}), ok: false, error: e }));
      failed = true;
      if (opts.stopOnError) break;
    }
  }
  return failed ? EXIT_FAIL : EXIT_OK;
}

/** Replace "$id.field" strings (anywhere in the request) by the named earlier result's field. */
function resolveRefs(v: unknown, results: Map<string, unknown>): unknown {
  if (typeof v === 'string' && v.startsWith('$')) {
    const [name, ...path] = v.slice(1).split('.');
    if (!results.has(name))
      throw new AdminCallError('E_BAD_REQUEST', 0, `${v}: no earlier result named "${name}"`);
    let cur: unknown = results.get(name);
    for (const key of path) {
      if (typeof cur !== 'object' || cur === null || !Object.hasOwn(cur, key))
        throw new AdminCallError('E_BAD_REQUEST', 0, `${v}: the result has no field "${key}"`);
      cur = (cur as Record<string, unknown>)[key];
    }
    return cur;
  }
  if (Array.isArray(v)) return v.map((x) => resolveRefs(x, results));
  if (typeof v === 'object' && v !== null)
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolveRefs(x, results)]));
  return v;
}

async function scriptStep(client: AdminClient, r: Record<string, unknown>): Promise<unknown> {
  const { id: _id, op, view, as, ...fields } = r;
  if (view !== undefined) {
    if (op !== undefined) throw new AdminCallError('E_BAD_REQUEST', 0, 'give "op" or "view", not both');
    if (view === 'pages') {
      if (typeof fields.segid !== 'string')
        throw new AdminCallError('E_BAD_REQUEST', 0, 'pages needs "segid"');
      return client.get(`/pages?segid=${encodeURIComponent(fields.segid)}`);
    }
    if (view === 'status' || view === 'healthz' || view === 'metrics') return client.get(`/${view}`);
    throw new AdminCallError('E_BAD_REQUEST', 0, `"view" must be status, pages, healthz or metrics`);
  }
  if (typeof op !== 'string' || !(OP_NAMES as string[]).includes(op))
    throw new AdminCallError('E_BAD_REQUEST', 0, `"op" must be one of ${OP_NAMES.join(', ')}`);
  if (op === 'write') {
    const kinds = WORD_KINDS.filter((k) => fields[k] !== undefined);
    if (kinds.length > 1) throw new AdminCallError('E_BAD_REQUEST', 0, 'write: give one word list');
    if (kinds.length === 1) {
      const list = fields[kinds[0]];
      if (!Array.isArray(list))
        throw new AdminCallError('E_BAD_REQUEST', 0, `write: "${kinds[0]}" must be an array`);
      fields.hex = toHex(encodeWords(kinds[0], list as Array<number | string>));
      delete fields[kinds[0]];
    }
  }
  if (as !== undefined && (op !== 'read' || !(READ_AS as readonly string[]).includes(String(as))))
    throw new AdminCallError('E_BAD_REQUEST', 0, `"as" applies to read: ${READ_AS.join('|')}`);
  const answer = await client.op(op as OpName, fields);
  return as === undefined ? answer : readAnswerAs(as as ReadAs, answer as { hex: string });
}
