#!/usr/bin/env node
// Regenerates the parts of docs/*.md that come from code (tables and figures between
// `<!-- generated: … -->` / `<!-- value: … -->` markers; see packages/node/src/docs/generate.ts).
// Usage: npm run docs   (builds first). `node --test` of generate.test.js fails when a doc is stale.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const { readDocs, regenerate } = await import(join(root, 'packages/node/dist/docs/generate.js'));
// figures of @xpmesh/testkit (`testkit.*` values), which @xpmesh/node cannot import
const { TESTKIT_DOC_VALUES } = await import(join(root, 'packages/testkit/dist/docs-values.js'));
const dir = join(root, 'docs');
const changed = [];
for (const [name, text] of readDocs(dir)) {
  const next = regenerate(text, name, TESTKIT_DOC_VALUES);
  if (next !== text) {
    writeFileSync(join(dir, name), next);
    changed.push(join(dir, name));
    console.log(`docs/${name}: regenerated`);
  }
}
if (changed.length) {
  // a figure of another width re-pads its table: let the formatter (the linter's) lay it out again
  const biome = join(root, 'node_modules/@biomejs/biome/bin/biome');
  const r = spawnSync(process.execPath, [biome, 'format', '--write', ...changed], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
console.log(changed.length ? `${changed.length} doc(s) updated` : 'docs are up to date');
