/**
 * Child process of ws-masking.test.ts (run with and without WS_NO_BUFFER_UTIL=1, which `ws` reads
 * once, when it loads). Two ws peer networks exchange page-carrying frames in both directions (the
 * dialing side's frames are masked, the listening side unmasks them) at every size where `ws`
 * switches between its JavaScript and native masking, and check every byte. Prints one JSON line:
 * {masking: 'native' | 'js', frames, ok}.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Detach, MapReq, PageData, Release } from '../messages.js';
import { createWsPeerNetwork } from '../ws.js';

const KEY = 'ws-masking-cluster-key-0123456789';
const require = createRequire(import.meta.url);
// ws's masking module: its `mask` calls bufferutil when the native addon was loaded, else it is the
// JavaScript loop itself.
const bufferUtil = require(join(dirname(require.resolve('ws')), 'lib', 'buffer-util.js')) as {
  mask: (...a: unknown[]) => void;
};
const masking = String(bufferUtil.mask).includes('bufferUtil') ? 'native' : 'js';

/** Deterministic page content for (page, salt): any byte the masking got wrong changes it. */
function pageData(page: number, salt: number): Uint8Array {
  const out = new Uint8Array(4096);
  let x = (page * 2654435761 + salt * 40503 + 1) >>> 0;
  for (let i = 0; i < out.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

const b = await createWsPeerNetwork({ self: 'b', listen: { host: '127.0.0.1', port: 0 }, clusterKey: KEY });
const a = await createWsPeerNetwork({ self: 'a', peers: [{ node: 'b', url: b.address! }], clusterKey: KEY });
let frames = 0;
let ok = true;
try {
  await a.waitUp('b', 10_000);
  await b.waitUp('a', 10_000);
  // a dialed b: a's frames are masked. a answers b's maps with pages (masked replies) and sends b
  // detaches with dirty pages (masked requests); b checks what it receives.
  a.onRequest(async (_from, m) => {
    const req = m as MapReq;
    const pages: PageData[] = [];
    for (let i = 0; i < req.count; i++)
      pages.push({ page: req.page + i, version: 1, data: pageData(req.page + i, 1) });
    return { t: 'map-ok', access: 'r', pages, grants: pages.map((_, i) => i + 1) };
  });
  b.onRequest(async (_from, m) => {
    if (m.t === 'release') return { t: 'ok' };
    const d = m as Detach;
    for (const pd of d.dirty) if (!same(pd.data, pageData(pd.page, 2))) ok = false;
    return { t: 'ok' };
  });
  for (const count of [1, 2, 3, 16, 64]) {
    const r = await b.request<MapReq>('a', { t: 'map', apid: 'a:a1', page: count, count, access: 'r' });
    frames++;
    if (r.pages.length !== count) ok = false;
    for (const pd of r.pages) if (!same(pd.data, pageData(pd.page, 1))) ok = false;
    const dirty = Array.from({ length: count }, (_, i) => ({ page: i, version: 1, data: pageData(i, 2) }));
    await a.request<Detach>('b', { t: 'detach', apid: 'b:a1', ranges: [[0, count]], dirty });
    frames++;
  }
  // Requests of every small size (cid 1..64 chars) across ws's native-masking thresholds (24, 32,
  // 48 bytes), each answered with a page.
  for (let n = 1; n <= 64; n++) {
    const cid = 'c'.repeat(n);
    const r = await b.request<MapReq>('a', { t: 'map', apid: 'a:a1', page: 0, count: 1, access: 'r', cid });
    frames++;
    if (!same(r.pages[0].data, pageData(0, 1))) ok = false;
    // and a small masked frame the other way
    const rel = await a.request<Release>('b', { t: 'release', apid: 'b:a1', cid });
    frames++;
    if (rel.t !== 'ok' || rel.cid !== cid) ok = false;
  }
} finally {
  await a.close();
  await b.close();
}
console.log(JSON.stringify({ masking, frames, ok }));
