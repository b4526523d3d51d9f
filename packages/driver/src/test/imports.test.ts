import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const src = new URL('../../src/', import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('driver sources import only @xpmesh/node/kernel, @xpmesh/protocol, node builtins and each other', () => {
  const driverFiles = files(src).filter(
    (f) => !f.includes('/test/') && !f.includes('/bench/') && !f.endsWith('.test.ts'),
  );
  assert.ok(driverFiles.length >= 10);
  for (const f of driverFiles) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(
      /(?:import|export)[^'"`;]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g,
    )) {
      const spec = m[1] ?? m[2];
      const ok =
        spec === '@xpmesh/node/kernel' ||
        spec === '@xpmesh/protocol' ||
        spec.startsWith('node:') ||
        /^\.\/[\w.-]+\.js$/.test(spec);
      assert.ok(ok, `${f.slice(src.length)} imports ${spec}`);
    }
  }
});
