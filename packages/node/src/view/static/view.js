// xpmesh live view (docs/view.md). Plain browser JS, no dependencies, no build step: served as is by
// packages/node/src/view/serve.ts. Reads each instance's admin API (GET /status, GET /pages?segid=)
// and follows its Server-Sent Events (GET /events); every DOM/canvas update is batched into one
// requestAnimationFrame, so thousands of pages and bursts of messages stay cheap.

// ---- configuration --------------------------------------------------------------------------------

// Timing and bounds come from the server (VIEW_SETTINGS in serve.ts, written into the page's
// `xpmesh-view` meta tag): one table, quoted by docs/view.md.
const SETTINGS = JSON.parse(
  document.querySelector('meta[name="xpmesh-view"]')?.getAttribute('content') ?? 'null',
);
if (SETTINGS === null || typeof SETTINGS.statusPollMs !== 'number')
  throw new Error('xpmesh view: no settings in the page (serve it with viewHandler)');
const STATUS_POLL_MS = SETTINGS.statusPollMs; // /status is polled too: an attach, for one, emits no event
const REFRESH_DELAY_MS = SETTINGS.refreshDelayMs; // coalesce the refreshes that events trigger
const FETCH_TIMEOUT_MS = SETTINGS.fetchTimeoutMs;
const MAX_LOG = SETTINGS.maxLog; // rows kept in the message log
const MAX_FENCES = SETTINGS.maxFences;
const HIGHLIGHT_MS = SETTINGS.highlightMs; // a changed page is outlined this long
const MAX_HIGHLIGHT = SETTINGS.maxHighlight; // beyond this many at once, outlines would only add noise
const RETRY_MIN_MS = SETTINGS.retryMinMs;
const RETRY_MAX_MS = SETTINGS.retryMaxMs;
const RATE_WINDOW_MS = SETTINGS.rateWindowMs;
const REPLIES = new Set(['get-ok', 'map-ok', 'invalidate-ack', 'ok', 'error']);

/** Page states, in the driver's order (packages/driver/src/page-state.ts), plus 'unknown'. */
const STATES = ['home', 'shared', 'remote-exclusive', 'invalidating', 'swapped'];
const UNKNOWN = 255;
const COLORS = {
  home: '#cdd5de',
  shared: ['#8ec5f7', '#4b97e0', '#1c5fae'], // k = 1, 2, 3+
  'remote-exclusive': '#f08c00',
  invalidating: '#e03131',
  swapped: '#7048e8',
  unknown: '#ffffff',
};
const LEGEND = [
  { key: 'home', label: 'home only', color: COLORS.home },
  { key: 'shared1', label: 'read-shared by 1', color: COLORS.shared[0] },
  { key: 'shared2', label: 'by 2', color: COLORS.shared[1] },
  { key: 'shared3', label: 'by 3+', color: COLORS.shared[2] },
  { key: 'remote-exclusive', label: 'held for writing by a remote', color: COLORS['remote-exclusive'] },
  { key: 'invalidating', label: 'invalidating', color: COLORS.invalidating },
  { key: 'swapped', label: 'swapped out', color: COLORS.swapped },
];
const COUNT_LABELS = {
  home: 'home',
  shared: 'shared',
  'remote-exclusive': 'writing',
  invalidating: 'invalidating',
  swapped: 'swapped',
};

// ---- helpers ---------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs ?? {})) e.setAttribute(k, String(v));
  return e;
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(n % (1 << 20) ? 1 : 0)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 ? 1 : 0)} KiB`;
  return `${n} B`;
}

function fmtDuration(ms) {
  if (!Number.isFinite(ms)) return '?';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function fmtTime(t) {
  const d = new Date(t);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function fmtLatency(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  return ms < 10 ? `${ms.toFixed(2)} ms` : ms < 100 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

function num(x) {
  return typeof x === 'number' && Number.isFinite(x) ? x : 0;
}

function hex(n) {
  return typeof n === 'number' ? `0x${n.toString(16)}` : String(n);
}

async function getJson(url) {
  const res = await fetch(url, { cache: 'no-store', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`HTTP ${res.status} for ${url}`);
  return res.json();
}

/** The admin base URLs to watch: ?nodes= > <meta name="xpmesh-nodes"> > this page's origin. */
function nodeUrls() {
  const fromQuery = new URLSearchParams(location.search).get('nodes');
  const meta = document.querySelector('meta[name="xpmesh-nodes"]')?.getAttribute('content') ?? '';
  const raw = fromQuery ?? (meta.startsWith('%') ? '' : meta);
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const urls = [];
  for (const s of list.length ? list : [location.origin]) {
    try {
      const u = new URL(s, location.href);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') continue;
      const base = (u.origin + u.pathname).replace(/\/+$/, '');
      if (!urls.includes(base)) urls.push(base);
    } catch {
      console.warn(`xpmesh view: ignoring ${s}: not a URL`);
    }
  }
  return urls;
}

// ---- model -----------------------------------------------------------------------------------------

/** One watched instance, keyed by its admin base URL. */
class Instance {
  constructor(base) {
    this.base = base;
    this.label = base.replace(/^https?:\/\//, '');
    this.name = undefined; // status.node once known
    this.status = undefined;
    this.reachable = undefined; // last /status answered?
    this.stream = 'connecting'; // 'live' | 'reconnecting' | 'connecting'
    this.error = '';
    this.es = undefined;
    this.retryMs = RETRY_MIN_MS;
    this.statusTimer = undefined;
    this.statusSoon = false;
    this.statusBusy = false;
    this.statusAgain = false;
    this.card = undefined;
  }
  get display() {
    return this.name ?? this.label;
  }
}

/** One exported segment, drawn at its home instance. */
class Segment {
  constructor(segid) {
    this.segid = segid;
    this.home = undefined; // Instance (watched home) or undefined
    this.homeName = segid.split(':')[0];
    this.info = undefined; // driver.status().segments[i] at the home
    this.npages = 0;
    this.states = new Uint8Array(0);
    this.sharers = []; // page → string[]
    this.writer = []; // page → string | null
    this.version = [];
    this.lastEvent = []; // page → { event, at }
    this.eventSeq = new Uint32Array(0);
    this.highlight = new Map(); // page → until (ms)
    this.attachments = []; // { node, pid, vaddr, size, access }
    this.seq = 0;
    this.pagesTimer = undefined;
    this.pagesBusy = false;
    this.pagesAgain = false;
    this.seen = 0; // status generation that last listed it
    this.dom = undefined;
    this.dirty = true;
    this.layout = { cell: 10, gap: 2, cols: 1, width: 0 };
  }

  resize(n) {
    if (n === this.npages) return;
    const states = new Uint8Array(n).fill(UNKNOWN);
    states.set(this.states.subarray(0, Math.min(n, this.npages)));
    const seqs = new Uint32Array(n);
    seqs.set(this.eventSeq.subarray(0, Math.min(n, this.npages)));
    this.states = states;
    this.eventSeq = seqs;
    this.sharers.length = n;
    this.writer.length = n;
    this.version.length = n;
    this.lastEvent.length = n;
    this.npages = n;
    this.dirty = true;
  }

  stateOf(p) {
    const s = this.states[p];
    return s === UNKNOWN ? 'unknown' : STATES[s];
  }

  colorOf(p) {
    const s = this.stateOf(p);
    if (s === 'shared') {
      const k = this.sharers[p]?.length ?? 1;
      return COLORS.shared[Math.max(0, Math.min(2, k - 1))];
    }
    return COLORS[s];
  }

  counts() {
    const c = { home: 0, shared: 0, 'remote-exclusive': 0, invalidating: 0, swapped: 0, unknown: 0 };
    for (let p = 0; p < this.npages; p++) c[this.stateOf(p)]++;
    return c;
  }
}

const instances = [];
const segments = new Map();
const pendingLog = [];
const pendingFences = [];
const msgTimes = [];
let statusGeneration = 0;

const ui = {
  dedupe: true,
  showStates: true,
  paused: false,
  dirtyInstances: true,
  dirtyLinks: true,
  dirtySegments: true,
  frame: 0,
};

function watchedNames() {
  const s = new Set();
  for (const i of instances) if (i.name) s.add(i.name);
  return s;
}

function instanceByName(name) {
  return instances.find((i) => i.name === name);
}

// ---- render scheduling -----------------------------------------------------------------------------

function schedule() {
  if (ui.frame) return;
  ui.frame = requestAnimationFrame(render);
}

function render() {
  ui.frame = 0;
  const now = performance.now();
  if (ui.dirtyInstances) renderInstances();
  if (ui.dirtyLinks) renderLinks();
  if (ui.dirtySegments) renderSegmentList();
  let again = false;
  for (const seg of segments.values()) {
    if (seg.highlight.size) {
      for (const [p, until] of seg.highlight) if (until <= now) seg.highlight.delete(p);
      seg.dirty = true;
      again = true;
    }
    if (seg.dirty) drawSegment(seg);
  }
  renderLog();
  renderFences();
  renderSummary();
  if (again) schedule();
}

// ---- data: /status --------------------------------------------------------------------------------

function refreshStatus(inst, delay = REFRESH_DELAY_MS) {
  if (inst.statusBusy) {
    inst.statusAgain = true;
    return;
  }
  // throttle, not debounce: a burst of events must not push the refresh back (or churn timers)
  if (inst.statusSoon && delay > 0) return;
  clearTimeout(inst.statusTimer);
  inst.statusSoon = true;
  inst.statusTimer = setTimeout(() => loadStatus(inst), delay);
}

async function loadStatus(inst) {
  clearTimeout(inst.statusTimer);
  inst.statusSoon = false;
  inst.statusBusy = true;
  try {
    const st = await getJson(`${inst.base}/status`);
    inst.status = st;
    inst.reachable = true;
    inst.error = '';
    if (typeof st.node === 'string') inst.name = st.node;
    applyStatus(inst, st);
  } catch (err) {
    if (inst.reachable !== false) console.warn(`xpmesh view: ${inst.base}/status: ${err.message}`);
    inst.reachable = false;
    inst.error = err.name === 'TimeoutError' ? 'timed out' : 'unreachable';
  } finally {
    inst.statusBusy = false;
    ui.dirtyInstances = true;
    ui.dirtyLinks = true;
    schedule();
    const again = inst.statusAgain;
    inst.statusAgain = false;
    inst.statusSoon = again;
    inst.statusTimer = setTimeout(() => loadStatus(inst), again ? REFRESH_DELAY_MS : STATUS_POLL_MS);
  }
}

function applyStatus(inst, st) {
  const gen = ++statusGeneration;
  const drv = st.driver ?? {};
  const pageSize = 4096;
  // segments this instance is home of
  for (const s of drv.segments ?? []) {
    let seg = segments.get(s.segid);
    if (!seg) {
      seg = new Segment(s.segid);
      segments.set(s.segid, seg);
      ui.dirtySegments = true;
    }
    const wasHomeless = seg.home !== inst;
    seg.home = inst;
    seg.homeName = inst.display;
    if (JSON.stringify(seg.info) !== JSON.stringify(s)) ui.dirtySegments = true;
    seg.info = s;
    seg.seen = gen;
    seg.resize(Math.ceil(num(s.size) / pageSize));
    if (wasHomeless) refreshPages(seg, 0);
  }
  // segments gone from their home
  for (const [id, seg] of segments) {
    if (seg.home === inst && seg.seen !== gen) {
      seg.home = undefined;
      seg.info = undefined;
      seg.resize(0);
      ui.dirtySegments = true;
    }
    // attachments: rebuild this instance's share of them
    const before = seg.attachments.length;
    seg.attachments = seg.attachments.filter((a) => a.inst !== inst);
    if (seg.attachments.length !== before) ui.dirtySegments = true;
    if (!seg.home && seg.attachments.length === 0 && !(drv.attachments ?? []).some((a) => a.segid === id)) {
      segments.delete(id);
      ui.dirtySegments = true;
    }
  }
  const access = new Map((drv.grants ?? []).map((g) => [g.apid, g.access]));
  for (const a of drv.attachments ?? []) {
    let seg = segments.get(a.segid);
    if (!seg) {
      seg = new Segment(a.segid);
      segments.set(a.segid, seg);
    }
    seg.attachments.push({
      inst,
      node: inst.display,
      pid: a.pid,
      vaddr: a.vaddr,
      size: a.size,
      access: access.get(a.apid) ?? (a.local ? 'local' : '?'),
    });
    ui.dirtySegments = true;
  }
}

// ---- data: /pages ---------------------------------------------------------------------------------

function refreshPages(seg, delay = REFRESH_DELAY_MS) {
  if (!seg.home) return;
  if (seg.pagesBusy) {
    seg.pagesAgain = true;
    return;
  }
  if (seg.pagesTimer !== undefined) return;
  seg.pagesTimer = setTimeout(() => loadPages(seg), delay);
}

async function loadPages(seg) {
  seg.pagesTimer = undefined;
  const inst = seg.home;
  if (!inst) return;
  seg.pagesBusy = true;
  const startSeq = seg.seq;
  try {
    const pages = await getJson(`${inst.base}/pages?segid=${encodeURIComponent(seg.segid)}`);
    if (!Array.isArray(pages)) throw new Error('not a page list');
    if (pages.length > seg.npages) seg.resize(pages.length);
    for (const pg of pages) {
      const p = pg.page;
      if (!(p >= 0 && p < seg.npages)) continue;
      seg.sharers[p] = Array.isArray(pg.sharers) ? pg.sharers : [];
      seg.writer[p] = pg.writer ?? null;
      seg.version[p] = pg.version;
      // an event newer than this snapshot wins for the state
      if (seg.eventSeq[p] > startSeq) continue;
      const i = STATES.indexOf(pg.state);
      seg.states[p] = i < 0 ? UNKNOWN : i;
    }
    seg.dirty = true;
    schedule();
  } catch (err) {
    console.warn(`xpmesh view: pages of ${seg.segid}: ${err.message}`);
  } finally {
    seg.pagesBusy = false;
    if (seg.pagesAgain) {
      seg.pagesAgain = false;
      refreshPages(seg);
    }
  }
}

// ---- data: /events ----------------------------------------------------------------------------------

function connect(inst) {
  inst.es?.close();
  const es = new EventSource(`${inst.base}/events`);
  inst.es = es;
  es.onopen = () => {
    const wasDown = inst.stream !== 'live';
    inst.stream = 'live';
    inst.retryMs = RETRY_MIN_MS;
    ui.dirtyInstances = true;
    schedule();
    // events may have been missed while the stream was down: re-read everything
    if (wasDown) {
      refreshStatus(inst, 0);
      for (const seg of segments.values()) if (seg.home === inst) refreshPages(seg, 0);
    }
  };
  es.onerror = () => {
    inst.stream = 'reconnecting';
    ui.dirtyInstances = true;
    schedule();
    // The browser retries by itself unless the stream failed for good (CLOSED): then we do, backing off.
    if (es.readyState === EventSource.CLOSED) {
      const wait = inst.retryMs;
      inst.retryMs = Math.min(inst.retryMs * 2, RETRY_MAX_MS);
      setTimeout(() => {
        if (inst.es === es) connect(inst);
      }, wait);
    }
  };
  const on = (type, fn) =>
    es.addEventListener(type, (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return; // a malformed frame is skipped
      }
      if (data && typeof data === 'object') fn(data);
    });
  on('page-state', (d) => onPageState(inst, d));
  on('message', (d) => onMessage(inst, d));
  on('fence', (d) => onFence(inst, d));
  on('lost-dirty', (d) => onLostDirty(inst, d));
  on('peer', (d) => onPeer(inst, d));
  on('process', (d) => onProcess(inst, d));
}

function onPageState(inst, d) {
  const seg = segments.get(d.segid);
  if (!seg || seg.home !== inst || !(d.page >= 0 && d.page < seg.npages)) {
    refreshStatus(inst); // a segment we do not know yet: /status then /pages will bring it
    return;
  }
  const p = d.page;
  const i = STATES.indexOf(d.to);
  seg.states[p] = i < 0 ? UNKNOWN : i;
  seg.eventSeq[p] = ++seg.seq;
  if (d.to !== 'shared') seg.sharers[p] = [];
  if (d.to !== 'remote-exclusive') seg.writer[p] = null;
  seg.lastEvent[p] = { event: d.event, at: Date.now() };
  if (seg.highlight.size < MAX_HIGHLIGHT) seg.highlight.set(p, performance.now() + HIGHLIGHT_MS);
  seg.dirty = true;
  refreshPages(seg); // who shares it, which version
  if (ui.showStates)
    pushLog({
      kind: 'state',
      at: Date.now(),
      node: inst.display,
      text: `${d.segid} p${p}`,
      from: d.from,
      to: d.to,
      event: d.event,
    });
  schedule();
}

function onMessage(inst, d) {
  const type = String(d.msg ?? d.type ?? '?');
  const dir = String(d.direction ?? d.dir ?? '?');
  const peer = String(d.peer ?? '?');
  const now = Date.now();
  msgTimes.push(now);
  refreshStatus(inst);
  if (ui.dedupe && watchedNames().has(peer)) {
    // Both ends are watched: show each message once — a request or one-way message at its sender,
    // a reply at the requester (which knows the round-trip latency).
    if (dir === 'out' && REPLIES.has(type)) return schedule();
    if (dir === 'in' && !REPLIES.has(type)) return schedule();
  }
  const self = inst.display;
  pushLog({
    kind: 'msg',
    at: now,
    from: dir === 'out' ? self : peer,
    to: dir === 'out' ? peer : self,
    type,
    latencyMs: d.latencyMs,
    cid: d.cid ?? '',
  });
  schedule();
}

function onFence(inst, d) {
  pendingFences.push({
    at: Date.now(),
    node: inst.display,
    text: `fenced ${d.node ?? '?'} (epoch ${d.epoch ?? '?'})${d.why || d.reason ? ` — ${d.why ?? d.reason}` : ''}`,
    kind: 'fence',
  });
  pushLog({
    kind: 'sys',
    at: Date.now(),
    node: inst.display,
    text: `fenced ${d.node} (${d.why ?? d.reason ?? ''})`,
    level: 'bad',
  });
  refreshStatus(inst, 0);
  schedule();
}

function onLostDirty(inst, d) {
  const count = num(d.pages ?? d.count) || 1;
  pendingFences.push({
    at: Date.now(),
    node: inst.display,
    text: `lost dirty ${count > 1 ? `${count} pages` : `page ${d.page ?? '?'}`} of ${d.segid ?? '?'} with ${d.node ?? '?'} — reverted to last written-back data`,
    kind: 'lost',
  });
  refreshStatus(inst, 0);
  schedule();
}

function onPeer(inst, d) {
  pushLog({
    kind: 'sys',
    at: Date.now(),
    node: inst.display,
    text: `link to ${d.peer} ${d.state}${d.why ? ` (${d.why})` : ''}, epoch ${d.epoch}`,
    level: d.state === 'up' ? 'good' : 'bad',
  });
  refreshStatus(inst, 0);
  schedule();
}

function onProcess(inst, d) {
  const text =
    d.event === 'fork' ? `pid ${d.parent} forked pid ${d.pid}` : `pid ${d.pid} ${d.event ?? 'changed'}`;
  pushLog({ kind: 'sys', at: Date.now(), node: inst.display, text });
  refreshStatus(inst);
  schedule();
}

function pushLog(row) {
  pendingLog.push(row);
  // trimmed in steps, not per row: a burst of thousands of events stays linear
  if (pendingLog.length > 2 * MAX_LOG) pendingLog.splice(0, pendingLog.length - MAX_LOG);
}

// ---- rendering: instances ---------------------------------------------------------------------------

function renderInstances() {
  ui.dirtyInstances = false;
  const box = $('instances');
  for (const inst of instances) {
    if (!inst.card) {
      inst.card = el('article', 'card');
      box.append(inst.card);
    }
    fillCard(inst);
  }
}

function kv(parent, k, v, cls) {
  const d = el('div', `kv${cls ? ` ${cls}` : ''}`);
  d.append(el('span', 'k', k), el('span', 'v', v));
  parent.append(d);
  return d;
}

function health(inst) {
  if (inst.reachable === false) return { cls: 'bad', text: inst.error || 'unreachable' };
  if (inst.reachable === undefined) return { cls: 'warn', text: 'connecting' };
  if (inst.stream !== 'live') return { cls: 'warn', text: `events ${inst.stream}` };
  return { cls: 'good', text: 'live' };
}

function mergedPeers(st) {
  const byNode = new Map();
  for (const p of st?.peers ?? []) byNode.set(p.node, { ...p });
  for (const p of st?.driver?.peers ?? []) {
    const q = byNode.get(p.node) ?? { node: p.node, epoch: p.epoch, state: p.state };
    q.fencedBelow = p.fencedBelow;
    byNode.set(p.node, q);
  }
  return [...byNode.values()].sort((a, b) => String(a.node).localeCompare(String(b.node)));
}

function fillCard(inst) {
  const card = inst.card;
  const st = inst.status;
  const h = health(inst);
  card.replaceChildren();
  card.dataset.node = inst.name ?? '';
  card.dataset.health = h.cls;
  const head = el('header', 'card-head');
  const dot = el('span', `dot ${h.cls}`);
  dot.title = h.text;
  head.append(dot, el('strong', 'name', inst.display), el('span', `state ${h.cls}`, h.text));
  card.append(head);
  card.append(el('div', 'url', inst.base));
  if (!st) return;
  const mem = st.memory ?? {};
  const drv = st.driver ?? {};
  const c = drv.counters ?? {};
  const grid = el('div', 'kvs');
  kv(
    grid,
    'uptime',
    `${fmtDuration(st.uptimeMs)} · ${(st.processes ?? []).filter((p) => p.state !== 'exited').length} proc`,
  );
  const frames = num(mem.frames);
  const used = frames - num(mem.freeFrames);
  const memRow = kv(grid, 'frames', `${used} / ${frames}`);
  memRow.title = `${used} of ${frames} page frames in use`;
  const bar = el('span', 'bar');
  const fill = el('span', 'bar-fill');
  fill.style.width = `${frames ? Math.round((100 * used) / frames) : 0}%`;
  bar.append(fill);
  memRow.append(bar);
  kv(grid, 'swap', `${num(mem.swap?.used)} / ${num(mem.swap?.slots)} slots`);
  kv(grid, 'exports', `${(drv.segments ?? []).length} seg · ${num(drv.rmap?.entries)} rmap`);
  kv(grid, 'faults', `${num(c.remoteFaults)} remote · ${num(c.homeFaults)} home`);
  const inv = kv(
    grid,
    'invalidate',
    `${num(c.invalidationsSent)} sent · ${num(c.invalidationsAcked)} ack · ${num(c.recalls)} recall`,
  );
  inv.title = 'invalidations sent, acks received, recalls of pages held for writing';
  const f = el('div', 'kv');
  f.append(
    el('span', 'k', 'fences'),
    el('span', `v${num(c.fences) ? ' warnv' : ''}`, num(c.fences)),
    el('span', 'k2', 'lost dirty'),
    el('span', `v${num(c.lostDirtyPages) ? ' badv' : ''}`, num(c.lostDirtyPages)),
  );
  grid.append(f);
  card.append(grid);

  const atts = drv.attachments ?? [];
  if (atts.length) {
    const ul = el('ul', 'atts');
    const access = new Map((drv.grants ?? []).map((g) => [g.apid, g.access]));
    for (const a of atts) {
      const li = el(
        'li',
        'att',
        `pid ${a.pid} ↦ ${a.segid} @${hex(a.vaddr)} ${fmtBytes(a.size)} ${access.get(a.apid) ?? '?'}`,
      );
      li.dataset.attach = a.segid;
      ul.append(li);
    }
    card.append(el('div', 'sub-h', 'attachments'), ul);
  }

  const peers = mergedPeers(st);
  if (peers.length) {
    const t = el('table', 'peers');
    const hr = el('tr');
    for (const k of ['peer', 'link', 'epoch', 'seen', 'pending']) hr.append(el('th', '', k));
    t.append(hr);
    for (const p of peers) {
      const tr = el('tr');
      tr.dataset.peer = p.node;
      tr.dataset.state = p.state;
      const e = String(p.epoch ?? '');
      const epoch = el('td', 'mono', e.length > 7 ? `…${e.slice(-6)}` : e);
      epoch.title = `epoch ${e}${p.fencedBelow ? ` · messages from epochs below ${p.fencedBelow} are refused` : ''}`;
      tr.append(
        el('td', 'mono', p.node),
        el('td', `st ${linkClass(p.state)}`, p.state),
        epoch,
        el('td', 'mono', p.lastSeenMs === undefined ? '' : `${Math.round(p.lastSeenMs)} ms`),
        el('td', 'mono', p.outstanding ?? ''),
      );
      t.append(tr);
    }
    card.append(t);
  }
}

function linkClass(state) {
  return state === 'up' ? 'good' : state === 'connecting' ? 'warn' : state ? 'bad' : 'muted';
}

// ---- rendering: the link diagram --------------------------------------------------------------------

function renderLinks() {
  ui.dirtyLinks = false;
  const box = $('links');
  const names = [];
  const view = new Map(); // "a|b" → state as a sees b
  for (const inst of instances) {
    const n = inst.display;
    if (!names.includes(n)) names.push(n);
    for (const p of mergedPeers(inst.status)) {
      if (!names.includes(p.node)) names.push(p.node);
      view.set(`${n}|${p.node}`, p.state);
    }
  }
  const W = 220;
  const H = 200;
  const r = names.length <= 1 ? 0 : 68;
  const pos = new Map(
    names.map((n, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, names.length);
      return [n, { x: W / 2 + r * Math.cos(a), y: H / 2 + r * Math.sin(a) }];
    }),
  );
  box.setAttribute('viewBox', `0 0 ${W} ${H}`);
  box.replaceChildren();
  for (let i = 0; i < names.length; i++) {
    for (let j = i + 1; j < names.length; j++) {
      const a = names[i];
      const b = names[j];
      const ab = view.get(`${a}|${b}`);
      const ba = view.get(`${b}|${a}`);
      if (ab === undefined && ba === undefined) continue;
      const states = [ab, ba].filter((s) => s !== undefined);
      const cls = states.every((s) => s === 'up')
        ? 'good'
        : states.some((s) => s === 'down' || s === 'fenced')
          ? 'bad'
          : 'warn';
      const pa = pos.get(a);
      const pb = pos.get(b);
      const line = svg('line', { x1: pa.x, y1: pa.y, x2: pb.x, y2: pb.y, class: `link ${cls}` });
      const title = svg('title');
      title.textContent = `${a} sees ${b}: ${ab ?? 'not watched'} · ${b} sees ${a}: ${ba ?? 'not watched'}`;
      line.append(title);
      box.append(line);
    }
  }
  for (const n of names) {
    const p = pos.get(n);
    const inst = instanceByName(n) ?? instances.find((i) => i.display === n);
    const cls = inst ? health(inst).cls : 'muted';
    const g = svg('g', { class: `vertex ${cls}` });
    g.append(svg('circle', { cx: p.x, cy: p.y, r: 22 }));
    const t = svg('text', { x: p.x, y: p.y + 4, 'text-anchor': 'middle' });
    t.textContent = n.length > 8 ? `${n.slice(0, 7)}…` : n;
    g.append(t);
    const title = svg('title');
    title.textContent = inst ? `${n} — ${health(inst).text}` : `${n} (not watched)`;
    g.append(title);
    box.append(g);
  }
}

// ---- rendering: segments ----------------------------------------------------------------------------

function renderSegmentList() {
  ui.dirtySegments = false;
  const box = $('segments');
  const list = [...segments.values()].sort((a, b) =>
    a.segid.localeCompare(b.segid, undefined, { numeric: true }),
  );
  const keep = new Set(list.map((s) => s.dom?.root));
  for (const child of [...box.children]) if (!keep.has(child)) child.remove();
  if (list.length === 0) {
    box.append(el('p', 'empty', 'no exported segment yet'));
    return;
  }
  for (const seg of list) {
    if (!seg.dom) buildSegmentDom(seg);
    box.append(seg.dom.root); // keeps sorted order (moves existing nodes)
    fillSegmentHead(seg);
    seg.dirty = true;
  }
}

function buildSegmentDom(seg) {
  const root = el('article', 'seg');
  root.dataset.segid = seg.segid;
  const head = el('header', 'seg-head');
  const counts = el('div', 'counts');
  const atts = el('div', 'seg-atts');
  const wrap = el('div', 'grid-wrap');
  const canvas = el('canvas', 'grid');
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', `pages of segment ${seg.segid}`);
  wrap.append(canvas);
  root.append(head, atts, counts, wrap);
  seg.dom = { root, head, counts, atts, wrap, canvas };
  canvas.addEventListener('mousemove', (e) => showTip(seg, e));
  canvas.addEventListener('mouseleave', () => {
    $('tip').hidden = true;
  });
  new ResizeObserver(() => {
    seg.dirty = true;
    schedule();
  }).observe(wrap);
}

function fillSegmentHead(seg) {
  const { head, atts } = seg.dom;
  head.replaceChildren();
  head.append(el('strong', 'segid', seg.segid));
  if (seg.info) {
    const i = seg.info;
    head.append(
      el(
        'span',
        'meta',
        `home ${seg.homeName} · pid ${i.pid} at ${hex(i.vaddr)} · ${seg.npages.toLocaleString()} pages (${fmtBytes(i.size)}) · mode ${Number(i.mode).toString(8)} · ${i.permits} permit${i.permits === 1 ? '' : 's'}`,
      ),
    );
  } else {
    const gone = instanceByName(seg.homeName) !== undefined;
    head.append(
      el(
        'span',
        'meta muted',
        gone
          ? `home ${seg.homeName} no longer exports it`
          : `home ${seg.homeName} is not watched — no page states`,
      ),
    );
  }
  atts.replaceChildren();
  if (seg.attachments.length === 0) atts.append(el('span', 'muted', 'not attached by any watched instance'));
  for (const a of seg.attachments) {
    const chip = el(
      'span',
      'chip',
      `attached at ${a.node}: pid ${a.pid} · ${fmtBytes(a.size)} · ${a.access}`,
    );
    chip.dataset.node = a.node;
    atts.append(chip);
  }
}

function drawSegment(seg) {
  seg.dirty = false;
  if (!seg.dom) return;
  const { canvas, wrap, counts } = seg.dom;
  // counts line (also what tests read)
  const c = seg.counts();
  counts.replaceChildren();
  for (const [k, label] of Object.entries(COUNT_LABELS)) {
    const s = el('span', `count${c[k] ? '' : ' zero'}`);
    s.dataset.count = k;
    s.dataset.value = String(c[k]);
    const sw = el('i', 'sw');
    sw.style.background = k === 'shared' ? COLORS.shared[1] : COLORS[k];
    s.append(sw, el('span', '', `${label} ${c[k].toLocaleString()}`));
    counts.append(s);
  }
  const n = seg.npages;
  if (n === 0) {
    canvas.width = 0;
    canvas.height = 0;
    return;
  }
  const width = Math.max(100, wrap.clientWidth);
  const cell = n <= 256 ? 18 : n <= 1024 ? 12 : n <= 4096 ? 8 : n <= 16384 ? 5 : 3;
  const gap = cell >= 8 ? 2 : 1;
  const cols = Math.max(1, Math.floor((width + gap) / (cell + gap)));
  const rows = Math.ceil(n / cols);
  const cssW = cols * (cell + gap) - gap;
  const cssH = rows * (cell + gap) - gap;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.width = `${cssW}px`;
    canvas.style.height = `${cssH}px`;
  }
  seg.layout = { cell, gap, cols, width: cssW };
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  let last = '';
  for (let p = 0; p < n; p++) {
    const color = seg.colorOf(p);
    if (color !== last) {
      ctx.fillStyle = color;
      last = color;
    }
    ctx.fillRect((p % cols) * (cell + gap), Math.floor(p / cols) * (cell + gap), cell, cell);
  }
  // unknown pages get an outline so white cells are visible
  ctx.strokeStyle = '#adb5bd';
  ctx.lineWidth = 1;
  for (let p = 0; p < n; p++) {
    if (seg.states[p] !== UNKNOWN) continue;
    ctx.strokeRect(
      (p % cols) * (cell + gap) + 0.5,
      Math.floor(p / cols) * (cell + gap) + 0.5,
      cell - 1,
      cell - 1,
    );
  }
  // sharer counts in big enough cells
  if (cell >= 12) {
    ctx.fillStyle = '#fff';
    ctx.font = `600 ${Math.round(cell * 0.62)}px system-ui, sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    for (let p = 0; p < n; p++) {
      const k = seg.sharers[p]?.length ?? 0;
      if (seg.stateOf(p) !== 'shared' || k < 2) continue;
      ctx.fillText(
        String(k),
        (p % cols) * (cell + gap) + cell / 2,
        Math.floor(p / cols) * (cell + gap) + cell / 2 + 0.5,
      );
    }
  }
  // recently changed pages
  if (seg.highlight.size) {
    ctx.strokeStyle = '#111';
    ctx.lineWidth = cell >= 8 ? 2 : 1;
    for (const p of seg.highlight.keys()) {
      if (p >= n) continue;
      const o = ctx.lineWidth / 2;
      ctx.strokeRect(
        (p % cols) * (cell + gap) + o,
        Math.floor(p / cols) * (cell + gap) + o,
        cell - 2 * o,
        cell - 2 * o,
      );
    }
  }
}

function showTip(seg, e) {
  const tip = $('tip');
  const { cell, gap, cols } = seg.layout;
  const rect = seg.dom.canvas.getBoundingClientRect();
  const x = e.clientX - rect.left;
  const y = e.clientY - rect.top;
  const col = Math.floor(x / (cell + gap));
  const row = Math.floor(y / (cell + gap));
  const p = row * cols + col;
  if (col < 0 || col >= cols || p < 0 || p >= seg.npages) {
    tip.hidden = true;
    return;
  }
  const s = seg.stateOf(p);
  const parts = [`${seg.segid} page ${p}`, s];
  if (s === 'shared') parts.push(`read copies at ${(seg.sharers[p] ?? []).join(', ') || '?'}`);
  if (seg.writer[p]) parts.push(`writer ${seg.writer[p]}`);
  if (seg.version[p] !== undefined) parts.push(`version ${seg.version[p]}`);
  const le = seg.lastEvent[p];
  if (le) parts.push(`last: ${le.event}, ${((Date.now() - le.at) / 1000).toFixed(1)} s ago`);
  tip.textContent = parts.join(' · ');
  tip.hidden = false;
  tip.style.left = `${Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8)}px`;
  tip.style.top = `${e.clientY + 16}px`;
}

// ---- rendering: log, fences, summary -----------------------------------------------------------------

function msgClass(type) {
  if (type === 'error') return 'm-err';
  if (type.startsWith('invalidate')) return type === 'invalidate' ? 'm-inv' : 'm-ack';
  if (type.startsWith('map')) return 'm-map';
  if (type.startsWith('get')) return 'm-get';
  if (type === 'segment-gone') return 'm-gone';
  return 'm-other';
}

function renderLog() {
  if (ui.paused || pendingLog.length === 0) return;
  const list = $('log');
  const frag = document.createDocumentFragment();
  for (let i = pendingLog.length - 1; i >= Math.max(0, pendingLog.length - MAX_LOG); i--) {
    const r = pendingLog[i];
    const li = el('li', `row ${r.kind}`);
    li.append(el('span', 't', fmtTime(r.at)));
    if (r.kind === 'msg') {
      li.dataset.type = r.type;
      li.append(
        el('span', 'route', `${r.from} → ${r.to}`),
        el('span', `type ${msgClass(r.type)}`, r.type),
        el('span', 'lat', fmtLatency(r.latencyMs)),
        el('span', 'cid', r.cid),
      );
    } else if (r.kind === 'state') {
      li.dataset.type = 'state';
      li.title = `at ${r.node}: ${r.text} ${r.from} → ${r.to} (${r.event})`;
      li.append(
        el('span', 'route', r.text),
        el('span', 'type m-state', r.event),
        el('span', 'desc', `${COUNT_LABELS[r.from] ?? r.from} → ${COUNT_LABELS[r.to] ?? r.to}`),
      );
    } else {
      li.append(el('span', 'route', r.node), el('span', `desc ${r.level ?? ''}`, r.text));
    }
    frag.append(li);
  }
  pendingLog.length = 0;
  list.prepend(frag);
  while (list.childElementCount > MAX_LOG) list.lastElementChild.remove();
}

function renderFences() {
  const totals = $('fence-totals');
  totals.replaceChildren();
  for (const inst of instances) {
    const c = inst.status?.driver?.counters ?? {};
    const d = el('div', 'ft');
    d.dataset.node = inst.name ?? '';
    d.append(
      el('strong', '', inst.display),
      el('span', num(c.fences) ? 'warnv' : '', `fences ${num(c.fences)}`),
      el('span', num(c.lostDirtyPages) ? 'badv' : '', `lost dirty pages ${num(c.lostDirtyPages)}`),
    );
    totals.append(d);
  }
  if (pendingFences.length === 0) return;
  const list = $('fences');
  list.querySelector('.empty')?.remove();
  for (const f of pendingFences) {
    const li = el('li', f.kind);
    li.append(el('span', 't', fmtTime(f.at)), el('strong', '', f.node), el('span', '', f.text));
    list.prepend(li);
  }
  pendingFences.length = 0;
  while (list.childElementCount > MAX_FENCES) list.lastElementChild.remove();
}

function renderSummary() {
  const now = Date.now();
  while (msgTimes.length && msgTimes[0] < now - RATE_WINDOW_MS) msgTimes.shift();
  const live = instances.filter((i) => health(i).cls === 'good').length;
  let pages = 0;
  for (const s of segments.values()) pages += s.npages;
  const rate = msgTimes.length / (RATE_WINDOW_MS / 1000);
  $('summary').textContent =
    `${instances.length} instance${instances.length === 1 ? '' : 's'} · ${live} live · ` +
    `${segments.size} segment${segments.size === 1 ? '' : 's'} · ${pages.toLocaleString()} pages · ` +
    `${rate < 10 ? rate.toFixed(1) : Math.round(rate)} msg/s`;
  $('summary').dataset.live = String(live);
}

function renderLegend() {
  const ul = $('legend');
  for (const item of LEGEND) {
    const li = el('li', 'lg');
    const sw = el('i', 'sw');
    sw.style.background = item.color;
    li.append(sw, el('span', '', item.label));
    ul.append(li);
  }
}

// ---- start ------------------------------------------------------------------------------------------

function start() {
  renderLegend();
  const dedupe = $('dedupe');
  dedupe.addEventListener('change', () => {
    ui.dedupe = dedupe.checked;
  });
  const states = $('show-states');
  states.addEventListener('change', () => {
    ui.showStates = states.checked;
  });
  const pause = $('pause');
  pause.addEventListener('change', () => {
    ui.paused = pause.checked;
    schedule();
  });
  for (const base of nodeUrls()) instances.push(new Instance(base));
  for (const inst of instances) {
    loadStatus(inst);
    connect(inst);
  }
  // keep summary rate and uptimes moving even when idle
  setInterval(() => {
    ui.dirtyInstances = true;
    schedule();
  }, 1000);
  schedule();
}

/** Read-only handle for debugging from the console (and for the browser test). */
window.xpmeshView = Object.freeze({
  instances: () =>
    instances.map((i) => ({ base: i.base, name: i.name, health: health(i).text, stream: i.stream })),
  segments: () => [...segments.keys()],
  page: (segid, p) => {
    const seg = segments.get(segid);
    if (!seg || !(p >= 0 && p < seg.npages)) return undefined;
    return {
      state: seg.stateOf(p),
      sharers: [...(seg.sharers[p] ?? [])],
      writer: seg.writer[p] ?? null,
      version: seg.version[p],
    };
  },
  counts: (segid) => segments.get(segid)?.counts(),
});

start();
