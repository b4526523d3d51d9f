/**
 * `xpmesh demo`: the canonical scenario on three instances, narrated. Each step says what happens
 * in plain words, lists the protocol messages the instances exchanged during it (from their event
 * streams) and the page states on each instance, and verifies the data. Exit 0 only if every
 * step held.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PAGE_SIZE } from '@xpmesh/protocol/base';
import { AdminCallError, AdminClient, type SseEvent } from '../daemon/admin-client.js';
import { ConnectError, parseDnsConnect, resolveConnect } from '../daemon/discover.js';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import { type Env, EXIT_FAIL, EXIT_OK, type Io, parse, str, UsageError } from './usage.js';

export const DEMO_HELP = `usage: xpmesh demo [--connect URL,URL,URL] [--token T] [--quiet] [--logs DIR]

Runs the canonical xpmesh scenario on three instances and narrates it: make → get → attach →
remote read fault → remote write (upgrade) → home reads (recall) → home reclaims an exported page
→ re-fault from swap → fork + copy-on-write → source exit → SIGBUS at the attacher.
Every step's data is verified; the exit code is 0 only if all of them held.

  --connect URLS   use running instances (admin URLs, comma-separated: home, attacher, reader)
                   instead of starting a local 3-process cluster (e.g. under docker compose);
                   or dns:NAME:PORT: the first 3 addresses of NAME (waits up to --wait-ms)
  --token T        admin bearer token (or XPMESH_ADMIN_TOKEN)
  --wait-ms MS     how long to wait for the instances and their peer links [30000]
  --logs DIR       keep the local cluster's JSON logs in DIR (default: a temp dir, path printed)
  --view           print the live view's URL (open it in a browser), wait --view-delay-ms before
                   the first step, and keep the cluster up after the scenario until Ctrl-C
  --view-delay-ms  how long to wait for the browser with --view [8000]
  --quiet          print only step titles and results`;

interface Inst {
  name: string;
  node: string;
  client: AdminClient;
}

interface Observed {
  at: string;
  ev: SseEvent;
}

class StepFailed extends Error {}

function expectEqual(what: string, got: string, want: string): void {
  if (got !== want) throw new StepFailed(`${what}: read "${got}", expected "${want}"`);
}

/** One line for a message event, whatever fields the driver reports. */
function describeMessage(at: string, d: Record<string, unknown>): string | undefined {
  const dir = String(d.direction ?? '');
  if (dir === 'in') return undefined; // each message is shown once, by its sender
  const peer = String(d.peer ?? d.to ?? d.node ?? '?');
  const msg = String(d.msg ?? d.t ?? '?');
  const extra: string[] = [];
  for (const k of ['reason', 'access', 'ranges', 'page', 'count', 'segid', 'apid', 'dirty', 'code']) {
    if (d[k] !== undefined)
      extra.push(`${k}=${typeof d[k] === 'object' ? JSON.stringify(d[k]) : String(d[k])}`);
  }
  if (d.cid !== undefined) extra.push(`cid=${String(d.cid)}`);
  return `${at} → ${peer}  ${msg}${extra.length ? `  (${extra.join(' ')})` : ''}`;
}

/** Reply types: each answers the request carrying the same correlation id (cid). */
const REPLIES = new Set(['ok', 'get-ok', 'map-ok', 'invalidate-ack', 'error']);

/**
 * The merged log in causal order. Each instance's stream is in its own order, but the streams
 * reach the demo independently, so a reply can arrive before the request it answers (an
 * invalidate-ack from n3 before n1's invalidate). A reply is held back until its request (same
 * cid) has been listed; the rest keeps arrival order. Replies whose request was not seen (it
 * happened in an earlier step) are listed at the end, in arrival order.
 */
export function causalOrder<T extends { msg: string; cid?: string }>(events: T[]): T[] {
  const out: T[] = [];
  const seen = new Set<string>();
  const held = new Map<string, T[]>();
  for (const e of events) {
    if (REPLIES.has(e.msg) && e.cid !== undefined && !seen.has(e.cid)) {
      held.set(e.cid, [...(held.get(e.cid) ?? []), e]);
      continue;
    }
    out.push(e);
    if (!REPLIES.has(e.msg) && e.cid !== undefined) {
      seen.add(e.cid);
      const waiting = held.get(e.cid);
      if (waiting) {
        out.push(...waiting);
        held.delete(e.cid);
      }
    }
  }
  for (const rest of held.values()) out.push(...rest);
  return out;
}

function describePages(at: string, pages: unknown): string[] {
  const list = Array.isArray(pages)
    ? pages
    : Array.isArray((pages as { pages?: unknown })?.pages)
      ? (pages as { pages: unknown[] }).pages
      : undefined;
  if (!list) return [`${at}: ${JSON.stringify(pages)}`];
  return list.map((p) => `${at}: ${typeof p === 'object' ? JSON.stringify(p) : String(p)}`);
}

export async function runDemo(argv: string[], env: Env, io: Io): Promise<number> {
  const p = parse(argv, {
    connect: { type: 'string' },
    token: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    logs: { type: 'string' },
    'wait-ms': { type: 'string' },
    view: { type: 'boolean' },
    'view-delay-ms': { type: 'string' },
  });
  if (p.help) {
    io.out(DEMO_HELP);
    return EXIT_OK;
  }
  const quiet = p.values.quiet === true;
  const token = str(p, 'token') ?? env.XPMESH_ADMIN_TOKEN;
  const waitMs = Number(str(p, 'wait-ms') ?? 30_000);
  if (!Number.isInteger(waitMs) || waitMs <= 0) throw new UsageError('--wait-ms must be a positive integer');
  let urls: string[];
  let cluster: LocalCluster | undefined;
  const connect = str(p, 'connect') ?? env.XPMESH_DEMO_CONNECT;
  if (connect && dnsConnect(connect)) {
    urls = (await resolveConnect(connect, { min: 3, waitMs })).slice(0, 3);
  } else if (connect) {
    urls = connect
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (urls.length !== 3)
      throw new UsageError(
        `--connect needs exactly 3 admin URLs (home, attacher, reader), got ${urls.length}`,
      );
    for (const u of urls)
      if (!/^https?:\/\/[^/]+/.test(u)) throw new UsageError(`--connect: "${u}" is not an http URL`);
  } else {
    const logDir = str(p, 'logs') ?? mkdtempSync(join(tmpdir(), 'xpmesh-demo-'));
    io.out(`Starting a local cluster of 3 instances (separate processes on 127.0.0.1); logs in ${logDir}`);
    cluster = await launchCluster({
      nodes: 3,
      output: 'files',
      logDir,
      logLevel: 'debug',
      adminToken: token,
    });
    urls = cluster.nodes.map((n) => n.adminUrl);
  }
  const view = p.values.view === true;
  const viewDelayMs = Number(str(p, 'view-delay-ms') ?? 8000);
  if (!Number.isInteger(viewDelayMs) || viewDelayMs < 0)
    throw new UsageError('--view-delay-ms must be a non-negative integer');
  try {
    if (view) {
      io.out(`Live view: ${urls[0]}/view?nodes=${urls.join(',')}`);
      await new Promise((r) => setTimeout(r, viewDelayMs));
    }
    const code = await runScenario(urls, token, io, quiet, waitMs);
    if (view && cluster) {
      io.out('Scenario finished; the cluster stays up for the live view. Ctrl-C stops it.');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
    }
    return code;
  } finally {
    if (cluster) {
      const codes = await cluster.stop(10_000);
      if (!quiet) io.out(`Local cluster stopped (exit codes ${codes.join(', ')}).`);
    }
  }
}

function dnsConnect(spec: string) {
  try {
    return parseDnsConnect(spec);
  } catch (err) {
    if (err instanceof ConnectError) throw new UsageError(err.message);
    throw err;
  }
}

export async function runScenario(
  urls: string[],
  token: string | undefined,
  io: Io,
  quiet: boolean,
  waitMs = 30_000,
): Promise<number> {
  const names = ['A (home)', 'B (attacher)', 'C (reader)'];
  const insts: Inst[] = urls.map((u, i) => ({
    name: names[i],
    node: '?',
    client: new AdminClient(u, token),
  }));

  // Wait for every instance and for the full mesh of peer links.
  const deadline = Date.now() + waitMs;
  for (const inst of insts) {
    await inst.client.waitHealthy(Math.max(1000, deadline - Date.now()));
    const s = await inst.client.get<{ node: string }>('/status');
    inst.node = s.node;
  }
  for (const inst of insts) {
    for (;;) {
      const s = await inst.client.get<{ peers: Array<{ node: string; state: string }> }>('/status');
      const up = s.peers.filter((x) => x.state === 'up').length;
      if (up >= insts.length - 1) break;
      if (Date.now() > deadline) throw new Error(`${inst.name} has ${up} peer link(s) up after ${waitMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const [A, B, C] = insts;
  const label = (i: Inst) => `${i.node} ${i.name.split(' ')[1]}`;
  io.out(`Instances: ${insts.map((i) => `${label(i)} at ${i.client.base}`).join(', ')}`);

  const observed: Observed[] = [];
  const subs = await Promise.all(
    insts.map((i) => i.client.subscribe((ev) => observed.push({ at: i.node, ev }))),
  );

  let segid = '';
  let stepNo = 0;
  const settle = () => new Promise((r) => setTimeout(r, 150));
  const showPages = async () => {
    if (!segid || quiet) return;
    io.out('  page states:');
    for (const inst of insts) {
      try {
        for (const line of describePages(
          inst.node,
          await inst.client.get(`/pages?segid=${encodeURIComponent(segid)}`),
        ))
          io.out(`    ${line}`);
      } catch (err) {
        if (!(err instanceof AdminCallError && err.status === 404))
          io.out(`    ${inst.node}: ${(err as Error).message}`);
      }
    }
  };
  const failures: string[] = [];
  /** Run one step. A failed step is reported and the scenario goes on (later steps may still
   * show what works), unless the step is essential for everything after it. */
  const step = async (title: string, story: string, body: () => Promise<string>, essential = false) => {
    stepNo++;
    observed.length = 0;
    io.out('');
    io.out(`Step ${stepNo}. ${title}`);
    if (!quiet) io.out(`  ${story}`);
    let result: string;
    let failed = false;
    try {
      result = await body();
    } catch (err) {
      const why =
        err instanceof AdminCallError
          ? `${err.code}: ${err.message.replace(`${err.code}: `, '')}`
          : (err as Error).message;
      result = `step ${stepNo} (${title}) FAILED: ${why}`;
      failed = true;
      failures.push(result);
    }
    await settle();
    if (!quiet) {
      const sent = observed
        .filter((o) => o.ev.event === 'message' && o.ev.data.direction !== 'in')
        .map((o) => ({
          o,
          msg: String(o.ev.data.msg ?? o.ev.data.t ?? '?'),
          cid: o.ev.data.cid === undefined ? undefined : String(o.ev.data.cid),
        }));
      const lines = causalOrder(sent)
        .map(({ o }) => describeMessage(o.at, o.ev.data))
        .filter((l): l is string => !!l);
      io.out(`  messages (${lines.length}):`);
      for (const l of lines) io.out(`    ${l}`);
      for (const o of observed.filter((x) => x.ev.event === 'fence' || x.ev.event === 'lost-dirty'))
        io.out(`    ${o.at} ${o.ev.event}: ${JSON.stringify(o.ev.data)}`);
      await showPages();
    }
    io.out(failed ? `  ✘ ${result}` : `  ✔ ${result}`);
    if (failed && essential) throw new StepFailed(result);
  };
  const read = async (inst: Inst, pid: number, addr: number, len: number) =>
    (await inst.client.op<{ text: string }>('read', { pid, addr, len })).text;

  try {
    let pidA = 0;
    let addrA = 0;
    let pidB = 0;
    let pidC = 0;
    let apidB = '';
    let apidC = '';
    let addrB = 0;
    let addrC = 0;
    let childA = 0;
    const t0 = 'page 0: hello from A';
    const t1 = 'page 1: second page of A';
    const tB = 'page 0: written by B';
    const tFork = 'page 0: parent wrote after fork';

    await step(
      'make',
      `${label(A)}: a process maps two pages, writes to both, and exports them as a segment (xpmem_make, mode 0600).`,
      async () => {
        pidA = (await A.client.op<{ pid: number }>('spawn', { name: 'source' })).pid;
        addrA = (await A.client.op<{ addr: number }>('mmap', { pid: pidA, len: 2 * PAGE_SIZE })).addr;
        await A.client.op('write', { pid: pidA, addr: addrA, text: t0 });
        await A.client.op('write', { pid: pidA, addr: addrA + PAGE_SIZE, text: t1 });
        segid = (
          await A.client.op<{ segid: string }>('make', {
            pid: pidA,
            addr: addrA,
            size: 2 * PAGE_SIZE,
            mode: 0o600,
          })
        ).segid;
        return `segment ${segid} = pid ${pidA} [0x${addrA.toString(16)}, +${2 * PAGE_SIZE})`;
      },
    );
    await step(
      'get',
      `${label(B)} asks the home for a read-write permit, ${label(C)} for a read-only one; the home checks the mode bits against each process's uid/gid.`,
      async () => {
        pidB = (await B.client.op<{ pid: number }>('spawn', { name: 'attacher' })).pid;
        pidC = (await C.client.op<{ pid: number }>('spawn', { name: 'reader' })).pid;
        apidB = (await B.client.op<{ apid: string }>('get', { pid: pidB, segid, access: 'rw' })).apid;
        apidC = (await C.client.op<{ apid: string }>('get', { pid: pidC, segid, access: 'r' })).apid;
        return `permits ${apidB} (rw) and ${apidC} (r)`;
      },
    );
    await step(
      'attach',
      'Both attach the whole segment. Nothing is mapped yet: pages come one at a time, on fault.',
      async () => {
        addrB = (
          await B.client.op<{ addr: number }>('attach', {
            pid: pidB,
            apid: apidB,
            offset: 0,
            size: 2 * PAGE_SIZE,
          })
        ).addr;
        addrC = (
          await C.client.op<{ addr: number }>('attach', {
            pid: pidC,
            apid: apidC,
            offset: 0,
            size: 2 * PAGE_SIZE,
          })
        ).addr;
        return `attached at ${B.node}:0x${addrB.toString(16)} and ${C.node}:0x${addrC.toString(16)}`;
      },
    );
    await step(
      'remote read fault',
      `${label(B)} and ${label(C)} read page 0: each faults, sends map to the home, which exports the page (PG_external_rmap), records them in its reverse map and replies with the data.`,
      async () => {
        expectEqual(`${B.node} read`, await read(B, pidB, addrB, 64), t0);
        expectEqual(`${C.node} read`, await read(C, pidC, addrC, 64), t0);
        return "both read the home's data";
      },
    );
    await step(
      'remote write (upgrade)',
      `${label(B)} writes page 0. It holds a read copy, so it asks for write access: the home invalidates ${label(C)}'s copy and takes away its own process's mapping (a driver-owned entry) before granting.`,
      async () => {
        await B.client.op('write', { pid: pidB, addr: addrB, text: `${tB}\0` });
        expectEqual(`${B.node} reads its write`, await read(B, pidB, addrB, 64), tB);
        return `${B.node} is the single writer of page 0`;
      },
    );
    await step(
      'home reads (recall)',
      `The source process on ${label(A)} reads page 0. Its entry belongs to the driver, so the read faults into it: the home recalls the page from ${label(B)}, whose ack carries the dirty data back.`,
      async () => {
        expectEqual(`${A.node} read`, await read(A, pidA, addrA, 64), tB);
        expectEqual(`${C.node} read (re-fault)`, await read(C, pidC, addrC, 64), tB);
        return "the home and the reader see B's write";
      },
    );
    await step(
      'home reclaims an exported page',
      `${label(B)} reads page 1 (now exported), then ${label(A)} forces reclaim of that page: the kernel unmaps it locally, then calls the rmap notifier, which sends invalidate to every mapper and waits for every ack before the page is swapped out.`,
      async () => {
        expectEqual(`${B.node} read page 1`, await read(B, pidB, addrB + PAGE_SIZE, 64), t1);
        const r = await A.client.op<{ outcome: string; pfn: number }>('reclaim', {
          pid: pidA,
          addr: addrA + PAGE_SIZE,
        });
        if (!/swap|reclaim|ok/i.test(r.outcome)) throw new StepFailed(`reclaim outcome ${r.outcome}`);
        return `pfn ${r.pfn}: ${r.outcome}`;
      },
    );
    await step(
      're-fault from swap',
      `${label(B)} reads page 1 again: its copy is gone, so it faults; the home swaps the page back in and maps it again.`,
      async () => {
        expectEqual(`${B.node} read page 1`, await read(B, pidB, addrB + PAGE_SIZE, 64), t1);
        await settle();
        const refault = observed.some(
          (o) =>
            o.at === B.node &&
            o.ev.event === 'message' &&
            o.ev.data.msg === 'map' &&
            o.ev.data.direction === 'out',
        );
        if (!refault)
          throw new StepFailed(`${B.node} still had its copy: the page was not invalidated by the reclaim`);
        return 'data survived the trip through swap';
      },
    );
    await step(
      'fork + copy-on-write',
      `The source process forks, then writes page 0. The write breaks copy-on-write: the parent gets a new page, the invalidation reaches the attachers, and they see the parent's new page (XPMEM semantics); the child keeps the old one.`,
      async () => {
        childA = (await A.client.op<{ pid: number }>('fork', { pid: pidA })).pid;
        await A.client.op('write', { pid: pidA, addr: addrA, text: `${tFork}\0` });
        expectEqual(`${B.node} read`, await read(B, pidB, addrB, 64), tFork);
        expectEqual(`${C.node} read`, await read(C, pidC, addrC, 64), tFork);
        expectEqual(`${A.node} child read`, await read(A, childA, addrA, 64), tB);
        return `attachers see the parent's new page; child pid ${childA} kept the old data`;
      },
    );
    await step(
      'source exit',
      `The source process exits. Its address space is released: the driver invalidates every remote mapping and tells the attachers the segment is gone.`,
      async () => {
        await A.client.op('exit', { pid: pidA });
        return `pid ${pidA} exited`;
      },
    );
    await step(
      'SIGBUS at the attacher',
      `${label(B)} touches the attachment again: the segment is gone, so the access gets SIGBUS.`,
      async () => {
        try {
          await B.client.op('read', { pid: pidB, addr: addrB, len: 16 });
        } catch (err) {
          if (err instanceof AdminCallError && err.code === 'SIGBUS')
            return `${B.node} got SIGBUS, as expected`;
          throw err;
        }
        throw new StepFailed(`${B.node} read succeeded after the source exited`);
      },
    );
    await step(
      'clean up and check',
      'The remaining processes exit; every instance runs its kernel invariant checker (refcounts, mapcounts, flags, pins).',
      async () => {
        for (const [inst, pid] of [
          [B, pidB],
          [C, pidC],
          [A, childA],
        ] as const) {
          await inst.client.op('exit', { pid }).catch(() => {});
        }
        await settle();
        for (const inst of insts) {
          const r = await inst.client.op<{ ok: boolean; violations: string[] }>('check');
          if (!r.ok) throw new StepFailed(`${inst.node} check: ${r.violations.slice(0, 5).join('; ')}`);
        }
        return 'all invariants hold on every instance';
      },
    );
    io.out('');
    if (failures.length > 0) {
      io.err(`Demo FAILED: ${failures.length} of ${stepNo} steps did not hold:`);
      for (const f of failures) io.err(`  ${f}`);
      return EXIT_FAIL;
    }
    io.out(`Demo passed: all ${stepNo} steps held.`);
    return EXIT_OK;
  } catch (err) {
    io.out('');
    io.err(`Demo FAILED: ${(err as Error).message}`);
    return EXIT_FAIL;
  } finally {
    for (const s of subs) s.close();
  }
}
