/**
 * Every default and timing figure in docs/ comes from one table in code: the generated parts of
 * docs/*.md must equal what `npm run docs` would write, and no doc may quote a timing figure that
 * contradicts the table outside the generated parts.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_LEASE_MS, NETWORK_DEFAULTS, TIMING_DEFAULTS } from '@xpmesh/protocol';
import { CONFIG_SETTINGS, resolveConfig } from '../daemon/config.js';
import { markersIn, readDocs, regenerate, VALUES } from './generate.js';

const DOCS = join(fileURLToPath(new URL('../../../../', import.meta.url)), 'docs');

describe('docs generated from the configuration table', () => {
  const docs = readDocs(DOCS);

  it('are up to date (run `npm run docs` if this fails)', () => {
    for (const [name, text] of docs) assert.equal(regenerate(text, name), text, `docs/${name} is stale`);
  });

  it('put the tables and the quoted timing figures where a client looks for them', () => {
    const has = (doc: string, kind: 'blocks' | 'values', names: string[]) => {
      const found = markersIn(docs.get(doc) ?? '')[kind];
      for (const n of names) assert.ok(found.includes(n), `docs/${doc} has no generated ${n}`);
    };
    has('configuration.md', 'blocks', ['settings', 'timing']);
    has('protocol.md', 'values', [
      'heartbeatMs',
      'missedBeats',
      'leaseMs',
      'leaseMarginMs',
      'requestTimeoutMs',
      'handshakeTimeoutMs',
    ]);
    has('limits.md', 'values', ['heartbeatMs', 'missedBeats', 'requestTimeoutMs', 'handshakeTimeoutMs']);
    has('driver.md', 'values', ['ackTimeoutMs', 'leaseMs', 'leaseMarginMs', 'driverPrefault', 'prefault']);
    // every protocol and admin limit in its table, the ones a user meets in the prose where it is met
    has('limits.md', 'values', [
      ...Object.keys(VALUES).filter(
        (v) => /^(limits|admin)[A-Z]/.test(v) && v !== 'limitsHandshakeTimeoutMs',
      ),
      'maxDnsNames',
      'maxDnsAddresses',
      'peersDnsIntervalMinMs',
      'peersDnsIntervalMaxMs',
    ]);
    has('protocol.md', 'values', ['limitsMaxPeers', 'limitsMaxPeerTombstones', 'limitsMaxPagesPerMessage']);
    has('deployment.md', 'values', ['maxDnsNames', 'maxDnsAddresses', 'peersDnsIntervalMs']);
    has('load.md', 'values', [
      'pressureMaxConcurrency',
      'pressureMaxBatches',
      'loadProcs',
      'loadDurationMaxMs',
    ]);
    has('architecture.md', 'values', ['pressureMaxConcurrency', 'pressureMaxBatches', 'pressureBudgetMs']);
    has('configuration.md', 'values', ['clusterNodes', 'ctlUrl']);
  });

  it('quote no protocol or admin limit by hand', () => {
    // `limits.maxPeers` (1024), `admin.socketIdleMs` 60 s: a limit named and then given a figure
    for (const [name, text] of docs) {
      const prose = text.replace(/<!-- value: [\s\S]*?<!-- \/value -->/g, '«value»');
      for (const re of [
        /`(?:limits|admin)\.\w+`,? \(?(?:default )?\d[^`\n]{0,20}/,
        // a bound and default of an operation or option: `(1 … 64, default 1)`, `| 1 … 64, default 1 |`
        /(?:\(|\| )1 …\s*\d[\d,]*, default \d/,
        // a limit's constant named beside its figure (close codes like 4012 `TOO_MANY_PEERS` are wire spec)
        /\b\d+ \(`(?:[A-Z_]*MAX[A-Z_]*|DEFAULT_[A-Z_]+)`\)/,
      ]) {
        const m = re.exec(prose);
        assert.equal(m, null, `docs/${name} types a limit by hand: ${m?.[0]}`);
      }
    }
  });

  it('quote no timing figure by hand that disagrees with the table', () => {
    // reliability.md, benchmarks.md and deployment.md record runs with the settings each run used:
    // not defaults
    const stripped = [...docs]
      .filter(([name]) => !['reliability.md', 'benchmarks.md', 'deployment.md'].includes(name))
      .map(([name, text]) => [
        name,
        text
          .replace(/<!-- generated: [\s\S]*?<!-- \/generated -->/g, '')
          .replace(/<!-- value: [\s\S]*?<!-- \/value -->/g, ''),
      ]);
    const wrong = [
      /heartbeat[^.\n]{0,30}\b(?!500\b)\d{3,4} ?ms/i,
      /lease[^.\n]{0,20}\(default (?!1500)\d+/i,
      /prefault[^.\n]{0,20}\(default \d/i,
    ];
    for (const [name, text] of stripped)
      for (const re of wrong) assert.doesNotMatch(text, re, `docs/${name} quotes a figure by hand`);
  });

  it('and the code uses that one table everywhere', () => {
    assert.equal(NETWORK_DEFAULTS.heartbeatMs, TIMING_DEFAULTS.heartbeatMs);
    assert.equal(NETWORK_DEFAULTS.missedBeats, TIMING_DEFAULTS.missedBeats);
    assert.equal(NETWORK_DEFAULTS.requestTimeoutMs, TIMING_DEFAULTS.requestTimeoutMs);
    const c = resolveConfig({}, {});
    assert.equal(c.heartbeatMs, TIMING_DEFAULTS.heartbeatMs);
    assert.equal(c.missedBeats, TIMING_DEFAULTS.missedBeats);
    assert.equal(c.ackTimeoutMs, TIMING_DEFAULTS.ackTimeoutMs);
    assert.equal(c.requestTimeoutMs, TIMING_DEFAULTS.requestTimeoutMs);
    assert.equal(c.prefault, TIMING_DEFAULTS.prefault);
    assert.equal(c.leaseMs, DEFAULT_LEASE_MS);
    assert.equal(VALUES.heartbeatMs, `${TIMING_DEFAULTS.heartbeatMs} ms`);
    for (const s of CONFIG_SETTINGS.filter((x) => x.kind === 'int'))
      assert.ok(docs.get('configuration.md')?.includes(`\`${s.default}\``), `--${s.flag} default in the doc`);
  });
});
