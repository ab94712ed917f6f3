import { open, type FileHandle } from 'node:fs/promises';
import { zeroBytes } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import type { DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { createHasher } from '../hash/digest.js';
import { alignedBuffer, alignUp, DIRECT_ALIGN_BYTES, openDirect } from '../io/direct.js';
import { residentBytes, seekData, seekHole } from '../io/sys.js';
import { TreeHasher } from '../hash/tree.js';
import { DIGEST_THREAD_MIN_BYTES, largeFileHasher } from './digest-thread.js';

/** Bytes read per read(2) of a file's data extents. */
const FILE_DIGEST_READ_BYTES = 4 * MiB;
/**
 * A TreeHasher's spans here (read into in place; see TreeHasher.room) and how many hash at
 * once. Smaller than a rebuild's 8 MiB: each fresh span is page-faulted in as it is read
 * into, and 8 MiB ones made a one-off check of a cached 256 MiB file take 160 ms against
 * 95 ms with 2 MiB (512 KiB: 120 ms, the per-span work showing; a fresh process each,
 * scan/file-digest.ts digestOfFile, 2 cores with AVX-512).
 */
const FILE_DIGEST_SPAN_BYTES = 2 * MiB;
const FILE_DIGEST_SPANS_IN_FLIGHT = 3;
/** How much of a file's start digestOfFile asks the page cache about before choosing how to read it. */
const FILE_DIGEST_PROBE_BYTES = 64 * MiB;
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
  const large = bytes >= DIGEST_THREAD_MIN_BYTES ? largeFileHasher(algorithm, { spanBytes: FILE_DIGEST_SPAN_BYTES, spansInFlight: FILE_DIGEST_SPANS_IN_FLIGHT, allocate: direct ? alignedBuffer : undefined }) : undefined;
  // A TreeHasher is read into (its room()), not copied into: no buffer of our own then.
  const spans = large instanceof TreeHasher ? large : undefined;
  const small = large ? undefined : createHasher(algorithm);
  const update = (data: Uint8Array) => (large ?? small!).update(data);
  let own: Buffer | undefined;
  const ownBuffer = () => (own ??= direct ? alignedBuffer(FILE_DIGEST_READ_BYTES) : Buffer.allocUnsafe(Math.min(FILE_DIGEST_READ_BYTES, Math.max(1, bytes))));
  try {
    // SEEK_DATA cannot tell a hole at the end from the end: the size does (a device has none).
    const st = await fh.stat();
    const readable = st.isFile() ? Math.min(bytes, st.size) : bytes;
    for (let pos = 0; pos < readable; ) {
      throwIfAborted(signal);
      const at = seekData(fh.fd, pos);
      const dataAt = at < 0 ? readable : Math.min(at, readable);
      if (dataAt > pos) {
        // A hole: known zeros, not read.
        const n = Math.min(dataAt - pos, FILE_DIGEST_ZERO_PIECE_BYTES);
        update(zeroBytes(n));
        pos += n;
      } else {
        const hole = seekHole(fh.fd, pos);
        const end = hole < 0 ? readable : Math.min(hole, readable);
        if (spans && (!direct || pos % DIRECT_ALIGN_BYTES === 0)) {
          // Straight into the span buffer. Direct: the room starts aligned (spans are
          // aligned buffers covering aligned file ranges, and pos is aligned), and is a
          // multiple of the alignment long, so the read may run past `end` (hole bytes, which
          // later updates overwrite).
          const room = spans.room();
          const want = Math.min(end - pos, room.length);
          const { bytesRead } = await fh.read(room, 0, direct ? Math.min(room.length, alignUp(want)) : want, pos);
          const got = Math.min(bytesRead, want);
          if (got <= 0) break;
          spans.advance(got);
          pos += got;
          await spans.ready();
          continue;
        }
        const buf = ownBuffer();
        // O_DIRECT reads start and end on DIRECT_ALIGN_BYTES: from the aligned offset at or
        // before pos (bytes before pos are skipped), at most the buffer.
        const from = direct ? pos - (pos % DIRECT_ALIGN_BYTES) : pos;
        const want = Math.min(end - from, buf.length);
        const { bytesRead } = await fh.read(buf, 0, direct ? Math.min(buf.length, alignUp(want)) : want, from);
        const got = Math.min(bytesRead, end - from) - (pos - from);
        if (got <= 0) break;
        // The hashers copy what they keep (or hash it now): the buffer is reused.
        update(buf.subarray(pos - from, pos - from + got));
        pos += got;
      }
      await large?.ready();
    }
    return Buffer.from(large ? await large.digest() : small!.digest());
  } finally {
    await large?.close();
  }
}

/**
 * digestOfOpenFile of the file at `path`, opened with O_DIRECT where it can be, unless most
 * of it is in the page cache (io/sys.ts residentBytes over its first
 * FILE_DIGEST_PROBE_BYTES). A file checked long after it was written is usually not
 * cached, and cold reads run 3x faster direct; one just written or read is, and reads
 * from the cache run 5x faster than direct ones from the disk (io/direct.ts openDirect:
 * 1.8 GB/s direct, about 9 GB/s cached). An unchanged target checked by `pull --checksum`
 * right after it was written took 2x the time read direct.
 */
export async function digestOfFile(path: string, bytes: number, algorithm: DigestAlgorithm, signal?: AbortSignal): Promise<Buffer> {
  const fh = await open(path, 'r');
  let direct: FileHandle | undefined;
  try {
    const probe = Math.min(bytes, FILE_DIGEST_PROBE_BYTES);
    const cached = probe > 0 ? residentBytes(fh.fd, 0, probe) : undefined;
    if (cached === undefined || cached < probe / 2) direct = await openDirect(path, 'r');
    return await digestOfOpenFile(direct ?? fh, bytes, algorithm, signal, direct !== undefined);
  } finally {
    await direct?.close();
    await fh.close();
  }
}
