import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import type { Chunker } from '../chunker/chunker.js';
import { MAX_ZERO_CHUNK_BYTES, zeroDigest } from '../chunker/zero.js';
import { createChunker } from '../chunker/index.js';
import { fromSystemError, SourceChangedError, XferError } from '../core/errors.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { DIGEST_BYTES } from '../core/ids.js';
import { digestInto, digestOf } from '../hash/digest.js';
import { holeCover, nativeTree, spanCvWithHoles } from '../hash/tree.js';
import { seekData, seekHole } from '../io/sys.js';
import { DIRECT_ALIGN_BYTES, directIoAvailable } from '../io/direct.js';
import { loadAddon } from '../native/addon.js';

/** Room past a segment's bytes that a scan's buffers leave, for readDevice to align them. */
export const SEGMENT_ALIGN_SLACK_BYTES = DIRECT_ALIGN_BYTES;

/** What every segment task shares: how to chunk and hash. */
interface SegmentTaskBase {
  readonly chunker: ChunkerSpec;
  readonly implementation: 'auto' | 'native' | 'typescript';
  readonly digestAlgorithm: DigestAlgorithm;
}

/**
 * One unit of parallel work on a file: chunk and hash the chunks that START in
 * [start, end), as if a chunk started at `start`. The worker reads [start, end + max)
 * (clamped to the file size) so that every such chunk can be cut and hashed whole.
 */
export interface FileSegmentTask extends SegmentTaskBase {
  readonly kind: 'file';
  readonly path: string;
  readonly start: number;
  readonly end: number;
  readonly fileSize: number;
  /** The task covers the whole file: also return the whole-file digest. */
  readonly wholeFile: boolean;
  /**
   * The file's mtime when its scan began: after reading, the worker checks (fstat of the
   * still-open file) that size and mtime are unchanged, else SourceChangedError.
   */
  readonly expectMtimeMs?: number;
  /** A recycled buffer to read into (transferred with the task), if large enough. */
  readonly buffer?: ArrayBuffer;
  /**
   * Also return the BLAKE3 chaining value of [start, end) as a subtree of the file's
   * digest (hash/tree.ts; start must be a multiple of the segment size, a power of two
   * number of 1 KiB chunks): computed here, while the bytes are in cache, so the scan
   * merges CVs instead of hashing the whole file again in order. Its holes, wherever they
   * lie in it, are hashed without their bytes (spanCvWithHoles).
   */
  readonly segmentCv?: boolean;
  /**
   * With segmentCv: the CV of [start, end) if it is all zeros, when the caller knows it
   * (hash/zero-cvs.ts). Returned as the segment's CV if the segment is all hole, instead of
   * hashing 8 MiB of zeros.
   */
  readonly zeroCv?: Uint8Array;
  /**
   * Given boundaries instead of cutting: the lengths of the chunks that start in
   * [start, end), in order from `start` (the last may reach past `end`, within fileSize).
   * They are only hashed (reconstruct/in-place.ts compares a target with a manifest at the
   * manifest's own boundaries). The result's lengths are these.
   */
  readonly cuts?: Uint32Array;
}

/**
 * One unit of parallel work on bytes the caller already holds (a stream's segment):
 * chunk and hash the chunks of bytes[0, length) that start before `startLimit`, as if a
 * chunk started at 0. The caller includes the max-chunk lookahead after startLimit (or
 * sets `eof`: the stream ends at `length`). `bytes` is transferred to the worker, not
 * copied, and comes back as the result's `data`.
 */
export interface BytesSegmentTask extends SegmentTaskBase {
  readonly kind: 'bytes';
  readonly bytes: ArrayBuffer;
  readonly length: number;
  readonly startLimit: number;
  readonly eof: boolean;
}

export type SegmentTask = FileSegmentTask | BytesSegmentTask;

/** Chunk lengths and digests (columnar), and the bytes chunked, which the caller now owns. */
export interface SegmentResult {
  readonly count: number;
  readonly lengths: Uint32Array;
  /** count * DIGEST_BYTES bytes. */
  readonly digests: Uint8Array;
  /** The segment's bytes from its start on: file bytes [start, start + data.length), or the task's bytes. */
  readonly data: Uint8Array;
  readonly fileDigest?: Uint8Array;
  /**
   * The holes of the file in data, wherever they lie: sorted, disjoint [from, to) pairs
   * relative to data, flat. Zeroed by the reader, not read; the stitcher's cuts there need
   * not look at them (cutAndHash's `holes`). Absent when there are none or they are
   * unknown (a stream, no SEEK_DATA).
   */
  readonly holes?: readonly number[];
  /** File tasks with segmentCv: the segment's BLAKE3 subtree CV (32 bytes). */
  readonly segmentCv?: Uint8Array;
  /**
   * File tasks: the bytes of [start, end) that were read, not holes (see readSegment);
   * bytes tasks: the task's startLimit (a stream has no holes).
   */
  readonly dataBytes: number;
}

/**
 * Chunks cut per native call (about 1 MiB at the default average): enough to amortise
 * crossing into native code, few enough that little is cut for nothing when a zero run
 * begins in the middle of a batch (see cutAndHash).
 */
const CUT_BATCH = 16;
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

/** Chunk lengths and digests, columnar and growable: what cutAndHash appends to. */
export class ChunkColumns {
  count = 0;
  lengths = new Uint32Array(256);
  digests = new Uint8Array(256 * DIGEST_BYTES);

  /** Appends a chunk whose digest is known. */
  push(length: number, digest: Uint8Array): void {
    this.reserve();
    this.lengths[this.count] = length;
    this.digests.set(digest, this.count * DIGEST_BYTES);
    this.count++;
  }

  /** Appends the chunk `bytes`, hashing it straight into the digest column. */
  pushHashed(algorithm: DigestAlgorithm, bytes: Uint8Array): void {
    this.reserve();
    this.lengths[this.count] = bytes.length;
    digestInto(algorithm, bytes, this.digests, this.count * DIGEST_BYTES);
    this.count++;
  }

  private reserve(): void {
    if (this.count < this.lengths.length) return;
    const l = new Uint32Array(this.lengths.length * 2);
    l.set(this.lengths);
    this.lengths = l;
    const d = new Uint8Array(this.digests.length * 2);
    d.set(this.digests);
    this.digests = d;
  }
}

/**
 * Cuts the chunks of data[pos, end) whose start is before `startLimit` (all relative to
 * data; eof says `end` is the end of the file or stream), hashes each and appends them to
 * `cols`. Returns where it stopped: the end of the last chunk cut. With `stopAt`, checks
 * after every chunk and stops early when it returns true. Shared by the workers and the
 * main-thread stitcher.
 *
 * Long zero runs (free space in disk images) take a shortcut: a chunk whose first
 * maxChunkBytes bytes are all zero is cut and hashed exactly like that many zero bytes,
 * computed once per chunker (see zeroChunkOf). Checking costs a memcmp instead of a gear
 * scan and a hash. It matters most in the stitcher, where chains that started at
 * different offsets inside a zero run never meet until it ends. Where the caller knows a
 * range is zero (`holes`: holes of the file it zeroed, as SegmentResult.holes), a window
 * inside one is taken as zeros without even the memcmp: its bytes are not looked at.
 */
export function cutAndHash(
  chunker: Chunker, algorithm: DigestAlgorithm, data: Uint8Array, pos: number, end: number, eof: boolean,
  startLimit: number, cols: ChunkColumns, stopAt?: (pos: number) => boolean, holes?: readonly number[],
): number {
  const out = new Uint32Array(stopAt ? 1 : CUT_BATCH);
  const max = chunker.maxChunkBytes;
  const zero = zeroChunkOf(chunker, algorithm);
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // A window inside a hole the reader zeroed is zero unread (a 64 GiB sparse image is not
  // compared byte by byte, on the workers or the stitcher).
  const zeroWindowAt = (p: number) => end - p >= max && ((holes !== undefined && holeCover(holes, p, p + max) === 'hole') || isZero(bytes, p, max, zero.window));
  while (pos < startLimit) {
    if (zeroWindowAt(pos)) {
      cols.push(zero.length, zero.digest);
      pos += zero.length;
      if (stopAt && stopAt(pos)) return pos;
      continue;
    }
    const n = chunker.cut(data, pos, end, eof, startLimit, out);
    if (n === 0) return pos;
    for (let i = 0; i < n; i++) {
      const len = out[i]!;
      // A zero run begins: leave the rest of the batch (already cut) to the shortcut above.
      if (i > 0 && len === zero.length && zeroWindowAt(pos)) break;
      cols.pushHashed(algorithm, data.subarray(pos, pos + len));
      pos += len;
    }
    if (stopAt && stopAt(pos)) return pos;
  }
  return pos;
}

/** The chunk cut at the start of maxChunkBytes zero bytes: its length and digest, and those zeros. */
interface ZeroChunk {
  readonly length: number;
  readonly digest: Uint8Array;
  readonly window: Buffer;
}
const zeroChunks = new WeakMap<Chunker, Map<DigestAlgorithm, ZeroChunk>>();

/**
 * Exact by the Chunker contract: a cut depends only on the bytes from the chunk start, and
 * never looks further than maxChunkBytes; so wherever a chunk's first maxChunkBytes bytes
 * are zero (and that many bytes are there), it is cut where it is cut in `window`.
 */
function zeroChunkOf(chunker: Chunker, algorithm: DigestAlgorithm): ZeroChunk {
  let byAlgorithm = zeroChunks.get(chunker);
  if (!byAlgorithm) zeroChunks.set(chunker, (byAlgorithm = new Map()));
  let z = byAlgorithm.get(algorithm);
  if (!z) {
    const window = Buffer.alloc(chunker.maxChunkBytes);
    const out = new Uint32Array(1);
    if (chunker.cut(window, 0, window.length, true, window.length, out) !== 1) throw new Error('chunker cut nothing from a full window');
    z = { length: out[0]!, digest: digestOf(algorithm, window.subarray(0, out[0]!)), window };
    byAlgorithm.set(algorithm, z);
  }
  return z;
}

/** bytes[pos, pos + n) are all zero (a memcmp against `zeros`, n <= zeros.length). */
function isZero(bytes: Buffer, pos: number, n: number, zeros: Buffer): boolean {
  // Cheap rejection first: most windows of real data start with non-zero bytes.
  if (bytes[pos] !== 0 || bytes[pos + n - 1] !== 0) return false;
  return bytes.compare(zeros, 0, n, pos, pos + n) === 0;
}

export function scanSegment(task: SegmentTask): SegmentResult {
  const chunker = chunkerFor(task.chunker, task.implementation);
  let data: Uint8Array;
  let eof: boolean;
  let startLimit: number;
  let wholeFile = false;
  let dataBytes: number;
  let segmentCv: Uint8Array | undefined;
  let holes: number[] | undefined;
  if (task.kind === 'bytes') {
    data = new Uint8Array(task.bytes, 0, task.length);
    eof = task.eof;
    startLimit = task.startLimit;
    dataBytes = Math.min(task.length, task.startLimit);
  } else {
    let cutsBytes = 0;
    for (const n of task.cuts ?? []) cutsBytes += n;
    const readEnd = task.cuts ? Math.min(task.fileSize, Math.max(task.end, task.start + cutsBytes)) : Math.min(task.fileSize, task.end + chunker.maxChunkBytes);
    if (task.cuts && task.start + cutsBytes > readEnd) throw new XferError('XFER_INTERNAL', `segment at ${task.start}: given chunks end past ${readEnd}`);
    ({ data, dataBytes, holes } = readSegment(task, readEnd - task.start));
    eof = readEnd === task.fileSize;
    startLimit = task.end - task.start;
    wholeFile = task.wholeFile;
  }
  const cols = new ChunkColumns();
  if (task.kind === 'file' && task.cuts) hashGivenChunks(task.digestAlgorithm, data, task.cuts, cols, holes);
  else cutAndHash(chunker, task.digestAlgorithm, data, 0, data.length, eof, startLimit, cols, undefined, holes);
  if (task.kind === 'file' && task.segmentCv) {
    const tree = nativeTree();
    if (!tree) throw new XferError('XFER_INTERNAL', 'segment CV asked of a scan worker without the native addon');
    // The bytes just chunked; its holes (all of it, or parts anywhere) by the zero routine.
    segmentCv = task.zeroCv && dataBytes === 0 ? task.zeroCv : spanCvWithHoles(tree, data, startLimit, task.start, holes ?? []);
  }
  return {
    count: cols.count,
    lengths: cols.lengths,
    digests: cols.digests,
    data,
    fileDigest: wholeFile ? digestOf(task.digestAlgorithm, data) : undefined,
    ...(segmentCv ? { segmentCv } : {}),
    ...(holes && holes.length > 0 ? { holes } : {}),
    dataBytes,
  };
}

/**
 * Hashes the chunks of `lengths` laid end to end from data[0]; one that lies in a hole the
 * reader zeroed gets the digest of that many zeros (chunker/zero.ts), unread.
 */
function hashGivenChunks(algorithm: DigestAlgorithm, data: Uint8Array, lengths: Uint32Array, cols: ChunkColumns, holes: readonly number[] | undefined): void {
  let pos = 0;
  for (const n of lengths) {
    if (n <= MAX_ZERO_CHUNK_BYTES && holes && holes.length > 0 && holeCover(holes, pos, pos + n) === 'hole') cols.push(n, zeroDigest(algorithm, n));
    else cols.pushHashed(algorithm, data.subarray(pos, pos + n));
    pos += n;
  }
}

/**
 * Reads file bytes [start, start + need), into the task's recycled buffer when it is large
 * enough. Holes (SEEK_DATA/SEEK_HOLE, io/sys.ts) are not read: their bytes are zeroed in
 * the buffer, which is what reading them would give. A 20 GiB disk image holding 100 MB
 * is read as 100 MB. Also returns how many bytes of [start, end) were read, not holes.
 * A block device is read with O_DIRECT where it can be (readDevice).
 */
function readSegment(task: FileSegmentTask, need: number): { data: Uint8Array; dataBytes: number; holes: number[] } {
  let fd: number;
  try {
    fd = openSync(task.path, 'r');
  } catch (err) {
    throw fromSystemError(err, task.path, 'open');
  }
  let data: Uint8Array | undefined;
  let dataBytes = 0;
  let holes: number[] = [];
  try {
    const st = fstatSync(fd);
    if (st.isBlockDevice()) {
      data = readDevice(task, need, fd);
      dataBytes = Math.max(0, Math.min(task.start + need, task.end) - task.start);
    } else {
      data = new Uint8Array(segmentBuffer(task, need), 0, need);
      ({ read: dataBytes, holes } = readData(fd, data, task.start, task.end, task.path));
    }
    if (task.expectMtimeMs !== undefined) {
      // A block device has no size or mtime of its content to check (st_size is 0).
      const now = fstatSync(fd);
      if (!now.isBlockDevice() && now.size !== task.fileSize || Math.trunc(now.mtimeMs) !== Math.trunc(task.expectMtimeMs)) {
        throw new SourceChangedError(`${task.path}: file changed while it was being read; run again`);
      }
    }
  } catch (err) {
    if (err instanceof SourceChangedError) throw err;
    throw fromSystemError(err, task.path, 'read');
  } finally {
    closeSync(fd);
  }
  return { data, dataBytes, holes };
}

/**
 * A block device's bytes [start, start + need), which has no holes: no SEEK_DATA (it cost
 * a quarter of the reads' time on a loop device). Read with O_DIRECT into an aligned view
 * of the buffer (SEGMENT_ALIGN_SLACK_BYTES: the scan's buffers have room for it), the
 * unaligned tail through `fd`. Why: the page cache of a block device is dropped at its
 * last close, and a cold buffered read of a loop device goes through it in small requests:
 * 4 GiB of /dev/loop0 took 4.6 s buffered and 0.33 s with O_DIRECT (dd bs=8M). Where
 * O_DIRECT is refused or the addon is missing, everything goes through `fd`.
 */
function readDevice(task: FileSegmentTask, need: number, fd: number): Uint8Array {
  const addressMod = loadAddon()?.addressMod;
  const direct = addressMod && task.start % DIRECT_ALIGN_BYTES === 0 && need >= DIRECT_ALIGN_BYTES ? openDirectSync(task.path) : undefined;
  if (direct === undefined) {
    const data = new Uint8Array(segmentBuffer(task, need), 0, need);
    readFully(fd, data, task.start, task.path);
    return data;
  }
  try {
    const buffer = segmentBuffer(task, need);
    const mod = addressMod!(new Uint8Array(buffer, 0, 1), DIRECT_ALIGN_BYTES);
    const data = new Uint8Array(buffer, mod === 0 ? 0 : DIRECT_ALIGN_BYTES - mod, need);
    const aligned = need - (need % DIRECT_ALIGN_BYTES);
    readFully(direct, data.subarray(0, aligned), task.start, task.path);
    if (aligned < need) readFully(fd, data.subarray(aligned), task.start + aligned, task.path);
    return data;
  } finally {
    closeSync(direct);
  }
}

/**
 * The task's buffer if it has room for `need` bytes and the alignment slack, else a new
 * one with that room: the buffer goes back to the scan's pool, and one without the slack
 * would fit none of its later requests (each segment then took a fresh buffer: a local
 * push of a 64 GiB sparse image went from 3.3 s and 228 MiB to 4.2 s and 310 MiB).
 */
function segmentBuffer(task: FileSegmentTask, need: number): ArrayBuffer {
  const room = need + SEGMENT_ALIGN_SLACK_BYTES;
  return task.buffer && task.buffer.byteLength >= room ? task.buffer : new ArrayBuffer(room);
}

/** `path` opened read-only with O_DIRECT; undefined where that is refused (EINVAL) or unknown. */
function openDirectSync(path: string): number | undefined {
  if (!directIoAvailable()) return undefined;
  try {
    return openSync(path, constants.O_RDONLY | constants.O_DIRECT);
  } catch {
    return undefined; // the buffered read that follows reports a real failure
  }
}

/**
 * Fills `data` with file bytes from `position` on: the data extents are read, the holes
 * between them zeroed. Returns the bytes read below `countEnd` (the segment's own part),
 * and the holes (zeroed, not read) as sorted [from, to) pairs relative to data, flat.
 * A file that shrank meanwhile reads as a hole here; the size and mtime checks after the
 * scan (expectMtimeMs, FileScan.checkUnchanged) report it.
 */
function readData(fd: number, data: Uint8Array, position: number, countEnd: number, path: string): { read: number; holes: number[] } {
  const end = position + data.length;
  let pos = position;
  let read = 0;
  const holes: number[] = [];
  while (pos < end) {
    const at = seekData(fd, pos);
    if (at < 0 || at >= end) {
      data.fill(0, pos - position);
      holes.push(pos - position, data.length);
      break;
    }
    if (at > pos) {
      data.fill(0, pos - position, at - position);
      holes.push(pos - position, at - position);
    }
    const hole = seekHole(fd, at);
    const stop = hole < 0 ? end : Math.min(hole, end);
    readFully(fd, data.subarray(at - position, stop - position), at, path);
    read += Math.max(0, Math.min(stop, countEnd) - at);
    pos = stop;
  }
  return { read, holes };
}
