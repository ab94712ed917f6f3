import { closeSync, openSync, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { throwIfAborted, untilAborted } from '../core/abort.js';
import { AbortedError, fromSystemError, SourceChangedError, XferError } from '../core/errors.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { DIGEST_BYTES, maxChunkBytes } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import type { Chunker } from '../chunker/chunker.js';
import { createHasher, digestOf } from '../hash/digest.js';
import { MAX_ZERO_CHUNK_BYTES, zeroBytes } from '../chunker/zero.js';
import { BLAKE3_CHUNK_BYTES, CV_BYTES, CvStack, isTreeSpan, treeBinding, type TreeBinding } from '../hash/tree.js';
import { knownZeroCv, rememberZeroCv } from '../hash/zero-cvs.js';
import { blockDeviceSize, seekData, seekHole } from '../io/sys.js';
import { DIGEST_THREAD_MIN_BYTES, DigestThread } from './digest-thread.js';
import type { ScanPool } from './pool.js';
import { chunkerFor, ChunkColumns, cutAndHash, SEGMENT_ALIGN_SLACK_BYTES, type BytesSegmentTask, type SegmentResult } from './segment.js';

/** Segments are at least this large, and at least 4x the largest chunk (see stitch()). */
export const SEGMENT_BYTES = 8 * MiB;
/**
 * Segments a file scan may have dispatched ahead of its consumer, at most, counting the
 * all-hole ones it makes itself (8 GiB of a sparse image at SEGMENT_BYTES): the workers'
 * segments alone are bounded by `ahead`. Counted together, a sparse image's data extents
 * lying more than `ahead` segments apart were scanned one at a time, by one worker (a
 * 64 GiB image with 512 MiB of data in extents 1 GiB apart: 1.67 s against 1.0 s for the
 * same data dense, the other worker idle).
 */
export const MAX_SEGMENTS_AHEAD = 1024;

export interface ScanOptions {
  readonly chunker: ChunkerSpec;
  readonly digestAlgorithm: DigestAlgorithm;
  readonly implementation?: 'auto' | 'native' | 'typescript';
  readonly signal?: AbortSignal;
  /** For tests: a smaller segment size (still >= 4x max chunk). */
  readonly segmentBytes?: number;
  /**
   * StreamScan only: the workers to chunk and hash segments in. Without it a stream is
   * scanned on the calling thread. (FileScan always takes its pool as an argument.)
   */
  readonly pool?: ScanPool;
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

export interface FileScanResult {
  readonly size: number;
  readonly chunkCount: number;
  /** Digest of the whole content, as b3sum/sha256sum would print it. */
  readonly digest: Uint8Array;
  /** Bytes read: the size less the holes skipped (see segment.ts readSegment); a stream's size. */
  readonly dataBytes: number;
}

export function chunkDigest(batch: ChunkBatch, i: number): Uint8Array {
  return batch.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
}

/**
 * Joins segment results, in order, into the one chain of chunks a sequential pass cuts.
 * Shared by FileScan and StreamScan.
 *
 * Why stitching is exact: FastCDC's cut after a chunk start depends only on the bytes from
 * that start. Each worker chunks its segment as if a chunk started at the segment start.
 * The true chain enters segment k at `pos` (the end of the last true chunk, which started
 * in segment k-1). If pos is one of the worker's chunk starts, the two chains are the same
 * from there on. If not, the stitcher cuts from pos itself, chunk by chunk, until it lands
 * on one of the worker's starts (usually within a chunk or two; inside a long zero run,
 * where every chunk is cut at max, not before the run ends: cheap, see cutAndHash) or
 * passes the segment end. Every chunk starting in a segment
 * ends within the segment's bytes plus max chunk bytes (or at the end of the input), which
 * is what every segment result holds, so the stitcher never needs other bytes.
 *
 * A result with no chunks (count 0) is valid: the stitcher then cuts the whole segment
 * itself, which is how a stream is scanned without a pool.
 */
class Stitcher {
  /** Input offset where the next chunk starts: the end of everything stitched so far. */
  pos = 0;
  chunkCount = 0;

  constructor(
    private readonly chunker: Chunker,
    private readonly algorithm: DigestAlgorithm,
    /**
     * Fed every stitched batch in order (its bytes, chunk count, lengths and digests), when
     * the caller needs the whole-content digest.
     */
    private readonly feed: ((data: Uint8Array, count: number, lengths: Uint32Array, digests: Uint8Array) => void) | undefined,
    /** Takes back a segment buffer once its batch is released (or has no chunks). */
    private readonly recycle: (buffer: ArrayBuffer) => void,
  ) {}

  /**
   * Stitches the result of the segment that starts at input offset `start` and whose
   * chunk starts lie before `end`; `eof` says r.data reaches the end of the input.
   * Returns the segment's chunks as a batch, or undefined when none start in it.
   */
  stitch(r: SegmentResult, start: number, end: number, eof: boolean): ChunkBatch | undefined {
    const batchStart = this.pos;
    // Walk the worker's chunk starts (c) up to pos; cut ourselves until they coincide.
    let j = 0;
    let c = start;
    const advanceTo = (p: number): boolean => {
      while (j < r.count && c < p) c += r.lengths[j++]!;
      return c === p && j < r.count;
    };
    const fix = new ChunkColumns();
    let pos = this.pos;
    if (!advanceTo(pos)) {
      const stopAt = r.count > 0 ? (p: number) => advanceTo(p + start) : undefined;
      pos = start + cutAndHash(this.chunker, this.algorithm, r.data, pos - start, r.data.length, eof, end - start, fix, stopAt, r.holes);
      if (!advanceTo(pos)) j = r.count; // passed the segment end without meeting the worker's chain
    }
    let lengths = r.lengths.subarray(j, r.count);
    let digests = r.digests.subarray(j * DIGEST_BYTES, r.count * DIGEST_BYTES);
    if (fix.count > 0) {
      const fixLengths = fix.lengths.subarray(0, fix.count);
      const fixDigests = fix.digests.subarray(0, fix.count * DIGEST_BYTES);
      lengths = lengths.length > 0 ? concatU32(fixLengths, lengths) : fixLengths;
      digests = digests.length > 0 ? concatU8(fixDigests, digests) : fixDigests;
    }
    let batchEnd = batchStart;
    for (let i = 0; i < lengths.length; i++) batchEnd += lengths[i]!;
    const data = r.data.subarray(batchStart - start, batchEnd - start);
    this.feed?.(data, lengths.length, lengths, digests);
    this.pos = batchEnd;
    this.chunkCount += lengths.length;
    const buffer = r.data.buffer as ArrayBuffer;
    let released = false;
    const release = () => {
      if (!released) this.recycle(buffer);
      released = true;
    };
    if (lengths.length === 0) {
      release();
      return undefined;
    }
    return { offset: batchStart, count: lengths.length, lengths, digests, data, release };
  }
}

/**
 * Scans a regular file in parallel segments and yields its chunks in order, with exactly
 * the boundaries of one sequential pass.
 *
 * Each worker reads its segment plus max chunk bytes, so stitching (see Stitcher) never
 * needs extra I/O.
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
  /** Worker segments dispatched and not yet consumed, at most (see MAX_SEGMENTS_AHEAD). */
  private readonly ahead: number;
  private nextToDispatch = 0;
  /** The segments in [consumed, nextToDispatch) that went to a worker. */
  private readonly inWorkers = new Set<number>();
  private outcome?: FileScanResult;
  /**
   * The whole-file BLAKE3 digest is merged from the workers' segment CVs (hash/tree.ts):
   * set for a file of several segments of a power of two 1 KiB chunks when the native
   * addon is there. Otherwise (SHA-256, no addon, a test's odd segment size) it is one
   * sequential hash, here or on a DigestThread: the same digest.
   */
  private readonly tree: TreeBinding | null;

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
    this.tree = options.digestAlgorithm === 'blake3' && this.segmentCount > 1 && isTreeSpan(this.segmentBytes) ? treeBinding() : null;
    if (size > 0) this.dispatch();
  }

  /** The whole-file result; valid once batches() has completed. */
  get result(): FileScanResult {
    if (!this.outcome) throw new XferError('XFER_INTERNAL', 'FileScan.result read before the scan completed');
    return this.outcome;
  }

  /**
   * What the last probe of the file's layout (SEEK_DATA, SEEK_HOLE from `probedAt`) found:
   * [probedAt, dataAt) is hole, [dataAt, holeAt) data (Infinity: none). A file that
   * changes meanwhile is caught by the checks after the scan, as the workers' reads are.
   */
  private probedAt = -1;
  private dataAt = 0;
  private holeAt = 0;

  /**
   * Whether the file bytes [start, readEnd) are all hole, from one probe per data extent
   * (none again inside a known extent or hole). False whenever it cannot tell.
   */
  private allHole(start: number, readEnd: number): boolean {
    if (this.probedAt < 0 || start >= this.holeAt || start < this.probedAt) {
      let fd: number | undefined;
      try {
        fd = openSync(this.path, 'r');
        const data = seekData(fd, start);
        this.dataAt = data < 0 ? Infinity : data;
        const hole = data < 0 ? -1 : seekHole(fd, data);
        this.holeAt = hole < 0 ? Infinity : hole;
        this.probedAt = start;
      } catch {
        this.probedAt = -1;
        return false; // the worker's read reports it
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    }
    return readEnd <= this.dataAt;
  }

  /**
   * The result of a segment whose bytes (with their lookahead) are all hole, made here
   * instead of by a worker: a sparse image's holes cost no task, message or buffer (a
   * 64 GiB image with 512 MiB of data was 8,192 tasks at about 140 us of this thread's
   * time each). Its bytes are a view of the shared zeros (zeroBytes, never written to nor
   * recycled), which the stitcher cuts as known holes; its CV is the one kept for it
   * (hash/zero-cvs.ts) or hashed on libuv's threads. Undefined where a worker must do it.
   */
  private holeSegment(start: number, end: number, readEnd: number): Promise<SegmentResult> | undefined {
    if (this.segmentCount === 1 || readEnd - start > MAX_ZERO_CHUNK_BYTES || !this.allHole(start, readEnd)) return undefined;
    const data = zeroBytes(readEnd - start);
    const result = (segmentCv?: Uint8Array): SegmentResult => ({
      count: 0,
      lengths: new Uint32Array(0),
      digests: new Uint8Array(0),
      data,
      holes: [0, data.length],
      dataBytes: 0,
      ...(segmentCv ? { segmentCv } : {}),
    });
    if (!this.tree) return Promise.resolve(result());
    const known = knownZeroCv(start, end - start);
    if (known) return Promise.resolve(result(known));
    const cv = new Uint8Array(CV_BYTES);
    return this.tree.blake3CvAsync(null, end - start, start / BLAKE3_CHUNK_BYTES, cv).then(() => result(cv));
  }

  private dispatch(): void {
    while (this.nextToDispatch < this.segmentCount && this.inWorkers.size < this.ahead && this.nextToDispatch < this.consumed + MAX_SEGMENTS_AHEAD) {
      const k = this.nextToDispatch++;
      const start = k * this.segmentBytes;
      const end = Math.min(this.size, start + this.segmentBytes);
      const readEnd = Math.min(this.size, end + maxChunkBytes(this.options.chunker));
      const hole = this.holeSegment(start, end, readEnd);
      if (hole) {
        hole.catch(() => {});
        this.pending[k] = hole;
        continue;
      }
      // A segment the last probe shows data in needs no zero CV: asked only where [start,
      // end) may be all hole (its lookahead holding the data) or the probe cannot tell.
      const probed = this.probedAt >= 0 && start >= this.probedAt && start < this.holeAt;
      const zeroCv = this.tree && !(probed && this.dataAt < end) ? knownZeroCv(start, end - start) : undefined;
      const p = this.pool.run(
        {
          kind: 'file',
          path: this.path,
          start,
          end,
          fileSize: this.size,
          chunker: this.options.chunker,
          implementation: this.options.implementation ?? 'auto',
          digestAlgorithm: this.options.digestAlgorithm,
          wholeFile: this.segmentCount === 1,
          ...(this.tree ? { segmentCv: true } : {}),
          ...(zeroCv ? { zeroCv } : {}),
          // One segment: the worker checks, with the file still open, that it did not change.
          ...(this.segmentCount === 1 ? { expectMtimeMs: this.mtimeMs } : {}),
        },
        this.options.signal,
        readEnd - start + SEGMENT_ALIGN_SLACK_BYTES,
      );
      p.catch(() => {}); // observed when awaited in order; avoid unhandled rejections meanwhile
      this.pending[k] = p;
      this.inWorkers.add(k);
    }
  }

  private consumed = 0;

  async *batches(): AsyncGenerator<ChunkBatch> {
    const { digestAlgorithm: algorithm, signal } = this.options;
    if (this.size === 0) {
      await this.checkUnchanged();
      this.outcome = { size: 0, chunkCount: 0, digest: digestOf(algorithm, new Uint8Array(0)), dataBytes: 0 };
      return;
    }
    const chunker = chunkerFor(this.options.chunker, this.options.implementation ?? 'auto');
    // One segment: the worker hashed the whole file; more: merge the workers' segment CVs
    // (tree), or hash the file in order, here or, for a large file, on a thread of its own
    // alongside the scan (DigestThread).
    const cvs = this.tree ? new CvStack(this.tree) : undefined;
    const sequential = this.segmentCount > 1 && !cvs;
    const thread = sequential && this.size >= DIGEST_THREAD_MIN_BYTES ? new DigestThread(algorithm) : undefined;
    const hasher = sequential && !thread ? createHasher(algorithm) : undefined;
    const feed = thread ? thread.feed.bind(thread) : hasher ? (data: Uint8Array) => hasher.update(data) : undefined;
    const stitcher = new Stitcher(chunker, algorithm, feed, (b) => this.pool.recycle(b));
    let fileDigest: Uint8Array | undefined;
    let dataBytes = 0;
    try {
      for (let k = 0; k < this.segmentCount; k++) {
        throwIfAborted(signal);
        const r = await this.pending[k]!;
        this.pending[k] = undefined;
        this.consumed = k + 1;
        this.inWorkers.delete(k);
        this.dispatch();
        const start = k * this.segmentBytes;
        const end = Math.min(this.size, start + this.segmentBytes);
        if (this.segmentCount === 1) fileDigest = r.fileDigest;
        if (cvs) {
          if (!r.segmentCv) throw new XferError('XFER_INTERNAL', `${this.path}: segment ${k} came back without its CV`);
          cvs.push(r.segmentCv);
          // All hole: its CV is that of zeros at this offset, which a rebuild in this
          // process (a local push) and later processes then need not compute again.
          if (r.dataBytes === 0) rememberZeroCv(start, end - start, r.segmentCv);
        }
        dataBytes += r.dataBytes;
        const batch = stitcher.stitch(r, start, end, start + r.data.length === this.size);
        await thread?.ready();
        if (batch) yield batch;
      }
      if (stitcher.pos !== this.size) throw new XferError('XFER_INTERNAL', `${this.path}: scan ended at ${stitcher.pos} of ${this.size} bytes`);
      if (this.segmentCount > 1) await this.checkUnchanged();
      if (cvs) fileDigest = cvs.digest();
      else if (thread) fileDigest = await thread.digest();
      else if (hasher) fileDigest = hasher.digest();
    } finally {
      await thread?.close();
    }
    this.outcome = { size: this.size, chunkCount: stitcher.chunkCount, digest: fileDigest!, dataBytes };
  }

  /** A file that changed while it was read would produce a manifest of no real version of it. */
  private async checkUnchanged(): Promise<void> {
    let st;
    try {
      st = await stat(this.path);
    } catch (err) {
      throw fromSystemError(err, this.path, 'stat');
    }
    if (st.isBlockDevice()) return; // no size or mtime of its content to compare (st_size is 0)
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

/**
 * The bytes a scan of `path` (stat()ed as `st`) reads: a regular file's size, or a block
 * device's (asked of the device: its st_size is 0). A block device is scanned like a file
 * of that size and recorded as one (a disk or partition pushed as an image).
 */
export async function scannableSize(path: string, st: Stats): Promise<number> {
  if (!st.isBlockDevice()) return st.size;
  let fh;
  try {
    fh = await open(path, 'r');
    return blockDeviceSize(fh.fd);
  } catch (err) {
    throw fromSystemError(err, path, 'read the size of');
  } finally {
    await fh?.close();
  }
}

/** Opens a regular file or block device for scanning (stat first, so the scan can detect changes). */
export async function scanFile(path: string, pool: ScanPool, options: ScanOptions): Promise<FileScan> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw fromSystemError(err, path, 'stat');
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new XferError('XFER_INVALID_ARGUMENT', `${path}: not a regular file or block device`);
  return new FileScan(path, await scannableSize(path, st), st.mtimeMs, pool, options);
}

/** What a stream scan reads: a Node stream, or any sync or async iterable of byte pieces. */
export type StreamSource = Readable | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/**
 * Scans a non-seekable stream (stdin, a pipe, a generated source) and yields the same
 * chunks, with the same digests, as one sequential pass or a FileScan of the same bytes.
 * `result` is set when the generator completes.
 *
 * With `options.pool`, segments are chunked and hashed in the pool's workers: this thread
 * copies the stream's pieces into segment buffers of segment + max chunk bytes (the next
 * segment's first max bytes are copied again at the head of the next buffer: the lookahead
 * every chunk starting in the segment may need), transfers each full buffer to a worker
 * (no copy) and stitches the results in order (Stitcher), exactly as FileScan does with
 * file segments. At most `pool.threads + 1` segments are read ahead of the consumer and
 * released buffers are recycled, so memory is bounded whatever the stream's length.
 * Without a pool, this thread cuts each segment itself, the same way.
 *
 * The whole-stream digest is computed on this thread, in order, over the stitched bytes.
 * When batches() settles (done, thrown, or abandoned by the consumer), no task of this
 * scan is still running in the pool, and an unfinished source has been closed
 * (`return()` on its iterator, which destroys a Readable).
 */
export class StreamScan {
  private outcome?: FileScanResult;
  constructor(private readonly source: StreamSource, private readonly options: ScanOptions) {}

  get result(): FileScanResult {
    if (!this.outcome) throw new XferError('XFER_INTERNAL', 'StreamScan.result read before the scan completed');
    return this.outcome;
  }

  async *batches(): AsyncGenerator<ChunkBatch> {
    const { digestAlgorithm: algorithm, signal, pool } = this.options;
    const implementation = this.options.implementation ?? 'auto';
    const chunker = chunkerFor(this.options.chunker, implementation);
    const max = chunker.maxChunkBytes;
    const segmentBytes = Math.max(this.options.segmentBytes ?? SEGMENT_BYTES, 4 * max);
    const capacity = segmentBytes + max;
    const hasher = createHasher(algorithm);
    const stitcher = new Stitcher(chunker, algorithm, (data) => hasher.update(data), (b) => pool?.recycle(b));
    const reader = new PieceReader(this.source, signal);
    const ahead = pool ? pool.threads + 1 : 1;
    /** Dispatched segments, in stream order; the head leaves once its result has settled. */
    const queue: { start: number; end: number; eof: boolean; result: Promise<SegmentResult> }[] = [];
    const acquire = () => new Uint8Array(pool ? pool.acquire(capacity) : new ArrayBuffer(capacity), 0, capacity);
    let buf = acquire(); // the segment being filled: stream bytes [start, start + fill)
    let fill = 0;
    let start = 0;

    /** Hands buf[0, length) to a worker (or, without a pool, to the stitcher as is). */
    const dispatch = (length: number, eof: boolean) => {
      const startLimit = eof ? length : segmentBytes;
      const task: BytesSegmentTask = {
        kind: 'bytes', bytes: buf.buffer as ArrayBuffer, length, startLimit, eof, chunker: this.options.chunker, implementation, digestAlgorithm: algorithm,
      };
      const result = pool ? pool.run(task, signal) : Promise.resolve(unchunked(buf.subarray(0, length)));
      result.catch(() => {}); // observed when awaited in order; avoid unhandled rejections meanwhile
      queue.push({ start, end: start + startLimit, eof, result });
    };

    // The producer reads the stream into segment buffers and dispatches them, at most
    // `ahead` at a time, filling the next buffer while it waits for room: reading (from a
    // pipe, or generating) overlaps with the workers and with the consumer. It never throws;
    // a failure is kept for the consumer. `stopped` is checked before every dispatch.
    let stopped = false;
    let producing = true;
    let failure: { error: unknown } | undefined;
    let wakeConsumer = () => {};
    let wakeProducer = () => {};
    const producer = (async () => {
      try {
        while (!reader.done && !stopped) {
          fill = await reader.fill(buf, fill);
          if (fill === 0) break; // empty stream
          while (queue.length >= ahead && !stopped) await new Promise<void>((r) => (wakeProducer = r));
          if (stopped) break;
          if (fill === capacity) {
            // Full: the next segment starts segmentBytes in; its head is this one's lookahead.
            // Copy it before dispatch detaches buf.
            const next = acquire();
            next.set(buf.subarray(segmentBytes, capacity));
            dispatch(capacity, false);
            buf = next;
            fill = max;
            start += segmentBytes;
          } else dispatch(fill, true); // the last segment: reader.done
          wakeConsumer();
        }
      } catch (err) {
        failure = { error: err };
      } finally {
        producing = false;
        wakeConsumer();
      }
    })();

    try {
      for (;;) {
        throwIfAborted(signal);
        while (queue.length === 0 && producing && !failure) await new Promise<void>((r) => (wakeConsumer = r));
        if (failure) throw failure.error;
        const seg = queue[0];
        if (!seg) break;
        const r = await seg.result;
        queue.shift();
        wakeProducer();
        const batch = stitcher.stitch(r, seg.start, seg.end, seg.eof);
        if (batch) yield batch;
      }
    } finally {
      // Done, failed or abandoned: dispatch nothing more, let tasks already handed to workers
      // finish (an aborted signal drops them from piscina's queue) and recycle their buffers,
      // close an unfinished source. A producer blocked on a source that never answers is not
      // waited for (it dispatches nothing once stopped).
      stopped = true;
      wakeProducer();
      if (!reader.reading) await producer;
      for (const s of await Promise.allSettled(queue.map((s) => s.result))) {
        if (s.status === 'fulfilled') pool?.recycle(s.value.data.buffer as ArrayBuffer);
      }
      if (!reader.done) await reader.close();
    }
    const size = start + fill; // the last segment: [start, start + fill), or nothing at all
    if (size === 0) pool?.recycle(buf.buffer as ArrayBuffer); // never dispatched
    if (stitcher.pos !== size) throw new XferError('XFER_INTERNAL', `stream scan ended at ${stitcher.pos} of ${size} bytes`);
    this.outcome = { size, chunkCount: stitcher.chunkCount, digest: hasher.digest(), dataBytes: size };
  }
}

/** A segment result with no chunks: the stitcher cuts all of it (StreamScan without a pool). */
function unchunked(data: Uint8Array): SegmentResult {
  return { count: 0, lengths: new Uint32Array(0), digests: new Uint8Array(0), data, dataBytes: data.length };
}

/**
 * Copies a stream's pieces into caller buffers. Pieces may have any size; a piece that does
 * not fit is split across buffers. Strings (a Readable with an encoding) become bytes.
 */
class PieceReader {
  /** The source has ended (or failed, or was closed): fill() will add nothing more. */
  done = false;
  /** A read of the source is pending. */
  reading = false;
  private readonly it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  private rest: Uint8Array = new Uint8Array(0);

  constructor(source: StreamSource, private readonly signal: AbortSignal | undefined) {
    const src = source as Partial<AsyncIterable<Uint8Array> & Iterable<Uint8Array>>;
    this.it = src[Symbol.asyncIterator]?.() ?? src[Symbol.iterator]!();
  }

  /** Fills buf from `from` until it is full or the source ends; returns the new fill. */
  async fill(buf: Uint8Array, from: number): Promise<number> {
    let fill = from;
    while (fill < buf.length) {
      if (this.rest.length === 0) {
        if (this.done) break;
        let n: IteratorResult<Uint8Array>;
        this.reading = true;
        try {
          n = await this.next();
        } finally {
          this.reading = false;
        }
        if (n.done) {
          this.done = true;
          break;
        }
        this.rest = n.value instanceof Uint8Array ? n.value : Buffer.from(n.value as unknown as string);
        continue;
      }
      const take = Math.min(this.rest.length, buf.length - fill);
      buf.set(take === this.rest.length ? this.rest : this.rest.subarray(0, take), fill);
      fill += take;
      this.rest = this.rest.subarray(take);
    }
    return fill;
  }

  /**
   * The next piece; a pending read of an async source gives way to an abort. A source
   * that throws is finished (done: nothing to close); after an abort it is still open.
   */
  private next(): IteratorResult<Uint8Array> | Promise<IteratorResult<Uint8Array>> {
    let n: IteratorResult<Uint8Array> | Promise<IteratorResult<Uint8Array>>;
    try {
      n = this.it.next();
    } catch (err) {
      this.done = true;
      throw err;
    }
    if (!(n instanceof Promise)) return n;
    n = n.catch((err: unknown) => {
      this.done = true;
      throw err;
    });
    throwIfAborted(this.signal);
    return untilAborted(n, this.signal);
  }

  /**
   * Ends an unfinished source early (a generator's finally runs; a Readable is destroyed).
   * With a read still pending, return() is called but not waited for: an async generator
   * would only answer after that read.
   */
  async close(): Promise<void> {
    this.done = true;
    try {
      const closing = this.it.return?.();
      if (closing instanceof Promise) {
        closing.catch(() => {});
        if (!this.reading) await closing;
      }
    } catch {
      // closing is best effort: the scan already failed or was abandoned
    }
  }
}
