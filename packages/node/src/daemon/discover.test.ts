/** `--connect dns:NAME:PORT`: parsing, sorted admin URLs, waiting for enough addresses (bounded). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectError, parseDnsConnect, resolveConnect } from './discover.js';

describe('--connect dns:NAME:PORT', () => {
  it('parses dns:NAME:PORT and refuses malformed specs', () => {
    assert.deepEqual(parseDnsConnect('dns:tasks.node:7500'), { name: 'tasks.node', port: 7500 });
    assert.equal(parseDnsConnect('http://a:1'), undefined);
    for (const bad of ['dns:node', 'dns::7500', 'dns:node:0', 'dns:node:99999', 'dns:a b:1'])
      assert.throws(() => parseDnsConnect(bad), ConnectError, bad);
  });

  it('resolves to every address as an admin URL, in a stable order; URL lists pass through', async () => {
    const urls = await resolveConnect('dns:node:7500', {
      resolve: async () => ['10.0.0.10', '10.0.0.9', 'fd00::1', '10.0.0.9'],
    });
    assert.deepEqual(urls, ['http://10.0.0.9:7500', 'http://10.0.0.10:7500', 'http://[fd00::1]:7500']);
    assert.deepEqual(await resolveConnect('http://a:1, http://b:2'), ['http://a:1', 'http://b:2']);
  });

  it('waits until at least min addresses resolve, and gives up at the deadline', async () => {
    let n = 0;
    const grow = async () => {
      n++;
      if (n < 3) throw Object.assign(new Error('not yet'), { code: 'ENOTFOUND' });
      return Array.from({ length: n }, (_, i) => `10.0.0.${i + 1}`);
    };
    assert.equal((await resolveConnect('dns:node:1', { min: 4, pollMs: 5, resolve: grow })).length, 4);
    await assert.rejects(
      resolveConnect('dns:node:1', { min: 2, waitMs: 50, pollMs: 5, resolve: async () => ['10.0.0.1'] }),
      /resolved to 1 address\(es\), needed 2/,
    );
  });

  it('localhost resolves for real', async () => {
    assert.ok(
      (await resolveConnect('dns:localhost:7500', { waitMs: 5000 })).includes('http://127.0.0.1:7500'),
    );
  });
});
