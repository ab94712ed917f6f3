/**
 * In-place rebuilds: a file or a block device is rewritten where it is, and only in the
 * ranges whose chunks differ from what it holds (issue 14). The atomic rebuild of
 * reconstruct.ts writes the whole file anew beside the target and renames it over; that is
 * right for most files, but a 4-byte change to a 1 GiB image then costs 1 GiB of writes,
 * and a device node can never be replaced by a rename at all.
 *
 * Contract: the target is inconsistent (part old, part new) from the first write until
 * inPlaceRebuild resolves, and the caller is told so (onInconsistent) before that first
 * write. A run that is interrupted leaves it so; running again completes it, because every
 * run compares the target as it is now with the manifest (it is idempotent). On success the
 * target's first totalBytes bytes are the manifest's file, checked against the whole-file
 * digest after an fsync: the segments this run wrote are read back, and the others' CVs
 * are those the comparison computed from the bytes it read there, where every chunk
 * matched the manifest's (as rsync checks an in-place file with the bytes it read of the
 * basis). A write landing outside its range would so go unseen outside the segments
 * written; the device is held exclusively meanwhile. Without segment CVs (SHA-256, no
 * addon) or when more than MAX_READ_BACK_SHARE was written, all of it is read back. A
 * device smaller than the content is refused before anything is written; a larger one
 * keeps its bytes past the content.
 */
import { constants } from 'node:fs';
import { access, lstat, open, stat, type FileHandle } from 'node:fs/promises';
import { isZeroChunk, nonZeroRuns, zeroBytes } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import { BusyError, fromSystemError, InvalidArgumentError, TooLargeError, VerifyFailedError } from '../core/errors.js';
import { DIGEST_BYTES, digestKey, digestToHex, maxChunkBytes, type ChunkerSpec, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { formatBytes, MiB } from '../core/sizes.js';
import { Window } from '../core/window.js';
import { digestOf } from '../hash/digest.js';
import { BLAKE3_CHUNK_BYTES, CV_BYTES, CvStack, treeBinding, type TreeBinding } from '../hash/tree.js';
import { digestOfOpenFile } from '../scan/file-digest.js';
import type { ManifestReader } from '../manifest/reader.js';
import type { EntryMeta } from '../manifest/types.js';
import type { ScanPool } from '../scan/pool.js';
import { hashAtBoundaries, type RangeHashes } from '../scan/ranges.js';
import { StreamScan } from '../scan/scanner.js';
import type { ChunkStore } from '../store/store.js';
import { applyAttributes, attributePolicy, type AttributeOptions } from './attributes.js';
import { checkConfined, segmentsBelow } from '../io/safe-path.js';
import { readUpTo } from '../io/direct.js';
import { blockDeviceSize, punchHole } from '../io/sys.js';
import { DEFAULT_FETCH_CONCURRENCY, MAX_FETCH_INFLIGHT_BYTES, SET_ID_BITS, type PullProgress, type PullResult } from './reconstruct.js';
import { SeedIndex } from './seeds.js';
import { sameFile } from './staging.js';

/**
 * Chunks that moved within the target and whose old place is overwritten by this run are
 * read into memory before the first write, up to this many bytes; the rest are fetched
 * from the store (which holds every chunk of the manifest) instead.
 */
export const MAX_IN_PLACE_STAGED_BYTES = 256 * MiB;
/** The read size of the ranges of the target cut on this thread's reads (around changes; all of it without /proc). */
const IN_PLACE_READ_BYTES = 4 * MiB;
/**
 * The check after the writes reads back only the segments written while they are at most
 * this share of the content; past it, all of it (one pass in order, hashed in parallel).
 */
const MAX_READ_BACK_SHARE = 0.5;

export interface InPlaceOptions {
  readonly signal?: AbortSignal;
  /** Chunks the target; required (without workers, the target would be chunked on this thread). */
  readonly pool: ScanPool;
  /** Extra local files whose chunks may be reused. */
  readonly seeds?: readonly string[];
  readonly onProgress?: (p: PullProgress) => void;
  /** Told once, just before the first write, that the target is now inconsistent until this resolves. */
  readonly onInconsistent?: (target: string) => void;
  /** Which recorded attributes are applied to a regular file (a device keeps its own). */
  readonly attributes?: AttributeOptions;
  /**
   * The server's copy: only a regular file, never through a symlink (not even its last
   * component: O_NOFOLLOW), never a device; and reached below this directory without
   * following any symlink (see ReconstructOptions.confineTo).
   */
  readonly confineTo?: string;
  /** Clear the set-user-ID and set-group-ID bits of the mode applied (ReconstructOptions.clearSetId). */
  readonly clearSetId?: boolean;
  /**
   * rsync's quick check: a regular file with the size, mtime and mode of the manifest's
   * entry is taken as the manifest's and kept without being read (a pull without
   * --checksum). A device has no such metadata: it is always compared.
   */
  readonly quickCheck?: boolean;
}

/** What an in-place rebuild changed, beyond PullResult: the bytes it wrote and where. */
export interface InPlaceResult extends PullResult {
  /** Bytes written to the target (the changed chunks), and how many chunks that was. */
  readonly bytesWritten: number;
  readonly chunksWritten: number;
  /** Chunks copied from another place in the target itself (moved within it). */
  readonly chunksMoved: number;
  /**
   * Bytes read back after the fsync for the final check: the segments written (their
   * neighbours' CVs come from the comparison), or the whole content (see MAX_READ_BACK_SHARE).
   */
  readonly bytesReadBack: number;
  /**
   * Of bytesWritten, the zeros punched out of a regular file (fallocate PUNCH_HOLE)
   * instead of written as data: the file stays sparse.
   */
  readonly bytesPunched?: number;
}

/** What kind of in-place target `path` is: a block device (followed, as the user named it), a regular file, or neither. */
export async function inPlaceKind(path: string): Promise<'device' | 'file' | undefined> {
  const st = await stat(path).catch(() => undefined);
  if (st?.isBlockDevice()) return 'device';
  const l = await lstat(path).catch(() => undefined);
  return l?.isFile() ? 'file' : undefined;
}

/**
 * Columns of a chunk list: chunk i is [offsets[i], offsets[i] + lengths[i]) with digest
 * digests[i*32, i*32+32). Columns, not objects: a 4 GiB image cut in 4 KiB blocks is a
 * million chunks.
 */
class ChunkColumns {
  count = 0;
  offsets = new Float64Array(1024);
  lengths = new Uint32Array(1024);
  digests = new Uint8Array(1024 * DIGEST_BYTES);

  push(offset: number, length: number, digest: Uint8Array): void {
    if (this.count === this.lengths.length) {
      const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, n: number): T => {
        const b = new (a.constructor as new (n: number) => T)(n);
        b.set(a);
        return b;
      };
      this.offsets = grow(this.offsets, this.count * 2);
      this.lengths = grow(this.lengths, this.count * 2);
      this.digests = grow(this.digests, this.count * 2 * DIGEST_BYTES);
    }
    this.offsets[this.count] = offset;
    this.lengths[this.count] = length;
    this.digests.set(digest, this.count * DIGEST_BYTES);
    this.count++;
  }

  digest(i: number): Uint8Array {
    return this.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
  }

  end(): number {
    return this.count === 0 ? 0 : this.offsets[this.count - 1]! + this.lengths[this.count - 1]!;
  }
}

/**
 * Rewrites `target` (a regular file or a block device) in place into the manifest's single
 * file, writing only the chunks whose bytes are not already at their offset. Each changed
 * chunk comes from the target itself (a chunk that moved), a seed, or the store, and is
 * verified before it is written. See the module comment for the contract.
 */
export async function inPlaceRebuild(reader: ManifestReader, store: ChunkStore, target: string, options: InPlaceOptions): Promise<InPlaceResult> {
  const started = performance.now();
  const { signal, pool } = options;
  const header = reader.header;
  const algorithm = header.digestAlgorithm;
  if (header.kind !== 'file') {
    await reader.close();
    throw new InvalidArgumentError(`${target}: an in-place pull writes a single file or a block device; the pulled target is a tree`);
  }
  // The manifest's chunks, in order.
  const wanted = new ChunkColumns();
  let meta: EntryMeta | undefined;
  let offset = 0;
  for await (const ev of reader.events()) {
    throwIfAborted(signal);
    if (ev.kind === 'entry') meta = ev.meta;
    else if (ev.kind === 'chunks') {
      for (const rec of ev.records) {
        wanted.push(offset, rec.length, rec.digest);
        offset += rec.length;
      }
    }
  }
  const total = header.totalBytes;
  if (offset !== total) throw new VerifyFailedError(`${target}: the manifest's chunks add up to ${offset} bytes, its header says ${total}`);

  if (options.confineTo !== undefined) await checkConfined(options.confineTo, segmentsBelow(options.confineTo, target));
  const st = await lstat(target).catch((err: unknown) => {
    throw fromSystemError(err, target, 'stat');
  });
  // A device named through a symlink (/dev/disk/by-id/...) is the device; the server's copy
  // is never a device and never followed.
  const isDevice = options.confineTo === undefined && (st.isSymbolicLink() ? (await stat(target)).isBlockDevice() : st.isBlockDevice());
  // A device is opened exclusively: Linux refuses (EBUSY) while it is mounted or held by
  // another exclusive user, and refuses them while this runs. A mounted filesystem written
  // under its kernel driver would be destroyed.
  let fh: FileHandle;
  try {
    fh = await open(target, isDevice ? constants.O_RDWR | constants.O_EXCL : constants.O_RDWR | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EBUSY') throw new BusyError(`${target}: device is in use (mounted?); xfer writes a block device only while nothing else holds it`);
    throw fromSystemError(err, target, 'open for writing in place');
  }
  const seeds = new SeedIndex(header.chunker, algorithm);
  try {
    const st2 = await fh.stat();
    if (!isDevice && !st2.isFile()) throw new InvalidArgumentError(`${target}: not a regular file or a block device`);
    if (!isDevice && options.quickCheck && meta && (await sameFile(target, { size: total, mtimeMs: meta.mtimeMs, mtimeExtraNs: meta.mtimeExtraNs, mode: options.clearSetId ? meta.mode & ~SET_ID_BITS : meta.mode }))) {
      return {
        kind: 'file', bytesTotal: total, bytesReceived: 0, bytesReused: total, chunksTotal: header.chunkCount,
        seconds: (performance.now() - started) / 1000, digest: digestToHex(header.digest), deleted: [], bytesWritten: 0, chunksWritten: 0, chunksMoved: 0, bytesReadBack: 0,
        bytesZero: 0, bytesAllocated: st2.blocks * 512,
      };
    }
    const targetBytes = isDevice ? blockDeviceSize(fh.fd) : st2.size;
    if (isDevice && targetBytes < total) {
      throw new TooLargeError(`${target}: device holds ${targetBytes} bytes (${formatBytes(targetBytes)}), the content is ${total} bytes (${formatBytes(total)}); nothing written`);
    }
    // The target compared with the manifest at the manifest's own boundaries (a device only
    // as far as the content reaches: what lies beyond is neither compared nor written).
    const scannedBytes = Math.min(targetBytes, total);
    const compared = await compareTarget(fh, scannedBytes, targetBytes, wanted, header.chunker, algorithm, pool, signal);
    const { changed, have, segmentCvs } = compared;
    for (const s of options.seeds ?? []) await seeds.add(s, pool, signal);

    // Where each changed chunk's bytes can be found in the target now (first place seen).
    const places = new Map<string, number>();
    for (let j = 0; j < have.count; j++) {
      const k = digestKey(have.digest(j));
      if (!places.has(k)) places.set(k, j);
    }
    /**
     * Whether [start, end) of the target is overwritten by this run (a changed chunk's
     * range): `changed` is in offset order and its ranges do not overlap, so a binary
     * search finds the last write starting before `end`.
     */
    const overwritten = (start: number, end: number): boolean => {
      let lo = 0;
      let hi = changed.length - 1;
      let last = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (wanted.offsets[changed[mid]!]! < end) {
          last = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (last < 0) return false;
      const i = changed[last]!;
      return wanted.offsets[i]! + wanted.lengths[i]! > start;
    };
    // A chunk moved within the target: read from its old place. If this run writes over
    // that place, it is read now, before the first write (in memory, within the bound);
    // past the bound it comes from the store instead.
    const staged = new Map<number, Buffer>();
    const moved = new Map<number, number>();
    let stagedBytes = 0;
    for (const i of changed) {
      const j = places.get(digestKey(wanted.digest(i)));
      if (j === undefined) continue;
      const from = have.offsets[j]!;
      const length = wanted.lengths[i]!;
      if (!overwritten(from, from + length)) {
        moved.set(i, from);
        continue;
      }
      if (stagedBytes + length > MAX_IN_PLACE_STAGED_BYTES) continue;
      throwIfAborted(signal);
      const data = await readVerified(fh, from, length, wanted.digest(i), algorithm);
      if (data) {
        staged.set(i, data);
        stagedBytes += length;
      }
    }

    let bytesWritten = 0;
    let bytesPunched = 0;
    let bytesReceived = 0;
    let bytesReused = total - changed.reduce((n, i) => n + wanted.lengths[i]!, 0);
    let bytesDone = bytesReused;
    let chunksMoved = 0;
    let bytesZero = 0;
    const progress = () => options.onProgress?.({ bytesTotal: total, bytesDone, bytesReceived, bytesReused, bytesZero });
    progress();
    if (changed.length > 0 || (!isDevice && targetBytes !== total)) options.onInconsistent?.(target);
    const window = new Window(DEFAULT_FETCH_CONCURRENCY, MAX_FETCH_INFLIGHT_BYTES);
    try {
      for (const i of changed) {
        throwIfAborted(signal);
        const length = wanted.lengths[i]!;
        await window.run(length, async () => {
          const digest = wanted.digest(i);
          let data = staged.get(i);
          staged.delete(i);
          const from = moved.get(i);
          if (!data && from !== undefined) data = await readVerified(fh, from, length, digest, algorithm);
          if (data) chunksMoved++;
          else data = await seeds.read(digest);
          // Zero chunks are in no store (chunker/zero.ts): their bytes are made here.
          if (!data && isZeroChunk(algorithm, length, digest)) {
            data = zeroBytes(length);
            bytesZero += length;
          } else if (data) bytesReused += length;
          else {
            const id: ChunkId = { algorithm, digest };
            data = await store.get(id, { signal });
            if (data.length !== length) throw new VerifyFailedError(`chunk ${digestToHex(digest)} has ${data.length} bytes, manifest says ${length}`);
            bytesReceived += length;
          }
          throwIfAborted(signal); // an aborted run starts no more writes (not even of chunks already fetched)
          const at = wanted.offsets[i]!;
          if (isDevice) {
            await writeAll(fh, data, at, target);
            bytesWritten += length;
          } else {
            // A file keeps holes where the new content is zeros: its zero pieces (4 KiB,
            // at file offsets) are punched, only the rest written.
            let next = 0;
            for (const [from, to] of [...nonZeroRuns(data, at), [length, length] as [number, number]]) {
              if (from > next) bytesPunched += punch(fh, at + next, from - next, target);
              if (to > from) await writeAll(fh, data.subarray(from, to), at + from, target);
              next = to;
            }
            bytesWritten += length;
          }
          bytesDone += length;
          progress();
        });
      }
      await window.drain();
    } catch (err) {
      // No write may still be running when the file is closed (finally, below).
      await window.drain().catch(() => {});
      throw err;
    }
    // A file takes the content's size (cut or extended at its end); a device keeps its own.
    if (!isDevice && targetBytes !== total) await fh.truncate(total).catch((err: unknown) => {
      throw fromSystemError(err, target, 'truncate');
    });
    await fh.sync().catch((err: unknown) => {
      throw fromSystemError(err, target, 'fsync');
    });
    // Read back: the target's first `total` bytes must be the manifest's file. The segments
    // this run wrote are read again; the others' CVs are those of the comparison, whose
    // chunks there matched the manifest's (see the module comment).
    const written = segmentCvs ? segmentsWritten(segmentCvs.segmentBytes, changed.map((i) => [wanted.offsets[i]!, wanted.lengths[i]!])) : undefined;
    const tree = treeBinding();
    const reused = tree && written && segmentCvs && total > segmentCvs.segmentBytes && written.size * segmentCvs.segmentBytes <= total * MAX_READ_BACK_SHARE
      ? await digestReusingSegments(tree, fh, total, segmentCvs, written, signal)
      : undefined;
    const bytesReadBack = reused ? reused.bytesRead : total;
    const digest = reused?.digest ?? (await digestOfOpenFile(fh, total, algorithm, signal));
    if (!digest.equals(header.digest)) {
      throw new VerifyFailedError(`${target}: content digest after writing in place ${digest.toString('hex')} does not match the manifest's ${digestToHex(header.digest)}`);
    }
    const bytesAllocated = isDevice ? total : (await fh.stat()).blocks * 512;
    await fh.close();
    if (!isDevice && meta) {
      const mode = options.clearSetId ? meta.mode & ~SET_ID_BITS : meta.mode;
      await applyAttributes(target, { ...meta, mode }, attributePolicy(options.attributes), target, { existing: true });
    }
    return {
      kind: 'file', bytesTotal: total, bytesReceived, bytesReused, chunksTotal: header.chunkCount,
      seconds: (performance.now() - started) / 1000, digest: digestToHex(header.digest), deleted: [],
      bytesWritten, chunksWritten: changed.length, chunksMoved, bytesZero, bytesAllocated, bytesPunched, bytesReadBack,
    };
  } finally {
    await fh.close().catch(() => {});
    await seeds.close();
  }
}

function equalDigests(a: ChunkColumns, i: number, b: ChunkColumns, j: number): boolean {
  return Buffer.compare(a.digest(i), b.digest(j)) === 0;
}

/**
 * Which of the manifest's chunks (`wanted`) the target holds at their offsets, and where
 * else in the target chunks lie that a changed one may be copied from (`have`: the chunks
 * it holds in place, and those of the target's own boundaries around each changed range).
 *
 * The target's [0, scannedBytes) is hashed at the manifest's boundaries by the pool's
 * workers, which read it themselves, in parallel, through /proc/self/fd (the file or
 * device this process opened, whatever its name now leads to); with BLAKE3 and the addon,
 * with its segments' CVs. Then only the ranges that differ, widened by a largest chunk
 * each way (so the cuts there fall where a cut of the whole target would), and a file's
 * bytes past the content's end, are cut with the manifest's chunker: a chunk that moved
 * within the target is found there, or is one of the chunks in place. Cutting the whole
 * target cost a quarter of the pass on a 4 GiB device. Without /proc, all of the target is
 * cut and compared chunk by chunk, on this thread's reads (no CVs).
 */
async function compareTarget(
  fh: FileHandle, scannedBytes: number, targetBytes: number, wanted: ChunkColumns, chunker: ChunkerSpec, algorithm: DigestAlgorithm, pool: ScanPool, signal?: AbortSignal,
): Promise<{ changed: number[]; have: ChunkColumns; segmentCvs?: RangeHashes['segmentCvs'] }> {
  const self = `/proc/self/fd/${fh.fd}`;
  const byFd = scannedBytes > 0 && (await access(self).then(() => true, () => false));
  const changed: number[] = [];
  if (!byFd) {
    const have = await cutRange(fh, 0, targetBytes, chunker, algorithm, pool, signal);
    // Unchanged: the target has a chunk of the same digest at the same offset (both lists
    // are in offset order: one merge walk).
    for (let i = 0, j = 0; i < wanted.count; i++) {
      const o = wanted.offsets[i]!;
      while (j < have.count && have.offsets[j]! < o) j++;
      const same = j < have.count && have.offsets[j] === o && have.lengths[j] === wanted.lengths[i] && equalDigests(have, j, wanted, i);
      if (!same) changed.push(i);
    }
    return { changed, have };
  }
  const hashes = await hashAtBoundaries(self, scannedBytes, wanted, pool, { chunker, digestAlgorithm: algorithm, signal });
  const have = new ChunkColumns();
  for (let i = 0; i < wanted.count; i++) {
    const digest = wanted.digest(i);
    if (i < hashes.hashed && Buffer.compare(hashes.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES), digest) === 0) have.push(wanted.offsets[i]!, wanted.lengths[i]!, digest);
    else changed.push(i);
  }
  // The ranges around the changes, merged, and a file's tail past the content.
  const max = maxChunkBytes(chunker);
  const regions: [number, number][] = [];
  const add = (from: number, to: number) => {
    const a = Math.max(0, from);
    const b = Math.min(targetBytes, to);
    if (a >= b) return;
    const last = regions[regions.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else regions.push([a, b]);
  };
  for (const i of changed) add(wanted.offsets[i]! - max, wanted.offsets[i]! + wanted.lengths[i]! + max);
  if (changed.length > 0 && targetBytes > scannedBytes) add(scannedBytes - max, targetBytes);
  for (const [from, to] of regions) {
    const cut = await cutRange(fh, from, to, chunker, algorithm, pool, signal);
    for (let j = 0; j < cut.count; j++) have.push(cut.offsets[j]!, cut.lengths[j]!, cut.digest(j));
  }
  return { changed, have, ...(hashes.segmentCvs ? { segmentCvs: hashes.segmentCvs } : {}) };
}

/** The target's [from, to) cut into chunks with the manifest's chunker, as if a chunk started at `from` (in the pool's workers). */
async function cutRange(fh: FileHandle, from: number, to: number, chunker: ChunkerSpec, algorithm: DigestAlgorithm, pool: ScanPool, signal?: AbortSignal): Promise<ChunkColumns> {
  const chunks = new ChunkColumns();
  if (to <= from) return chunks;
  const scan = new StreamScan(readRange(fh, from, to, signal), { chunker, digestAlgorithm: algorithm, pool, signal });
  for await (const b of scan.batches()) {
    let o = from + b.offset;
    for (let i = 0; i < b.count; i++) {
      const len = b.lengths[i]!;
      chunks.push(o, len, b.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES));
      o += len;
    }
    b.release();
  }
  return chunks;
}

/**
 * The segments (indexes, of `segmentBytes`) that the writes (`writes`: [offset, length]
 * pairs) touched. The others hold what the comparison read there: the content's bytes,
 * since the target was compared over [0, min(its size, the content's)) and every byte past
 * its old end is written.
 */
export function segmentsWritten(segmentBytes: number, writes: readonly (readonly [number, number])[]): Set<number> {
  const out = new Set<number>();
  for (const [offset, length] of writes) {
    if (length === 0) continue;
    for (let k = Math.floor(offset / segmentBytes); k <= Math.floor((offset + length - 1) / segmentBytes); k++) out.add(k);
  }
  return out;
}

/**
 * The BLAKE3 digest of the target's [0, total) (at least two segments): the segments in `written` read (after the
 * fsync) and hashed on libuv's threads, the others' CVs taken from the comparison.
 */
async function digestReusingSegments(
  tree: TreeBinding, fh: FileHandle, total: number, kept: NonNullable<RangeHashes['segmentCvs']>, written: ReadonlySet<number>, signal?: AbortSignal,
): Promise<{ digest: Buffer; bytesRead: number }> {
  const { segmentBytes, cvs } = kept;
  const count = Math.ceil(total / segmentBytes);
  const stack = new CvStack(tree);
  let buf: Buffer | undefined;
  let bytesRead = 0;
  for (let k = 0; k < count; k++) {
    throwIfAborted(signal);
    const start = k * segmentBytes;
    const length = Math.min(segmentBytes, total - start);
    if (!written.has(k)) {
      stack.push(cvs.subarray(k * CV_BYTES, (k + 1) * CV_BYTES));
      continue;
    }
    buf ??= Buffer.allocUnsafe(segmentBytes);
    const got = await readUpTo(fh, buf, length, start);
    if (got < length) throw new VerifyFailedError(`target ended at ${start + got} bytes while being read back, expected ${total}`);
    bytesRead += length;
    const cv = new Uint8Array(CV_BYTES);
    await tree.blake3CvAsync(buf, length, start / BLAKE3_CHUNK_BYTES, cv);
    stack.push(cv);
  }
  return { digest: stack.digest(), bytesRead };
}

/** [from, to) of an open file, in reads of IN_PLACE_READ_BYTES (each piece a fresh buffer: the scan keeps them). */
async function* readRange(fh: FileHandle, from: number, to: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for (let pos = from; pos < to; ) {
    throwIfAborted(signal);
    const buf = Buffer.allocUnsafe(Math.min(IN_PLACE_READ_BYTES, to - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) throw new VerifyFailedError(`target ended at ${pos} bytes while being read, expected ${to}`);
    yield buf.subarray(0, bytesRead);
    pos += bytesRead;
  }
}

/** `length` bytes at `position` if they hash to `digest`; undefined if not (changed, or short). */
async function readVerified(fh: FileHandle, position: number, length: number, digest: Uint8Array, algorithm: DigestAlgorithm): Promise<Buffer | undefined> {
  const buf = Buffer.allocUnsafe(length);
  const { bytesRead } = await fh.read(buf, 0, length, position).catch(() => ({ bytesRead: -1 }));
  return bytesRead === length && digestOf(algorithm, buf).equals(digest) ? buf : undefined;
}

/** Punches [position, position + length) of the file (see punchHole); the bytes punched, 0 where zeros were written instead. */
function punch(fh: FileHandle, position: number, length: number, target: string): number {
  try {
    return punchHole(fh.fd, position, length) ? length : 0;
  } catch (err) {
    throw fromSystemError(err, target, 'punch a hole in place');
  }
}

async function writeAll(fh: FileHandle, data: Uint8Array, position: number, target: string): Promise<void> {
  try {
    for (let done = 0; done < data.length; ) {
      const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
      done += bytesWritten;
    }
  } catch (err) {
    throw fromSystemError(err, target, 'write in place');
  }
}
