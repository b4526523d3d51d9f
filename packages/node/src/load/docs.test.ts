/**
 * docs/load.md stays in step with the code: the complete workload example is the file in
 * examples/, the thresholds' metric table is the one generated from THRESHOLD_METRICS, every
 * report field and every `xpmesh load` option is documented.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LOAD_HELP } from './cli.js';
import { REPORT_FIELDS } from './report.js';
import { thresholdTableMarkdown } from './thresholds.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const doc = readFileSync(join(ROOT, 'docs/load.md'), 'utf8');

describe('docs/load.md', () => {
  it('shows examples/workloads/hot-cold.js as it is', () => {
    const m = /<!-- example: (examples\/workloads\/[\w.-]+) -->\n```js\n([\s\S]*?)\n```/.exec(doc);
    assert.ok(m, 'the example block is marked');
    assert.equal(m[2], readFileSync(join(ROOT, m[1]), 'utf8').replace(/\n$/, ''));
  });

  it('lists the threshold metrics exactly as the code has them', () => {
    assert.ok(doc.includes(thresholdTableMarkdown()), 'regenerate the table with thresholdTableMarkdown()');
  });

  it('documents every report field and every option', () => {
    for (const f of [...REPORT_FIELDS, 'thresholds'])
      assert.ok(doc.includes(`\`${f}\``), `report field ${f}`);
    for (const [, flag] of LOAD_HELP.matchAll(/^ {2}(--[a-z-]+)/gm))
      if (flag !== '--help') assert.ok(doc.includes(`\`${flag}`), `option ${flag}`);
  });
});
