import { closeSync, openSync, readSync } from 'node:fs';
import type { Chunker } from '../chunker/chunker.js';
import { createChunker } from '../chunker/index.js';
import { fromSystemError, SourceChangedError } from '../core/errors.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { DIGEST_BYTES } from '../core/ids.js';
import { digestOf } from '../hash/digest.js';

/**
 * One unit of parallel work: chunk and hash the chunks of a file that START in
 * [start, end), as if a chunk started at `start`. The worker reads [start, end + max)
 * (clamped to the file size) so that every such chunk can be cut and hashed whole.
 */
export interface SegmentTask {
  readonly path: string;
  readonly start: number;
  readonly end: number;
  readonly fileSize: number;
  readonly chunker: ChunkerSpec;
  readonly implementation: 'auto' | 'native' | 'typescript';
  readonly digestAlgorithm: DigestAlgorithm;
  /** The task covers the whole file: also return the whole-file digest. */
  readonly wholeFile: boolean;
  /** A recycled buffer to read into (transferred with the task), if large enough. */
  readonly buffer?: ArrayBuffer;
}

/** Chunk lengths and digests (columnar), and the bytes read, which the caller now owns. */
export interface SegmentResult {
  readonly count: number;
  readonly lengths: Uint32Array;
  /** count * DIGEST_BYTES bytes. */
  readonly digests: Uint8Array;
  /** File bytes [start, start + data.length). */
  readonly data: Uint8Array;
  readonly fileDigest?: Uint8Array;
}

const CUT_BATCH = 4096;
const chunkers = new Map<string, Chunker>();

export function chunkerFor(spec: ChunkerSpec, implementation: SegmentTask['implementation']): Chunker {
  const key = `${JSON.stringify(spec)}/${implementation}`;
  let c = chunkers.get(key);
  if (!c) {
    c = createChunker(spec, { implementation });
    chunkers.set(key, c);
  }
  return c;
}

/** Reads exactly data.length bytes at `position`; a short read means the file shrank. */
function readFully(fd: number, data: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < data.length) {
    const n = readSync(fd, data, done, data.length - done, position + done);
    if (n === 0) throw new SourceChangedError(`${path}: file shrank while it was being read`);
    done += n;
  }
}

/**
 * Cuts chunks from data[from, to) whose start is before `startLimit` (all relative to data),
 * appending to the growable columns. Shared by workers and the main-thread stitcher.
 */
export class ChunkColumns {
  count = 0;
  lengths = new Uint32Array(256);
  digests = new Uint8Array(256 * DIGEST_BYTES);

  push(length: number, digest: Uint8Array): void {
    if (this.count === this.lengths.length) {
      const l = new Uint32Array(this.lengths.length * 2);
      l.set(this.lengths);
      this.lengths = l;
      const d = new Uint8Array(this.digests.length * 2);
      d.set(this.digests);
      this.digests = d;
    }
    this.lengths[this.count] = length;
    this.digests.set(digest, this.count * DIGEST_BYTES);
    this.count++;
  }
}

/** Chunks data[pos, end) (eof says end is the file's end) and hashes each chunk. */
export function cutAndHash(
  chunker: Chunker, algorithm: DigestAlgorithm, data: Uint8Array, pos: number, end: number, eof: boolean,
  startLimit: number, cols: ChunkColumns, stopAt?: (pos: number) => boolean,
): number {
  const out = new Uint32Array(stopAt ? 1 : CUT_BATCH);
  for (;;) {
    const n = chunker.cut(data, pos, end, eof, startLimit, out);
    if (n === 0) return pos;
    for (let i = 0; i < n; i++) {
      const len = out[i]!;
      cols.push(len, digestOf(algorithm, data.subarray(pos, pos + len)));
      pos += len;
    }
    if (stopAt && stopAt(pos)) return pos;
  }
}

export function scanSegment(task: SegmentTask): SegmentResult {
  const chunker = chunkerFor(task.chunker, task.implementation);
  const readEnd = Math.min(task.fileSize, task.end + chunker.maxChunkBytes);
  const need = readEnd - task.start;
  const data = task.buffer && task.buffer.byteLength >= need ? new Uint8Array(task.buffer, 0, need) : new Uint8Array(new ArrayBuffer(need));
  let fd: number;
  try {
    fd = openSync(task.path, 'r');
  } catch (err) {
    throw fromSystemError(err, task.path, 'open');
  }
  try {
    readFully(fd, data, task.start, task.path);
  } catch (err) {
    throw fromSystemError(err, task.path, 'read');
  } finally {
    closeSync(fd);
  }
  const cols = new ChunkColumns();
  const eof = readEnd === task.fileSize;
  cutAndHash(chunker, task.digestAlgorithm, data, 0, data.length, eof, task.end - task.start, cols);
  return {
    count: cols.count,
    lengths: cols.lengths,
    digests: cols.digests,
    data,
    fileDigest: task.wholeFile ? digestOf(task.digestAlgorithm, data) : undefined,
  };
}
