import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  KIND_DEVICE,
  KIND_MIGRATION,
  KIND_NORMAL,
  KIND_SWAP,
  mkDevicePte,
  mkMigrationPte,
  mkPte,
  mkSwapPte,
  PTE_DIRTY,
  PTE_PRESENT,
  PTE_WRITE,
  pteKind,
  pteMapsFrame,
  ptePfn,
} from '../pagetable.js';

test('PTE encodings round-trip, including frame numbers >= 2^21', () => {
  for (const pfn of [1, 4095, 2 ** 21, 2 ** 21 + 12345, 2 ** 24 - 1]) {
    const pte = mkPte(pfn, PTE_PRESENT | PTE_WRITE | PTE_DIRTY);
    assert.equal(ptePfn(pte), pfn);
    assert.equal(pteKind(pte), KIND_NORMAL);
    assert.ok(pte & PTE_PRESENT && pte & PTE_WRITE && pte & PTE_DIRTY);
    assert.equal(ptePfn(mkSwapPte(pfn)), pfn);
    assert.equal(pteKind(mkSwapPte(pfn)), KIND_SWAP);
    assert.equal(pteKind(mkMigrationPte(pfn)), KIND_MIGRATION);
    assert.equal(ptePfn(mkDevicePte(pfn, true)), pfn);
  }
});

test('device entries: readonly mode is present without write; none mode is not present', () => {
  const ro = mkDevicePte(77, true);
  const none = mkDevicePte(77, false);
  assert.equal(pteKind(ro), KIND_DEVICE);
  assert.ok(ro & PTE_PRESENT && !(ro & PTE_WRITE));
  assert.ok(!(none & PTE_PRESENT));
  assert.ok(pteMapsFrame(ro) && pteMapsFrame(none));
  assert.ok(!pteMapsFrame(mkSwapPte(3)) && !pteMapsFrame(mkMigrationPte(3)) && !pteMapsFrame(0));
  assert.notEqual(mkSwapPte(0), 0, 'swap slot 0 is not the none entry');
});
