/**
 * WsConn.send frames small frames itself and writes them in one socket write (ws-transport.ts
 * writeDirect). The peers here are plain `ws` endpoints, whose receivers enforce RFC 6455: a client
 * frame must be masked, a server frame must not be; every length class (7-bit, 16-bit) and both size
 * limits of the direct path are crossed, and every byte is compared. The scratch buffer it copies
 * into is shared by all connections: a write Node could not finish must keep its bytes while another
 * connection sends. Masking: natively (bufferutil, installed here) from 48 bytes, in JavaScript below;
 * without bufferutil (WS_NO_BUFFER_UTIL=1) the JavaScript path alone, up to 512 bytes, which
 * ws-masking.test.ts runs (its child exchanges frames of every size both ways over these links).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import WebSocket, { WebSocketServer } from 'ws';
import type { Conn } from '../transport.js';
import { type WsConn, wsTransport } from '../ws-transport.js';

const payload = (n: number, salt: number): Uint8Array => {
  const out = new Uint8Array(n);
  let x = (n * 2654435761 + salt * 40503 + 1) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
};
const LENGTHS = [
  0, 1, 2, 3, 4, 5, 31, 124, 125, 126, 127, 511, 512, 513, 1000, 4096, 4200, 16383, 16384, 16385, 70_000,
];
const noop = { onPong() {}, onClose() {} };

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await tick();
  }
}

type Sock = { write(b: Uint8Array): boolean; pause(): void; resume(): void };
const sockOf = (c: WsConn) => (c.ws as unknown as { _socket: Sock })._socket;

describe('client frames (masked) to a plain ws server', () => {
  let wss: WebSocketServer;
  const got: Buffer[] = [];
  let conn: WsConn;
  before(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (s) => s.on('message', (d) => got.push(d as Buffer)));
    const t = wsTransport({ maxFrameBytes: 1 << 20 });
    conn = (await t.dial(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`, 5000)) as WsConn;
    conn.setHandlers({ onFrame() {}, ...noop });
  });
  after(async () => {
    conn.close(1000, 'done');
    await new Promise((r) => wss.close(r));
  });

  it('every length arrives intact, each with its own fresh mask', async () => {
    const sock = sockOf(conn);
    const written: Buffer[] = [];
    const write = sock.write;
    sock.write = function (this: Sock, b: Uint8Array) {
      written.push(Buffer.from(b));
      return write.call(this, b);
    } as Sock['write'];
    const sent: Uint8Array[] = [];
    try {
      for (let round = 0; round < 20; round++)
        for (const n of LENGTHS) {
          const p = payload(n, round);
          sent.push(p);
          let released = false;
          conn.send(p, () => {
            released = true;
          });
          if (n <= 512) assert.ok(released, 'a copied frame is given back at once');
        }
    } finally {
      sock.write = write;
    }
    await until(() => got.length === sent.length);
    for (let i = 0; i < sent.length; i++) assert.ok(got[i].equals(sent[i]), `frame ${i}`);
    // the frames written in one write (the direct path: header + masked payload): mask bit set, and
    // no two of them with the same key
    const keys = new Set<string>();
    let direct = 0;
    for (const w of written) {
      if (w.length < 2 || w[0] !== 0x82) continue;
      const len7 = w[1] & 0x7f;
      const hdr = len7 === 126 ? 4 : 2;
      const n = len7 === 126 ? w.readUInt16BE(2) : len7;
      if (w.length !== hdr + 4 + n) continue;
      assert.equal(w[1] & 0x80, 0x80, 'client frames are masked');
      keys.add(w.subarray(hdr, hdr + 4).toString('hex'));
      direct++;
    }
    // every frame up to 512 bytes (12 of LENGTHS) goes the direct way; with bufferutil up to 16 KiB
    assert.ok(direct >= 20 * 12, `small frames go the direct way (${direct})`);
    assert.ok(keys.size >= direct - 1, 'a fresh random key per frame');
  });
});

describe('server frames (unmasked) to a plain ws client', () => {
  let listener: { close(): Promise<void>; address: string };
  const conns: WsConn[] = [];
  const clients: WebSocket[] = [];
  const got: Buffer[][] = [[], []];
  before(async () => {
    const t = wsTransport({ listen: { host: '127.0.0.1', port: 0 }, maxFrameBytes: 1 << 20 });
    listener = await t.listen((c: Conn) => {
      c.setHandlers({ onFrame() {}, ...noop });
      conns.push(c as WsConn);
    });
    for (let k = 0; k < 2; k++) {
      const ws = new WebSocket(listener.address, { perMessageDeflate: false, maxPayload: 1 << 20 });
      await new Promise((r) => ws.once('open', r));
      ws.on('message', (d) => got[k].push(d as Buffer));
      clients.push(ws);
      await until(() => conns.length === k + 1);
    }
  });
  after(async () => {
    for (const c of clients) c.terminate();
    await listener.close();
  });

  it('every length arrives intact', async () => {
    const sent: Uint8Array[] = [];
    for (let round = 0; round < 5; round++)
      for (const n of LENGTHS) {
        const p = payload(n, round);
        sent.push(p);
        conns[0].send(p);
      }
    await until(() => got[0].length === sent.length);
    for (let i = 0; i < sent.length; i++) assert.ok(got[0][i].equals(sent[i]), `frame ${i}`);
  });

  it('a write Node could not finish keeps its bytes while another connection sends', async () => {
    got[0].length = 0;
    got[1].length = 0;
    // client 0 stops reading: conn 0's direct writes fill the kernel's buffers until one is only
    // partly written (Node keeps the rest, in the shared scratch buffer, unless it was replaced)
    const sock0 = (clients[0] as unknown as { _socket: Sock })._socket;
    sock0.pause();
    const sent0: Uint8Array[] = [];
    for (let i = 0; i < 20_000 && conns[0].bufferedAmount() === 0; i++) {
      const p = payload(16_000, i);
      sent0.push(p);
      conns[0].send(p);
    }
    assert.ok(conns[0].bufferedAmount() > 0, 'a direct write was left unfinished (the case under test)');
    // conn 1 writes direct frames now, through the scratch buffer
    const sent1: Uint8Array[] = [];
    for (let i = 0; i < 50; i++) {
      const p = payload(16_000, 100_000 + i);
      sent1.push(p);
      conns[1].send(p);
    }
    sock0.resume();
    await until(() => got[0].length === sent0.length && got[1].length === sent1.length, 30_000);
    for (let i = 0; i < sent0.length; i++) assert.ok(got[0][i].equals(sent0[i]), `conn 0 frame ${i}`);
    for (let i = 0; i < sent1.length; i++) assert.ok(got[1][i].equals(sent1[i]), `conn 1 frame ${i}`);
  });
});
