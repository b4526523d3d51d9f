#!/usr/bin/env node
// Regenerates the parts of docs/*.md that come from code (tables and figures between
// `<!-- generated: … -->` / `<!-- value: … -->` markers; see packages/node/src/docs/generate.ts).
// Usage: npm run docs   (builds first). `node --test` of generate.test.js fails when a doc is stale.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const { readDocs, regenerate } = await import(join(root, 'packages/node/dist/docs/generate.js'));
const dir = join(root, 'docs');
let changed = 0;
for (const [name, text] of readDocs(dir)) {
  const next = regenerate(text, name);
  if (next !== text) {
    writeFileSync(join(dir, name), next);
    changed++;
    console.log(`docs/${name}: regenerated`);
  }
}
console.log(changed ? `${changed} doc(s) updated` : 'docs are up to date');
