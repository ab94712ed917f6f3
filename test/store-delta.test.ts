import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { applyDelta, baseBlockSums, DELTA_BLOCK_BYTES, DELTA_HEADER_BYTES, deltaHeader, deltaLiteralBytes, deltaMapBytes, encodeDelta, type Shifts } from '../src/protocol/delta.js';
import { digestOf } from '../src/hash/digest.js';
import { pseudoRandom } from './helpers/gen.js';

/** Encodes `data` against `base`, decodes it back, and returns the literal byte count. */
function roundTrip(base: Buffer, data: Buffer, shifts: Shifts): number {
  const sums = baseBlockSums('blake3', base, shifts, data.length);
  const { record, literalBytes } = encodeDelta('blake3', digestOf('blake3', data), digestOf('blake3', base), shifts, data, sums);
  assert.deepEqual(deltaHeader(record.subarray(0, DELTA_HEADER_BYTES)), { shifts, length: data.length });
  const map = record.subarray(DELTA_HEADER_BYTES, DELTA_HEADER_BYTES + deltaMapBytes(data.length));
  assert.equal(deltaLiteralBytes(data.length, map), literalBytes);
  assert.equal(record.length, DELTA_HEADER_BYTES + map.length + literalBytes);
  const literals = record.subarray(DELTA_HEADER_BYTES + map.length);
  assert.ok(applyDelta(base, shifts, data.length, map, literals).equals(data));
  return literalBytes;
}

/** The shifts HttpStore uses for a chunk at the same file offset as its base. */
const sameStart = (base: Buffer, data: Buffer, shift = 0): Shifts => [shift, base.length - data.length];

describe('delta records', () => {
  const base = pseudoRandom(64 * 1024 + 77, 1);

  it('an unchanged chunk needs no literal bytes; one changed byte costs one block', () => {
    assert.equal(roundTrip(base, Buffer.from(base), sameStart(base, base)), 0);
    const one = Buffer.from(base);
    one[10_000] ^= 0xff;
    assert.equal(roundTrip(base, one, sameStart(base, one)), DELTA_BLOCK_BYTES);
  });

  it('a short last block is compared and copied exactly', () => {
    const d = Buffer.from(base);
    d[d.length - 1] ^= 1;
    assert.equal(roundTrip(base, d, sameStart(base, d)), 77);
  });

  it('bytes inserted or removed inside the chunk: what follows matches the base with the ends aligned', () => {
    // 8 bytes more in a "header" at 600, as a DICOM anonymizer leaves: blocks before it
    // match at the same offset, blocks after it at the ends' alignment.
    const longer = Buffer.concat([base.subarray(0, 600), Buffer.from('ANONYMIZ'), base.subarray(600)]);
    assert.equal(roundTrip(base, longer, sameStart(base, longer)), DELTA_BLOCK_BYTES);
    const shorter = Buffer.concat([base.subarray(0, 5000), base.subarray(5100)]);
    assert.ok(roundTrip(base, shorter, sameStart(base, shorter)) <= 2 * DELTA_BLOCK_BYTES);
    // Only the same-offset alignment: everything after the insertion is literal.
    assert.ok(roundTrip(base, longer, [0, 0]) > longer.length - 2 * DELTA_BLOCK_BYTES);
  });

  it('chunks placed before or after the base start (boundaries moved) reuse the overlap', () => {
    const later = Buffer.from(base.subarray(3000, 3000 + 40_000));
    assert.equal(roundTrip(base, later, [3000, base.length - later.length]), 0);
    const earlier = Buffer.concat([pseudoRandom(5000, 2), base.subarray(0, 30_000)]);
    const literal = roundTrip(base, earlier, [-5000, base.length - earlier.length]);
    assert.ok(literal >= 5000 && literal <= 5000 + 2 * DELTA_BLOCK_BYTES, `literal ${literal}`);
  });

  it('a completely different chunk is all literal', () => {
    const other = pseudoRandom(10_000, 3);
    assert.equal(roundTrip(base, other, sameStart(base, other)), other.length);
  });

  it('applyDelta refuses copies outside the base, unknown sources and literal counts that do not add up', () => {
    assert.throws(() => applyDelta(base.subarray(0, 1000), [0, 0], 4096, Buffer.from([0b0101]), Buffer.alloc(0)), /outside its base/);
    assert.throws(() => applyDelta(base, [0, 0], 2048, Buffer.from([0b11]), Buffer.alloc(0)), /unknown source/);
    assert.throws(() => applyDelta(base, [0, 0], 4096, Buffer.from([0]), Buffer.alloc(100)), /ends before its literal/);
    assert.throws(() => applyDelta(base, [0, 0], 2048, Buffer.from([1]), Buffer.alloc(5)), /more literal bytes/);
  });
});
