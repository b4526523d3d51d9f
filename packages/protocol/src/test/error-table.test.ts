/**
 * The one error table: docs/errors.md shows it as generated (scripts/errors-doc.mjs), and the
 * things derived from it agree with it: the wire codes the validator accepts, the wire mapping and
 * the HTTP statuses.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  ERROR_TABLE,
  errorRow,
  httpStatusOf,
  isWireErrorCode,
  renderErrorTable,
  WIRE_ERROR_CODES,
  wireCodeOf,
} from '../error-table.js';
import { MESSAGE_TYPES, resolveLimits, Validator } from '../index.js';

const docs = new URL('../../../../docs/errors.md', import.meta.url);

test('docs/errors.md carries the table generated from the code (node scripts/errors-doc.mjs)', () => {
  const md = readFileSync(docs, 'utf8');
  const block = /<!-- error-table:begin[^>]*-->\n\n([\s\S]*?)\n\n<!-- error-table:end -->/.exec(md);
  assert.ok(block, 'docs/errors.md has the error-table markers');
  assert.equal(block[1], renderErrorTable(), 'docs/errors.md is stale: run node scripts/errors-doc.mjs');
});

test('one row per code; every wire column names a wire code', () => {
  const codes = ERROR_TABLE.map((r) => r.code);
  assert.equal(new Set(codes).size, codes.length, 'a code appears twice');
  for (const r of ERROR_TABLE) {
    assert.match(r.code, /^[A-Z][A-Z0-9_]{1,40}$/);
    if (r.wire !== null)
      assert.ok(isWireErrorCode(r.wire), `${r.code} travels as ${r.wire}, not a wire code`);
    assert.ok(r.http >= 400 && r.http < 600);
    assert.equal(errorRow(r.code), r);
  }
  assert.ok(Object.keys(WIRE_ERROR_CODES).length >= 17);
});

test('derived maps: unknown codes are internal errors, wire codes travel as themselves', () => {
  for (const c of Object.keys(WIRE_ERROR_CODES)) assert.equal(wireCodeOf(c), c);
  assert.equal(wireCodeOf('ETIMEDOUT'), 'E_BUSY');
  assert.equal(wireCodeOf('SIGBUS'), 'E_FAULT');
  assert.equal(wireCodeOf('EPERM'), 'E_INTERNAL');
  assert.equal(wireCodeOf('no such code'), 'E_INTERNAL');
  assert.equal(httpStatusOf('E_NO_SEGMENT'), 404);
  assert.equal(httpStatusOf('ENOMEM'), 507);
  assert.equal(httpStatusOf('no such code'), 500);
});

test('the validator accepts exactly the wire codes of the table in error messages', () => {
  const v = new Validator(resolveLimits());
  assert.ok(MESSAGE_TYPES.includes('error'));
  for (const code of Object.keys(WIRE_ERROR_CODES))
    assert.ok(v.validate({ t: 'error', code, message: 'x' }).ok, code);
  for (const code of ['EINVAL', 'E_BAD_REQUEST', 'E_NOPE'])
    assert.equal(v.validate({ t: 'error', code, message: 'x' }).ok, false, code);
});
