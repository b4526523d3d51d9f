/** `xpmesh ctl`: operate a running instance by hand through its admin API. */
import { AdminCallError, AdminClient } from '../daemon/admin-client.js';
import { ConnectError, resolveConnect } from '../daemon/discover.js';
import { OP_NAMES, OP_SCHEMAS, type OpName } from '../daemon/ops.js';
import { type Env, EXIT_FAIL, EXIT_OK, type Io, type Options, parse, str, UsageError } from './usage.js';

const VIEWS = ['status', 'pages', 'metrics', 'events', 'healthz'] as const;

export const CTL_HELP = `usage: xpmesh ctl [--url URL | --connect dns:NAME:PORT] [--token TOKEN] COMMAND [--field value ...]

Talks to one instance's admin API (URL from --url or XPMESH_ADMIN_URL, default
http://127.0.0.1:7500; token from --token or XPMESH_ADMIN_TOKEN). Prints JSON.
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
  write --pid P --addr A (--text S | --hex H | --base64 B)
  read --pid P --addr A --len BYTES                                    → { text, hex, base64 }
  fork --pid P                                                         → { pid }
  exit --pid P
  make --pid P --addr A --size BYTES [--mode 0600]                     → { segid }
  get --pid P --segid S [--access r|rw]                                → { apid }
  attach --pid P --apid A --size BYTES [--offset O] [--addr A]         → { addr }
  detach --pid P --addr A
  release --pid P --apid A
  remove --segid S
  reclaim --pid P --addr A        force reclaim (swap out) of the page behind P:A
  pressure --pages N [--budget-ms MS] [--concurrency C]
                                  LRU reclaim of up to N pages (bounded: budget 5000 ms, max 15000)
                                  → { reclaimed, scanned, outcomes, stoppedBy, ms, freeFrames, memory }
  migrate --pid P --addr A        force migration of that page to another frame
  pfn --pid P --addr A            which frame backs P:A, and its flags
  check                           run the kernel's invariant checker
  run --pid P --module M --export E [--args JSON]
                                  run an exported function of a compiled module (path relative to
                                  packages/node/dist, e.g. load/program.js) inside process P; --args
                                  is JSON                                → { result }

example:
  xpmesh ctl --url http://127.0.0.1:7500 spawn
  xpmesh ctl mmap --pid 1 --len 8192
  xpmesh ctl write --pid 1 --addr 0x10000000 --text hello`;

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
  const fields = schemaFields(op);
  const options: Options = {};
  for (const f of fields) options[kebab(f)] = { type: 'string' };
  const p = parse(args, options);
  if (p.help)
    throw new UsageError(`fields of ${op}: ${fields.map((f) => `--${kebab(f)}`).join(' ') || '(none)'}`);
  const body: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p.values)) {
    if (typeof v !== 'string') continue;
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
  const checked = OP_SCHEMAS[op].safeParse(body);
  if (!checked.success) {
    throw new UsageError(
      `${op}: ${checked.error.issues.map((i) => `--${kebab(String(i.path[0] ?? ''))} ${i.message}`).join('; ')}`,
    );
  }
  return body;
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
  const { global, command, rest } = splitGlobal(argv);
  const g = parse(global, {
    url: { type: 'string', short: 'u' },
    token: { type: 'string' },
    connect: { type: 'string' },
  });
  if (g.help || command === undefined || command === 'help') {
    io.out(CTL_HELP);
    return command === undefined && !g.help ? 2 : EXIT_OK;
  }
  const connect = str(g, 'connect');
  if (connect !== undefined) return ctlEach(connect, g, command, rest, env, io);
  const client = new AdminClient(
    str(g, 'url') ?? env.XPMESH_ADMIN_URL ?? 'http://127.0.0.1:7500',
    str(g, 'token') ?? env.XPMESH_ADMIN_TOKEN,
  );
  const print = (v: unknown) => io.out(typeof v === 'string' ? v.trimEnd() : JSON.stringify(v, null, 2));
  try {
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
      throw new UsageError(`unknown command "${command}" (try: ${[...VIEWS, ...OP_NAMES].join(', ')})`);
    }
    const op = command as OpName;
    print(await client.op(op, buildBody(op, rest)));
    return EXIT_OK;
  } catch (err) {
    if (err instanceof AdminCallError) {
      io.err(`xpmesh ctl ${command}: ${err.code}: ${err.message.replace(`${err.code}: `, '')}`);
      return err.code === 'E_BAD_REQUEST' ? 2 : EXIT_FAIL;
    }
    throw err;
  }
}
