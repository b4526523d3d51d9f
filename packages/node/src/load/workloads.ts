/**
 * The workloads: how the shared segment's words are laid out, who reads and who writes them, and
 * which background events (reclaim, fork, attach/detach) run while the processes access memory.
 * docs/load.md describes each one.
 */

export const WORKLOADS = [
  'read-mostly',
  'ping-pong',
  'many-to-one',
  'reclaim-storm',
  'fork-storm',
  'attach-churn',
  'mixed',
] as const;
export type Workload = (typeof WORKLOADS)[number];

export const WORKLOAD_HELP: Record<Workload, string> = {
  'read-mostly': 'one writer (a remote attacher) writes one word per page; every other process only reads',
  'ping-pong': 'false sharing: every process writes its own word of the same pages and reads the others',
  'many-to-one': 'every process writes (70%) and reads the same 4 words of one page',
  'reclaim-storm':
    'read/write mix while the home instance forces reclaim (swap-out) of exported pages back to back',
  'fork-storm': 'the home process writes while it is forked repeatedly (copy-on-write under attachers)',
  'attach-churn': 'attachers detach and re-attach the segment between short bursts while the home writes',
  mixed: 'read/write mix with reclaim, fork and attach/detach churn at a lower rate',
};

export interface Key {
  key: number;
  /** Page index in the segment, and 32-bit word index in the page. */
  page: number;
  word: number;
}

export interface Role {
  readable: number[];
  writable: number[];
  writeFraction: number;
}

export interface Plan {
  keys: Key[];
  roles: Role[];
  reclaim: { pauseMs: number } | null;
  fork: { pauseMs: number; childLifeMs: number } | null;
  /** Re-attach every `every` chunks (attachers only). */
  churn: { every: number } | null;
  /** Chunk length for duration-bounded runs. */
  chunkMs: number;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Pages of the segment the workload touches: `pages` of them, spread over the segment. */
export function touchedPages(pages: number, segmentPages: number): number[] {
  const n = Math.max(1, Math.min(pages, segmentPages));
  return range(n).map((i) => Math.floor((i * segmentPages) / n));
}

export function plan(w: Workload, nProcs: number, pages: number, segmentPages: number): Plan {
  const tp = touchedPages(pages, segmentPages);
  const onePerPage = (word = 0) => tp.map((page, i) => ({ key: i, page, word }));
  const all = (keys: Key[]) => range(keys.length);
  const everyone = (keys: Key[], wf: number, homeWf = wf): Role[] =>
    range(nProcs).map((p) => ({
      readable: all(keys),
      writable: all(keys),
      writeFraction: p === 0 ? homeWf : wf,
    }));
  const base = { reclaim: null, fork: null, churn: null, chunkMs: 200 };
  switch (w) {
    case 'read-mostly': {
      const keys = onePerPage();
      const writer = nProcs - 1; // the last process: on the last instance, an attacher when there are 2+
      const roles = range(nProcs).map((p) =>
        p === writer && nProcs > 1
          ? { readable: [], writable: all(keys), writeFraction: 1 }
          : nProcs === 1
            ? { readable: all(keys), writable: all(keys), writeFraction: 0.1 }
            : { readable: all(keys), writable: [], writeFraction: 0 },
      );
      return { ...base, keys, roles };
    }
    case 'ping-pong': {
      const per = Math.min(nProcs, 1024);
      const keys: Key[] = [];
      for (const page of tp) for (let q = 0; q < per; q++) keys.push({ key: keys.length, page, word: q });
      const roles = range(nProcs).map((p) => ({
        readable: all(keys),
        writable: keys.filter((k) => k.word === p % per).map((k) => k.key),
        writeFraction: 0.5,
      }));
      return { ...base, keys, roles };
    }
    case 'many-to-one': {
      const keys = range(4).map((i) => ({ key: i, page: tp[0], word: i }));
      return { ...base, keys, roles: everyone(keys, 0.7) };
    }
    case 'reclaim-storm': {
      const keys = onePerPage();
      return { ...base, keys, roles: everyone(keys, 0.3), reclaim: { pauseMs: 0 } };
    }
    case 'fork-storm': {
      const keys = onePerPage();
      return { ...base, keys, roles: everyone(keys, 0.3, 0.6), fork: { pauseMs: 5, childLifeMs: 20 } };
    }
    case 'attach-churn': {
      const keys = onePerPage();
      return { ...base, keys, roles: everyone(keys, 0.3, 0.5), churn: { every: 1 }, chunkMs: 50 };
    }
    case 'mixed': {
      const keys: Key[] = [];
      for (const page of tp) for (const word of [0, 512]) keys.push({ key: keys.length, page, word });
      return {
        ...base,
        keys,
        roles: everyone(keys, 0.3),
        reclaim: { pauseMs: 20 },
        fork: { pauseMs: 100, childLifeMs: 30 },
        churn: { every: 3 },
        chunkMs: 100,
      };
    }
  }
}
