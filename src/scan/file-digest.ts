import { open, type FileHandle } from 'node:fs/promises';
import { zeroBytes } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import type { DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { createHasher } from '../hash/digest.js';
import { alignedBuffer, alignUp, DIRECT_ALIGN_BYTES, openDirect } from '../io/direct.js';
import { seekData, seekHole } from '../io/sys.js';
import { DIGEST_THREAD_MIN_BYTES, largeFileHasher } from './digest-thread.js';

/** Bytes read per read(2) of a file's data extents. */
const FILE_DIGEST_READ_BYTES = 4 * MiB;
/** Holes are fed to the hasher in known-zero pieces of this size (zeroBytes() views). */
const FILE_DIGEST_ZERO_PIECE_BYTES = MiB;

/**
 * The whole-content digest (b3sum / sha256sum) of [0, bytes) of an open file, read in order
 * once. Holes (SEEK_DATA/SEEK_HOLE, io/sys.ts; without the addon all of the file is data)
 * are not read: they go to the hasher as known zeros (views of zeroBytes()), which a
 * TreeHasher hashes without input. A file of DIGEST_THREAD_MIN_BYTES or more is hashed by
 * largeFileHasher() (BLAKE3 with the addon: spans on libuv's threads; else a DigestThread),
 * a smaller one on this thread: the same digest either way. A regular file shorter than
 * `bytes` is hashed to its end only (its digest then differs: a missing tail is not taken
 * for a hole). `direct`: `fh` was
 * opened with O_DIRECT (openDirect): reads are then aligned (io/direct.ts).
 */
export async function digestOfOpenFile(fh: FileHandle, bytes: number, algorithm: DigestAlgorithm, signal?: AbortSignal, direct = false): Promise<Buffer> {
  const large = bytes >= DIGEST_THREAD_MIN_BYTES ? largeFileHasher(algorithm) : undefined;
  const small = large ? undefined : createHasher(algorithm);
  const update = (data: Uint8Array) => (large ?? small!).update(data);
  const bufferBytes = direct ? FILE_DIGEST_READ_BYTES : Math.min(FILE_DIGEST_READ_BYTES, Math.max(1, bytes));
  // Two buffers, the second made when a second read is: one is hashed while the next read
  // of the same data extent fills the other (one read ahead, as a disk wants a queue).
  const bufs: Buffer[] = [];
  const bufferFor = (i: number) => (bufs[i] ??= direct ? alignedBuffer(FILE_DIGEST_READ_BYTES) : Buffer.allocUnsafe(bufferBytes));
  let reads = 0;
  /** A read of the data extent [pos, end) into the next buffer, from the aligned offset at or before pos under O_DIRECT. */
  const startRead = (pos: number, end: number): PendingRead => {
    const buf = bufferFor(reads++ % 2);
    // O_DIRECT reads start and end on DIRECT_ALIGN_BYTES: from the aligned offset at or
    // before pos (bytes before pos are skipped), at most the buffer.
    const from = direct ? pos - (pos % DIRECT_ALIGN_BYTES) : pos;
    const want = Math.min(end - from, buf.length);
    return { pos, end, from, buf, read: fh.read(buf, 0, direct ? Math.min(buf.length, alignUp(want)) : want, from).then((r) => r.bytesRead) };
  };
  let ahead: PendingRead | undefined;
  try {
    // SEEK_DATA cannot tell a hole at the end from the end: the size does (a device has none).
    const st = await fh.stat();
    const readable = st.isFile() ? Math.min(bytes, st.size) : bytes;
    for (let pos = 0; pos < readable; ) {
      throwIfAborted(signal);
      let r = ahead;
      ahead = undefined;
      if (r === undefined) {
        const at = seekData(fh.fd, pos);
        const dataAt = at < 0 ? readable : Math.min(at, readable);
        if (dataAt > pos) {
          // A hole: known zeros, not read.
          const n = Math.min(dataAt - pos, FILE_DIGEST_ZERO_PIECE_BYTES);
          update(zeroBytes(n));
          pos += n;
          await large?.ready();
          continue;
        }
        const hole = seekHole(fh.fd, pos);
        r = startRead(pos, hole < 0 ? readable : Math.min(hole, readable));
      }
      const bytesRead = await r.read;
      const got = Math.min(bytesRead, r.end - r.from) - (r.pos - r.from);
      if (got <= 0) break;
      pos += got;
      // The rest of the extent: its next piece is read while this one is hashed. A short
      // read (the file shrank) leaves that piece past the end: it reads nothing and ends.
      if (pos < r.end) ahead = startRead(pos, r.end);
      // The hashers copy what they keep (or hash it now): the buffer is reused.
      update(r.buf.subarray(r.pos - r.from, r.pos - r.from + got));
      await large?.ready();
    }
    return Buffer.from(large ? await large.digest() : small!.digest());
  } finally {
    // Neither the file nor its buffers go while a read into them is in flight.
    await ahead?.read.catch(() => {});
    await large?.close();
  }
}

/** A read digestOfOpenFile started: of [pos, end) of a data extent, into `buf` from file offset `from`. */
interface PendingRead {
  readonly pos: number;
  readonly end: number;
  readonly from: number;
  readonly buf: Buffer;
  readonly read: Promise<number>;
}

/**
 * digestOfOpenFile of the file at `path`, opened with O_DIRECT where it can be (a file to
 * verify is usually not in the page cache: 3x faster cold, see io/direct.ts openDirect).
 */
export async function digestOfFile(path: string, bytes: number, algorithm: DigestAlgorithm, signal?: AbortSignal): Promise<Buffer> {
  const direct = await openDirect(path, 'r');
  const fh = direct ?? (await open(path, 'r'));
  try {
    return await digestOfOpenFile(fh, bytes, algorithm, signal, direct !== undefined);
  } finally {
    await fh.close();
  }
}
