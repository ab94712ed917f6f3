/**
 * LocalStore: chunks and manifests in a directory on a local filesystem. Users see the
 * directory as `<backup-dir>/.xfer`.
 *
 * On-disk format (stable; version 1):
 *
 *   <dir>/store.json                          {"format":"xfer-local-store","version":1}
 *   <dir>/chunks/<algorithm>/<hh>/<64 hex>    raw chunk bytes; <hh> = first 2 hex digits
 *   <dir>/manifests/<name>                    one file per manifest; '/' in a name makes
 *                                             subdirectories
 *   <dir>/tmp/                                temporary files, never read by name; ones
 *                                             older than STALE_TEMP_AGE_MS are leftovers of
 *                                             a crash and are removed at open
 *
 * Readers must ignore other files: anything under chunks/ not named like the above is
 * not a chunk. A file under chunks/ with a chunk's name is always the complete chunk,
 * durable before it got that name (see "Durability").
 *
 * Durability ("deferred publish"). put writes the chunk to a temp file in tmp/ and
 * resolves; the chunk is then pending: has/get of this LocalStore see it, other openers
 * of the directory do not yet. Publishing makes pending chunks visible to everyone:
 * first their data is made durable (one syncfs of the filesystem, by running
 * `sync -f <dir>`), then they are renamed to their final names, then the names are made
 * durable (a second syncfs). A publish starts in the background every
 * PUBLISH_BATCH_BYTES / PUBLISH_BATCH_CHUNKS put (or MAX_PENDING_AGE_MS); puts wait for
 * it only beyond MAX_PENDING_BYTES / MAX_PENDING_CHUNKS. flush publishes the rest and
 * waits; close does the same. A crash loses pending chunks (their temp files are
 * leftovers), but can never leave an empty or short file under a chunk's name, so has()
 * can trust a name: a push never skips a chunk that is not really stored.
 *
 * Why (measured on this project's 2-core ext4 VM: 32,768 x 64 KiB puts with 48 in
 * flight, then flush; page cache dropped before each run; medians of 3-4 runs):
 *   no durability at all (upper bound)                         637 MB/s
 *   (a) fdatasync each temp file before its rename             366 MB/s
 *   (b) flush fsyncs every chunk file and fan-out directory    327 MB/s
 *   (c) rename at put, flush runs one syncfs                   533 MB/s
 *   (c) plus a background syncfs every 256 MiB                 582 MB/s
 *   deferred publish, all at flush                             492 MB/s
 *   deferred publish, background batches of 1 GiB (this)       ~510 MB/s
 * (c) is 5-10% faster, but a crash after a rename and before the syncfs can leave the
 * chunk empty or short under its final name (the rename is journaled, the data is not
 * yet written), which has() would report present and every later push would skip; a
 * size check cannot tell a short chunk from a small one. Deferred publish is the fastest
 * measured scheme that rules this out; its extra cost is the renames (~0.35 s per 32,768
 * chunks, serialized by the kernel) done after the first syncfs instead of during puts.
 *
 * Where `sync -f` is missing or fails (it works on Linux with coreutils >= 8.24 or
 * busybox), the 'fsync' durability mode does the same with an fsync of each pending temp
 * file, then of tmp/ and every chunk directory.
 */
import { randomBytes } from 'node:crypto';
import { access as accessCallback, readFile as readFileCallback, writeFile as writeFileCallback, type ReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { throwIfAborted } from '../core/abort.js';
import { fsyncPath, syncFilesystem } from '../io/sync.js';
import {
  AlreadyExistsError,
  ChunkCorruptError,
  ChunkMissingError,
  InvalidArgumentError,
  IoError,
  NotFoundError,
  fromSystemError,
  isXferError,
} from '../core/errors.js';
import { DIGEST_ALGORITHMS, digestFromHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { GiB } from '../core/sizes.js';
import { digestEquals, digestOf } from '../hash/digest.js';
import {
  checkChunkId,
  compareManifestNames,
  quoteName,
  validateManifestName,
  validateManifestPrefix,
} from './names.js';
import type { ChunkStore, ManifestInfo, ManifestStore, OpOptions, PutOptions } from './store.js';

export const STORE_FORMAT = 'xfer-local-store';
export const STORE_VERSION = 1;

/** Temp files older than this are crash leftovers; open removes them. */
export const STALE_TEMP_AGE_MS = 60 * 60 * 1000;

/**
 * A publish starts in the background once this many bytes were put since the last one
 * started, so that writing to disk overlaps with the puts instead of all waiting for
 * flush. Measured: batches of 1 GiB beat 64 and 256 MiB (more syncs) and none.
 */
export const PUBLISH_BATCH_BYTES = 1 * GiB;
/** ...or this many chunks (small chunks cost more per byte to publish and to remember)... */
export const PUBLISH_BATCH_CHUNKS = 16_384;
/** ...or the oldest of them is this old, far below STALE_TEMP_AGE_MS so no opener removes it. */
export const MAX_PENDING_AGE_MS = 10 * 60 * 1000;
/** Beyond this many pending bytes or chunks, puts wait for publishing (the disk is behind). */
export const MAX_PENDING_BYTES = 4 * GiB;
export const MAX_PENDING_CHUNKS = 65_536;

/** Existence checks in flight per has() call. */
const HAS_CONCURRENCY = 64;
/** Renames, fsyncs and stats in flight while publishing, listing or cleaning up. */
const FS_CONCURRENCY = 16;
/** A rename whose target directory vanished (removed as empty meanwhile) is retried. */
const RENAME_ATTEMPTS = 3;

/**
 * The per-chunk hot path (put, has) uses the callback fs API, promisified: measured here,
 * an access() of an absent file costs ~6 us that way and ~15 us through fs/promises
 * (which builds a costlier error), and small writes are cheaper too.
 */
const access = promisify(accessCallback);
const writeFile = promisify(writeFileCallback);
/**
 * Chunk reads likewise: fs/promises readFile spends ~35 us of main-thread JS on each of
 * open, fstat, read and close (measured: ~3.8 s per 2 GiB of 64 KiB chunks served), the
 * callback readFile runs the sequence in C++.
 */
const readChunkFile = promisify(readFileCallback) as (path: string, options: { signal?: AbortSignal }) => Promise<Buffer>;

const STORE_FILE = 'store.json';
const FAN_OUT_RE = /^[0-9a-f]{2}$/;
const CHUNK_NAME_RE = /^[0-9a-f]{64}$/;

/**
 * Unique per process, so that processes sharing a store (even with equal pids, in
 * containers) never pick the same temp name; 'wx' opens would fail loudly if they did.
 */
const TEMP_PREFIX = `${process.pid}-${randomBytes(6).toString('hex')}`;
let tempCounter = 0;

/**
 * How flush makes data durable: 'syncfs' runs `sync -f <dir>` (Linux; fastest),
 * 'fsync' fsyncs files and directories one by one (portable).
 */
export type Durability = 'syncfs' | 'fsync';

export interface LocalStoreOpenOptions {
  /** Create the store if `dir` holds none; otherwise a missing store is NotFoundError. */
  readonly create: boolean;
  readonly signal?: AbortSignal;
  /** Default: 'syncfs' on Linux, 'fsync' elsewhere. */
  readonly durability?: Durability;
}

/** A chunk written to tmp/ and not yet renamed to its final name (see "Durability"). */
interface PendingChunk {
  readonly key: string;
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  readonly tempPath: string;
  readonly finalPath: string;
  readonly bytes: number;
}

/**
 * A store in a local directory (layout and durability described at the top of this file).
 * Several LocalStores, in one process or many, may share a directory.
 */
export class LocalStore implements ChunkStore, ManifestStore {
  /** `<dir>/chunks`: chunks live in `<algorithm>/<hh>/<64 hex>` below it. */
  readonly chunkDir: string;
  private readonly manifestDir: string;
  private readonly tempDir: string;
  /** Directories known to exist, so hot paths do not mkdir per chunk. */
  private readonly knownDirs = new Set<string>();
  /** Puts in progress by chunk key: a second put of the same id waits for the first. */
  private readonly putsInFlight = new Map<string, Promise<boolean>>();
  private readonly pending = new Map<string, PendingChunk>();
  private pendingBytes = 0;
  /** Put since the last publish took its batch: what makes the next one due. */
  private batchBytes = 0;
  private batchChunks = 0;
  private batchStartedMs = 0;
  /** The last publish asked for; publishes run one at a time, in order. */
  private lastPublish: Promise<void> = Promise.resolve();
  /** A publish asked for that has not taken its batch yet: later callers join it. */
  private queuedPublish: Promise<void> | undefined;
  /** The first error of a background publish, reported by the next flush. */
  private backgroundFailure: unknown;

  private constructor(
    readonly dir: string,
    private durability: Durability,
  ) {
    this.chunkDir = path.join(dir, 'chunks');
    this.manifestDir = path.join(dir, 'manifests');
    this.tempDir = path.join(dir, 'tmp');
  }

  /**
   * Opens the store in `dir`, creating it when `create` is set and it does not exist.
   * Refuses a directory whose store.json declares another format or version.
   */
  static async open(dir: string, options: LocalStoreOpenOptions): Promise<LocalStore> {
    throwIfAborted(options.signal);
    const root = path.resolve(dir);
    const store = new LocalStore(root, options.durability ?? (process.platform === 'linux' ? 'syncfs' : 'fsync'));
    const exists = await store.readStoreFile();
    if (!exists) {
      if (!options.create) throw new NotFoundError(`no xfer store at ${root}`);
      throwIfAborted(options.signal);
      await store.createLayout();
    }
    throwIfAborted(options.signal);
    await store.removeStaleTempFiles(options.signal);
    return store;
  }

  /** Where the chunk `id` lives once published (pending chunks are in tmp/). */
  chunkPath(id: ChunkId): string {
    return this.publishedPath(id.algorithm, checkChunkId(id));
  }

  async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    const signal = options?.signal;
    throwIfAborted(signal);
    return mapBounded(ids, HAS_CONCURRENCY, signal, async (id) => {
      const hex = checkChunkId(id);
      if (this.pending.has(`${id.algorithm}:${hex}`)) return true;
      const finalPath = this.publishedPath(id.algorithm, hex);
      try {
        await access(finalPath);
        return true;
      } catch (err) {
        if (isMissing(err)) return false;
        throw fromSystemError(err, finalPath, 'check chunk');
      }
    });
  }

  async get(id: ChunkId, options?: OpOptions): Promise<Buffer> {
    const signal = options?.signal;
    throwIfAborted(signal);
    const hex = checkChunkId(id);
    const finalPath = this.publishedPath(id.algorithm, hex);
    const tempPath = this.pending.get(`${id.algorithm}:${hex}`)?.tempPath;
    let data: Buffer;
    try {
      data = await readChunkFile(tempPath ?? finalPath, { signal });
    } catch (err) {
      if (!isMissing(err)) throw fromSystemError(err, tempPath ?? finalPath, 'read chunk');
      // A pending chunk may have been published (renamed) since the lookup above.
      if (tempPath === undefined) throw new ChunkMissingError(hex, this.dir);
      data = await this.readPublished(finalPath, hex, signal);
    }
    if (!digestEquals(digestOf(id.algorithm, data), id.digest)) {
      throw new ChunkCorruptError(hex, `the stored file ${finalPath} does not hash to it`);
    }
    return data;
  }

  async put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    const signal = options?.signal;
    throwIfAborted(signal);
    const hex = checkChunkId(id);
    const key = `${id.algorithm}:${hex}`;
    for (let inFlight = this.putsInFlight.get(key); inFlight; inFlight = this.putsInFlight.get(key)) {
      // Its outcome is its caller's; this put re-checks afterwards.
      await inFlight.catch(() => undefined);
      throwIfAborted(signal);
    }
    if (this.pending.has(key)) return false;
    const work = this.writeChunk(id.algorithm, hex, id.digest, data, options);
    this.putsInFlight.set(key, work);
    let wrote: boolean;
    try {
      wrote = await work;
    } finally {
      this.putsInFlight.delete(key);
    }
    if (wrote) {
      if (this.queuedPublish === undefined && this.batchIsDue()) this.publishInBackground();
      if (this.pendingBytes >= MAX_PENDING_BYTES || this.pending.size >= MAX_PENDING_CHUNKS) {
        await untilAborted(this.publish(), signal);
      }
    }
    return wrote;
  }

  /**
   * Publishes every pending chunk and makes it durable (see "Durability" above). An
   * abort rejects at once; the publish itself runs to its end, as other callers may be
   * waiting for it too.
   */
  async flush(options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    await untilAborted(this.publish(), options?.signal);
    // Whatever a background publish failed on was retried just now, except a lost chunk;
    // either way the caller must not take every put for durable.
    const failure = this.backgroundFailure;
    if (failure !== undefined) {
      this.backgroundFailure = undefined;
      throw failure;
    }
  }

  /** Flushes if anything is pending. The store holds no open files, so nothing else to release. */
  async close(): Promise<void> {
    if (this.pending.size > 0 || this.backgroundFailure !== undefined) await this.flush();
  }

  /** Yields every published chunk (of `algorithm`, or of all) and this store's pending ones; unordered. */
  async *listChunks(algorithm?: DigestAlgorithm, options?: OpOptions): AsyncGenerator<ChunkId> {
    const signal = options?.signal;
    throwIfAborted(signal);
    if (algorithm !== undefined && !DIGEST_ALGORITHMS.includes(algorithm)) {
      throw new InvalidArgumentError(`unknown digest algorithm "${String(algorithm)}"`);
    }
    const algorithms = algorithm === undefined ? DIGEST_ALGORITHMS : [algorithm];
    // Pending chunks first; remembered so that one published meanwhile is not listed twice.
    const pendingKeys = new Set<string>();
    for (const chunk of [...this.pending.values()]) {
      if (!algorithms.includes(chunk.algorithm)) continue;
      pendingKeys.add(chunk.key);
      yield { algorithm: chunk.algorithm, digest: digestFromHex(chunk.hex) };
    }
    for (const alg of algorithms) {
      const algDir = path.join(this.chunkDir, alg);
      for (const fanOut of await this.readDirNames(algDir, signal)) {
        if (!FAN_OUT_RE.test(fanOut)) continue;
        for (const name of await this.readDirNames(path.join(algDir, fanOut), signal)) {
          if (!CHUNK_NAME_RE.test(name) || !name.startsWith(fanOut) || pendingKeys.has(`${alg}:${name}`)) continue;
          yield { algorithm: alg, digest: digestFromHex(name) };
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

  /** True if store.json exists and is ours; throws if it is someone else's or a newer version. */
  private async readStoreFile(): Promise<boolean> {
    const file = path.join(this.dir, STORE_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (isMissing(err)) return false;
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
    if (version !== STORE_VERSION) {
      throw new InvalidArgumentError(
        `${file}: store version ${JSON.stringify(version)} is not supported (this xfer reads version ${STORE_VERSION})`,
      );
    }
    return true;
  }

  /** Makes the directories, then store.json last: a store without it is not a store yet. */
  private async createLayout(): Promise<void> {
    const firstCreated = await mkdir(this.dir, { recursive: true }).catch((err: unknown) => {
      throw fromSystemError(err, this.dir, 'create store');
    });
    for (const d of [this.chunkDir, this.manifestDir, this.tempDir]) {
      await mkdir(d, { recursive: true }).catch((err: unknown) => {
        throw fromSystemError(err, d, 'create store');
      });
      this.knownDirs.add(d);
    }
    const description = `${JSON.stringify({ format: STORE_FORMAT, version: STORE_VERSION })}\n`;
    const tempPath = this.newTempPath();
    const file = path.join(this.dir, STORE_FILE);
    try {
      await writeDurably(tempPath, [Buffer.from(description)], undefined);
      // Concurrent creators write identical descriptions; either rename wins.
      await rename(tempPath, file).catch((err: unknown) => {
        throw fromSystemError(err, file, 'create store');
      });
    } catch (err) {
      await unlink(tempPath).catch(() => undefined); // renamed, or never created
      throw err;
    }
    await fsyncPath(this.dir);
    for (let d = this.dir; firstCreated !== undefined && d !== path.dirname(firstCreated); d = path.dirname(d)) {
      await fsyncPath(path.dirname(d));
    }
  }

  /**
   * Removes temp files older than STALE_TEMP_AGE_MS: crash leftovers. Best effort: a
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
        if (s.isFile() && s.mtimeMs < cutoffMs) await unlink(file);
      } catch {
        // See above: leaving a leftover in place is always safe.
      }
    });
  }

  private async writeChunk(
    algorithm: DigestAlgorithm,
    hex: string,
    digest: Uint8Array,
    data: Uint8Array,
    options: PutOptions | undefined,
  ): Promise<boolean> {
    const finalPath = this.publishedPath(algorithm, hex);
    try {
      await access(finalPath);
      return false;
    } catch (err) {
      if (!isMissing(err)) throw fromSystemError(err, finalPath, 'check chunk');
    }
    if (options?.trusted !== true && !digestEquals(digestOf(algorithm, data), digest)) {
      throw new ChunkCorruptError(hex, 'the bytes to store do not hash to it');
    }
    throwIfAborted(options?.signal);
    const tempPath = this.newTempPath();
    try {
      await writeFile(tempPath, data, { flag: 'wx', signal: options?.signal });
    } catch (err) {
      await unlink(tempPath).catch(() => undefined); // may not exist
      throw fromSystemError(err, tempPath, 'write chunk');
    }
    if (this.batchChunks === 0) this.batchStartedMs = Date.now();
    this.batchChunks += 1;
    this.batchBytes += data.length;
    const key = `${algorithm}:${hex}`;
    this.pending.set(key, { key, algorithm, hex, tempPath, finalPath, bytes: data.length });
    this.pendingBytes += data.length;
    return true;
  }

  private batchIsDue(): boolean {
    return (
      this.batchBytes >= PUBLISH_BATCH_BYTES ||
      this.batchChunks >= PUBLISH_BATCH_CHUNKS ||
      Date.now() - this.batchStartedMs >= MAX_PENDING_AGE_MS
    );
  }

  private publishInBackground(): void {
    this.publish().catch((err: unknown) => {
      this.backgroundFailure ??= err;
    });
  }

  /** Resolves once every chunk pending now is published and durable (see publishPending). */
  private publish(): Promise<void> {
    if (this.queuedPublish !== undefined) return this.queuedPublish;
    const run = this.lastPublish
      .catch(() => undefined) // the previous caller got that error
      .then(() => {
        this.queuedPublish = undefined;
        return this.publishPending();
      });
    this.queuedPublish = run;
    this.lastPublish = run;
    return run;
  }

  /**
   * Makes every chunk pending when it starts durable under its final name, and any chunk
   * published earlier (by this store or another opener of the directory) durable too:
   * has() may have reported one that another process renamed but has not synced yet.
   * A chunk that fails to publish stays pending, for the next publish to retry.
   */
  private async publishPending(): Promise<void> {
    const batch = [...this.pending.values()];
    this.batchBytes = 0;
    this.batchChunks = 0;
    if (batch.length > 0) {
      await this.syncData(batch);
      await mapBounded(batch, FS_CONCURRENCY, undefined, async (chunk) => {
        try {
          await this.renameIntoPlace(chunk.tempPath, chunk.finalPath, path.dirname(chunk.finalPath));
        } catch (err) {
          throw errorCode(err) === 'ENOENT' ? this.lost(chunk) : fromSystemError(err, chunk.finalPath, 'publish chunk');
        }
        this.forgetPending(chunk);
      });
    }
    await this.syncNames();
  }

  /** Forgets a pending chunk whose temp file vanished (so that has() says so and it is put again). */
  private lost(chunk: PendingChunk): IoError {
    this.forgetPending(chunk);
    return new IoError(
      `chunk ${chunk.hex} was lost before ${this.dir} made it durable: its temp file ${chunk.tempPath} was removed`,
    );
  }

  private forgetPending(chunk: PendingChunk): void {
    this.pending.delete(chunk.key);
    this.pendingBytes -= chunk.bytes;
  }

  /** Makes the bytes of `batch` durable. */
  private async syncData(batch: readonly PendingChunk[]): Promise<void> {
    if (await this.syncFilesystem()) return;
    await mapBounded(batch, FS_CONCURRENCY, undefined, async (chunk) => {
      try {
        await fsyncPath(chunk.tempPath);
      } catch (err) {
        throw isXferError(err, 'XFER_NOT_FOUND') ? this.lost(chunk) : err;
      }
    });
  }

  /** Makes every name in chunks/ and tmp/ durable. */
  private async syncNames(): Promise<void> {
    if (await this.syncFilesystem()) return;
    const dirs = [this.tempDir, this.chunkDir];
    for (const alg of DIGEST_ALGORITHMS) {
      const algDir = path.join(this.chunkDir, alg);
      const fanOuts = await this.readDirNames(algDir, undefined);
      if (fanOuts.length > 0) dirs.push(algDir);
      for (const fanOut of fanOuts) if (FAN_OUT_RE.test(fanOut)) dirs.push(path.join(algDir, fanOut));
    }
    await mapBounded(dirs, FS_CONCURRENCY, undefined, fsyncPath);
  }

  /**
   * In 'syncfs' mode, syncfs(2) of the store's filesystem by `sync -f` (coreutils >= 8.24,
   * busybox); true if it succeeded. If it fails (no such program, one too old, or an I/O
   * error, which fsync then reports itself) the store switches to 'fsync' mode for good
   * and returns false, as it does in 'fsync' mode: the caller then fsyncs.
   */
  private async syncFilesystem(): Promise<boolean> {
    if (this.durability !== 'syncfs') return false;
    const ok = await syncFilesystem(this.dir);
    if (!ok) this.durability = 'fsync';
    return ok;
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

  private async readPublished(finalPath: string, hex: string, signal: AbortSignal | undefined): Promise<Buffer> {
    try {
      return await readChunkFile(finalPath, { signal });
    } catch (err) {
      if (isMissing(err)) throw new ChunkMissingError(hex, this.dir);
      throw fromSystemError(err, finalPath, 'read chunk');
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

  private publishedPath(algorithm: DigestAlgorithm, hex: string): string {
    // Plain concatenation: path.join would re-normalize on every chunk.
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

/** `promise`, or AbortedError as soon as `signal` fires, whichever comes first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      try {
        throwIfAborted(signal);
      } catch (err) {
        reject(err);
      }
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Runs `fn` on every item with at most `limit` calls in flight and returns the results
 * in item order. Checks `signal` before each call; after the first failure no further
 * calls start, and the first error is thrown once the running ones have settled.
 */
async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal | undefined,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        throwIfAborted(signal);
        results[i] = await fn(items[i]!);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.err;
  return results;
}
