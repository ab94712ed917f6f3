/**
 * Zero chunks: the chunks holes and zero-filled regions of disk images are cut into.
 *
 * Definition (shared by every writer and reader, so they can never disagree): a chunk is a
 * zero chunk when its length is a positive multiple of ZERO_CHUNK_ALIGN_BYTES (at most the
 * largest chunk any chunker cuts) and its digest is the digest of that many zero bytes.
 * A run of zeros is cut into such chunks by both chunkers: FastCDC cuts zeros at the same
 * length every time (its maximum with the default parameters), --fixed at its size; only
 * the remainder of a run (where data begins, or the end of the file) is an ordinary chunk.
 *
 * Contract: zero chunks are never stored, sent or fetched. Push does not query or upload
 * them, so a store need not hold them; whoever rebuilds a file synthesises their bytes
 * (zeroBytes) instead of asking a store, and writes them as holes where it can. The
 * manifest lists them like any chunk: the whole-file digest is of the logical content.
 */
import type { DigestAlgorithm } from '../core/ids.js';
import { KiB } from '../core/sizes.js';
import { digestOf } from '../hash/digest.js';
import { FASTCDC_MAX_BYTES_UPPER, FIXED_BYTES_UPPER } from './params.js';

/** A zero chunk's length is a multiple of this (a file system block, and every size option's unit). */
export const ZERO_CHUNK_ALIGN_BYTES = 4 * KiB;
/** The longest zero chunk: the largest chunk either chunker may cut. */
export const MAX_ZERO_CHUNK_BYTES = Math.max(FASTCDC_MAX_BYTES_UPPER, FIXED_BYTES_UPPER);
/**
 * Zero digests remembered, by algorithm and length. A push or pull meets one or two
 * lengths (the chunker's zero-run length, a --fixed size); ordinary chunks of an aligned
 * length add entries too (about 1 in 4096 of them), hence the bound: when full it is
 * cleared, which costs one hash of zeros per length met again.
 */
const ZERO_DIGEST_CACHE_ENTRIES = 64;

const digests = new Map<string, Buffer>();
let zeros: Buffer | undefined;

/** `length` zero bytes, a view of one shared read-only buffer: callers must not write to it. */
export function zeroBytes(length: number): Buffer {
  if (length > MAX_ZERO_CHUNK_BYTES) throw new RangeError(`zero chunk of ${length} bytes: at most ${MAX_ZERO_CHUNK_BYTES}`);
  zeros ??= Buffer.alloc(MAX_ZERO_CHUNK_BYTES);
  return zeros.subarray(0, length);
}

/**
 * Whether `data` is a view of the buffer zeroBytes() hands out: zeros known as such, which a
 * writer may leave as a hole without looking at them (a rebuilt zero chunk, a zero run of a
 * scanned file). Any other bytes, zeros or not, answer false.
 */
export function isZeroBytesView(data: Uint8Array): boolean {
  return zeros !== undefined && data.length > 0 && data.buffer === zeros.buffer;
}

/**
 * Whether `buffer` is the one zeroBytes() views: a holder of views that gives buffers back
 * for reuse (ScanPool.recycle) must never give this one, which others read as zeros.
 */
export function isSharedZeros(buffer: ArrayBufferLike): boolean {
  return zeros !== undefined && buffer === zeros.buffer;
}

/** Whether a chunk of this length can be a zero chunk at all (cheap: no hashing). */
export function mayBeZeroChunk(length: number): boolean {
  return length > 0 && length % ZERO_CHUNK_ALIGN_BYTES === 0 && length <= MAX_ZERO_CHUNK_BYTES;
}

/** The last digest zeroDigest gave: a sparse image asks for the same one 262,144 times per 64 GiB. */
let last: { algorithm: DigestAlgorithm; length: number; digest: Buffer } | undefined;

/** The digest of `length` zero bytes (length as mayBeZeroChunk allows). */
export function zeroDigest(algorithm: DigestAlgorithm, length: number): Buffer {
  if (last !== undefined && last.length === length && last.algorithm === algorithm) return last.digest;
  const key = `${algorithm}:${length}`;
  let d = digests.get(key);
  if (!d) {
    if (digests.size >= ZERO_DIGEST_CACHE_ENTRIES) digests.clear();
    d = digestOf(algorithm, zeroBytes(length));
    digests.set(key, d);
  }
  last = { algorithm, length, digest: d };
  return d;
}

/** Whether the chunk (length, digest) is a zero chunk (see the module comment). */
export function isZeroChunk(algorithm: DigestAlgorithm, length: number, digest: Uint8Array): boolean {
  return mayBeZeroChunk(length) && zeroDigest(algorithm, length).equals(digest);
}

/** Writes skip zero bytes in pieces of this size, aligned to file offsets (a file system block). */
export const SPARSE_BLOCK_BYTES = 4 * KiB;

/**
 * The parts of `data` (to be written at file offset `position`) that hold a non-zero byte,
 * as [start, end) offsets into data, in order: data is cut at every SPARSE_BLOCK_BYTES
 * boundary of the file and the all-zero pieces are left out, neighbours joined. A writer
 * writes only these where the file is still a hole, and the zero pieces stay holes (a
 * hole reads as zeros; a block that a neighbouring write allocates reads as zeros where
 * nothing was written).
 */
export function nonZeroRuns(data: Uint8Array, position: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const zeros = zeroBytes(SPARSE_BLOCK_BYTES);
  let at = 0;
  while (at < bytes.length) {
    const end = Math.min(bytes.length, at + SPARSE_BLOCK_BYTES - ((position + at) % SPARSE_BLOCK_BYTES));
    const n = end - at;
    const zero = bytes[at] === 0 && bytes[end - 1] === 0 && bytes.compare(zeros, 0, n, at, end) === 0;
    if (!zero) {
      const last = runs[runs.length - 1];
      if (last && last[1] === at) last[1] = end;
      else runs.push([at, end]);
    }
    at = end;
  }
  return runs;
}
