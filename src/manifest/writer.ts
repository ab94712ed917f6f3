import { open, unlink, type FileHandle } from 'node:fs/promises';
import { throwIfAborted } from '../core/abort.js';
import { InvalidArgumentError, fromSystemError } from '../core/errors.js';
import { DIGEST_ALGORITHMS, DIGEST_BYTES, maxChunkBytes, type ChunkerSpec, type DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { validateChunkerSpec } from '../chunker/params.js';
import { createHasher, type Hasher } from '../hash/digest.js';
import { loadXxh64, type Xxh64 } from './checksum.js';
import {
  CHUNK_RECORD_BYTES,
  CHUNK_TERMINATOR_BYTES,
  END_MARKER,
  ENTRY_END_BYTES,
  ENTRY_DECLARED_SIZE_OFFSET,
  ENTRY_FIXED_BYTES,
  ENTRY_MODE_OFFSET,
  ENTRY_MTIME_OFFSET,
  ENTRY_PATH_LENGTH_OFFSET,
  FORMAT_VERSION,
  HEADER_BYTES,
  HEADER_CHECKSUM_OFFSET,
  MAX_LINK_TARGET_BYTES,
  MAX_PATH_BYTES,
  STRING_LENGTH_BYTES,
  TRAILER_BYTES,
  attributeBlockBytes,
  encodeAttributeBlock,
  encodeHeader,
  entryTypeCode,
  hasLinkTarget,
  writeInt64,
} from './format.js';
import { EntryOrder, describeEntry, metaProblem, pathProblem, rootProblem } from './rules.js';
import type { ChunkRecord, EntryMeta, ManifestHeader, ManifestKind } from './types.js';

/** Body bytes are collected in memory up to this size, then written with one syscall. */
export const WRITE_BUFFER_BYTES = 1 * MiB;
/**
 * The largest entry start: fixed fields, path, link target and attribute block. Below
 * WRITE_BUFFER_BYTES (the attribute block is bounded by MAX_ENTRY_XATTR_BYTES and names of
 * at most 255 bytes), so every entry start fits the buffer whole.
 */
const MAX_ENTRY_START_BYTES = ENTRY_FIXED_BYTES + MAX_PATH_BYTES + STRING_LENGTH_BYTES + MAX_LINK_TARGET_BYTES;

export interface ManifestInit {
  readonly kind: ManifestKind;
  readonly digestAlgorithm: DigestAlgorithm;
  readonly chunker: ChunkerSpec;
}

export interface ManifestWriterOptions {
  /** Checked at the start of every call; an aborted writer should then be abort()ed. */
  readonly signal?: AbortSignal;
  /**
   * Receives the body's bytes in order as each call appends them (a server stage of a tree
   * streams them, see server/stage.ts): every body byte once, not the header or trailer.
   * The view is valid only during the call: copy what you keep.
   */
  readonly onBody?: (bytes: Buffer) => void;
}

type State = 'between-entries' | 'in-file' | 'finished' | 'failed' | 'aborted';

/**
 * Writes a manifest to a file as a stream, in bounded memory (one WRITE_BUFFER_BYTES
 * buffer, reused), whatever the number of entries and chunks.
 *
 * Protocol: create(), then per entry beginEntry(); for a file entry addChunks() any number
 * of times and endEntry(); dirs and symlinks are complete after beginEntry(). Then finish().
 * Entries of a tree manifest must come in manifest order (comparePaths: sorted by path,
 * parents before children). Calls must not overlap: await each before the next.
 *
 * Every violation of the format's rules (wrong order, bad path, size mismatch, a second
 * entry in a file manifest...) throws InvalidArgumentError before anything of the
 * offending call is written, so the writer stays usable. An I/O error (mapped through
 * fromSystemError) leaves it failed: only abort() may follow. Until finish() resolves,
 * the file on disk has an invalid header checksum and no reader accepts it.
 */
export class ManifestWriter {
  private readonly buf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private bufLength = 0;
  /** Bytes of buf already passed to onBody. */
  private tapped = 0;
  /** File offset where buf[0] goes. */
  private filePosition = HEADER_BYTES;
  private readonly bodyChecksum: ReturnType<Xxh64['create']>;
  /** Digest of the body, for tree manifests only. */
  private readonly bodyDigest: Hasher | null;
  private readonly order = new EntryOrder();
  private readonly maxChunkBytes: number;
  private state: State = 'between-entries';
  private busy = false;

  private entryCount = 0;
  private chunkCount = 0;
  private totalBytes = 0;
  /** The current file entry (state 'in-file'). */
  private entryPath = '';
  private entryDeclaredSize = -1;
  private entryBytes = 0;
  /** The whole-file digest of a file manifest's entry, copied into the header. */
  private fileDigest: Uint8Array | null = null;

  private constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly init: ManifestInit,
    private readonly xxh64: Xxh64,
    private readonly signal: AbortSignal | undefined,
    private readonly onBody: ((bytes: Buffer) => void) | undefined,
  ) {
    this.bodyChecksum = xxh64.create();
    this.bodyDigest = init.kind === 'tree' ? createHasher(init.digestAlgorithm) : null;
    this.maxChunkBytes = maxChunkBytes(init.chunker);
  }

  /**
   * Creates (or truncates) the file at `path` and writes a placeholder header. Throws
   * InvalidArgumentError for an unknown kind or digest algorithm or invalid chunker spec.
   * Atomic replacement is the caller's business (write to a temporary name, then rename).
   */
  static async create(path: string, init: ManifestInit, options: ManifestWriterOptions = {}): Promise<ManifestWriter> {
    throwIfAborted(options.signal);
    if (init.kind !== 'file' && init.kind !== 'tree') throw new InvalidArgumentError(`unknown manifest kind "${String(init.kind)}"`);
    if (!DIGEST_ALGORITHMS.includes(init.digestAlgorithm)) {
      throw new InvalidArgumentError(`unknown digest algorithm "${String(init.digestAlgorithm)}"`);
    }
    validateChunkerSpec(init.chunker);
    const xxh64 = await loadXxh64();
    let fh: FileHandle;
    try {
      fh = await open(path, 'w');
    } catch (err) {
      throw fromSystemError(err, path, 'create manifest');
    }
    const { kind, digestAlgorithm, chunker } = init;
    const writer = new ManifestWriter(fh, path, { kind, digestAlgorithm, chunker }, xxh64, options.signal, options.onBody);
    try {
      await writer.run(() => writer.writeHeader(writer.headerWith(0, 0, 0, Buffer.alloc(DIGEST_BYTES)), false));
    } catch (err) {
      await writer.abort().catch(() => undefined);
      throw err;
    }
    return writer;
  }

  /**
   * Starts an entry. `meta.size` is the declared size: -1 if unknown, else the size the
   * entry must turn out to have (0 for every type but file). A file entry stays open until
   * endEntry(); any other is complete on return. A tree's first entry may be its root's own
   * (type dir, path ''). Version 2 attributes that `meta` lacks are written as not recorded.
   */
  async beginEntry(meta: EntryMeta): Promise<void> {
    await this.run(async () => {
      this.expect('between-entries', 'beginEntry() while a file entry is open (call endEntry() first)');
      if (this.init.kind === 'file' && this.entryCount > 0) throw new InvalidArgumentError('a file manifest has exactly one entry');
      const isRoot = this.init.kind === 'tree' && meta.path === '';
      const problem = metaProblem(meta, this.init.kind) ?? (isRoot ? rootProblem(meta, 'tree', FORMAT_VERSION, this.entryCount) : this.init.kind === 'tree' ? pathProblem(meta.path) : null);
      if (problem !== null) throw new InvalidArgumentError(problem);
      const pathBytes = Buffer.from(meta.path, 'utf8');
      if (this.init.kind === 'tree' && !isRoot) {
        const orderProblem = this.order.check(meta.path, pathBytes, meta.type === 'dir');
        if (orderProblem !== null) throw new InvalidArgumentError(orderProblem);
      }
      await this.reserve(MAX_ENTRY_START_BYTES + attributeBlockBytes(meta));
      const b = this.buf;
      let at = this.bufLength;
      b[at] = entryTypeCode(meta.type);
      b.writeUInt32LE(meta.mode, at + ENTRY_MODE_OFFSET);
      writeInt64(b, meta.mtimeMs, at + ENTRY_MTIME_OFFSET);
      writeInt64(b, meta.size, at + ENTRY_DECLARED_SIZE_OFFSET);
      b.writeUInt16LE(pathBytes.length, at + ENTRY_PATH_LENGTH_OFFSET);
      at += ENTRY_FIXED_BYTES;
      at += pathBytes.copy(b, at);
      if (hasLinkTarget(meta.type)) {
        const targetLength = b.write(meta.linkTarget!, at + STRING_LENGTH_BYTES, 'utf8');
        b.writeUInt16LE(targetLength, at);
        at += STRING_LENGTH_BYTES + targetLength;
      }
      at = encodeAttributeBlock(meta, b, at);
      this.bufLength = at;
      this.entryCount++;
      if (meta.type === 'file') {
        this.state = 'in-file';
        this.entryPath = meta.path;
        this.entryDeclaredSize = meta.size;
        this.entryBytes = 0;
      }
    });
  }

  /**
   * Appends chunk records, in file order, to the open file entry. Each length must be
   * 1..the chunker's maximum chunk size and each digest DIGEST_BYTES long. A batch with an
   * invalid record is rejected whole. The digests are copied; the caller may reuse them.
   */
  async addChunks(records: readonly ChunkRecord[]): Promise<void> {
    await this.run(async () => {
      this.expect('in-file', 'addChunks() outside a file entry');
      let bytes = this.entryBytes;
      for (let i = 0; i < records.length; i++) {
        const { length, digest } = records[i]!;
        if (!Number.isInteger(length) || length < 1 || length > this.maxChunkBytes) {
          throw new InvalidArgumentError(`chunk ${i} of ${describeEntry(this.entryPath)} has length ${length} outside 1..${this.maxChunkBytes}`);
        }
        if (!(digest instanceof Uint8Array) || digest.length !== DIGEST_BYTES) {
          throw new InvalidArgumentError(`chunk ${i} of ${describeEntry(this.entryPath)} has a digest that is not ${DIGEST_BYTES} bytes`);
        }
        bytes += length;
      }
      if (!Number.isSafeInteger(this.totalBytes + bytes)) throw new InvalidArgumentError('manifest total size exceeds 2^53 - 1 bytes');
      for (const { length, digest } of records) {
        if (this.bufLength + CHUNK_RECORD_BYTES > WRITE_BUFFER_BYTES) await this.flush();
        this.buf.writeUInt32LE(length, this.bufLength);
        this.buf.set(digest, this.bufLength + 4);
        this.bufLength += CHUNK_RECORD_BYTES;
      }
      this.entryBytes = bytes;
      this.chunkCount += records.length;
    });
  }

  /**
   * Ends the open file entry. `size` must equal the sum of its chunk lengths and, unless
   * the entry was begun with size -1, the declared size; `digest` is the whole file's
   * digest under the manifest's algorithm (not checked here: the writer never sees data).
   */
  async endEntry(size: number, digest: Uint8Array): Promise<void> {
    await this.run(async () => {
      this.expect('in-file', 'endEntry() outside a file entry (dirs and symlinks need none)');
      const what = describeEntry(this.entryPath);
      if (size !== this.entryBytes) throw new InvalidArgumentError(`${what} ends with size ${size} but its chunks add up to ${this.entryBytes}`);
      if (this.entryDeclaredSize !== -1 && size !== this.entryDeclaredSize) {
        throw new InvalidArgumentError(`${what} ends with size ${size} but was declared with size ${this.entryDeclaredSize}`);
      }
      if (!(digest instanceof Uint8Array) || digest.length !== DIGEST_BYTES) {
        throw new InvalidArgumentError(`${what} has a whole-file digest that is not ${DIGEST_BYTES} bytes`);
      }
      await this.reserve(CHUNK_TERMINATOR_BYTES + ENTRY_END_BYTES);
      const at = this.buf.writeUInt32LE(0, this.bufLength);
      writeInt64(this.buf, size, at);
      this.buf.set(digest, at + 8);
      this.bufLength = at + ENTRY_END_BYTES;
      this.totalBytes += size;
      if (this.init.kind === 'file') this.fileDigest = Buffer.from(digest);
      this.state = 'between-entries';
    });
  }

  /**
   * Writes the trailer and the final header, fsyncs and closes the file. Returns the
   * header as written. Requires no open file entry, and for a file manifest its entry.
   */
  async finish(): Promise<ManifestHeader> {
    return this.run(async () => {
      this.expect('between-entries', 'finish() while a file entry is open (call endEntry() first)');
      if (this.init.kind === 'file' && this.fileDigest === null) throw new InvalidArgumentError('a file manifest needs its file entry before finish()');
      await this.flush();
      this.buf[0] = END_MARKER;
      this.buf.writeBigUInt64LE(this.bodyChecksum.digest(), 1);
      this.bufLength = TRAILER_BYTES;
      await this.flush(false);
      const digest = this.fileDigest ?? this.bodyDigest!.digest();
      const header = this.headerWith(this.totalBytes, this.entryCount, this.chunkCount, digest);
      await this.writeHeader(header, true);
      this.state = 'finished';
      return header;
    });
  }

  /**
   * Closes and deletes the unfinished manifest file. Safe to call in any state and more
   * than once; after a successful finish() it does nothing (the file is complete).
   */
  async abort(): Promise<void> {
    if (this.state === 'finished' || this.state === 'aborted') return;
    this.state = 'aborted';
    await this.fh.close().catch(() => undefined);
    try {
      await unlink(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, this.path, 'delete unfinished manifest');
    }
  }

  /** Runs one public call: rejects overlapping calls and aborted signals; I/O errors fail the writer. */
  private async run<T>(body: () => Promise<T>): Promise<T> {
    if (this.busy) throw new InvalidArgumentError('ManifestWriter calls must not overlap (await each call)');
    if (this.state === 'failed') throw new InvalidArgumentError('the manifest writer failed earlier; only abort() is allowed');
    if (this.state === 'aborted') throw new InvalidArgumentError('the manifest writer was aborted');
    if (this.state === 'finished') throw new InvalidArgumentError('the manifest writer has finished');
    throwIfAborted(this.signal);
    this.busy = true;
    try {
      const result = await body();
      if ((this.state as State) !== 'finished') this.tap(); // finish() may have changed it
      return result;
    } catch (err) {
      if (!(err instanceof InvalidArgumentError)) this.state = 'failed';
      throw err;
    } finally {
      this.busy = false;
    }
  }

  private expect(state: State, misuse: string): void {
    if (this.state !== state) throw new InvalidArgumentError(misuse);
  }

  private headerWith(totalBytes: number, entryCount: number, chunkCount: number, digest: Uint8Array): ManifestHeader {
    return { formatVersion: FORMAT_VERSION, ...this.init, totalBytes, entryCount, chunkCount, digest };
  }

  /** Makes room for `bytes` more bytes in the buffer. */
  private async reserve(bytes: number): Promise<void> {
    if (this.bufLength + bytes > WRITE_BUFFER_BYTES) await this.flush();
  }

  /** Passes the body bytes appended since the last tap to onBody. */
  private tap(): void {
    if (this.onBody && this.bufLength > this.tapped) this.onBody(this.buf.subarray(this.tapped, this.bufLength));
    this.tapped = this.bufLength;
  }

  /** Writes the buffered bytes at the end of the file; body bytes also feed the checksums. */
  private async flush(body = true): Promise<void> {
    if (this.bufLength === 0) return;
    const bytes = this.buf.subarray(0, this.bufLength);
    if (body) {
      this.tap();
      this.bodyChecksum.update(bytes);
      this.bodyDigest?.update(bytes);
    }
    await this.writeAt(bytes, this.filePosition);
    this.filePosition += bytes.length;
    this.bufLength = 0;
    this.tapped = 0;
  }

  /** Writes the header at offset 0; the final one is also made durable and the file closed. */
  private async writeHeader(header: ManifestHeader, final: boolean): Promise<void> {
    const bytes = Buffer.alloc(HEADER_BYTES);
    encodeHeader(header, bytes, this.xxh64);
    if (!final) {
      // A zero checksum makes the placeholder invalid: a crash before finish() leaves a
      // file no reader accepts.
      bytes.writeBigUInt64LE(0n, HEADER_CHECKSUM_OFFSET);
    }
    await this.writeAt(bytes, 0);
    if (!final) return;
    try {
      await this.fh.sync();
      await this.fh.close();
    } catch (err) {
      throw fromSystemError(err, this.path, 'write manifest');
    }
  }

  private async writeAt(bytes: Buffer, position: number): Promise<void> {
    try {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await this.fh.write(bytes, done, bytes.length - done, position + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw fromSystemError(err, this.path, 'write manifest');
    }
  }
}
