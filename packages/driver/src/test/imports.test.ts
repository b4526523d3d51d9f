import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const src = new URL('../../src/', import.meta.url).pathname;
const kernelApi = new URL('../../../kernel/src/api.ts', import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const driverFiles = files(src).filter(
  (f) => !f.includes('/test/') && !f.includes('/bench/') && !f.endsWith('.test.ts'),
);
const IMPORT_RE =
  /(?:import|export)\s+(?:type\s+)?\{([^}]*)\}\s*from\s+['"]([^'"]+)['"]|(?:import|export)[^'"`;]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

test('driver sources import only @xpmesh/kernel, @xpmesh/protocol, node builtins and each other', () => {
  assert.ok(driverFiles.length >= 10);
  for (const f of driverFiles) {
    for (const m of readFileSync(f, 'utf8').matchAll(IMPORT_RE)) {
      const spec = m[2] ?? m[3] ?? m[4];
      const ok =
        spec === '@xpmesh/kernel' ||
        spec === '@xpmesh/protocol' ||
        spec.startsWith('node:') ||
        /^\.\/[\w.-]+\.js$/.test(spec);
      assert.ok(ok, `${f.slice(src.length)} imports ${spec}`);
    }
  }
});

test("the kernel's export policy: driver sources use only the module API (kernel/src/api.ts)", () => {
  const api = readFileSync(kernelApi, 'utf8');
  const exported = new Set<string>();
  for (const m of api.matchAll(
    /^export\s+(?:declare\s+)?(?:const|type|interface|class|function|enum)\s+(\w+)/gm,
  ))
    exported.add(m[1]);
  for (const m of api.matchAll(/^export\s+(?:type\s+)?\{([^}]*)\}/gm))
    for (const n of m[1].split(','))
      if (n.trim())
        exported.add(
          n
            .trim()
            .split(/\s+as\s+/)
            .pop()!,
        );
  assert.ok(exported.has('KernelModuleApi') && exported.has('PAGE_SIZE'), 'api.ts parsed');
  let seen = 0;
  for (const f of driverFiles) {
    for (const m of readFileSync(f, 'utf8').matchAll(IMPORT_RE)) {
      if (m[2] !== '@xpmesh/kernel') continue;
      for (const raw of m[1].split(',')) {
        const name = raw.trim().replace(/^type\s+/, '');
        if (!name) continue;
        seen++;
        assert.ok(
          exported.has(name),
          `${f.slice(src.length)} imports ${name}, which is not in the module API`,
        );
      }
    }
  }
  assert.ok(seen >= 5, 'driver imports from the kernel were found');
});

/** Relative imports (type imports included) of each driver source, by file name. */
function importGraph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of driverFiles) {
    const deps: string[] = [];
    for (const m of readFileSync(f, 'utf8').matchAll(IMPORT_RE)) {
      const spec = m[2] ?? m[3] ?? m[4];
      if (spec.startsWith('./')) deps.push(spec.slice(2).replace(/\.js$/, '.ts'));
    }
    g.set(f.slice(src.length), deps);
  }
  return g;
}

test('no import cycle inside the driver (type imports included)', () => {
  const g = importGraph();
  const done = new Set<string>();
  const walk = (f: string, path: string[]) => {
    const at = path.indexOf(f);
    assert.ok(at < 0, `import cycle: ${[...path.slice(at), f].join(' -> ')}`);
    if (done.has(f)) return;
    for (const d of g.get(f) ?? []) walk(d, [...path, f]);
    done.add(f);
  };
  for (const f of g.keys()) walk(f, []);
  // state.ts (xpmem_private.h) is below everything: it imports none of the operation files
  for (const d of g.get('state.ts') ?? [])
    assert.ok(
      ['errors.ts', 'ids.ts', 'mutex.ts', 'page-state.ts', 'rmap.ts'].includes(d),
      `state.ts imports ${d}`,
    );
});

test('the home side and the remote side do not import each other', () => {
  const g = importGraph();
  const home = ['home.ts', 'invalidate.ts', 'fence.ts', 'notifiers.ts', 'source-pte.ts', 'unexport.ts'];
  const remote = ['attacher.ts'];
  for (const f of home) for (const d of g.get(f) ?? []) assert.ok(!remote.includes(d), `${f} imports ${d}`);
  for (const f of remote) for (const d of g.get(f) ?? []) assert.ok(!home.includes(d), `${f} imports ${d}`);
  assert.ok(g.has('attacher.ts') && g.has('home.ts'));
});
