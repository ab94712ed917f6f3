import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { DigestIndex } from '../src/store/digest-index.js';
import { decodeIndexRecords, encodeIndexRecords, IDX_RECORD_BYTES, type PackEntry } from '../src/store/pack.js';

const digest = (n: number): Buffer => createHash('sha256').update(String(n)).digest();

describe('DigestIndex', () => {
  it('finds every added digest with its place, and no other, across growth', () => {
    const index = new DigestIndex(16);
    const n = 50_000;
    for (let i = 0; i < n; i++) assert.equal(index.add(digest(i), i % 7, i * 65_536 + 3, 1000 + i), i);
    assert.equal(index.size, n);
    for (let i = 0; i < n; i += 97) {
      const e = index.find(digest(i));
      assert.equal(e, i);
      assert.equal(index.pack(e), i % 7);
      assert.equal(index.offset(e), i * 65_536 + 3);
      assert.equal(index.length(e), 1000 + i);
      assert.ok(index.digest(e).equals(digest(i)));
    }
    for (let i = n; i < n + 1000; i++) assert.equal(index.find(digest(i)), -1);
  });

  it('adding a present digest keeps the first place', () => {
    const index = new DigestIndex();
    assert.equal(index.add(digest(1), 1, 10, 100), 0);
    assert.equal(index.add(digest(1), 2, 20, 200), 0);
    assert.equal(index.size, 1);
    assert.equal(index.pack(0), 1);
  });

  it('tells apart digests that share their first bytes (the table hash)', () => {
    const index = new DigestIndex(16);
    const same = Array.from({ length: 40 }, (_, i) => {
      const d = Buffer.alloc(32, 0x5a);
      d[31] = i;
      return d;
    });
    same.forEach((d, i) => index.add(d, 0, i, 1));
    same.forEach((d, i) => assert.equal(index.offset(index.find(d)), i));
    const other = Buffer.alloc(32, 0x5a);
    other[31] = 200;
    assert.equal(index.find(other), -1);
  });

  it('refuses a digest of the wrong length', () => {
    assert.throws(() => new DigestIndex().add(Buffer.alloc(31), 0, 0, 1), /32 bytes/);
  });
});

describe('pack index records', () => {
  const entries: PackEntry[] = [
    { algorithm: 'blake3', digest: digest(1), offset: 8 + 48, length: 65_536 },
    { algorithm: 'sha256', digest: digest(2), offset: 2 ** 40 + 5, length: 16 * 1024 * 1024 },
  ];

  it('round-trip, offsets beyond 4 GiB included', () => {
    const bytes = encodeIndexRecords(entries);
    assert.equal(bytes.length, 2 * IDX_RECORD_BYTES);
    const { entries: back, usedBytes } = decodeIndexRecords(bytes);
    assert.equal(usedBytes, bytes.length);
    assert.deepEqual(back.map((e) => ({ ...e, digest: Buffer.from(e.digest).toString('hex') })), entries.map((e) => ({ ...e, digest: Buffer.from(e.digest).toString('hex') })));
  });

  it('decoding stops at a torn or damaged record', () => {
    const bytes = encodeIndexRecords(entries);
    assert.equal(decodeIndexRecords(bytes.subarray(0, IDX_RECORD_BYTES + 20)).entries.length, 1);
    const damaged = Buffer.from(bytes);
    damaged[IDX_RECORD_BYTES + 20] ^= 1;
    const r = decodeIndexRecords(damaged);
    assert.equal(r.entries.length, 1);
    assert.equal(r.usedBytes, IDX_RECORD_BYTES);
    const badAlgorithm = Buffer.from(bytes);
    badAlgorithm[0] = 9;
    assert.equal(decodeIndexRecords(badAlgorithm).entries.length, 0);
  });
});
