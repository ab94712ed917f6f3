/**
 * Delta uploads (docs/PROTOCOL.md, "Delta uploads"): a chunk the server lacks, sent as the
 * blocks that differ from a "base" chunk the server has (the old chunk at the same place
 * in the previous version of the target). Blocks are DELTA_BLOCK_BYTES of the new chunk,
 * compared with the base bytes at the same file offset: base offset = new chunk offset +
 * `shift`, where shift = (new chunk's file offset) - (base chunk's file offset). That
 * catches overwrites in place (disk image blocks, DICOM headers rewritten to the same
 * length) at block granularity; insertions are already contained by content-defined
 * chunking, and the part of a chunk after an insertion is sent whole.
 *
 * The comparison uses 8-byte block sums, not proof: the server rebuilds the chunk from
 * base and literals and stores it only if it hashes to the chunk's digest, like any upload.
 *
 * Wire formats (little-endian):
 *   sums request record   [32 base digest][i32 shift][u32 length]
 *   sums answer record    [u8 1][blocks x 8-byte sums]   or [u8 0] if the base is missing;
 *                         blocks = ceil(length / DELTA_BLOCK_BYTES); a block whose base range
 *                         is not wholly inside the base has a sum of eight zero bytes
 *   delta record          [32 digest][32 base digest][i32 shift][u32 length]
 *                         [bitmap: ceil(blocks / 8) bytes, bit k of byte k>>3 (k & 7) set:
 *                         block k is copied from the base][the other blocks' bytes, in order]
 */
import { InvalidArgumentError } from '../core/errors.js';
import { DIGEST_BYTES, type DigestAlgorithm } from '../core/ids.js';
import { digestOf } from '../hash/digest.js';

export const DELTA_BLOCK_BYTES = 2048;
export const BLOCK_SUM_BYTES = 8;
export const SUMS_REQUEST_RECORD_BYTES = DIGEST_BYTES + 8;
export const DELTA_HEADER_BYTES = 2 * DIGEST_BYTES + 8;

export function blockCount(length: number): number {
  return Math.ceil(length / DELTA_BLOCK_BYTES);
}

function blockLength(length: number, k: number): number {
  return Math.min(DELTA_BLOCK_BYTES, length - k * DELTA_BLOCK_BYTES);
}

/** The sum of one block: the first 8 bytes of its digest under `algorithm`. */
export function blockSum(algorithm: DigestAlgorithm, block: Uint8Array): Buffer {
  return digestOf(algorithm, block).subarray(0, BLOCK_SUM_BYTES);
}

/** The sums of `base` at the blocks of a chunk of `length` bytes placed `shift` bytes into it. */
export function baseBlockSums(algorithm: DigestAlgorithm, base: Uint8Array, shift: number, length: number): Buffer {
  const blocks = blockCount(length);
  const out = Buffer.alloc(blocks * BLOCK_SUM_BYTES);
  for (let k = 0; k < blocks; k++) {
    const from = shift + k * DELTA_BLOCK_BYTES;
    const to = from + blockLength(length, k);
    if (from < 0 || to > base.length) continue; // zero: not available
    blockSum(algorithm, base.subarray(from, to)).copy(out, k * BLOCK_SUM_BYTES);
  }
  return out;
}

/**
 * The delta record for `data` against a base whose sums are `baseSums`, and how many
 * bytes of `data` it carries literally.
 */
export function encodeDelta(
  algorithm: DigestAlgorithm,
  digest: Uint8Array,
  baseDigest: Uint8Array,
  shift: number,
  data: Uint8Array,
  baseSums: Uint8Array,
): { record: Buffer; literalBytes: number } {
  const blocks = blockCount(data.length);
  const bitmap = Buffer.alloc(Math.ceil(blocks / 8));
  const literals: Uint8Array[] = [];
  let literalBytes = 0;
  for (let k = 0; k < blocks; k++) {
    const block = data.subarray(k * DELTA_BLOCK_BYTES, k * DELTA_BLOCK_BYTES + blockLength(data.length, k));
    if (blockSum(algorithm, block).equals(baseSums.subarray(k * BLOCK_SUM_BYTES, (k + 1) * BLOCK_SUM_BYTES))) {
      bitmap[k >> 3]! |= 1 << (k & 7);
    } else {
      literals.push(block);
      literalBytes += block.length;
    }
  }
  const head = Buffer.alloc(DELTA_HEADER_BYTES);
  head.set(digest, 0);
  head.set(baseDigest, DIGEST_BYTES);
  head.writeInt32LE(shift, 2 * DIGEST_BYTES);
  head.writeUInt32LE(data.length, 2 * DIGEST_BYTES + 4);
  return { record: Buffer.concat([head, bitmap, ...literals]), literalBytes };
}

/** Bytes of the bitmap and literals that follow a delta header for `length`, given the bitmap. */
export function deltaBitmapBytes(length: number): number {
  return Math.ceil(blockCount(length) / 8);
}

export function deltaLiteralBytes(length: number, bitmap: Uint8Array): number {
  let n = 0;
  for (let k = 0; k < blockCount(length); k++) if ((bitmap[k >> 3]! & (1 << (k & 7))) === 0) n += blockLength(length, k);
  return n;
}

/**
 * Rebuilds a chunk of `length` bytes from `base` (copied blocks) and `literals` (the rest,
 * in order). Throws InvalidArgumentError if a copied block lies outside the base.
 */
export function applyDelta(base: Uint8Array, shift: number, length: number, bitmap: Uint8Array, literals: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(length);
  let used = 0;
  for (let k = 0; k < blockCount(length); k++) {
    const n = blockLength(length, k);
    const at = k * DELTA_BLOCK_BYTES;
    if ((bitmap[k >> 3]! & (1 << (k & 7))) !== 0) {
      const from = shift + at;
      if (from < 0 || from + n > base.length) throw new InvalidArgumentError(`delta block ${k} lies outside its base chunk`);
      out.set(base.subarray(from, from + n), at);
    } else {
      if (used + n > literals.length) throw new InvalidArgumentError('delta record ends before its literal blocks');
      out.set(literals.subarray(used, used + n), at);
      used += n;
    }
  }
  if (used !== literals.length) throw new InvalidArgumentError('delta record has more literal bytes than blocks');
  return out;
}
