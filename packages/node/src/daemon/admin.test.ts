import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { AdminServer, adminRequiresToken } from './admin.js';
import { type AdminCallError, AdminClient } from './admin-client.js';
import { silentLogger } from './logger.js';
import { InstanceMetrics } from './metrics.js';
import { OP_NAMES, type OpHandlers } from './ops.js';

/** A backend whose operations record their (validated) inputs. */
function stubBackend() {
  const calls: Array<{ op: string; input: unknown }> = [];
  const events = new EventEmitter();
  const ops = Object.fromEntries(
    OP_NAMES.map((op) => [
      op,
      async (input: unknown) => {
        calls.push({ op, input });
        if (op === 'read') return { text: 'hi' };
        if (op === 'exit') throw Object.assign(new Error('no process 99'), { code: 'ESRCH' });
        if (op === 'fork') throw Object.assign(new Error('bus error'), { code: 'SIGBUS' });
        return { ok: true };
      },
    ]),
  ) as unknown as OpHandlers;
  return {
    calls,
    backend: {
      node: 'n9',
      events,
      ops,
      status: () => ({ node: 'n9', peers: [] }),
      pages: (segid: string) => ({ segid, pages: [] }),
    },
  };
}

const snapshot = () => ({
  framesTotal: 64,
  framesFree: 60,
  processes: 0,
  segments: 0,
  attachments: 0,
  rmapEntries: 0,
  exportedPages: 0,
  peers: { up: 2 },
  messages: { map: { msgsIn: 3, bytesIn: 90, msgsOut: 0, bytesOut: 0 } },
  refusals: { peer_auth: 2 },
});

describe('admin token policy', () => {
  it('needs a token off the default loopback address or when one is configured', () => {
    assert.equal(adminRequiresToken('127.0.0.1', undefined), false);
    assert.equal(adminRequiresToken('::1', undefined), false);
    assert.equal(adminRequiresToken('127.0.0.2', undefined), true);
    assert.equal(adminRequiresToken('0.0.0.0', undefined), true);
    assert.equal(adminRequiresToken('127.0.0.1', 'secret'), true);
  });
});

describe('admin API on the default address (no token)', () => {
  const { backend, calls } = stubBackend();
  const metrics = new InstanceMetrics('n9', snapshot);
  const server = new AdminServer(backend, {
    host: '127.0.0.1',
    port: 0,
    token: undefined,
    metrics,
    logger: silentLogger,
  });
  let client: AdminClient;
  before(async () => {
    client = new AdminClient(await server.listen());
  });
  after(() => server.close());

  it('answers healthz, status and pages', async () => {
    assert.deepEqual(await client.get('/healthz'), { ok: true, node: 'n9', shuttingDown: false });
    assert.equal((await client.get<{ node: string }>('/status')).node, 'n9');
    assert.deepEqual(await client.get('/pages?segid=n9:1'), { segid: 'n9:1', pages: [] });
    await assert.rejects(
      client.get('/pages'),
      (e: AdminCallError) => e.code === 'E_BAD_REQUEST' && e.status === 400,
    );
    await assert.rejects(
      client.get('/nope'),
      (e: AdminCallError) => e.code === 'E_NOT_FOUND' && e.status === 404,
    );
  });

  it('validates operation bodies with stable codes and accepts hex addresses', async () => {
    await client.op('mmap', { pid: 1, len: 8192, addr: '0x10000' });
    assert.deepEqual(calls.at(-1), { op: 'mmap', input: { pid: 1, len: 8192, addr: 0x10000, prot: 'rw' } });
    const n = calls.length;
    await assert.rejects(
      client.op('mmap', { pid: -1, len: 8192 }),
      (e: AdminCallError) => e.code === 'E_BAD_REQUEST' && e.status === 400,
    );
    await assert.rejects(
      client.op('write', { pid: 1, addr: 0, text: 'a', hex: '00' }),
      (e: AdminCallError) => e.code === 'E_BAD_REQUEST',
    );
    assert.equal(calls.length, n, 'a rejected body never reaches the backend');
    const res = await fetch(`${client.base}/ops/spawn`, { method: 'POST', body: '{not json' });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { code: string }).code, 'E_BAD_REQUEST');
    const wrongMethod = await fetch(`${client.base}/ops/spawn`);
    assert.equal(wrongMethod.status, 405);
    await assert.rejects(
      fetch(`${client.base}/ops/frobnicate`, { method: 'POST', body: '{}' }).then(async (r) => {
        throw Object.assign(new Error(), { status: r.status, ...((await r.json()) as object) });
      }),
      (e: { status: number; code: string }) => e.status === 404 && e.code === 'E_NOT_FOUND',
    );
  });

  it('passes layer error codes through with their HTTP status', async () => {
    await assert.rejects(
      client.op('exit', { pid: 99 }),
      (e: AdminCallError) => e.code === 'ESRCH' && e.status === 404,
    );
    await assert.rejects(
      client.op('fork', { pid: 1 }),
      (e: AdminCallError) => e.code === 'SIGBUS' && e.status === 409,
    );
  });

  it('streams events over SSE', async () => {
    const got: Array<{ event: string; data: Record<string, unknown> }> = [];
    const sub = await client.subscribe((ev) => got.push(ev));
    backend.events.emit('event', {
      type: 'page-state',
      segid: 'n9:1',
      page: 0,
      state: 'shared',
      data: new Uint8Array(4096),
    });
    const end = Date.now() + 2000;
    while (got.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    sub.close();
    assert.equal(got[0]?.event, 'page-state');
    assert.equal(got[0]?.data.state, 'shared');
    assert.deepEqual(got[0]?.data.data, { bytes: 4096 }, 'page payloads are summarized, not dumped');
  });

  it('serves Prometheus metrics including admin request counts', async () => {
    const text = await client.get<string>('/metrics');
    assert.match(text, /xpmesh_admin_requests_total\{op="mmap",code="ok",node="n9"\} 1/);
    assert.match(text, /xpmesh_frames_free\{node="n9"\} 60/);
    assert.match(text, /xpmesh_peers\{state="up",node="n9"\} 2/);
    assert.match(text, /xpmesh_messages_total\{type="map",direction="in",node="n9"\} 3/);
    assert.match(text, /xpmesh_message_bytes_total\{type="map",direction="in",node="n9"\} 90/);
  });
});

describe('admin API bound off the default address (127.0.0.2)', () => {
  const { backend, calls } = stubBackend();
  const metrics = new InstanceMetrics('n9', snapshot);
  const server = new AdminServer(backend, {
    host: '127.0.0.2',
    port: 0,
    token: 's3cret',
    metrics,
    logger: silentLogger,
  });
  let url: string;
  before(async () => {
    url = await server.listen();
  });
  after(() => server.close());

  it('refuses mutations without the token, counts them, and changes nothing', async () => {
    await assert.rejects(
      new AdminClient(url).op('spawn', {}),
      (e: AdminCallError) => e.code === 'E_UNAUTHORIZED' && e.status === 401,
    );
    await assert.rejects(
      new AdminClient(url, 'wrong').op('make', { pid: 1, addr: 0, size: 4096 }),
      (e: AdminCallError) => e.code === 'E_UNAUTHORIZED',
    );
    assert.equal(calls.length, 0);
    const text = await new AdminClient(url).get<string>('/metrics');
    assert.match(text, /xpmesh_admin_refused_total\{reason="no_token",node="n9"\} 1/);
    assert.match(text, /xpmesh_admin_refused_total\{reason="bad_token",node="n9"\} 1/);
  });

  it('accepts mutations with the token; reads and views need none', async () => {
    await new AdminClient(url, 's3cret').op('spawn', {});
    assert.equal(calls.at(-1)?.op, 'spawn');
    await new AdminClient(url).op('read', { pid: 1, addr: 0, len: 4 });
    assert.equal(calls.at(-1)?.op, 'read');
    assert.equal((await new AdminClient(url).get<{ ok: boolean }>('/healthz')).ok, true);
  });

  it('refuses everything once shutting down', async () => {
    server.beginShutdown();
    await assert.rejects(
      new AdminClient(url, 's3cret').op('spawn', {}),
      (e: AdminCallError) => e.code === 'E_SHUTTING_DOWN' && e.status === 503,
    );
    await assert.rejects(new AdminClient(url).get('/healthz'), (e: AdminCallError) => e.status === 503);
  });
});
