import { createReadStream } from 'node:fs';
import { throwIfAborted } from '../core/abort.js';
import { InvalidArgumentError, ManifestCorruptError, fromSystemError } from '../core/errors.js';
import { DIGEST_BYTES, maxChunkBytes } from '../core/ids.js';
import { KiB } from '../core/sizes.js';
import { validateChunkerSpec } from '../chunker/params.js';
import { createHasher, digestEquals } from '../hash/digest.js';
import { loadXxh64, type Xxh64 } from './checksum.js';
import {
  CHUNK_TERMINATOR_BYTES,
  END_MARKER,
  ENTRY_END_BYTES,
  ENTRY_DECLARED_SIZE_OFFSET,
  ENTRY_FIXED_BYTES,
  ENTRY_MODE_OFFSET,
  ENTRY_MTIME_OFFSET,
  ENTRY_PATH_LENGTH_OFFSET,
  ATTR_FIXED_BYTES,
  DEVICE_BYTES,
  FORMAT_VERSION_1,
  HEADER_BYTES,
  HEADER_CHECKSUM_OFFSET,
  HEADER_VERSION_OFFSET,
  MAGIC,
  MAX_LINK_TARGET_BYTES,
  MAX_ENTRY_XATTR_BYTES,
  MAX_PATH_BYTES,
  MAX_XATTR_NAME_BYTES,
  MAX_XATTR_VALUE_BYTES,
  MAX_XATTRS_PER_ENTRY,
  NO_ID,
  READABLE_FORMAT_VERSIONS,
  SHORT_LENGTH_BYTES,
  STRING_LENGTH_BYTES,
  TRAILER_BYTES,
  XATTR_COUNT_BYTES,
  XATTR_VALUE_LENGTH_BYTES,
  decodeHeaderFields,
  entryTypeFromCode,
  hasLinkTarget,
  headerChecksum,
  isDevice,
  readInt64,
  readUint64,
} from './format.js';
import { EntryOrder, describeEntry, metaProblem, pathProblem, rootProblem } from './rules.js';
import type { ChunkRecord, EntryMeta, EntryXattr, ManifestEvent, ManifestHeader } from './types.js';

/** A 'chunks' event carries at most this many records. */
export const READ_BATCH_RECORDS = 4096;
/** openManifestFile reads the file in pieces of this size. */
export const FILE_READ_CHUNK_BYTES = 256 * KiB;
/** The largest field read in one piece (header, path, link target, xattr value). */
const MAX_FIELD_BYTES = Math.max(HEADER_BYTES, MAX_PATH_BYTES, MAX_LINK_TARGET_BYTES, MAX_XATTR_VALUE_BYTES);

export interface ManifestReaderOptions {
  /** Checked before each entry and each batch of chunk records. */
  readonly signal?: AbortSignal;
}

const EMPTY = Buffer.alloc(0);
const OWNER_FIELDS = ['owner', 'group'] as const;
/** Strict: invalid UTF-8 is corruption, and a leading U+FEFF is part of a name. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Pulls bytes from an async iterable of arbitrary pieces. Fields that lie within the
 * current piece are read in place; one that spans pieces is assembled in a scratch buffer.
 * While a tap is set, every consumed byte is passed to it exactly once, in order, in large
 * slices (a piece at a time), which keeps checksumming cheap.
 */
class ByteSource {
  /** Holds the bytes of the last read, at the offset that read returned. */
  buf: Buffer = EMPTY;
  private piece: Buffer = EMPTY;
  private pos = 0;
  private readonly scratch = Buffer.allocUnsafe(MAX_FIELD_BYTES);
  private tap: ((bytes: Buffer) => void) | null = null;
  private tapStart = 0;

  constructor(
    private readonly it: AsyncIterator<Uint8Array>,
    private readonly truncated: (where: string) => Error,
  ) {}

  /**
   * Consumes n bytes if the current piece holds them: returns their offset in `buf`, or -1
   * (nothing consumed) if the asynchronous read() is needed. Avoids an await per field.
   */
  readNow(n: number): number {
    if (this.piece.length - this.pos < n) return -1;
    this.buf = this.piece;
    const at = this.pos;
    this.pos += n;
    return at;
  }

  /**
   * Consumes n (<= MAX_FIELD_BYTES) bytes and returns their offset in `buf`; they stay
   * there until the next read. Throws truncated(where) if the stream ends first.
   */
  async read(n: number, where: string | (() => string)): Promise<number> {
    const now = this.readNow(n);
    if (now >= 0) return now;
    let have = this.piece.copy(this.scratch, 0, this.pos);
    this.pos = this.piece.length;
    while (have < n) {
      if (!(await this.nextPiece())) throw this.truncated(typeof where === 'string' ? where : where());
      const take = Math.min(n - have, this.piece.length);
      have += this.piece.copy(this.scratch, have, 0, take);
      this.pos = take;
    }
    this.buf = this.scratch;
    return 0;
  }

  /** True if every byte has been consumed and the stream has ended. */
  async atEnd(): Promise<boolean> {
    return this.pos === this.piece.length && !(await this.nextPiece());
  }

  /** Passes every byte consumed from now on to `tap`. */
  startTap(tap: (bytes: Buffer) => void): void {
    this.tap = tap;
    this.tapStart = this.pos;
  }

  /** Passes the bytes consumed so far, except the last `exceptLast`, and stops tapping. */
  stopTap(exceptLast: number): void {
    const end = this.pos - exceptLast;
    if (this.tap && end > this.tapStart) this.tap(this.piece.subarray(this.tapStart, end));
    this.tap = null;
  }

  /** Releases the underlying iterator (closes a file stream). Idempotent. */
  async close(): Promise<void> {
    await this.it.return?.();
  }

  /** Moves to the next non-empty piece; false at the end of the stream. */
  private async nextPiece(): Promise<boolean> {
    if (this.tap && this.piece.length > this.tapStart) this.tap(this.piece.subarray(this.tapStart));
    this.piece = EMPTY;
    this.pos = 0;
    this.tapStart = 0;
    for (;;) {
      const r = await this.it.next();
      if (r.done) return false;
      const v: unknown = r.value;
      if (!(v instanceof Uint8Array)) throw new InvalidArgumentError('a manifest source must yield Uint8Array pieces');
      if (v.length === 0) continue;
      this.piece = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      return true;
    }
  }
}

/**
 * A manifest being read as a stream: the header has been read and validated when it is
 * opened (openManifest, openManifestFile); events() then yields the body. Memory stays
 * bounded whatever the manifest's size.
 */
export interface ManifestReader {
  readonly header: ManifestHeader;
  /**
   * Yields the body as events ('entry'; for files then 'chunks' batches of up to
   * READ_BATCH_RECORDS records and 'entryEnd'), validating as it goes: entry rules,
   * order, chunk lengths, sizes, header totals, and after the last entry the trailer
   * checksum and the end of the stream. Any malformation or truncation throws
   * ManifestCorruptError. Nothing is valid until iteration completes without throwing.
   * Digests in events are fresh copies that stay valid. May be called once (a second
   * call throws InvalidArgumentError); ending the iteration early (break) closes the
   * source.
   */
  events(): AsyncGenerator<ManifestEvent, void, undefined>;
  /** Releases the source without reading the body; events() does this itself when done. */
  close(): Promise<void>;
}

class StreamingManifestReader implements ManifestReader {
  private started = false;

  constructor(
    readonly header: ManifestHeader,
    private readonly source: ByteSource,
    private readonly xxh64: Xxh64,
    private readonly signal: AbortSignal | undefined,
    private readonly corrupt: (message: string) => ManifestCorruptError,
    /**
     * A body without header or trailer (openManifestBody): no totals to check against,
     * it ends at the end marker, and its digest goes here.
     */
    private readonly bodyOnly?: (digest: Buffer) => void,
  ) {}

  events(): AsyncGenerator<ManifestEvent, void, undefined> {
    if (this.started) throw new InvalidArgumentError('ManifestReader.events() may be called only once');
    this.started = true;
    return this.readBody();
  }

  async close(): Promise<void> {
    await this.source.close();
  }

  private async *readBody(): AsyncGenerator<ManifestEvent, void, undefined> {
    const { source: src, header, signal, corrupt, bodyOnly } = this;
    const bodyChecksum = this.xxh64.create();
    const bodyDigest = header.kind === 'tree' ? createHasher(header.digestAlgorithm) : null;
    src.startTap((bytes) => {
      bodyChecksum.update(bytes);
      bodyDigest?.update(bytes);
    });
    const order = new EntryOrder();
    const maxChunk = maxChunkBytes(header.chunker);
    const lengths = new Uint32Array(READ_BATCH_RECORDS);
    const digests = Buffer.allocUnsafe(READ_BATCH_RECORDS * DIGEST_BYTES);
    let entryCount = 0;
    let chunkCount = 0;
    let totalBytes = 0;
    /** The entry read last, described for messages only (undefined: the header). */
    let previousPath: string | undefined;
    const previous = () => (previousPath === undefined ? 'the header' : describeEntry(previousPath));
    const version = header.formatVersion;

    // Messages are built only when needed (`what` is a function): describing an entry for
    // each field read cost a tenth of a tree manifest's parse.
    const utf8 = (at: number, length: number, what: () => string): string => {
      try {
        return UTF8.decode(src.buf.subarray(at, at + length));
      } catch {
        throw corrupt(`${what()} is not valid UTF-8`);
      }
    };

    /** A version 2 attribute block (docs/FORMAT.md), every length checked before it is read. */
    const readAttributes = async (meta: EntryMeta): Promise<EntryMeta> => {
      const what = () => `the attributes of ${describeEntry(meta.path)}`;
      let at = src.readNow(ATTR_FIXED_BYTES);
      if (at < 0) at = await src.read(ATTR_FIXED_BYTES, what);
      const mtimeExtraNs = src.buf.readUInt32LE(at);
      const uid = src.buf.readUInt32LE(at + 4);
      const gid = src.buf.readUInt32LE(at + 8);
      const names: (string | undefined)[] = [];
      for (const field of OWNER_FIELDS) {
        at = src.readNow(SHORT_LENGTH_BYTES);
        if (at < 0) at = await src.read(SHORT_LENGTH_BYTES, what);
        const length = src.buf[at]!;
        at = src.readNow(length);
        if (at < 0) at = await src.read(length, what);
        names.push(length === 0 ? undefined : utf8(at, length, () => `the ${field} name of ${describeEntry(meta.path)}`));
      }
      let device: { devMajor: number; devMinor: number } | undefined;
      if (isDevice(meta.type)) {
        at = src.readNow(DEVICE_BYTES);
        if (at < 0) at = await src.read(DEVICE_BYTES, what);
        device = { devMajor: src.buf.readUInt32LE(at), devMinor: src.buf.readUInt32LE(at + 4) };
      }
      at = src.readNow(XATTR_COUNT_BYTES);
      if (at < 0) at = await src.read(XATTR_COUNT_BYTES, what);
      const count = src.buf.readUInt16LE(at);
      if (count > MAX_XATTRS_PER_ENTRY) throw corrupt(`${describeEntry(meta.path)} has ${count} xattrs (at most ${MAX_XATTRS_PER_ENTRY})`);
      const xattrs: EntryXattr[] = [];
      let total = 0;
      for (let i = 0; i < count; i++) {
        at = src.readNow(SHORT_LENGTH_BYTES);
        if (at < 0) at = await src.read(SHORT_LENGTH_BYTES, what);
        const nameLength = src.buf[at]!;
        if (nameLength === 0 || nameLength > MAX_XATTR_NAME_BYTES) throw corrupt(`xattr ${i} of ${describeEntry(meta.path)} has a name of ${nameLength} bytes (1..${MAX_XATTR_NAME_BYTES})`);
        at = src.readNow(nameLength);
        if (at < 0) at = await src.read(nameLength, what);
        const name = utf8(at, nameLength, () => `xattr ${i} of ${describeEntry(meta.path)}`);
        at = src.readNow(XATTR_VALUE_LENGTH_BYTES);
        if (at < 0) at = await src.read(XATTR_VALUE_LENGTH_BYTES, what);
        const valueLength = src.buf.readUInt32LE(at);
        if (valueLength > MAX_XATTR_VALUE_BYTES) throw corrupt(`xattr ${JSON.stringify(name)} of ${describeEntry(meta.path)} has ${valueLength} bytes (at most ${MAX_XATTR_VALUE_BYTES})`);
        total += nameLength + valueLength;
        if (total > MAX_ENTRY_XATTR_BYTES) throw corrupt(`${describeEntry(meta.path)} has more than ${MAX_ENTRY_XATTR_BYTES} bytes of xattrs`);
        at = src.readNow(valueLength);
        if (at < 0) at = await src.read(valueLength, what);
        xattrs.push({ name, value: Buffer.from(src.buf.subarray(at, at + valueLength)) });
      }
      // Zero nanoseconds and no xattrs are left out, as a writer's caller leaves them out.
      // `meta` is this reader's own fresh object: filled in place (a spread per field cost a
      // fifth of a tree manifest's parse).
      const m = meta as { -readonly [K in keyof EntryMeta]: EntryMeta[K] };
      if (mtimeExtraNs !== 0) m.mtimeExtraNs = mtimeExtraNs;
      if (uid !== NO_ID) m.uid = uid;
      if (gid !== NO_ID) m.gid = gid;
      if (names[0] !== undefined) m.owner = names[0];
      if (names[1] !== undefined) m.group = names[1];
      if (device) {
        m.devMajor = device.devMajor;
        m.devMinor = device.devMinor;
      }
      if (xattrs.length > 0) m.xattrs = xattrs;
      return m;
    };

    try {
      for (;;) {
        throwIfAborted(signal);
        const number = entryCount + 1;
        let at = src.readNow(1);
        if (at < 0) at = await src.read(1, `the entry after ${previous()}`);
        const typeByte = src.buf[at]!;
        if (typeByte === END_MARKER) break;
        const type = entryTypeFromCode(typeByte, version);
        if (type === undefined) throw corrupt(`unknown entry type byte 0x${typeByte.toString(16).padStart(2, '0')} after ${previous()}`);
        if (!bodyOnly && entryCount === header.entryCount) throw corrupt(`manifest has more entries than its header declares (${header.entryCount})`);

        // The type byte is consumed: the rest of the entry start begins one byte later.
        let start = src.readNow(ENTRY_FIXED_BYTES - 1);
        if (start < 0) start = await src.read(ENTRY_FIXED_BYTES - 1, `the start of entry ${number}`);
        start -= 1;
        const mode = src.buf.readUInt32LE(start + ENTRY_MODE_OFFSET);
        const mtimeMs = readInt64(src.buf, start + ENTRY_MTIME_OFFSET);
        const size = readInt64(src.buf, start + ENTRY_DECLARED_SIZE_OFFSET);
        const pathLength = src.buf.readUInt16LE(start + ENTRY_PATH_LENGTH_OFFSET);
        if (mtimeMs === undefined) throw corrupt(`entry ${number} has a modification time out of range`);
        if (size === undefined) throw corrupt(`entry ${number} has a declared size out of range`);
        if (pathLength > MAX_PATH_BYTES) throw corrupt(`entry ${number} has a path of ${pathLength} bytes (at most ${MAX_PATH_BYTES})`);
        at = src.readNow(pathLength);
        if (at < 0) at = await src.read(pathLength, `the path of entry ${number}`);
        const path = utf8(at, pathLength, () => `the path of entry ${number}`);
        let meta: EntryMeta = { type, path, mode, mtimeMs, size };
        if (header.kind === 'tree') {
          // Checked before the next read, while the path's bytes are still in src.buf.
          const problem = path === '' ? rootProblem(meta, 'tree', version, entryCount) : pathProblem(path) ?? order.check(path, src.buf.subarray(at, at + pathLength), type === 'dir');
          if (problem !== null) throw corrupt(problem);
        }
        if (hasLinkTarget(type)) {
          const which = `the ${type === 'symlink' ? 'symlink target' : 'linked path'} of ${describeEntry(path)}`;
          at = src.readNow(STRING_LENGTH_BYTES);
          if (at < 0) at = await src.read(STRING_LENGTH_BYTES, which);
          const targetLength = src.buf.readUInt16LE(at);
          if (targetLength > MAX_LINK_TARGET_BYTES) throw corrupt(`${which} has ${targetLength} bytes (at most ${MAX_LINK_TARGET_BYTES})`);
          at = src.readNow(targetLength);
          if (at < 0) at = await src.read(targetLength, which);
          meta = { ...meta, linkTarget: utf8(at, targetLength, () => which) };
        }
        if (version !== FORMAT_VERSION_1) meta = await readAttributes(meta);
        const problem = metaProblem(meta, header.kind, version);
        if (problem !== null) throw corrupt(problem);
        entryCount++;
        previousPath = path;
        yield { kind: 'entry', meta };
        if (type !== 'file') continue;

        let entryBytes = 0;
        let batched = 0;
        let index = 0;
        for (;; index++) {
          at = src.readNow(CHUNK_TERMINATOR_BYTES);
          if (at < 0) at = await src.read(CHUNK_TERMINATOR_BYTES, `chunk records of ${previous()}`);
          const length = src.buf.readUInt32LE(at);
          if (length === 0) break;
          if (length > maxChunk) throw corrupt(`chunk ${index} of ${previous()} has length ${length}, more than the chunker's maximum ${maxChunk}`);
          at = src.readNow(DIGEST_BYTES);
          if (at < 0) at = await src.read(DIGEST_BYTES, `chunk records of ${previous()}`);
          src.buf.copy(digests, batched * DIGEST_BYTES, at, at + DIGEST_BYTES);
          lengths[batched++] = length;
          entryBytes += length;
          if (batched === READ_BATCH_RECORDS) {
            checkRunningTotals(chunkCount + index + 1, totalBytes + entryBytes);
            yield chunksEvent(batched);
            batched = 0;
            throwIfAborted(signal);
          }
        }
        if (batched > 0) {
          checkRunningTotals(chunkCount + index, totalBytes + entryBytes);
          yield chunksEvent(batched);
        }
        chunkCount += index;

        at = src.readNow(ENTRY_END_BYTES);
        if (at < 0) at = await src.read(ENTRY_END_BYTES, `the end of ${previous()}`);
        const finalSize = readUint64(src.buf, at);
        const digest = Buffer.from(src.buf.subarray(at + 8, at + ENTRY_END_BYTES));
        if (finalSize < 0) throw corrupt(`${previous()} has a final size out of range`);
        if (finalSize !== entryBytes) throw corrupt(`${previous()} has size ${finalSize} but its chunks add up to ${entryBytes}`);
        if (size !== -1 && size !== finalSize) throw corrupt(`${previous()} has size ${finalSize} but was declared with size ${size}`);
        if (header.kind === 'file' && !digestEquals(digest, header.digest)) {
          throw corrupt('manifest header digest does not match the digest of its file entry');
        }
        totalBytes += finalSize;
        yield { kind: 'entryEnd', size: finalSize, digest };
      }

      src.stopTap(1); // the end marker is not part of the body
      if (bodyOnly) {
        if (!(await src.atEnd())) throw corrupt('manifest body has bytes after its end marker');
        bodyOnly(bodyDigest!.digest());
        return;
      }
      const at = await src.read(TRAILER_BYTES - 1, 'the trailer');
      if (src.buf.readBigUInt64LE(at) !== bodyChecksum.digest()) throw corrupt('manifest checksum mismatch');
      if (!(await src.atEnd())) throw corrupt('manifest has trailing bytes after its trailer');
      if (entryCount !== header.entryCount) throw corrupt(`manifest header declares ${header.entryCount} entries but the body has ${entryCount}`);
      if (chunkCount !== header.chunkCount) throw corrupt(`manifest header declares ${header.chunkCount} chunks but the body has ${chunkCount}`);
      if (totalBytes !== header.totalBytes) throw corrupt(`manifest header declares ${header.totalBytes} bytes but the body has ${totalBytes}`);
      if (bodyDigest !== null && !digestEquals(bodyDigest.digest(), header.digest)) {
        throw corrupt('manifest header digest does not match the digest of its body');
      }
    } finally {
      await src.close();
    }

    /** Fails as soon as the body has more chunks or bytes than the header declares. */
    function checkRunningTotals(chunks: number, bytes: number): void {
      if (bodyOnly) return;
      if (chunks > header.chunkCount) throw corrupt(`manifest has more chunks than its header declares (${header.chunkCount})`);
      if (bytes > header.totalBytes) throw corrupt(`manifest has more bytes than its header declares (${header.totalBytes})`);
    }

    /** One copy of the batch's digests per event: records view it and stay valid. */
    function chunksEvent(count: number): ManifestEvent {
      const copy = Buffer.allocUnsafeSlow(count * DIGEST_BYTES);
      digests.copy(copy, 0, 0, count * DIGEST_BYTES);
      const records = new Array<ChunkRecord>(count);
      for (let i = 0; i < count; i++) {
        records[i] = { length: lengths[i]!, digest: copy.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES) };
      }
      return { kind: 'chunks', records };
    }
  }
}

/**
 * Reads and validates a manifest's header from `source` (magic, format version, header
 * checksum, kind, algorithms, chunker parameters via validateChunkerSpec) and returns a
 * reader for the body. Throws ManifestCorruptError for anything malformed or truncated.
 * The reader owns the source from then on: events() or close() releases it.
 */
export function openManifest(source: AsyncIterable<Uint8Array>, options: ManifestReaderOptions = {}): Promise<ManifestReader> {
  return openSource(source, options, (message) => new ManifestCorruptError(message));
}

/**
 * Reads a tree manifest's body alone, as a server stage receives it while the push runs:
 * the entries, then the end marker, nothing after (server/stage.ts). `header` stands in for
 * the header to come: its kind (tree), digest algorithm and chunker apply, its totals and
 * digest are not checked. Every entry is validated as in a whole manifest; once the end
 * marker is read, `onEnd` gets the body's digest, which equals the header digest of a
 * manifest with exactly this body.
 */
export async function openManifestBody(source: AsyncIterable<Uint8Array>, header: ManifestHeader, onEnd: (digest: Buffer) => void, options: ManifestReaderOptions = {}): Promise<ManifestReader> {
  if (header.kind !== 'tree') throw new InvalidArgumentError('openManifestBody reads tree bodies');
  validateChunkerSpec(header.chunker);
  const xxh64 = await loadXxh64();
  const corrupt = (message: string) => new ManifestCorruptError(message);
  const src = new ByteSource(source[Symbol.asyncIterator](), (where) => corrupt(`manifest body truncated in ${where}`));
  return new StreamingManifestReader(header, src, xxh64, options.signal, corrupt, onEnd);
}

/**
 * openManifest on the file at `path`, read in FILE_READ_CHUNK_BYTES pieces. File system
 * errors go through fromSystemError; corruption messages start with the path.
 */
export function openManifestFile(path: string, options: ManifestReaderOptions = {}): Promise<ManifestReader> {
  return openSource(readFile(path, options.signal), options, (message) => new ManifestCorruptError(`${path}: ${message}`));
}

async function* readFile(path: string, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array, void, undefined> {
  const stream = createReadStream(path, { highWaterMark: FILE_READ_CHUNK_BYTES, signal });
  try {
    for await (const piece of stream) yield piece as Buffer;
  } catch (err) {
    throw fromSystemError(err, path, 'read manifest');
  } finally {
    stream.destroy();
  }
}

async function openSource(
  source: AsyncIterable<Uint8Array>,
  options: ManifestReaderOptions,
  corrupt: (message: string) => ManifestCorruptError,
): Promise<ManifestReader> {
  throwIfAborted(options.signal);
  const xxh64 = await loadXxh64();
  const src = new ByteSource(source[Symbol.asyncIterator](), (where) => corrupt(`manifest truncated in ${where}`));
  try {
    if (await src.atEnd()) throw corrupt('manifest is empty');
    const at = await src.read(HEADER_BYTES, 'the header');
    const bytes = Buffer.from(src.buf.subarray(at, at + HEADER_BYTES));
    if (!bytes.subarray(0, MAGIC.length).equals(MAGIC)) throw corrupt('not an xfer manifest (wrong magic bytes)');
    const version = bytes.readUInt16LE(HEADER_VERSION_OFFSET);
    if (!READABLE_FORMAT_VERSIONS.includes(version)) {
      throw corrupt(`unsupported manifest format version ${version} (this xfer reads versions ${READABLE_FORMAT_VERSIONS.join(' and ')})`);
    }
    if (headerChecksum(bytes, xxh64) !== bytes.readBigUInt64LE(HEADER_CHECKSUM_OFFSET)) throw corrupt('manifest header checksum mismatch');
    const header = decodeHeaderFields(bytes);
    if (typeof header === 'string') throw corrupt(header);
    try {
      validateChunkerSpec(header.chunker);
    } catch (err) {
      if (err instanceof InvalidArgumentError) throw corrupt(`invalid chunker parameters in manifest header: ${err.message}`);
      throw err;
    }
    return new StreamingManifestReader(header, src, xxh64, options.signal, corrupt);
  } catch (err) {
    await src.close().catch(() => undefined);
    throw err;
  }
}
