/**
 * Issue 13 against the admin API (a stub backend, real node:http on 127.0.0.1): every limit of
 * ADMIN_LIMITS stops its attack, is answered with a stable code where HTTP allows one, and is
 * counted in xpmesh_admin_limits_total. Small limits keep each case fast; no assertion is about speed.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_LIMITS } from '@xpmesh/protocol';
import { parsePrometheus } from '../load/stats.js';
import { ADMIN_LIMITS, type AdminLimits, AdminServer, jsonDepth } from './admin.js';
import { type AdminCallError, AdminClient } from './admin-client.js';
import { silentLogger } from './logger.js';
import { InstanceMetrics } from './metrics.js';
import { OP_NAMES, type OpHandlers } from './ops.js';

function stubBackend() {
  const calls: string[] = [];
  const events = new EventEmitter();
  const ops = Object.fromEntries(
    OP_NAMES.map((op) => [
      op,
      async () => {
        calls.push(op);
        if (op === 'get')
          throw Object.assign(new Error('home zz of zz:1 is not connected'), { code: 'E_PEER' });
        return { ok: true };
      },
    ]),
  ) as unknown as OpHandlers;
  return {
    calls,
    backend: {
      node: 'h1',
      events,
      ops,
      status: () => ({ node: 'h1' }),
      pages: () => ({ pages: [] }),
    },
  };
}

const snapshot = () => ({
  framesTotal: 0,
  framesFree: 0,
  processes: 0,
  segments: 0,
  attachments: 0,
  rmapEntries: 0,
  exportedPages: 0,
  peers: {},
  messages: {},
  refusals: {},
});

async function start(limits: Partial<AdminLimits>) {
  const { backend, calls } = stubBackend();
  const metrics = new InstanceMetrics('h1', snapshot);
  const server = new AdminServer(backend, {
    host: '127.0.0.1',
    port: 0,
    token: undefined,
    metrics,
    logger: silentLogger,
    limits,
  });
  const url = await server.listen();
  const port = Number(new URL(url).port);
  const counter = async (name: string, labels: Record<string, string>) => {
    const text = await metrics.registry.metrics();
    return parsePrometheus(text)
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((a, s) => a + s.value, 0);
  };
  return { server, url, port, backend, calls, metrics, counter };
}

/** A raw TCP client: what it received, and whether (and how) the server closed it. */
function raw(port: number) {
  const sock: Socket = connect(port, '127.0.0.1');
  const st = { data: '', ended: false, reset: false };
  sock.on('data', (d) => {
    st.data += d.toString('latin1');
  });
  sock.on('end', () => {
    st.ended = true;
  });
  sock.on('close', () => {
    st.ended = true;
  });
  sock.on('error', () => {
    st.reset = true;
  });
  return { sock, st };
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await sleep(10);
  }
}

/** POST with node:http (a client that keeps writing its body while the answer comes). */
function post(port: number, path: string, body: Buffer, chunked: boolean) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path,
      method: 'POST',
      headers: chunked ? { 'content-type': 'application/json' } : { 'content-length': body.length },
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    if (chunked) {
      // several chunks, the later ones after the limit is passed
      for (let i = 0; i < 8; i++)
        req.write(body.subarray((i * body.length) / 8, ((i + 1) * body.length) / 8));
      req.end();
    } else req.end(body);
  });
}

describe('admin API under hostile input (issue 13)', () => {
  it('metric labels come from a fixed set: unique paths, methods and op names add no series', async () => {
    const a = await start({});
    try {
      for (let i = 0; i < 300; i++) {
        await fetch(`${a.url}/nope-${i}`).then((r) => r.arrayBuffer());
        await fetch(`${a.url}/ops/frob-${i}`, { method: 'POST', body: '{}' }).then((r) => r.arrayBuffer());
        await fetch(`${a.url}/ops/x${i}`, { method: 'GET' }).then((r) => r.arrayBuffer());
        await fetch(`${a.url}/status-${i}`, { method: 'DELETE' }).then((r) => r.arrayBuffer());
      }
      const series = parsePrometheus(await a.metrics.registry.metrics()).filter(
        (s) => s.name === 'xpmesh_admin_requests_total',
      );
      assert.ok(series.length <= 3, `series: ${JSON.stringify(series.map((s) => s.labels))}`);
      for (const s of series) assert.equal(s.labels.op, 'unknown');
      assert.equal(
        series.reduce((n, s) => n + s.value, 0),
        1200,
      );
    } finally {
      await a.server.close();
    }
  });

  it('a body over the limit is answered 413 E_TOO_LARGE (declared or chunked), never a reset; the backend is not called', async () => {
    const a = await start({ maxBodyBytes: 64 * 1024 });
    try {
      const big = Buffer.alloc(1 << 20, 0x20);
      for (const chunked of [false, true]) {
        const r = await post(a.port, '/ops/spawn', big, chunked);
        assert.equal(r.status, 413, `chunked=${chunked}`);
        assert.equal(JSON.parse(r.body).code, 'E_TOO_LARGE');
      }
      assert.deepEqual(a.calls, []);
      assert.equal(await a.counter('xpmesh_admin_limits_total', { limit: 'body_too_large' }), 2);
      // the server still serves
      assert.equal((await new AdminClient(a.url).get<{ ok: boolean }>('/healthz')).ok, true);
    } finally {
      await a.server.close();
    }
  });

  it('caller errors are 4xx with stable codes: nesting 10,000 deep (E_TOO_DEEP), E_PEER', async () => {
    const a = await start({});
    try {
      const deep = `{"pid":1,"module":"load/program.js","export":"f","args":${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
      const r = await fetch(`${a.url}/ops/run`, { method: 'POST', body: deep });
      assert.equal(r.status, 400);
      assert.equal(((await r.json()) as { code: string }).code, 'E_TOO_DEEP');
      assert.deepEqual(a.calls, [], 'a rejected body never reaches the backend');
      await assert.rejects(
        new AdminClient(a.url).op('get', { pid: 1, segid: 'zz:1' }),
        (e: AdminCallError) => e.code === 'E_PEER' && e.status === 409,
      );
      assert.equal(jsonDepth({ a: [1, { b: [] }] }, 64), 4);
    } finally {
      await a.server.close();
    }
  });

  it('header, body and idle deadlines close stalled connections (408 where a request began), counted', async () => {
    const a = await start({ headersTimeoutMs: 300, requestTimeoutMs: 600, socketIdleMs: 800 });
    try {
      const partialHeaders = raw(a.port);
      partialHeaders.sock.write('GET /status HTTP/1.1\r\nHost: x\r\n');
      const slowBody = raw(a.port);
      slowBody.sock.write('POST /ops/spawn HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{"uid"');
      const silent = raw(a.port);
      await until(
        () => partialHeaders.st.ended && slowBody.st.ended && silent.st.ended,
        'all three closed by the server',
      );
      assert.match(partialHeaders.st.data, /^HTTP\/1.1 408/);
      assert.match(slowBody.st.data, /^HTTP\/1.1 408/);
      assert.ok((await a.counter('xpmesh_admin_limits_total', { limit: 'request_timeout' })) >= 2);
      assert.deepEqual(a.calls, []);
      assert.equal((await new AdminClient(a.url).get<{ ok: boolean }>('/healthz')).ok, true);
    } finally {
      await a.server.close();
    }
  });

  it('connections beyond maxConnections are closed at accept, counted; the API serves again once they go', async () => {
    const a = await start({ maxConnections: 4 });
    try {
      const socks = Array.from({ length: 12 }, () => raw(a.port));
      await until(() => socks.filter((s) => s.st.ended).length >= 8, 'the extra 8 closed');
      assert.equal(await a.counter('xpmesh_admin_limits_total', { limit: 'connections_full' }), 8);
      for (const s of socks) s.sock.destroy();
      await sleep(50);
      assert.equal((await new AdminClient(a.url).get<{ ok: boolean }>('/healthz')).ok, true);
    } finally {
      await a.server.close();
    }
  });

  it('/events: a subscriber that never reads is dropped at its buffer bound (memory given back), readers keep getting events, subscribers are capped', async () => {
    const a = await start({ sseBufferBytes: 256 * 1024, maxSseClients: 3 });
    try {
      const got: unknown[] = [];
      const reader = await new AdminClient(a.url).subscribe((ev) => got.push(ev));
      const stalled = raw(a.port);
      stalled.sock.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
      await until(() => a.server.subscribers === 2, 'two subscribers');
      stalled.sock.pause(); // never reads again
      const payload = 'x'.repeat(4 * 1024);
      let sent = 0;
      // Bounded: at most 32 MiB of events; the stalled one is dropped once the kernel's socket
      // buffers (a few MiB on loopback) and then its 256 KiB in the instance are full.
      // Paced so the reader (in this process) keeps up: 16 events, then wait until it has them.
      for (let i = 0; i < 8192 && a.server.subscribers === 2; i++) {
        a.backend.events.emit('event', { type: 'message', i, payload });
        sent++;
        if (i % 16 === 15)
          await until(
            () => got.length === sent,
            `the reader keeps up: ${got.length}/${sent}, ${a.server.subscribers}`,
          );
      }
      assert.equal(a.server.subscribers, 1, 'the stalled subscriber was dropped');
      assert.equal(await a.counter('xpmesh_admin_limits_total', { limit: 'sse_slow' }), 1);
      await until(() => got.length === sent, `the reader got all ${sent} events`, 20_000);
      // the cap
      const more = [raw(a.port), raw(a.port), raw(a.port)];
      for (const m of more) m.sock.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
      await until(() => more.some((m) => /^HTTP\/1.1 503/.test(m.st.data)), 'one refused 503');
      assert.ok((await a.counter('xpmesh_admin_limits_total', { limit: 'sse_full' })) >= 1);
      for (const m of more) m.sock.destroy();
      reader.close();
      stalled.sock.destroy();
    } finally {
      await a.server.close();
    }
  });
});

describe('docs/limits.md', () => {
  it('lists every protocol and admin limit with its default (from code)', async () => {
    const { readFileSync } = await import('node:fs');
    const doc = readFileSync(new URL('../../../../docs/limits.md', import.meta.url), 'utf8');
    const rows = doc.split('\n');
    const check = (prefix: string, table: Readonly<Record<string, number>>) => {
      for (const [k, v] of Object.entries(table)) {
        const row = rows.find((l) => l.startsWith(`| \`${prefix}.${k}\``));
        assert.ok(row, `${prefix}.${k} missing from docs/limits.md`);
        assert.equal(row.split('|')[2].trim().split(' ')[0], String(v), `${prefix}.${k}: default ${v}`);
      }
    };
    check('admin', ADMIN_LIMITS as unknown as Record<string, number>);
    check('limits', DEFAULT_LIMITS as unknown as Record<string, number>);
  });
});
