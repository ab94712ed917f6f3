import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { applyDelta, baseBlockSums, DELTA_BLOCK_BYTES, DELTA_HEADER_BYTES, deltaBitmapBytes, deltaLiteralBytes, encodeDelta } from '../src/store/delta.js';
import { digestOf } from '../src/hash/digest.js';
import { pseudoRandom } from './helpers/gen.js';

/** Encodes `data` against `base` at `shift`, decodes it back, and returns the literal byte count. */
function roundTrip(base: Buffer, data: Buffer, shift: number): number {
  const sums = baseBlockSums('blake3', base, shift, data.length);
  const { record, literalBytes } = encodeDelta('blake3', digestOf('blake3', data), digestOf('blake3', base), shift, data, sums);
  assert.equal(record.readInt32LE(64), shift);
  assert.equal(record.readUInt32LE(68), data.length);
  const bitmap = record.subarray(DELTA_HEADER_BYTES, DELTA_HEADER_BYTES + deltaBitmapBytes(data.length));
  assert.equal(deltaLiteralBytes(data.length, bitmap), literalBytes);
  assert.equal(record.length, DELTA_HEADER_BYTES + bitmap.length + literalBytes);
  const literals = record.subarray(DELTA_HEADER_BYTES + bitmap.length);
  assert.ok(applyDelta(base, shift, data.length, bitmap, literals).equals(data));
  return literalBytes;
}

describe('delta records', () => {
  const base = pseudoRandom(64 * 1024 + 77, 1);

  it('an unchanged chunk needs no literal bytes; one changed byte costs one block', () => {
    assert.equal(roundTrip(base, Buffer.from(base), 0), 0);
    const one = Buffer.from(base);
    one[10_000] ^= 0xff;
    assert.equal(roundTrip(base, one, 0), DELTA_BLOCK_BYTES);
  });

  it('a short last block is compared and copied exactly', () => {
    const d = Buffer.from(base);
    d[d.length - 1] ^= 1;
    assert.equal(roundTrip(base, d, 0), 77);
  });

  it('chunks placed before or after the base start (boundaries moved) reuse the overlap', () => {
    // The new chunk starts 3000 bytes into the old one: its blocks map to base + 3000.
    const later = Buffer.from(base.subarray(3000, 3000 + 40_000));
    assert.equal(roundTrip(base, later, 3000), 0);
    // It starts 5000 bytes before the old one: its first blocks have no base bytes.
    const earlier = Buffer.concat([pseudoRandom(5000, 2), base.subarray(0, 30_000)]);
    const literal = roundTrip(base, earlier, -5000);
    assert.ok(literal >= 5000 && literal <= 5000 + 2 * DELTA_BLOCK_BYTES, `literal ${literal}`);
  });

  it('a completely different chunk is all literal', () => {
    const other = pseudoRandom(10_000, 3);
    assert.equal(roundTrip(base, other, 0), other.length);
  });

  it('applyDelta refuses copies outside the base and literal counts that do not add up', () => {
    const bitmap = Buffer.from([0xff]);
    assert.throws(() => applyDelta(base.subarray(0, 1000), 0, 4096, bitmap, Buffer.alloc(0)), /outside its base/);
    assert.throws(() => applyDelta(base, 0, 4096, Buffer.from([0]), Buffer.alloc(100)), /ends before its literal/);
    assert.throws(() => applyDelta(base, 0, 2048, Buffer.from([1]), Buffer.alloc(5)), /more literal bytes/);
  });
});
