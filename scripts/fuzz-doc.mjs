#!/usr/bin/env node
// Writes the figures of the "Fuzzing" section of docs/reliability.md from an instance fuzzer
// summary (the JSON that `node packages/testkit/dist/fault/fuzz.js --json FILE` prints), between the
// GENERATED markers of that section. Never edit the figures by hand:
//   node packages/testkit/dist/fault/fuzz.js --duration-ms 300000 --seed 7 --json docs/figures/fuzz-300s.json
//   node scripts/fuzz-doc.mjs [docs/figures/fuzz-300s.json]
//   npx biome format --write docs/reliability.md
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const src = process.argv[2] ?? 'docs/figures/fuzz-300s.json';
const s = JSON.parse(readFileSync(resolve(root, src), 'utf8'));
const doc = join(root, 'docs/reliability.md');
const BEGIN = '<!-- BEGIN GENERATED fuzz figures';
const END = '<!-- END GENERATED fuzz figures -->';

const n = (v) => (typeof v === 'number' ? v.toLocaleString('en-US') : String(v ?? '-'));
const list = (o, fmt = (k) => k) =>
  Object.entries(o ?? {})
    .map(([k, v]) => `${fmt(k)} ${n(v)}`)
    .join(', ') || 'none';
const kindsOf = (cls) =>
  list(
    Object.fromEntries(
      Object.entries(s.frames.byKind)
        .filter(([k]) => k.startsWith(`${cls}/`))
        .map(([k, v]) => [k.slice(cls.length + 1), v]),
    ),
  );
const failed = (s.checks ?? []).filter((c) => !c.ok);
const cmdDuration = s.limits?.durationMs ?? s.durationMs;
const maxFrames = s.limits?.maxFrames < 10_000_000 ? ` --max-frames ${s.limits.maxFrames}` : '';
const i = s.instance;
const m = s.counters.metrics;
// driver refusal kinds the driver does not count (no `refused` in its status counters) stay at 0
const codes = s.replies.codes ?? {};
const uncounted = { no_permit: 'E_NO_PERMIT', access_denied: 'E_PERM' };
const refusals = Object.entries(s.counters.refusals ?? {})
  .map(([k, v]) =>
    v === 0 && codes[uncounted[k]] > 0
      ? `${k} +0 (while ${n(codes[uncounted[k]])} \`${uncounted[k]}\` were answered: the driver does not count these refusals; not checked)`
      : `${k} +${n(v)}`,
  )
  .join(', ');

const rows = [
  [
    'result',
    s.ok
      ? '**ok** (every check held, no finding)'
      : `**FAILED**: ${failed.map((c) => c.name).join('; ')}; ${(s.findings ?? []).map((f) => f.what).join('; ')}`,
  ],
  [
    'command',
    `\`node packages/testkit/dist/fault/fuzz.js --duration-ms ${cmdDuration}${maxFrames} --seed ${s.seed}\``,
  ],
  [
    'run',
    `${n(Math.round(s.durationMs / 1000))} s (stopped by ${s.stoppedBy}); instance ${i.node} (heartbeat ${i.heartbeatMs} ms × ${i.missedBeats}, lease ${i.leaseMs} ms), good peer ${i.goodPeer}, fuzzer node \`${i.fuzzer}\`; segment ${i.segid}, ${i.pages} pages, mode ${i.mode}`,
  ],
  [
    'frames',
    `${n(s.frames.total)}, ${n(s.frames.perSec)}/s: ${list(s.frames.byClass)}; ${n(s.frames.messages)} messages in the frames that decode, ${n(s.frames.requests)} of them requests; ${n(s.frames.rejected)} frames rejected by the decoder`,
  ],
  ['random frames', kindsOf('random')],
  ['mutated frames', kindsOf('mutated')],
  ['structured frames', kindsOf('structured')],
  [
    'not sent',
    `${n(s.frames.unsafeSkipped)} generated frames that would legitimately change state (a get the mode allows, an invalidate or segment-gone naming the fuzzer as home); ${n(s.frames.oversizedSkipped)} over 256 KiB`,
  ],
  [
    'answers',
    `${n(s.replies.received)} \`error\` replies, each the one predicted; ${n(s.replies.notSentAfterAbuseClose)} not sent because the link was closed for abuse (the frame that spent the budget and frames already on the wire); ${n(s.replies.expected)} expected in all; nothing else received`,
  ],
  ['error codes', list(s.replies.codes, (k) => `\`${k}\``)],
  [
    'sessions',
    `${n(s.sessions.opened)} authenticated sessions: ${n(s.sessions.abuseCloses)} closed by the instance for abuse (4002), each after ≥ ${n(s.sessions.minRejectionsBeforeAbuseClose)} rejected frames; ${n(s.sessions.reconnects)} re-authentications; close codes ${list(s.sessions.closes)}; ${n(s.sessions.handshakeFailures)} failed handshakes`,
  ],
  [
    'good peer',
    `${n(s.goodPeer.reads)} reads of its mapping, ${n(s.goodPeer.cycles)} get → attach → read → detach → release cycles, ${n(s.goodPeer.localReads)} reads of ${i.node}'s local attachment; ${n(s.goodPeer.failures)} failed; session epoch ${s.goodPeer.epochAtHome.before === s.goodPeer.epochAtHome.after ? 'unchanged' : 'CHANGED'}`,
  ],
  ['counters that moved', `${i.node}: ${list(s.counters.home)}; ${i.goodPeer}: ${list(s.counters.good)}`],
  [
    '/metrics',
    `\`xpmesh_refusals_total\` by kind: ${refusals}; \`xpmesh_messages_total\` in +${n(m['messages.in'])}, out +${n(m['messages.out'])}; \`xpmesh_fences_total\` +${n(m.fences)}`,
  ],
  [
    'event loop (one process)',
    `delay p50 ${n(s.eventLoopDelayMs.p50)} / p99 ${n(s.eventLoopDelayMs.p99)} / max ${n(s.eventLoopDelayMs.max)} ms`,
  ],
];
const esc = (v) => String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const body = [
  `${BEGIN} by \`node scripts/fuzz-doc.mjs ${src}\` from the fuzzer's JSON summary: do not edit. -->`,
  '',
  '| measure | value |',
  '| --- | --- |',
  ...rows.map(([k, v]) => `| ${k} | ${esc(v)} |`),
  '',
  '| check | held | evidence |',
  '| --- | --- | --- |',
  ...(s.checks ?? []).map((c) => `| ${c.name} | ${c.ok ? 'yes' : '**NO**'} | ${esc(c.detail)} |`),
  '',
  `The full summary is [${src}](${src.replace(/^docs\//, '')}).`,
  '',
  END,
].join('\n');

const text = readFileSync(doc, 'utf8');
const section = text.indexOf('## Fuzzing');
if (section < 0) throw new Error('docs/reliability.md has no "## Fuzzing" section');
const next = text.indexOf('\n## ', section + 3);
const at = text.indexOf(BEGIN, section);
const end = text.indexOf(END, section);
if (at < 0 || end < at || (next >= 0 && end > next))
  throw new Error('the "Fuzzing" section of docs/reliability.md has no GENERATED fuzz figures markers');
writeFileSync(doc, text.slice(0, at) + body + text.slice(end + END.length));
console.log(`docs/reliability.md: fuzz figures from ${src}`);
