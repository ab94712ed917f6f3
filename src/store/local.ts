/**
 * LocalStore: chunks and manifests in a directory on a local filesystem. Users see the
 * directory as `<backup-dir>/.xfer`.
 *
 * On-disk format (stable; version 2):
 *
 *   <dir>/store.json                  {"format":"xfer-local-store","version":2}
 *   <dir>/packs/<name>.pack           chunks, appended by one writer (format: pack.ts)
 *   <dir>/packs/<name>.idx            where each durable chunk of <name>.pack is
 *   <dir>/chunks/<alg>/<hh>/<64 hex>  version 1's chunk files: still read, never written
 *   <dir>/manifests/<name>            one file per manifest; '/' in a name makes
 *                                     subdirectories
 *   <dir>/tmp/                        temporary files, never read by name; open removes
 *                                     those of a dead writer (named by owner tag) and any
 *                                     older than STALE_TEMP_AGE_MS: leftovers of a crash
 *   <dir>/locks/<name>                held while a push rebuilds and commits target
 *                                     <name> (lockTarget); a dead process's is broken
 *
 * Readers ignore other files. A version 1 store (chunk files only) opens as it is; its
 * store.json becomes version 2 when the first pack is written, so that an older xfer,
 * which would not see packed chunks, refuses it instead of misreading it.
 *
 * Chunks. Each LocalStore appends to packs of its own (a new one per opener, and after
 * PACK_TARGET_BYTES), so several openers, in one process or many, can share a directory.
 * A put is "pending" until a commit writes it to disk, fdatasyncs the pack and appends its
 * index record (pack.ts); has/get of this LocalStore see pending chunks at once. A commit
 * starts in the background every COMMIT_BATCH_BYTES put; flush commits the rest and
 * waits. A crash loses pending chunks only (unindexed pack bytes are ignored), so has()
 * can trust the index: a push never skips a chunk that is not really stored.
 *
 * The index of every pack is loaded at open into a DigestIndex (56 bytes per chunk in
 * memory). Chunks another opener commits later are found by get() (a miss re-reads the
 * index files); has() may not see them and report them missing, which at worst stores a
 * chunk twice, never loses one.
 *
 * Why packs (measured on the project's 2-core ext4 VM, 32,768 x 64 KiB chunks): a file
 * per chunk, made durable by syncfs, put at ~450-510 MB/s and cost open, fstat, read and
 * close per chunk read; packs written in 4 MiB O_DIRECT blocks (pack.ts) skip the page
 * cache and its writeback, and a chunk read is one pread.
 */
import { randomBytes } from 'node:crypto';
import { access as accessCallback, readFile as readFileCallback, type ReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { throwIfAborted, untilAborted } from '../core/abort.js';
import { mapBounded } from '../core/window.js';
import { ownerGone, OWNER_TAG } from '../io/owner.js';
import { fsyncPath } from '../io/sync.js';
import {
  AlreadyExistsError,
  ChunkCorruptError,
  ChunkMissingError,
  InvalidArgumentError,
  IoError,
  NotFoundError,
  fromSystemError,
} from '../core/errors.js';
import { DIGEST_ALGORITHMS, digestFromHex, digestKey, digestToHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { DIRECT_ALIGN_BYTES } from '../io/direct.js';
import { digestEquals, digestOf } from '../hash/digest.js';
import { DigestIndex } from './digest-index.js';
import {
  checkChunkId,
  compareManifestNames,
  quoteName,
  validateManifestName,
  validateManifestPrefix,
} from './names.js';
import { decodeIndexRecords, IDX_MAGIC, PACK_NAME_RE, PACK_RECORD_HEADER_BYTES, PACK_TARGET_BYTES, type PackEntry } from './pack.js';
import { openPackForReading, PackWriter, readPackRange } from './local/pack-file.js';
import type { ChunkStore, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions } from './store.js';
import { acquireLock, type HeldLock, type LockOptions } from './lock.js';

export const STORE_FORMAT = 'xfer-local-store';
export const STORE_VERSION = 2;
/** Versions this code opens: 1 (chunk files only) and 2 (packs). */
const READABLE_VERSIONS = [1, 2];

/** Temp files older than this are crash leftovers; open removes them. */
export const STALE_TEMP_AGE_MS = 60 * 60 * 1000;

/**
 * A commit starts in the background once this many bytes were put since the last one, so
 * that a crash or kill loses at most about this much (a resumed push sends it again).
 * With O_DIRECT the data is on disk already; a commit adds two fdatasyncs.
 */
export const COMMIT_BATCH_BYTES = 256 * MiB;
/** ...or this many chunks... */
export const COMMIT_BATCH_CHUNKS = 16_384;
/** ...or the oldest uncommitted put is this old. */
export const MAX_UNCOMMITTED_AGE_MS = 60 * 1000;

/**
 * Reads that go through a pack in order (a rebuild of what was pushed in one go, a pull)
 * read this much at once and serve the following chunks from it: measured on 2 GiB of 64
 * KiB chunks, chunk-sized O_DIRECT reads gave 920 MB/s, ...
 */
const PACK_READ_AHEAD_BYTES = 4 * MiB;
/** Read-ahead windows kept (over all packs). */
const READ_AHEAD_WINDOWS = 8;
/** Readers going through one pack in order at once that are told apart. */
const READ_STREAMS = 16;
/** A read this close after the previous one's end still counts as in order (a record header). */
const READ_AHEAD_GAP_BYTES = PACK_RECORD_HEADER_BYTES;
/** Packs kept open for reading at once (least recently used ones are closed). */
const MAX_OPEN_PACKS = 64;
/** Stats and unlinks in flight while listing or cleaning up. */
const FS_CONCURRENCY = 16;
/** Existence checks of version 1 chunk files in flight per has() call. */
const LOOSE_CONCURRENCY = 64;
/** A rename whose target directory vanished (removed as empty meanwhile) is retried. */
const RENAME_ATTEMPTS = 3;

/** Version 1 chunk files: the callback API costs far less per call than fs/promises. */
const access = promisify(accessCallback);
const readChunkFile = promisify(readFileCallback) as (path: string, options: { signal?: AbortSignal }) => Promise<Buffer>;

const STORE_FILE = 'store.json';
const FAN_OUT_RE = /^[0-9a-f]{2}$/;
const CHUNK_NAME_RE = /^[0-9a-f]{64}$/;

/**
 * Temp names are `<host>~<pid>-<12 hex>-<n>.tmp`: the owner tag (io/owner.ts) says whose
 * they are, so that open removes a dead writer's at once (removeStaleTempFiles); the
 * random part keeps processes sharing a store (even with equal pids, in containers) from
 * picking the same name; 'wx' opens would fail loudly if they did.
 */
const TEMP_PREFIX = `${OWNER_TAG}-${randomBytes(6).toString('hex')}`;
/** A temp name of ours; group 1 is its owner tag. */
const TEMP_NAME_RE = /^([A-Za-z0-9_.-]+~[0-9]+)-[0-9a-f]{12}-[0-9]+\.tmp$/;
let tempCounter = 0;

export interface LocalStoreOpenOptions {
  /** Create the store if `dir` holds none; otherwise a missing store is NotFoundError. */
  readonly create: boolean;
  readonly signal?: AbortSignal;
  /** Size at which a pack takes no more chunks; default PACK_TARGET_BYTES. */
  readonly packTargetBytes?: number;
  /** Write and read packs with O_DIRECT where the filesystem allows; default true (see io/direct.ts). */
  readonly directIo?: boolean;
}

/** A put chunk not yet committed: in `writer`'s memory or on disk, not yet indexed. */
interface PendingChunk {
  readonly writer: PackWriter;
  /** The writer's pack number, for reads of what is on disk already. */
  readonly pack: number;
  readonly offset: number;
  readonly length: number;
}

/** A pack open for reading. */
interface OpenPack {
  readonly fh: FileHandle;
  readonly direct: boolean;
  users: number;
  closing: boolean;
}

/** Where a stored chunk is: for tests and tools that inspect the files. */
export interface ChunkLocation {
  readonly file: string;
  /** Offset of the chunk's bytes in `file`. */
  readonly offset: number;
  readonly length: number;
}

/**
 * A store in a local directory (layout and durability described at the top of this file).
 * Several LocalStores, in one process or many, may share a directory.
 */
export class LocalStore implements ChunkStore, ManifestStore {
  /** `<dir>/packs`: pack and index files. */
  readonly packDir: string;
  /** `<dir>/chunks`: version 1 chunk files, `<algorithm>/<hh>/<64 hex>` below it. */
  private readonly chunkDir: string;
  private readonly manifestDir: string;
  private readonly tempDir: string;
  private version = STORE_VERSION;
  /** Directories known to exist, so hot paths do not mkdir per chunk. */
  private readonly knownDirs = new Set<string>();
  /** Committed chunks of every pack, per algorithm. */
  private readonly index = new Map<DigestAlgorithm, DigestIndex>(DIGEST_ALGORITHMS.map((a) => [a, new DigestIndex()]));
  /** Pack names by number (the number is what the index stores). */
  private readonly packNames: string[] = [];
  private readonly packNumbers = new Map<string, number>();
  /** Bytes of each index file read so far (refreshIndex reads only what was added since). */
  private readonly indexRead = new Map<string, number>();
  /** Packs this LocalStore wrote: their entries are added as they commit, never re-read. */
  private readonly ownPacks = new Set<string>();
  private readonly openPacks = new Map<number, OpenPack>();
  /** Writers not yet closed, by pack number: reads ahead stop where their bytes are still changing. */
  private readonly liveWriters = new Map<number, PackWriter>();
  private readonly readAhead: { readonly pack: number; readonly start: number; readonly end: number; readonly data: Promise<Buffer> }[] = [];
  /** Where the latest reads of each pack ended (oldest first), to tell reads in order. */
  private readonly recentReadEnds = new Map<number, number[]>();
  private refreshing: Promise<void> | undefined;
  /** Whether chunks/ holds version 1 chunk files (looked for only then). */
  private hasLooseChunks = false;
  /** Pending chunks by algorithm + digestKey. */
  private readonly pending = new Map<string, PendingChunk>();
  private writer: PackWriter | undefined;
  private creatingWriter: Promise<PackWriter> | undefined;
  /** Writers with uncommitted chunks that take no more appends (full packs). */
  private readonly retired: PackWriter[] = [];
  /** Put since the last commit took its batch: what makes the next one due. */
  private batchBytes = 0;
  private batchChunks = 0;
  private batchStartedMs = 0;
  /** The last commit asked for; commits run one at a time, in order. */
  private lastCommit: Promise<void> = Promise.resolve();
  /** A commit asked for that has not taken its batch yet: later callers join it. */
  private queuedCommit: Promise<void> | undefined;
  /** The first error of a background commit, reported by the next flush. */
  private backgroundFailure: unknown;
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly packTargetBytes: number,
    private readonly directIo: boolean,
  ) {
    this.packDir = path.join(dir, 'packs');
    this.chunkDir = path.join(dir, 'chunks');
    this.manifestDir = path.join(dir, 'manifests');
    this.tempDir = path.join(dir, 'tmp');
  }

  /**
   * Opens the store in `dir`, creating it when `create` is set and it does not exist, and
   * loads its index. Refuses a directory whose store.json declares another format or an
   * unknown version.
   */
  static async open(dir: string, options: LocalStoreOpenOptions): Promise<LocalStore> {
    throwIfAborted(options.signal);
    const root = path.resolve(dir);
    const store = new LocalStore(root, options.packTargetBytes ?? PACK_TARGET_BYTES, options.directIo ?? true);
    const version = await store.readStoreFile();
    if (version === undefined) {
      if (!options.create) throw new NotFoundError(`no xfer store at ${root}`);
      throwIfAborted(options.signal);
      await store.createLayout();
    } else store.version = version;
    throwIfAborted(options.signal);
    await store.removeStaleTempFiles(options.signal);
    await store.refreshIndex();
    store.hasLooseChunks = await store.findLooseChunks();
    return store;
  }

  /** Where the stored chunk `id` is, or undefined if it is not stored. */
  async chunkLocation(id: ChunkId): Promise<ChunkLocation | undefined> {
    const hex = checkChunkId(id);
    const p = this.pending.get(pendingKey(id));
    if (p) return { file: p.writer.packPath, offset: p.offset, length: p.length };
    const index = this.index.get(id.algorithm)!;
    const e = index.find(id.digest);
    if (e >= 0) return { file: this.packPath(index.pack(e)), offset: index.offset(e), length: index.length(e) };
    if (!this.hasLooseChunks) return undefined;
    const file = this.loosePath(id.algorithm, hex);
    const s = await stat(file).catch(() => undefined);
    return s?.isFile() ? { file, offset: 0, length: s.size } : undefined;
  }

  async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    const signal = options?.signal;
    throwIfAborted(signal);
    const out = new Array<boolean>(ids.length);
    const loose: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      checkChunkId(id);
      out[i] = this.pending.has(pendingKey(id)) || this.index.get(id.algorithm)!.find(id.digest) >= 0;
      if (!out[i] && this.hasLooseChunks) loose.push(i);
    }
    if (loose.length > 0) {
      const found = await mapBounded(loose, LOOSE_CONCURRENCY, signal, async (i) => {
        const file = this.loosePath(ids[i]!.algorithm, digestToHex(ids[i]!.digest));
        try {
          await access(file);
          return true;
        } catch (err) {
          if (isMissing(err)) return false;
          throw fromSystemError(err, file, 'check chunk');
        }
      });
      loose.forEach((i, k) => (out[i] = found[k]!));
    }
    return out;
  }

  async get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    const signal = options?.signal;
    throwIfAborted(signal);
    const hex = checkChunkId(id);
    let data = await this.readChunk(id, hex);
    if (data === undefined) {
      await this.refreshIndex(); // another opener may have committed it since
      data = await this.readChunk(id, hex);
    }
    if (data === undefined) throw new ChunkMissingError(hex, this.dir);
    throwIfAborted(signal);
    if (options?.unverified !== true && !digestEquals(digestOf(id.algorithm, data.bytes), id.digest)) {
      throw new ChunkCorruptError(hex, `the stored copy in ${data.file} does not hash to it`);
    }
    return data.bytes;
  }

  async put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    const signal = options?.signal;
    throwIfAborted(signal);
    checkChunkId(id);
    if (this.closed) throw new IoError(`the store at ${this.dir} is closed`);
    const key = pendingKey(id);
    if (this.pending.has(key) || this.index.get(id.algorithm)!.find(id.digest) >= 0) return false;
    if (this.hasLooseChunks && (await this.has([id], options))[0]) return false;
    if (options?.trusted !== true && !digestEquals(digestOf(id.algorithm, data), id.digest)) {
      throw new ChunkCorruptError(digestToHex(id.digest), 'the bytes to store do not hash to it');
    }
    // A writer with room: made if there is none, a new one past packTargetBytes, and a
    // wait while the disk is behind (bounding the memory of many concurrent puts). Each
    // wait may let another put of the same chunk in first.
    let writer: PackWriter;
    for (;;) {
      const current = this.writer;
      if (current === undefined || current.broken) await this.newWriter();
      else if (current.bytes >= this.packTargetBytes) {
        this.retired.push(current);
        this.writer = undefined;
        await this.newWriter();
      } else if (!current.hasRoom) await untilAborted(current.room(), signal);
      else {
        writer = current;
        break;
      }
      if (this.pending.has(key)) return false;
    }
    const offset = writer.append(id.algorithm, id.digest, data);
    this.pending.set(key, { writer, pack: this.packNumber(writer.name), offset, length: data.length });
    if (this.batchChunks === 0) this.batchStartedMs = Date.now();
    this.batchChunks += 1;
    this.batchBytes += data.length;
    if (this.queuedCommit === undefined && this.commitIsDue()) this.commitInBackground();
    return true;
  }

  /**
   * Commits every pending chunk (see "Chunks" above). An abort rejects at once; the
   * commit itself runs to its end, as other callers may be waiting for it too.
   */
  async flush(options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    await untilAborted(this.commit(), options?.signal);
    // Whatever a background commit failed on was retried just now, except lost chunks;
    // either way the caller must not take every put for durable.
    const failure = this.backgroundFailure;
    if (failure !== undefined) {
      this.backgroundFailure = undefined;
      throw failure;
    }
  }

  /** Commits what is pending, then closes the pack files. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.pending.size > 0 || this.backgroundFailure !== undefined) await this.flush();
    } finally {
      this.closed = true;
      await this.lastCommit.catch(() => {});
      for (const w of [...this.retired, ...(this.writer ? [this.writer] : [])]) await this.closeWriter(w);
      this.retired.length = 0;
      this.writer = undefined;
      for (const p of this.openPacks.values()) {
        p.closing = true;
        if (p.users === 0) await p.fh.close().catch(() => {});
      }
      this.openPacks.clear();
    }
  }

  /**
   * Takes the lock of target `name`, `<dir>/locks/<name>` (store/lock.ts), waiting while
   * another process holds it. A destination holds it from the rebuild of a target to the
   * swap and the manifest's commit, so that the target on disk and its stored manifest
   * are always of the same push.
   */
  lockTarget(name: string, options: LockOptions = {}): Promise<HeldLock> {
    validateManifestName(name);
    return acquireLock(path.join(this.dir, 'locks', ...name.split('/')), options);
  }

  /** Yields every committed chunk (of `algorithm`, or of all) and this store's pending ones; unordered. */
  async *listChunks(algorithm?: DigestAlgorithm, options?: OpOptions): AsyncGenerator<ChunkId> {
    const signal = options?.signal;
    throwIfAborted(signal);
    if (algorithm !== undefined && !DIGEST_ALGORITHMS.includes(algorithm)) {
      throw new InvalidArgumentError(`unknown digest algorithm "${String(algorithm)}"`);
    }
    const algorithms = algorithm === undefined ? DIGEST_ALGORITHMS : [algorithm];
    const listed = new Set<string>();
    for (const [key] of [...this.pending]) {
      const alg = key.slice(0, key.indexOf(':')) as DigestAlgorithm;
      if (!algorithms.includes(alg)) continue;
      listed.add(key);
      yield { algorithm: alg, digest: Buffer.from(key.slice(alg.length + 1), 'latin1') };
    }
    for (const alg of algorithms) {
      const index = this.index.get(alg)!;
      for (let e = 0; e < index.size; e++) {
        if (e % 4096 === 0) throwIfAborted(signal);
        const digest = index.digest(e);
        if (listed.has(`${alg}:${digestKey(digest)}`)) continue;
        yield { algorithm: alg, digest };
      }
    }
    if (!this.hasLooseChunks) return;
    for (const alg of algorithms) {
      const algDir = path.join(this.chunkDir, alg);
      const index = this.index.get(alg)!;
      for (const fanOut of await this.readDirNames(algDir, signal)) {
        if (!FAN_OUT_RE.test(fanOut)) continue;
        for (const name of await this.readDirNames(path.join(algDir, fanOut), signal)) {
          if (!CHUNK_NAME_RE.test(name) || !name.startsWith(fanOut)) continue;
          const digest = digestFromHex(name);
          if (listed.has(`${alg}:${digestKey(digest)}`) || index.find(digest) >= 0) continue;
          yield { algorithm: alg, digest };
        }
      }
    }
  }

  async putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    const finalPath = this.manifestPath(name);
    const parent = path.dirname(finalPath);
    const tempPath = this.newTempPath();
    try {
      await writeDurably(tempPath, source, signal);
      let created: string | undefined;
      try {
        created = await this.renameIntoPlace(tempPath, finalPath, parent);
      } catch (err) {
        throw isNameClash(err)
          ? new AlreadyExistsError(
              `manifest name ${quoteName(name)} clashes with existing manifests in ${this.dir}: ` +
                'a name cannot be both a manifest and a folder of manifests',
            )
          : fromSystemError(err, finalPath, 'store manifest');
      }
      // The new name, and the names of any folders made for it, must reach the disk too.
      const dirsToSync = [parent];
      for (let d = parent; created !== undefined && d !== path.dirname(created); d = path.dirname(d)) {
        dirsToSync.push(path.dirname(d));
      }
      for (const d of dirsToSync) await fsyncPath(d);
    } catch (err) {
      await unlink(tempPath).catch(() => undefined); // already renamed, or never created
      throw err;
    }
  }

  /**
   * The manifest's bytes as a stream. The file is opened before this resolves, so the
   * caller reads this version even if it is replaced meanwhile; it stays open until the
   * stream is read to its end or the loop reading it exits.
   */
  async getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    const filePath = this.manifestPath(name);
    let file: FileHandle;
    try {
      file = await open(filePath, 'r');
    } catch (err) {
      if (isMissing(err)) throw this.noManifest(name);
      throw fromSystemError(err, filePath, 'open manifest');
    }
    let isFile: boolean;
    try {
      isFile = (await file.stat()).isFile();
    } catch (err) {
      await file.close();
      throw fromSystemError(err, filePath, 'open manifest');
    }
    if (!isFile) {
      // A folder of manifests, not a manifest.
      await file.close();
      throw this.noManifest(name);
    }
    return readStream(file.createReadStream(), filePath, signal);
  }

  async listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    validateManifestPrefix(prefix);
    const signal = options?.signal;
    throwIfAborted(signal);
    // Walk only the folder the prefix names for sure, then filter by the whole prefix.
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const names: string[] = [];
    const walk = async (relative: string): Promise<void> => {
      const absolute = relative === '' ? this.manifestDir : this.manifestPath(relative);
      throwIfAborted(signal);
      let entries;
      try {
        entries = await readdir(absolute, { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) return; // no such folder, or removed while listing
        throw fromSystemError(err, absolute, 'list manifests');
      }
      for (const entry of entries) {
        const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) {
          if (name.startsWith(prefix)) await walk(name);
        } else if (entry.isFile() && name.startsWith(prefix)) {
          names.push(name);
        }
      }
    };
    await walk(folder);
    const infos = await mapBounded(names, FS_CONCURRENCY, signal, async (name) => {
      const filePath = this.manifestPath(name);
      try {
        const s = await stat(filePath);
        return { name, bytes: s.size, mtimeMs: s.mtimeMs };
      } catch (err) {
        if (isMissing(err)) return undefined; // deleted while listing
        throw fromSystemError(err, filePath, 'list manifests');
      }
    });
    return infos.filter((i): i is ManifestInfo => i !== undefined).sort((a, b) => compareManifestNames(a.name, b.name));
  }

  async deleteManifest(name: string, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    throwIfAborted(options?.signal);
    const filePath = this.manifestPath(name);
    try {
      await unlink(filePath);
    } catch (err) {
      // unlink of a folder of manifests fails with EISDIR (Linux) or EPERM (macOS).
      const folder = errorCode(err) === 'EISDIR' || (errorCode(err) === 'EPERM' && (await isDirectory(filePath)));
      if (isMissing(err) || folder) throw this.noManifest(name);
      throw fromSystemError(err, filePath, 'delete manifest');
    }
    await fsyncPath(path.dirname(filePath));
    // Remove folders left empty, so that their names can become manifests. Failing (not
    // empty, refilled meanwhile) just stops: renameIntoPlace copes with a folder removed
    // under it, and an empty folder left behind is harmless.
    for (let d = path.dirname(filePath); d !== this.manifestDir; d = path.dirname(d)) {
      this.knownDirs.delete(d);
      if (!(await rmdir(d).then(() => true, () => false))) break;
    }
  }

  /** store.json's version, or undefined if there is none; throws if it is someone else's or unknown. */
  private async readStoreFile(): Promise<number | undefined> {
    const file = path.join(this.dir, STORE_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw fromSystemError(err, file, 'read store description');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new InvalidArgumentError(`${file}: not an xfer store description (invalid JSON)`);
    }
    const { format, version } = (parsed ?? {}) as { format?: unknown; version?: unknown };
    if (format !== STORE_FORMAT) {
      throw new InvalidArgumentError(`${file}: not an xfer local store (format ${JSON.stringify(format)})`);
    }
    if (typeof version !== 'number' || !READABLE_VERSIONS.includes(version)) {
      throw new InvalidArgumentError(
        `${file}: store version ${JSON.stringify(version)} is not supported (this xfer reads versions ${READABLE_VERSIONS.join(' and ')})`,
      );
    }
    return version;
  }

  /** Makes the directories, then store.json last: a store without it is not a store yet. */
  private async createLayout(): Promise<void> {
    const firstCreated = await mkdir(this.dir, { recursive: true }).catch((err: unknown) => {
      throw fromSystemError(err, this.dir, 'create store');
    });
    for (const d of [this.packDir, this.manifestDir, this.tempDir]) {
      await mkdir(d, { recursive: true }).catch((err: unknown) => {
        throw fromSystemError(err, d, 'create store');
      });
      this.knownDirs.add(d);
    }
    // Concurrent creators write identical descriptions; either rename wins.
    await this.writeStoreFile();
    for (let d = this.dir; firstCreated !== undefined && d !== path.dirname(firstCreated); d = path.dirname(d)) {
      await fsyncPath(path.dirname(d));
    }
  }

  /** A version 1 store gets packs: store.json says version 2 first (see the top of this file). */
  private async upgradeStoreFile(): Promise<void> {
    await this.writeStoreFile();
    this.version = STORE_VERSION;
  }

  /** Replaces store.json, durably, with this version's description. */
  private async writeStoreFile(): Promise<void> {
    const description = `${JSON.stringify({ format: STORE_FORMAT, version: STORE_VERSION })}\n`;
    const tempPath = this.newTempPath();
    const file = path.join(this.dir, STORE_FILE);
    try {
      await writeDurably(tempPath, [Buffer.from(description)], undefined);
      await rename(tempPath, file).catch((err: unknown) => {
        throw fromSystemError(err, file, 'write store description');
      });
    } catch (err) {
      await unlink(tempPath).catch(() => undefined); // renamed, or never created
      throw err;
    }
    await fsyncPath(this.dir);
  }

  /**
   * Removes crash leftovers: temp files whose name says their writer is a dead process of
   * this host (ownerGone), at once, and any other temp file (another host's, a live
   * process's, a name not ours) once older than STALE_TEMP_AGE_MS. Best effort: a
   * leftover is harmless (never read by name), so a file that cannot be removed, as in
   * a read-only store, is left alone.
   */
  private async removeStaleTempFiles(signal: AbortSignal | undefined): Promise<void> {
    // A store copied without its tmp/ gets one back if it is writable; a read-only one needs none.
    await mkdir(this.tempDir, { recursive: true }).catch(() => undefined);
    const cutoffMs = Date.now() - STALE_TEMP_AGE_MS;
    const names = await this.readDirNames(this.tempDir, signal);
    await mapBounded(names, FS_CONCURRENCY, signal, async (name) => {
      const file = path.join(this.tempDir, name);
      try {
        const s = await lstat(file);
        const owner = TEMP_NAME_RE.exec(name)?.[1];
        const writerGone = owner !== undefined && ownerGone(owner);
        if (s.isFile() && (writerGone || s.mtimeMs < cutoffMs)) await unlink(file);
      } catch {
        // See above: leaving a leftover in place is always safe.
      }
    });
  }

  /**
   * Renames `from` to `to`, making `dir` (the parent of `to`) first unless known to
   * exist. Returns the top-most directory it created, if any. Raw fs errors escape.
   */
  private async renameIntoPlace(from: string, to: string, dir: string): Promise<string | undefined> {
    let created: string | undefined;
    for (let attempt = 1; ; attempt++) {
      if (!this.knownDirs.has(dir)) {
        created = (await mkdir(dir, { recursive: true })) ?? created;
        this.knownDirs.add(dir);
      }
      try {
        await rename(from, to);
        return created;
      } catch (err) {
        if (errorCode(err) !== 'ENOENT' || attempt === RENAME_ATTEMPTS) throw err;
        this.knownDirs.delete(dir); // removed meanwhile, or `from` is gone (fails again)
      }
    }
  }

  /** Names in `dir`, or none if it does not exist. */
  private async readDirNames(dir: string, signal: AbortSignal | undefined): Promise<string[]> {
    throwIfAborted(signal);
    try {
      return await readdir(dir);
    } catch (err) {
      if (isMissing(err)) return [];
      throw fromSystemError(err, dir, 'list directory');
    }
  }

  /** The chunk's bytes (unverified) and where they came from, or undefined if not found. */
  private async readChunk(id: ChunkId, hex: string): Promise<{ bytes: Buffer; file: string } | undefined> {
    const p = this.pending.get(pendingKey(id));
    if (p) {
      const w = p.writer;
      return { bytes: await w.read(p.offset, p.length, (o, n) => this.readPacked(p.pack, o, n)), file: w.packPath };
    }
    const index = this.index.get(id.algorithm)!;
    const e = index.find(id.digest);
    if (e >= 0) {
      const pack = index.pack(e);
      const length = index.length(e);
      const bytes = await this.readPacked(pack, index.offset(e), length);
      if (bytes.length !== length) {
        throw new ChunkCorruptError(hex, `pack ${this.packPath(pack)} ends before the chunk does (truncated)`);
      }
      return { bytes, file: this.packPath(pack) };
    }
    if (!this.hasLooseChunks) return undefined;
    const file = this.loosePath(id.algorithm, hex);
    try {
      return { bytes: await readChunkFile(file, {}), file };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw fromSystemError(err, file, 'read chunk');
    }
  }

  /**
   * Reads from a committed pack through a cached read handle. A read inside a read-ahead
   * window returns a view of the window, not a copy: windows are never reused, and copying
   * every chunk out cost a server's 2 GiB rebuild 0.4 s of allocation and as much again in
   * garbage collection. The view keeps its window (PACK_READ_AHEAD_BYTES) alive for as long
   * as the caller holds it.
   */
  private async readPacked(pack: number, offset: number, length: number): Promise<Buffer> {
    const end = offset + length;
    const inOrder = this.followsRecentRead(pack, offset, end);
    for (const w of this.readAhead) {
      if (w.pack !== pack || w.start > offset || end > w.end) continue;
      const data = await w.data;
      if (data.length < end - w.start) break; // the pack ends early: the exact read below says so
      return data.subarray(offset - w.start, end - w.start);
    }
    // In order (the next record right after the last one read): read ahead in one big read.
    if (inOrder) {
      const start = offset - (offset % DIRECT_ALIGN_BYTES);
      const settled = this.liveWriters.get(pack)?.settledBytes ?? Infinity;
      const windowEnd = Math.min(start + PACK_READ_AHEAD_BYTES, settled - (settled % DIRECT_ALIGN_BYTES));
      if (windowEnd >= end) {
        const w = { pack, start, end: windowEnd, data: this.readPackedExactly(pack, start, windowEnd - start) };
        w.data.catch(() => {}); // awaited below, and by any read it covers
        this.readAhead.push(w);
        if (this.readAhead.length > READ_AHEAD_WINDOWS) this.readAhead.shift();
        const data = await w.data;
        if (data.length >= end - start) return data.subarray(offset - start, end - start);
      }
    }
    return this.readPackedExactly(pack, offset, length);
  }

  /**
   * Whether [offset, end) starts where a recent read of the pack ended (give or take a
   * record header), remembering where this one ends. Several readers may go through a
   * pack in order at once (a pull's concurrent fetch batches), so READ_STREAMS ends are
   * kept per pack.
   */
  private followsRecentRead(pack: number, offset: number, end: number): boolean {
    let ends = this.recentReadEnds.get(pack);
    if (ends === undefined) {
      ends = [];
      this.recentReadEnds.set(pack, ends);
    }
    const i = ends.findIndex((e) => offset >= e && offset - e <= READ_AHEAD_GAP_BYTES);
    if (i >= 0) ends.splice(i, 1);
    else if (ends.length >= READ_STREAMS) ends.shift();
    ends.push(end);
    return i >= 0;
  }

  private async readPackedExactly(pack: number, offset: number, length: number): Promise<Buffer> {
    let p = this.openPacks.get(pack);
    if (p === undefined) {
      const file = this.packPath(pack);
      let opened: { fh: FileHandle; direct: boolean };
      try {
        opened = await openPackForReading(file, this.directIo);
      } catch (err) {
        throw fromSystemError(err, file, 'open pack');
      }
      p = this.openPacks.get(pack); // opened by a concurrent read meanwhile
      if (p) await opened.fh.close().catch(() => {});
      else {
        p = { ...opened, users: 0, closing: false };
        this.openPacks.set(pack, p);
        this.closeIdlePacks();
      }
    } else {
      // Most recently used last.
      this.openPacks.delete(pack);
      this.openPacks.set(pack, p);
    }
    p.users++;
    try {
      return await readPackRange(p.fh, p.direct, offset, length);
    } catch (err) {
      throw fromSystemError(err, this.packPath(pack), 'read pack');
    } finally {
      p.users--;
      if (p.closing && p.users === 0) await p.fh.close().catch(() => {});
    }
  }

  private closeIdlePacks(): void {
    for (const [n, p] of this.openPacks) {
      if (this.openPacks.size <= MAX_OPEN_PACKS) break;
      this.openPacks.delete(n);
      p.closing = true;
      if (p.users === 0) void p.fh.close().catch(() => {});
    }
  }

  private async newWriter(): Promise<PackWriter> {
    this.creatingWriter ??= (async () => {
      try {
        if (this.version < STORE_VERSION) await this.upgradeStoreFile();
        if (!this.knownDirs.has(this.packDir)) {
          await mkdir(this.packDir, { recursive: true }).catch((err: unknown) => {
            throw fromSystemError(err, this.packDir, 'create store');
          });
          this.knownDirs.add(this.packDir);
        }
        const w = await PackWriter.create(this.packDir, this.directIo);
        this.ownPacks.add(w.name);
        this.liveWriters.set(this.packNumber(w.name), w);
        if (this.writer?.broken === false) this.retired.push(this.writer);
        this.writer = w;
        return w;
      } finally {
        this.creatingWriter = undefined;
      }
    })();
    return this.creatingWriter;
  }

  private commitIsDue(): boolean {
    return (
      this.batchBytes >= COMMIT_BATCH_BYTES ||
      this.batchChunks >= COMMIT_BATCH_CHUNKS ||
      Date.now() - this.batchStartedMs >= MAX_UNCOMMITTED_AGE_MS
    );
  }

  private commitInBackground(): void {
    this.commit().catch((err: unknown) => {
      this.backgroundFailure ??= err;
    });
  }

  /** Resolves once every chunk pending now is committed (see commitPending). */
  private commit(): Promise<void> {
    if (this.queuedCommit !== undefined) return this.queuedCommit;
    const run = this.lastCommit
      .catch(() => undefined) // the previous caller got that error
      .then(() => {
        this.queuedCommit = undefined;
        return this.commitPending();
      });
    this.queuedCommit = run;
    this.lastCommit = run;
    return run;
  }

  /**
   * Commits the chunks of every writer that has any; a full writer, once committed, is
   * closed. A writer that fails is dropped with its pending chunks (has() then reports
   * them missing and they are put again); the error names what was lost.
   */
  private async commitPending(): Promise<void> {
    this.batchBytes = 0;
    this.batchChunks = 0;
    const writers = [...this.retired, ...(this.writer ? [this.writer] : [])];
    let failure: unknown;
    for (const w of writers) {
      if (w.uncommittedEntries === 0 && w !== this.writer) {
        this.retire(w);
        await this.closeWriter(w);
        continue;
      }
      if (w.uncommittedEntries === 0) continue;
      let entries: PackEntry[];
      try {
        entries = await w.commit();
      } catch (err) {
        const lost = this.dropWriter(w);
        failure ??= new IoError(`${lost} chunks were lost before ${this.dir} made them durable: ${(err as Error).message}`, { cause: err });
        continue;
      }
      const pack = this.packNumber(w.name);
      for (const e of entries) {
        this.index.get(e.algorithm)!.add(e.digest, pack, e.offset, e.length);
        const key = `${e.algorithm}:${digestKey(e.digest)}`;
        if (this.pending.get(key)?.writer === w) this.pending.delete(key);
      }
      if (w !== this.writer && w.uncommittedEntries === 0) {
        this.retire(w);
        await this.closeWriter(w);
      }
    }
    if (failure !== undefined) throw failure;
  }

  private retire(w: PackWriter): void {
    const i = this.retired.indexOf(w);
    if (i >= 0) this.retired.splice(i, 1);
  }

  /** Forgets a failed writer and its pending chunks; returns how many were lost. */
  private dropWriter(w: PackWriter): number {
    let lost = 0;
    for (const [key, p] of this.pending) {
      if (p.writer !== w) continue;
      this.pending.delete(key);
      lost++;
    }
    this.retire(w);
    if (this.writer === w) this.writer = undefined;
    void this.closeWriter(w);
    return lost;
  }

  /** Closes a writer; only then do reads of its pack read ahead freely. */
  private async closeWriter(w: PackWriter): Promise<void> {
    await w.close();
    this.liveWriters.delete(this.packNumber(w.name));
  }

  private packNumber(name: string): number {
    let n = this.packNumbers.get(name);
    if (n === undefined) {
      n = this.packNames.length;
      this.packNames.push(name);
      this.packNumbers.set(name, n);
    }
    return n;
  }

  private packPath(pack: number): string {
    return path.join(this.packDir, `${this.packNames[pack]!}.pack`);
  }

  /**
   * Reads what was added to the index files since the last call (all of them at open).
   * Our own packs' indexes are skipped: their entries are added as they commit. A
   * damaged or torn record ends what is read of that file.
   */
  private refreshIndex(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        for (const file of await this.readDirNames(this.packDir, undefined)) {
          if (!file.endsWith('.idx')) continue;
          const name = file.slice(0, -'.idx'.length);
          if (!PACK_NAME_RE.test(name) || this.ownPacks.has(name)) continue;
          const done = this.indexRead.get(name) ?? 0;
          const idxPath = path.join(this.packDir, file);
          // Only what was appended since the last read (all of it the first time).
          let bytes: Buffer;
          try {
            bytes = await readFrom(idxPath, done);
          } catch (err) {
            if (isMissing(err)) continue;
            throw fromSystemError(err, idxPath, 'read pack index');
          }
          if (done === 0 && !bytes.subarray(0, IDX_MAGIC.length).equals(IDX_MAGIC)) continue; // not (yet) an index
          const skip = done === 0 ? IDX_MAGIC.length : 0;
          if (bytes.length <= skip) continue;
          const { entries, usedBytes } = decodeIndexRecords(bytes.subarray(skip));
          this.indexRead.set(name, Math.max(done, IDX_MAGIC.length) + usedBytes);
          const pack = this.packNumber(name);
          for (const e of entries) this.index.get(e.algorithm)!.add(e.digest, pack, e.offset, e.length);
        }
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** Whether chunks/ holds any version 1 chunk directory. */
  private async findLooseChunks(): Promise<boolean> {
    for (const alg of DIGEST_ALGORITHMS) {
      const fanOuts = await this.readDirNames(path.join(this.chunkDir, alg), undefined);
      if (fanOuts.some((f) => FAN_OUT_RE.test(f))) return true;
    }
    return false;
  }

  private loosePath(algorithm: DigestAlgorithm, hex: string): string {
    return `${this.chunkDir}${path.sep}${algorithm}${path.sep}${hex.slice(0, 2)}${path.sep}${hex}`;
  }

  private manifestPath(name: string): string {
    return path.join(this.manifestDir, ...name.split('/'));
  }

  private newTempPath(): string {
    tempCounter += 1;
    return path.join(this.tempDir, `${TEMP_PREFIX}-${tempCounter}.tmp`);
  }

  private noManifest(name: string): NotFoundError {
    return new NotFoundError(`no manifest named ${quoteName(name)} in ${this.dir}`);
  }
}

/** The bytes of `file` from `position` to its end. */
async function readFrom(file: string, position: number): Promise<Buffer> {
  if (position === 0) return readFile(file);
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const out = Buffer.allocUnsafe(Math.max(0, size - position));
    let got = 0;
    while (got < out.length) {
      const { bytesRead } = await fh.read(out, got, out.length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return out.subarray(0, got);
  } finally {
    await fh.close();
  }
}

/** The key of `pending`: algorithm and digest bytes. */
function pendingKey(id: ChunkId): string {
  return `${id.algorithm}:${digestKey(id.digest)}`;
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** ENOENT, or ENOTDIR (a path component is a file): either way, nothing is there. */
function isMissing(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The errors of making a manifest where a file is a folder or the other way round. */
function isNameClash(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST' || code === 'ENOTEMPTY';
}

async function isDirectory(p: string): Promise<boolean> {
  return lstat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/**
 * Writes `source` to a new file at `filePath` and fsyncs it. Errors of `source` pass
 * through as they are; AbortedError once `signal` fires.
 */
async function writeDurably(
  filePath: string,
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  signal: AbortSignal | undefined,
): Promise<void> {
  let file: FileHandle;
  try {
    file = await open(filePath, 'wx');
  } catch (err) {
    throw fromSystemError(err, filePath, 'create file');
  }
  try {
    for await (const piece of source) {
      throwIfAborted(signal);
      await writeAll(file, piece, filePath);
    }
    throwIfAborted(signal);
    await file.sync().catch((err: unknown) => {
      throw fromSystemError(err, filePath, 'sync to disk');
    });
  } finally {
    await file.close();
  }
}

async function writeAll(file: FileHandle, bytes: Uint8Array, filePath: string): Promise<void> {
  try {
    for (let offset = 0; offset < bytes.length; ) {
      offset += (await file.write(bytes, offset, bytes.length - offset)).bytesWritten;
    }
  } catch (err) {
    throw fromSystemError(err, filePath, 'write');
  }
}

async function* readStream(
  stream: ReadStream,
  filePath: string,
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array> {
  try {
    for await (const piece of stream) {
      throwIfAborted(signal);
      yield piece;
    }
  } catch (err) {
    throw fromSystemError(err, filePath, 'read manifest');
  } finally {
    stream.destroy();
  }
}
