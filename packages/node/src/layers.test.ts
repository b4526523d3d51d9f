/**
 * The packages' layers point one way: protocol ← kernel ← driver ← node. A package's
 * dependencies and its sources' imports name only packages of lower layers.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const packages = new URL('../../', import.meta.url).pathname;
const LAYERS = ['@xpmesh/protocol', '@xpmesh/kernel', '@xpmesh/driver', '@xpmesh/node'];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const workspace = readdirSync(packages)
  .filter((d) => statSync(join(packages, d, 'package.json'), { throwIfNoEntry: false }))
  .map((d) => ({
    dir: join(packages, d),
    pkg: JSON.parse(readFileSync(join(packages, d, 'package.json'), 'utf8')),
  }));

test('package dependencies point down the layers', () => {
  for (const name of LAYERS)
    assert.ok(
      workspace.some((w) => w.pkg.name === name),
      `${name} is a workspace package`,
    );
  for (const { pkg } of workspace) {
    const level = LAYERS.indexOf(pkg.name);
    if (level < 0) continue;
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.devDependencies, ...pkg.peerDependencies })) {
      const d = LAYERS.indexOf(dep);
      if (d >= 0) assert.ok(d < level, `${pkg.name} depends on ${dep}, a layer above or beside it`);
    }
  }
});

test("package sources import only their own or a lower layer's packages", () => {
  for (const { dir, pkg } of workspace) {
    const level = LAYERS.indexOf(pkg.name);
    if (level < 0) continue;
    for (const f of files(join(dir, 'src'))) {
      for (const m of readFileSync(f, 'utf8').matchAll(
        /from\s+['"](@xpmesh\/[\w-]+)[^'"]*['"]|import\(\s*['"](@xpmesh\/[\w-]+)/g,
      )) {
        const d = LAYERS.indexOf(m[1] ?? m[2]);
        assert.ok(d >= 0 && d < level, `${f.slice(packages.length)} imports ${m[1] ?? m[2]}`);
      }
    }
  }
});
