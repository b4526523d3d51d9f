/**
 * The soak's and the fuzzer's defaults that docs/ quotes come from their option tables: every
 * `testkit.*` value in docs/*.md must equal what `npm run docs` renders (the rest is checked by
 * @xpmesh/node's generate.test.ts), and reliability.md types none of them by hand.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { markersIn, readDocs, regenerate } from '@xpmesh/node/docs/generate';
import { TESTKIT_DOC_VALUES } from './docs-values.js';

const DOCS = join(fileURLToPath(new URL('../../../', import.meta.url)), 'docs');

describe('docs: the testkit figures', () => {
  const docs = readDocs(DOCS);

  it('are up to date (run `npm run docs` if this fails)', () => {
    for (const [name, text] of docs)
      assert.equal(regenerate(text, name, TESTKIT_DOC_VALUES), text, `docs/${name} is stale`);
  });

  it('are all used, in reliability.md', () => {
    const used = markersIn(docs.get('reliability.md') ?? '').values;
    for (const name of Object.keys(TESTKIT_DOC_VALUES))
      assert.ok(used.includes(name), `docs/reliability.md does not quote ${name}`);
  });

  it('an unknown testkit value is an error, not a silent blank', () => {
    assert.throws(
      () => regenerate('<!-- value: testkit.nope -->x<!-- /value -->', 'x.md', TESTKIT_DOC_VALUES),
      /unknown value "testkit.nope"/,
    );
    // without the testkit's values (@xpmesh/node's own check) the marker is kept as it is
    const kept = '<!-- value: testkit.nope -->x<!-- /value -->';
    assert.equal(regenerate(kept, 'x.md'), kept);
  });

  it('reliability.md types no soak or fuzzer default by hand', () => {
    const prose = (docs.get('reliability.md') ?? '').replace(
      /<!-- value: [\s\S]*?<!-- \/value -->/g,
      '«value»',
    );
    for (const re of [/`--[a-z-]+` \(default \d/, /`--[a-z-]+`, (?:default|at most) \d/, /holds it \d/]) {
      const m = re.exec(prose);
      assert.equal(m, null, `docs/reliability.md types an option default by hand: ${m?.[0]}`);
    }
  });
});
