/**
 * Every workload runs briefly against a real local cluster (2 instances × 2 processes, separate OS
 * processes on 127.0.0.1) and must pass its history check; the CLI writes the documented JSON
 * fields and an HTML report that renders (in Chromium when available, else parsed).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AdminClient } from '../daemon/admin-client.js';
import { type LocalCluster, launchCluster } from '../daemon/launcher.js';
import { type LoadCliIo, runLoadCli } from './cli.js';
import { buildReport, type LoadReport, REPORT_FIELDS } from './report.js';
import { runWorkload } from './runner.js';
import { builtinWorkload, WORKLOADS } from './workloads.js';

const quietIo = (): LoadCliIo & { lines: string[] } => {
  const lines: string[] = [];
  return { lines, out: (s) => lines.push(s), err: (s) => lines.push(s), isTTY: false };
};

describe('xpmesh load against a local cluster', { timeout: 180_000 }, () => {
  let cluster: LocalCluster;
  let clients: AdminClient[];
  const dir = mkdtempSync(join(tmpdir(), 'xpmesh-load-test-'));
  before(async () => {
    cluster = await launchCluster({ nodes: 2, frames: 2048, output: 'files', logDir: dir });
    clients = cluster.nodes.map((n) => new AdminClient(n.adminUrl, undefined, 60_000));
  });
  after(async () => {
    if (cluster) {
      for (const n of cluster.nodes) assert.ok(n.pid > 0);
      await cluster.stop(10_000);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  for (const workload of WORKLOADS) {
    it(`${workload}: runs and passes its history check`, async () => {
      const o = {
        workload: builtinWorkload(workload)!,
        procsPerInstance: 2,
        pages: 8,
        segmentPages: 16,
        durationMs: 600,
        maxOps: 200_000,
        seed: 3,
      };
      const run = await runWorkload(clients, o);
      const report = buildReport(
        o,
        run,
        { mode: 'connect', urls: cluster.nodes.map((n) => n.adminUrl) },
        new Date(),
      );
      assert.ok(report.ops.total > 0, 'some operations completed');
      assert.equal(
        report.history.ok,
        true,
        `history check: ${report.history.violations.map((v) => v.message).join('\n')}`,
      );
      if (workload !== 'many-to-one') assert.ok(report.remoteFaults > 0, 'remote faults happened');
      if (workload === 'reclaim-storm') assert.ok(Object.keys(report.events.reclaims).length > 0);
      if (workload === 'fork-storm') assert.ok(report.events.forks > 0);
      if (workload === 'attach-churn') assert.ok(report.events.reattaches > 0);
    });
  }

  it('the CLI writes the documented JSON fields and an HTML report that renders', async () => {
    const json = join(dir, 'r.json');
    const html = join(dir, 'r.html');
    const io = quietIo();
    const code = await runLoadCli(
      [
        '--connect',
        cluster.nodes.map((n) => n.adminUrl).join(','),
        '--workload',
        'read-mostly',
        '--duration',
        '400',
        '--pages',
        '4',
        '--procs',
        '1',
        '--seed',
        '5',
        '--json',
        json,
        '--html',
        html,
      ],
      io,
    );
    assert.equal(code, 0, io.lines.join('\n'));
    assert.ok(
      io.lines.some((l) => /ops\/s/.test(l)),
      'prints the table',
    );
    const r = JSON.parse(readFileSync(json, 'utf8')) as LoadReport;
    for (const f of REPORT_FIELDS) assert.ok(f in r, `JSON report has ${f}`);
    for (const f of ['p50', 'p90', 'p99', 'p999']) {
      assert.equal(typeof (r.remoteFaultLatencyUs as unknown as Record<string, unknown>)[f], 'number');
      assert.equal(typeof (r.invalidationLatencyUs as unknown as Record<string, unknown>)[f], 'number');
      assert.equal(typeof (r.opLatencyUs.all as unknown as Record<string, unknown>)[f], 'number');
    }
    assert.equal(r.params.seed, 5);
    assert.equal(typeof r.messages.perOp, 'number');
    assert.equal(r.history.ok, true);
    await checkHtml(readFileSync(html, 'utf8'), html);
  });

  it('bad arguments exit 2; --help exits 0', async () => {
    for (const args of [
      ['--workload', 'nope'],
      ['--duration', 'x'],
      ['--bogus'],
      ['--pages', '4', '--segment-pages', '2'],
      ['--instances', '99'],
    ]) {
      const io = quietIo();
      assert.equal(await runLoadCli(args, io), 2, args.join(' '));
    }
    const io = quietIo();
    assert.equal(await runLoadCli(['--help'], io), 0);
    assert.match(io.lines.join('\n'), /read-mostly/);
  });
});

async function checkHtml(text: string, file: string): Promise<void> {
  // Static structure: self-contained (no external assets), three SVG charts with content.
  assert.doesNotMatch(text, /<(script|link|img)[^>]+(src|href)=/i, 'no external assets');
  for (const id of ['throughput', 'op-latency', 'fault-latency'])
    assert.match(text, new RegExp(`<svg id="${id}"[^>]*>`));
  assert.match(text, /<rect class="bar"/);
  assert.match(text, /<path class="line" d="M/);
  const chromium = '/usr/bin/chromium';
  let pw: typeof import('playwright-core') | undefined;
  try {
    pw = await import('playwright-core');
  } catch {
    pw = undefined;
  }
  if (!existsSync(chromium) || !pw) {
    console.warn(
      `SKIPPED the browser half of the HTML test: ${existsSync(chromium) ? 'playwright-core' : chromium} is missing`,
    );
    return;
  }
  const browser = await pw.chromium.launch({ executablePath: chromium, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`file://${file}`);
    const bars = await page.locator('#op-latency rect.bar').count();
    assert.ok(bars > 0, 'latency histogram has bars');
    const box = await page.locator('#throughput').boundingBox();
    assert.ok(box && box.width > 100 && box.height > 100, 'throughput chart is laid out');
    assert.match((await page.locator('#verdict').textContent()) ?? '', /linearizable/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
}
