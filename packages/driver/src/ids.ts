/** Segment ids "<home>:<n>" and access ids "<home>:a<n>" name the instance that owns them. */
export function homeOf(id: string): string | undefined {
  const i = id.lastIndexOf(':');
  if (i <= 0 || i === id.length - 1) return undefined;
  return id.slice(0, i);
}

export function segidFor(node: string, n: number): string {
  return `${node}:${n}`;
}

export function apidFor(node: string, n: number): string {
  return `${node}:a${n}`;
}

/** Key of one page of one segment in the attacher's page cache. */
export function pageKey(segid: string, page: number): string {
  return `${segid}#${page}`;
}
