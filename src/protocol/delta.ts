/**
 * Delta uploads (docs/PROTOCOL.md, "Delta uploads"): a chunk the server lacks, sent as the
 * blocks that differ from a "base" chunk the server has (the old chunk at the same place
 * in the previous version of the target). Blocks are DELTA_BLOCK_BYTES of the new chunk,
 * each compared with the base bytes at two alignments: base offset = new chunk offset +
 * shift, with
 *   shift A = (new chunk's file offset) - (base chunk's file offset): the same file offset,
 *             for overwrites in place (disk image blocks);
 *   shift B = (base length) - (new length): the chunks' ends aligned, for bytes inserted or
 *             removed inside the chunk (a DICOM header whose values changed length): what
 *             follows the change matches the base's tail.
 * Insertions across chunks are already contained by content-defined chunking.
 *
 * The comparison uses 8-byte block sums, not proof: the server rebuilds the chunk from
 * base and literals and stores it only if it hashes to the chunk's digest, like any upload.
 *
 * Wire formats (little-endian):
 *   sums request record   [32 base digest][i32 shift A][i32 shift B][u32 length]
 *   sums answer record    [u8 1][per block: 8-byte sum at shift A, 8-byte sum at shift B]
 *                         or [u8 0] if the base is missing; blocks = ceil(length /
 *                         DELTA_BLOCK_BYTES); a block whose base range is not wholly inside
 *                         the base has a sum of eight zero bytes
 *   delta record          [32 digest][32 base digest][i32 shift A][i32 shift B][u32 length]
 *                         [map: 2 bits per block, block k in bits 2(k & 3) of byte k >> 2:
 *                         0 literal, 1 copied at shift A, 2 copied at shift B]
 *                         [the literal blocks' bytes, in order]
 */
import { InvalidArgumentError } from '../core/errors.js';
import { DIGEST_BYTES, type DigestAlgorithm } from '../core/ids.js';
import { digestOf } from '../hash/digest.js';

export const DELTA_BLOCK_BYTES = 2048;
export const BLOCK_SUM_BYTES = 8;
export const SUMS_REQUEST_RECORD_BYTES = DIGEST_BYTES + 12;
export const DELTA_HEADER_BYTES = 2 * DIGEST_BYTES + 12;

/** The two alignments a block may be copied at. */
export type Shifts = readonly [number, number];

const LITERAL = 0;

export function blockCount(length: number): number {
  return Math.ceil(length / DELTA_BLOCK_BYTES);
}

function blockLength(length: number, k: number): number {
  return Math.min(DELTA_BLOCK_BYTES, length - k * DELTA_BLOCK_BYTES);
}

/** Bytes of the sums answer for one found base of a chunk of `length` bytes (without its status byte). */
export function sumsBytes(length: number): number {
  return blockCount(length) * 2 * BLOCK_SUM_BYTES;
}

/** The sum of one block: the first 8 bytes of its digest under `algorithm`. */
export function blockSum(algorithm: DigestAlgorithm, block: Uint8Array): Buffer {
  return digestOf(algorithm, block).subarray(0, BLOCK_SUM_BYTES);
}

/** The sums of `base` at the blocks of a chunk of `length` bytes, at both shifts (see the top). */
export function baseBlockSums(algorithm: DigestAlgorithm, base: Uint8Array, shifts: Shifts, length: number): Buffer {
  const blocks = blockCount(length);
  const out = Buffer.alloc(sumsBytes(length));
  for (let k = 0; k < blocks; k++) {
    for (let j = 0; j < 2; j++) {
      const from = shifts[j]! + k * DELTA_BLOCK_BYTES;
      const to = from + blockLength(length, k);
      if (from < 0 || to > base.length) continue; // zero: not available
      if (j === 1 && shifts[1] === shifts[0]) continue; // the same bytes: asked once
      blockSum(algorithm, base.subarray(from, to)).copy(out, (2 * k + j) * BLOCK_SUM_BYTES);
    }
  }
  return out;
}

/**
 * The delta record for `data` against a base whose sums (baseBlockSums) are `sums`, and
 * how many bytes of `data` it carries literally.
 */
export function encodeDelta(
  algorithm: DigestAlgorithm,
  digest: Uint8Array,
  baseDigest: Uint8Array,
  shifts: Shifts,
  data: Uint8Array,
  sums: Uint8Array,
): { record: Buffer; literalBytes: number } {
  const blocks = blockCount(data.length);
  const map = Buffer.alloc(deltaMapBytes(data.length));
  const literals: Uint8Array[] = [];
  let literalBytes = 0;
  const zero = Buffer.alloc(BLOCK_SUM_BYTES);
  for (let k = 0; k < blocks; k++) {
    const block = data.subarray(k * DELTA_BLOCK_BYTES, k * DELTA_BLOCK_BYTES + blockLength(data.length, k));
    const sum = blockSum(algorithm, block);
    let source = LITERAL;
    for (let j = 0; j < 2 && source === LITERAL; j++) {
      const at = (2 * k + j) * BLOCK_SUM_BYTES;
      const theirs = sums.subarray(at, at + BLOCK_SUM_BYTES);
      if (!zero.equals(theirs) && sum.equals(theirs)) source = j + 1;
    }
    if (source === LITERAL) {
      literals.push(block);
      literalBytes += block.length;
    } else map[k >> 2]! |= source << (2 * (k & 3));
  }
  const head = Buffer.alloc(DELTA_HEADER_BYTES);
  head.set(digest, 0);
  head.set(baseDigest, DIGEST_BYTES);
  head.writeInt32LE(shifts[0], 2 * DIGEST_BYTES);
  head.writeInt32LE(shifts[1], 2 * DIGEST_BYTES + 4);
  head.writeUInt32LE(data.length, 2 * DIGEST_BYTES + 8);
  return { record: Buffer.concat([head, map, ...literals]), literalBytes };
}

/** The shifts and chunk length of a delta record's header. */
export function deltaHeader(header: Uint8Array): { shifts: Shifts; length: number } {
  const b = Buffer.from(header.buffer, header.byteOffset, header.byteLength);
  return { shifts: [b.readInt32LE(2 * DIGEST_BYTES), b.readInt32LE(2 * DIGEST_BYTES + 4)], length: b.readUInt32LE(2 * DIGEST_BYTES + 8) };
}

/** Bytes of the block map that follows a delta header for a chunk of `length` bytes. */
export function deltaMapBytes(length: number): number {
  return Math.ceil(blockCount(length) / 4);
}

function sourceOf(map: Uint8Array, k: number): number {
  return (map[k >> 2]! >> (2 * (k & 3))) & 3;
}

/** Bytes of the literal blocks that follow the map. */
export function deltaLiteralBytes(length: number, map: Uint8Array): number {
  let n = 0;
  for (let k = 0; k < blockCount(length); k++) if (sourceOf(map, k) === LITERAL) n += blockLength(length, k);
  return n;
}

/**
 * Rebuilds a chunk of `length` bytes from `base` (copied blocks) and `literals` (the rest,
 * in order). Throws InvalidArgumentError for a copy outside the base, an unknown source,
 * or literals that do not add up.
 */
export function applyDelta(base: Uint8Array, shifts: Shifts, length: number, map: Uint8Array, literals: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(length);
  let used = 0;
  for (let k = 0; k < blockCount(length); k++) {
    const n = blockLength(length, k);
    const at = k * DELTA_BLOCK_BYTES;
    const source = sourceOf(map, k);
    if (source === LITERAL) {
      if (used + n > literals.length) throw new InvalidArgumentError('delta record ends before its literal blocks');
      out.set(literals.subarray(used, used + n), at);
      used += n;
      continue;
    }
    if (source > 2) throw new InvalidArgumentError(`delta block ${k} names an unknown source`);
    const from = shifts[source - 1]! + at;
    if (from < 0 || from + n > base.length) throw new InvalidArgumentError(`delta block ${k} lies outside its base chunk`);
    out.set(base.subarray(from, from + n), at);
  }
  if (used !== literals.length) throw new InvalidArgumentError('delta record has more literal bytes than blocks');
  return out;
}
