/**
 * The binary bodies of the chunk endpoints (docs/PROTOCOL.md), encoded and decoded here
 * for both sides: the client (store/http/) and the server (server/routes/chunks.ts).
 *
 *   digest list     N x [32-byte digest]                      chunks/missing, chunks/fetch requests
 *   missing bitmap  ceil(N/8) bytes; bit i & 7 of byte i >> 3 set when digest i is NOT stored
 *   chunk record    [u32 length LE][32-byte digest][length bytes]   uploads, fetch answers;
 *                   in a fetch answer [0xFFFFFFFF][digest] alone: not stored
 */
import { InvalidArgumentError } from '../core/errors.js';
import type { ByteQueue } from '../core/bytes.js';
import { DIGEST_BYTES, type ChunkId, type DigestAlgorithm } from '../core/ids.js';

/** The bytes before a chunk record's data: u32 length + digest. */
export const CHUNK_RECORD_HEAD_BYTES = 4 + DIGEST_BYTES;
/** The length field of a fetch answer's record for a chunk the server does not have. */
export const MISSING_CHUNK_LENGTH = 0xffffffff;

/** A digest list of `ids` (all of one algorithm: the request's). */
export function encodeDigests(ids: readonly ChunkId[]): Buffer {
  const body = Buffer.allocUnsafe(ids.length * DIGEST_BYTES);
  ids.forEach((id, i) => body.set(id.digest, i * DIGEST_BYTES));
  return body;
}

/** The ids of a digest list (views of `body`); 1 to `max` digests, else InvalidArgumentError. */
export function decodeDigests(body: Buffer, algorithm: DigestAlgorithm, max: number): ChunkId[] {
  if (body.length === 0 || body.length % DIGEST_BYTES !== 0) throw new InvalidArgumentError(`body must be a non-empty list of ${DIGEST_BYTES}-byte digests`);
  if (body.length / DIGEST_BYTES > max) throw new InvalidArgumentError(`body lists ${body.length / DIGEST_BYTES} digests, over the limit of ${max}`);
  const ids: ChunkId[] = [];
  for (let o = 0; o < body.length; o += DIGEST_BYTES) ids.push({ algorithm, digest: body.subarray(o, o + DIGEST_BYTES) });
  return ids;
}

/** The missing bitmap answering a digest list, from which of them are stored. */
export function encodeMissingBitmap(present: readonly boolean[]): Buffer {
  const bitmap = Buffer.alloc(Math.ceil(present.length / 8));
  for (let i = 0; i < present.length; i++) if (!present[i]) bitmap[i >> 3]! |= 1 << (i & 7);
  return bitmap;
}

/** Which of `count` digests are stored, from a missing bitmap; undefined if it has the wrong size. */
export function decodeMissingBitmap(bitmap: Uint8Array, count: number): boolean[] | undefined {
  if (bitmap.length !== Math.ceil(count / 8)) return undefined;
  const present = new Array<boolean>(count);
  for (let k = 0; k < count; k++) present[k] = (bitmap[k >> 3]! & (1 << (k & 7))) === 0;
  return present;
}

/** Bytes of a chunk record carrying `length` bytes of data. */
export function chunkRecordBytes(length: number): number {
  return CHUNK_RECORD_HEAD_BYTES + length;
}

/** Writes a whole chunk record into `out` at `at`; returns the bytes written. */
export function writeChunkRecord(out: Buffer, at: number, digest: Uint8Array, data: Uint8Array): number {
  out.writeUInt32LE(data.length, at);
  out.set(digest, at + 4);
  out.set(data, at + CHUNK_RECORD_HEAD_BYTES);
  return chunkRecordBytes(data.length);
}

/**
 * The head of a record whose `length` data bytes are written after it (a fetch answer
 * writes head and data apart: a concatenation would copy every chunk served), or of a
 * missing chunk's record (`length` undefined).
 */
export function chunkRecordHead(digest: Uint8Array, length: number | undefined): Buffer {
  const head = Buffer.allocUnsafe(CHUNK_RECORD_HEAD_BYTES);
  head.writeUInt32LE(length ?? MISSING_CHUNK_LENGTH, 0);
  head.set(digest, 4);
  return head;
}

/** The records of a body of whole chunk records, as views (a body this side wrote). */
export function splitChunkRecords(body: Buffer): { digest: Buffer; record: Buffer }[] {
  const out: { digest: Buffer; record: Buffer }[] = [];
  for (let o = 0; o < body.length;) {
    const n = chunkRecordBytes(body.readUInt32LE(o));
    out.push({ digest: body.subarray(o + 4, o + CHUNK_RECORD_HEAD_BYTES), record: body.subarray(o, o + n) });
    o += n;
  }
  return out;
}

/** A chunk record at the front of a queue, complete (see peekChunkRecord). */
export interface ChunkRecordHead {
  /** The data's bytes; undefined for a missing chunk's record. */
  readonly length: number | undefined;
  /** A view that stays valid after the record is taken. */
  readonly digest: Buffer;
}

/**
 * The record at the front of `queue` once all of it has arrived, else undefined. A length
 * over `maxChunkBytes` throws `fail(message)`; the missing marker is taken only where
 * `allowMissing` (fetch answers), else it is a length over the limit too.
 */
export function peekChunkRecord(queue: ByteQueue, maxChunkBytes: number, allowMissing: boolean, fail: (message: string) => Error): ChunkRecordHead | undefined {
  if (queue.length < CHUNK_RECORD_HEAD_BYTES) return undefined;
  const head = queue.peek(CHUNK_RECORD_HEAD_BYTES);
  const length = head.readUInt32LE(0);
  const digest = head.subarray(4);
  if (length === MISSING_CHUNK_LENGTH && allowMissing) return { length: undefined, digest };
  if (length > maxChunkBytes) throw fail(`chunk record of ${length} bytes (a chunk has at most ${maxChunkBytes})`);
  if (queue.length < CHUNK_RECORD_HEAD_BYTES + length) return undefined;
  return { length, digest };
}

/**
 * Takes the record peekChunkRecord found off the queue and returns its data: a view, or a
 * copy made in `into` (see ByteQueue.take).
 */
export function takeChunkRecord(queue: ByteQueue, head: ChunkRecordHead, into?: Buffer): Buffer {
  queue.take(CHUNK_RECORD_HEAD_BYTES);
  if (!head.length) return Buffer.alloc(0);
  return queue.take(head.length, into);
}
