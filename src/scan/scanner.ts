import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { throwIfAborted } from '../core/abort.js';
import { fromSystemError, SourceChangedError, XferError } from '../core/errors.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { DIGEST_BYTES, maxChunkBytes } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { createHasher, digestOf } from '../hash/digest.js';
import type { ScanPool } from './pool.js';
import { chunkerFor, ChunkColumns, cutAndHash, type SegmentResult } from './segment.js';

/** Segments are at least this large, and at least 4x the largest chunk (see stitch()). */
export const SEGMENT_BYTES = 8 * MiB;
/** Bytes read from a non-seekable stream per buffer. */
export const STREAM_BUFFER_BYTES = 8 * MiB;

export interface ScanOptions {
  readonly chunker: ChunkerSpec;
  readonly digestAlgorithm: DigestAlgorithm;
  readonly implementation?: 'auto' | 'native' | 'typescript';
  readonly signal?: AbortSignal;
  /** For tests: a smaller segment size (still >= 4x max chunk). */
  readonly segmentBytes?: number;
}

/**
 * Consecutive chunks of one file, columnar: chunk i has lengths[i] bytes and digest
 * digests[i*32, i*32+32). `data` holds their bytes; data[0] is at file offset `offset`.
 * The consumer owns the batch. When it will never touch `data` again it may call release()
 * so the buffer is reused for a later segment (saving allocation and page faults); a
 * consumer that keeps views of `data` must not release. Releasing is optional.
 */
export interface ChunkBatch {
  readonly offset: number;
  readonly count: number;
  readonly lengths: Uint32Array;
  readonly digests: Uint8Array;
  readonly data: Uint8Array;
  release(): void;
}

const NO_RELEASE = () => {};

export interface FileScanResult {
  readonly size: number;
  readonly chunkCount: number;
  /** Digest of the whole content, as b3sum/sha256sum would print it. */
  readonly digest: Uint8Array;
}

export function chunkDigest(batch: ChunkBatch, i: number): Uint8Array {
  return batch.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
}

/**
 * Scans a regular file in parallel segments and yields its chunks in order, with exactly
 * the boundaries of one sequential pass.
 *
 * Why stitching is exact: FastCDC's cut after a chunk start depends only on the bytes from
 * that start. Each worker chunks its segment as if a chunk started at the segment start.
 * The true chain enters segment k at `pos` (the end of the last true chunk, which started
 * in segment k-1). If pos is one of the worker's chunk starts, the two chains are the same
 * from there on. If not, the stitcher cuts from pos itself, chunk by chunk, until it lands
 * on one of the worker's starts (usually within a chunk or two; long zero runs cut at max
 * may take the whole segment) or passes the segment end. Every chunk starting in a segment
 * ends within the worker's read of segment + max bytes, so no extra I/O is ever needed.
 *
 * Segment tasks are dispatched as soon as the scan is created (up to `ahead` in flight),
 * so creating several FileScans at once overlaps small files across workers.
 */
export class FileScan {
  readonly path: string;
  private readonly size: number;
  private readonly mtimeMs: number;
  private readonly options: ScanOptions;
  private readonly pool: ScanPool;
  private readonly segmentBytes: number;
  private readonly segmentCount: number;
  private readonly pending: (Promise<SegmentResult> | undefined)[] = [];
  private readonly ahead: number;
  private nextToDispatch = 0;
  private outcome?: FileScanResult;

  constructor(path: string, size: number, mtimeMs: number, pool: ScanPool, options: ScanOptions) {
    this.path = path;
    this.size = size;
    this.mtimeMs = mtimeMs;
    this.pool = pool;
    this.options = options;
    const max = maxChunkBytes(options.chunker);
    this.segmentBytes = Math.max(options.segmentBytes ?? SEGMENT_BYTES, 4 * max);
    this.segmentCount = Math.max(1, Math.ceil(size / this.segmentBytes));
    this.ahead = pool.threads + 1;
    if (size > 0) this.dispatch();
  }

  /** The whole-file result; valid once batches() has completed. */
  get result(): FileScanResult {
    if (!this.outcome) throw new XferError('XFER_INTERNAL', 'FileScan.result read before the scan completed');
    return this.outcome;
  }

  private dispatch(): void {
    while (this.nextToDispatch < this.segmentCount && this.nextToDispatch < this.consumed + this.ahead) {
      const k = this.nextToDispatch++;
      const start = k * this.segmentBytes;
      const end = Math.min(this.size, start + this.segmentBytes);
      const p = this.pool.run(
        {
          path: this.path,
          start,
          end,
          fileSize: this.size,
          chunker: this.options.chunker,
          implementation: this.options.implementation ?? 'auto',
          digestAlgorithm: this.options.digestAlgorithm,
          wholeFile: this.segmentCount === 1,
        },
        this.options.signal,
        Math.min(this.size, end + maxChunkBytes(this.options.chunker)) - start,
      );
      p.catch(() => {}); // observed when awaited in order; avoid unhandled rejections meanwhile
      this.pending[k] = p;
    }
  }

  private consumed = 0;

  async *batches(): AsyncGenerator<ChunkBatch> {
    const { digestAlgorithm: algorithm, signal } = this.options;
    if (this.size === 0) {
      await this.checkUnchanged();
      this.outcome = { size: 0, chunkCount: 0, digest: digestOf(algorithm, new Uint8Array(0)) };
      return;
    }
    const chunker = chunkerFor(this.options.chunker, this.options.implementation ?? 'auto');
    const hasher = this.segmentCount > 1 ? createHasher(algorithm) : undefined;
    let pos = 0;
    let chunkCount = 0;
    let fileDigest: Uint8Array | undefined;
    for (let k = 0; k < this.segmentCount; k++) {
      throwIfAborted(signal);
      const r = await this.pending[k]!;
      this.pending[k] = undefined;
      this.consumed = k + 1;
      this.dispatch();
      const S = k * this.segmentBytes;
      const E = Math.min(this.size, S + this.segmentBytes);
      const eof = S + r.data.length === this.size;
      const batchStart = pos;

      // Walk the worker's chunk starts (c) up to pos; cut ourselves until they coincide.
      let j = 0;
      let c = S;
      const advanceTo = (p: number): boolean => {
        while (j < r.count && c < p) c += r.lengths[j++]!;
        return c === p && j < r.count;
      };
      const fix = new ChunkColumns();
      if (!advanceTo(pos)) {
        const rel = cutAndHash(chunker, algorithm, r.data, pos - S, r.data.length, eof, E - S, fix, (p) => advanceTo(p + S));
        pos = S + rel;
        if (!advanceTo(pos)) j = r.count; // passed the segment end without meeting the worker's chain
      }
      let lengths = r.lengths.subarray(j, r.count);
      let digests = r.digests.subarray(j * DIGEST_BYTES, r.count * DIGEST_BYTES);
      if (fix.count > 0) {
        lengths = concatU32(fix.lengths.subarray(0, fix.count), lengths);
        digests = concatU8(fix.digests.subarray(0, fix.count * DIGEST_BYTES), digests);
      }
      let end = batchStart;
      for (let i = 0; i < lengths.length; i++) end += lengths[i]!;
      const data = r.data.subarray(batchStart - S, end - S);
      hasher?.update(data);
      if (this.segmentCount === 1) fileDigest = r.fileDigest;
      pos = end;
      chunkCount += lengths.length;
      const buffer = r.data.buffer as ArrayBuffer;
      let released = false;
      const release = () => {
        if (!released) this.pool.recycle(buffer);
        released = true;
      };
      if (lengths.length > 0) yield { offset: batchStart, count: lengths.length, lengths, digests, data, release };
      else release();
    }
    if (pos !== this.size) throw new XferError('XFER_INTERNAL', `${this.path}: scan ended at ${pos} of ${this.size} bytes`);
    await this.checkUnchanged();
    this.outcome = { size: this.size, chunkCount, digest: hasher ? hasher.digest() : fileDigest! };
  }

  /** A file that changed while it was read would produce a manifest of no real version of it. */
  private async checkUnchanged(): Promise<void> {
    let st;
    try {
      st = await stat(this.path);
    } catch (err) {
      throw fromSystemError(err, this.path, 'stat');
    }
    if (st.size !== this.size || Math.trunc(st.mtimeMs) !== Math.trunc(this.mtimeMs)) {
      throw new SourceChangedError(`${this.path}: file changed while it was being read; run again`);
    }
  }
}

function concatU32(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function concatU8(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Opens a regular file for scanning (stat first, so the scan can detect changes). */
export async function scanFile(path: string, pool: ScanPool, options: ScanOptions): Promise<FileScan> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw fromSystemError(err, path, 'stat');
  }
  if (!st.isFile()) throw new XferError('XFER_INVALID_ARGUMENT', `${path}: not a regular file`);
  return new FileScan(path, st.size, st.mtimeMs, pool, options);
}

/** What a stream scan reads: a Node stream, or any sync or async iterable of byte pieces. */
export type StreamSource = Readable | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/**
 * Scans a non-seekable stream (stdin, a pipe) sequentially on this thread. Yields the same
 * chunks a file scan of the same bytes would. `result` is set when the generator completes.
 */
export class StreamScan {
  private outcome?: FileScanResult;
  constructor(private readonly source: StreamSource, private readonly options: ScanOptions) {}

  get result(): FileScanResult {
    if (!this.outcome) throw new XferError('XFER_INTERNAL', 'StreamScan.result read before the scan completed');
    return this.outcome;
  }

  async *batches(): AsyncGenerator<ChunkBatch> {
    const { digestAlgorithm: algorithm, signal } = this.options;
    const chunker = chunkerFor(this.options.chunker, this.options.implementation ?? 'auto');
    const hasher = createHasher(algorithm);
    const cap = STREAM_BUFFER_BYTES + chunker.maxChunkBytes;
    let buf = new Uint8Array(cap);
    let fill = 0; // bytes in buf
    let offset = 0; // stream offset of buf[0]
    let chunkCount = 0;
    const src = this.source as Partial<AsyncIterable<Uint8Array> & Iterable<Uint8Array>>;
    const it: AsyncIterator<Uint8Array> | Iterator<Uint8Array> = src[Symbol.asyncIterator]?.() ?? src[Symbol.iterator]!();
    let pending: Uint8Array | undefined;
    let eof = false;
    while (!eof || fill > 0) {
      throwIfAborted(signal);
      // Fill the buffer to capacity or end of stream.
      while (!eof && fill < cap) {
        if (!pending || pending.length === 0) {
          const n = await it.next();
          if (n.done) {
            eof = true;
            break;
          }
          pending = n.value instanceof Uint8Array ? n.value : Buffer.from(n.value as string);
        }
        const take = Math.min(pending.length, cap - fill);
        buf.set(pending.subarray(0, take), fill);
        fill += take;
        pending = pending.subarray(take);
      }
      const cols = new ChunkColumns();
      const used = cutAndHash(chunker, algorithm, buf, 0, fill, eof, Infinity, cols);
      if (cols.count > 0) {
        const data = buf.subarray(0, used);
        hasher.update(data);
        yield {
          offset,
          count: cols.count,
          lengths: cols.lengths.subarray(0, cols.count),
          digests: cols.digests.subarray(0, cols.count * DIGEST_BYTES),
          data,
          release: NO_RELEASE,
        };
        chunkCount += cols.count;
      }
      // The batch owns buf[0, used): continue in a fresh buffer with the remainder.
      const next = new Uint8Array(cap);
      next.set(buf.subarray(used, fill));
      fill -= used;
      offset += used;
      buf = next;
      if (eof && used === 0 && fill > 0) throw new XferError('XFER_INTERNAL', 'stream scan made no progress');
    }
    this.outcome = { size: offset, chunkCount, digest: hasher.digest() };
  }
}
