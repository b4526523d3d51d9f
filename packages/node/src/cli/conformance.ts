/** `xpmesh conformance`: the protocol's rules over the wire against any home implementation. */
import { DEFAULT_LEASE_MS, TIMING_DEFAULTS } from '@xpmesh/protocol';
import { RULES, type RuleResult, runKit } from '../conformance/kit.js';
import { type Env, EXIT_FAIL, EXIT_OK, type Io, intFlag, parse, str, UsageError } from './usage.js';

export const CONFORMANCE_HELP = `usage: xpmesh conformance --url ws://HOST:PORT/ --key KEY --segid SEGID [options]

Checks an implementation of a home instance against docs/protocol.md over the wire: handshake and
authentication, framing and every bad-input rule, get/map, and coherence driven by several kit
sessions (a reader and a writer on one page: the home must invalidate, recall with write-back,
order grants, fence a mapper that answers error or misses the ack deadline). One line per rule with
the section it checks; exit 0 only if every rule held.

The home must export SEGID (at least 2 pages, mode 0666) and accept the kit's sessions: any node
id that authenticates with the key (docs/protocol.md §0). The kit writes page 1 through a write
grant (the data goes back to the home) and leaves no permit behind when a rule passes.

  --url URL             the home's peer address (ws:// or wss://; \`peerUrl\` of xpmesh cluster --json)
  --key KEY             the cluster key (or XPMESH_CLUSTER_KEY)
  --segid SEGID         a segment the home exports, mode 0666, ≥ 2 pages
  --ack-timeout-ms MS   the home's invalidate-ack deadline [${TIMING_DEFAULTS.ackTimeoutMs}]
  --lease-ms MS         the home's lease on remote copies [${DEFAULT_LEASE_MS}]
  --handshake-timeout-ms MS   the home's handshake deadline [${TIMING_DEFAULTS.handshakeTimeoutMs}]
  --only IDS            run only rules whose id starts with one of these (comma-separated)
  --list                list the rules and exit
  --json                one JSON object per rule on stdout, then a summary object

rules:
${RULES.map((r) => `  ${r.id.padEnd(34)} ${r.section.padEnd(14)} ${r.title}`).join('\n')}`;

export async function runConformance(argv: string[], env: Env, io: Io): Promise<number> {
  const p = parse(argv, {
    url: { type: 'string' },
    key: { type: 'string' },
    segid: { type: 'string' },
    'ack-timeout-ms': { type: 'string' },
    'lease-ms': { type: 'string' },
    'handshake-timeout-ms': { type: 'string' },
    only: { type: 'string' },
    list: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (p.help) {
    io.out(CONFORMANCE_HELP);
    return EXIT_OK;
  }
  if (p.values.list) {
    for (const r of RULES) io.out(`${r.id}\t${r.section}\t${r.title}`);
    return EXIT_OK;
  }
  const url = str(p, 'url');
  const key = str(p, 'key') ?? env.XPMESH_CLUSTER_KEY;
  const segid = str(p, 'segid');
  if (!url || !/^wss?:\/\/[^/]+/.test(url)) throw new UsageError('--url ws://HOST:PORT/ is required');
  if (!key || Buffer.byteLength(key) < 16)
    throw new UsageError('--key (or XPMESH_CLUSTER_KEY) of at least 16 bytes is required');
  if (!segid) throw new UsageError('--segid is required (a segment the home exports, mode 0666, ≥ 2 pages)');
  const json = p.values.json === true;
  const only = str(p, 'only')
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const print = (r: RuleResult) =>
    io.out(
      json
        ? JSON.stringify(r)
        : `${r.ok ? 'PASS' : 'FAIL'}  ${r.section.padEnd(14)} ${r.rule.padEnd(34)} ${r.ok ? r.detail : `${r.title}: ${r.detail}`}`,
    );
  const results = await runKit(
    {
      url,
      key,
      segid,
      ackTimeoutMs: intFlag(p, 'ack-timeout-ms', TIMING_DEFAULTS.ackTimeoutMs, 1, 600_000),
      leaseMs: intFlag(p, 'lease-ms', DEFAULT_LEASE_MS, 1, 600_000),
      handshakeTimeoutMs: intFlag(p, 'handshake-timeout-ms', TIMING_DEFAULTS.handshakeTimeoutMs, 1, 600_000),
      only,
    },
    print,
  );
  const failed = results.filter((r) => !r.ok).length;
  if (json) io.out(JSON.stringify({ rules: results.length, passed: results.length - failed, failed }));
  else
    io.out(`${results.length - failed} of ${results.length} rules held${failed ? `; ${failed} FAILED` : ''}`);
  return failed ? EXIT_FAIL : EXIT_OK;
}
