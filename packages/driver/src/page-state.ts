/**
 * Coherence state of one exported page at its home (the home is the directory), and the ONE
 * transition table the driver uses. docs/driver.md draws the same table as a mermaid diagram; a test
 * checks that both agree edge for edge.
 *
 * - home: only the home instance (and its local attachers) hold the page; no remote copy.
 * - shared: k ≥ 1 remote read copies; the home's own PTE is a device entry 'readonly', so a home write
 *   faults into the driver, which invalidates the readers first.
 * - remote-exclusive: one remote instance holds the page for writing; the home PTE is device 'none'
 *   and the frame is stale until recalled (the writer's data returns in the invalidate ack).
 * - invalidating: an invalidation of the page is in flight; no new mapping is granted until it ends.
 * - swapped: the home reclaimed the page after invalidating every copy; the next grant swaps it in.
 */
export const PAGE_STATES = ['home', 'shared', 'remote-exclusive', 'invalidating', 'swapped'] as const;
export type PageState = (typeof PAGE_STATES)[number];

export const PAGE_EVENTS = [
  'grant-read', // a remote instance got a read copy
  'grant-write', // a remote instance got exclusive write access
  'invalidate-begin', // invalidate messages sent for the page
  'invalidate-end', // every ack is in (or the mapper was fenced); no copy remains
  'downgrade-end', // every ack is in; the former writer kept a read copy
  'drop', // one copy went away (detach, fence), others remain
  'drop-last', // the last copy went away (detach, fence)
  'swap-out', // reclaim swapped the page out after the invalidation
  'forget', // the page's frame went away (munmap, source exit): the directory starts over
] as const;
export type PageEvent = (typeof PAGE_EVENTS)[number];

export const TRANSITIONS: Readonly<Record<PageState, Readonly<Partial<Record<PageEvent, PageState>>>>> = {
  home: {
    'grant-read': 'shared',
    'grant-write': 'remote-exclusive',
    'swap-out': 'swapped',
    forget: 'home',
  },
  shared: {
    'grant-read': 'shared',
    'invalidate-begin': 'invalidating',
    drop: 'shared',
    'drop-last': 'home',
  },
  'remote-exclusive': {
    'grant-write': 'remote-exclusive',
    'grant-read': 'shared',
    'invalidate-begin': 'invalidating',
    'drop-last': 'home',
  },
  invalidating: {
    'invalidate-begin': 'invalidating',
    'invalidate-end': 'home',
    'downgrade-end': 'shared',
    drop: 'invalidating',
    'drop-last': 'invalidating',
  },
  swapped: {
    'grant-read': 'shared',
    'grant-write': 'remote-exclusive',
    forget: 'home',
  },
};

/**
 * Per state index: 1 if a copy may be granted in the state (its row has a grant edge), else 0.
 * Derived from the table, so grants ask the table (Segment.mayGrant): 'invalidating' has none.
 */
export const GRANTABLE: Uint8Array = Uint8Array.from(PAGE_STATES, (s) =>
  TRANSITIONS[s]['grant-read'] !== undefined || TRANSITIONS[s]['grant-write'] !== undefined ? 1 : 0,
);

/**
 * The table by event, as state indexes: NEXT_INDEX[event][from] is the index of the next state, or -1
 * (illegal). Derived from TRANSITIONS (so it cannot disagree with it); Segment.transition uses it so
 * that a page's transition is two array reads (a 1024-page invalidation makes 2048 of them).
 */
export const NEXT_INDEX: Readonly<Record<PageEvent, Int8Array>> = Object.fromEntries(
  PAGE_EVENTS.map((ev) => [
    ev,
    Int8Array.from(PAGE_STATES, (s) => {
      const to = TRANSITIONS[s][ev];
      return to === undefined ? -1 : PAGE_STATES.indexOf(to);
    }),
  ]),
) as Record<PageEvent, Int8Array>;

export class IllegalTransition extends Error {
  readonly code = 'E_INTERNAL';
  constructor(from: PageState, event: PageEvent) {
    super(`illegal page-state transition: ${from} --${event}-->`);
  }
}

/** The next state, or throws: the table is the only place transitions are defined. */
export function nextState(from: PageState, event: PageEvent): PageState {
  const to = TRANSITIONS[from][event];
  if (to === undefined) throw new IllegalTransition(from, event);
  return to;
}

export function stateIndex(s: PageState): number {
  return PAGE_STATES.indexOf(s);
}

/** Mermaid `stateDiagram-v2` text generated from the table (docs/driver.md embeds it). */
export function mermaidDiagram(): string {
  const lines = ['stateDiagram-v2', '  [*] --> home'];
  for (const from of PAGE_STATES) {
    for (const ev of PAGE_EVENTS) {
      const to = TRANSITIONS[from][ev];
      if (to) lines.push(`  ${mm(from)} --> ${mm(to)}: ${ev}`);
    }
  }
  return lines.join('\n');
}

function mm(s: PageState): string {
  return s === 'remote-exclusive' ? 'remote_exclusive' : s;
}
