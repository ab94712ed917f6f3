/**
 * LocalStore: the class that composes the local store's parts, one file per job beside
 * this one (layout and format: ../local.ts).
 */
import path from 'node:path';
import { throwIfAborted } from '../../core/abort.js';
import { ChunkCorruptError, ChunkMissingError, fromSystemError, InvalidArgumentError, IoError, isXferError, NotFoundError } from '../../core/errors.js';
import { DIGEST_ALGORITHMS, digestFromHex, digestKey, digestToHex, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { checkBoolean, checkPositiveInteger, checkSignal } from '../../core/options.js';
import { mapBounded } from '../../core/window.js';
import { digestEquals, digestOf } from '../../hash/digest.js';
import { acquireLock, type HeldLock, type LockOptions } from '../lock.js';
import { checkChunkId, validateChunkId, validateManifestName } from '../names.js';
import { PACK_TARGET_BYTES } from '../pack.js';
import { GC_MARKS_RECHECK_MS } from '../gc.js';
import type { ChunkCheck, ChunkStore, GarbageCollecting, GcOptions, GcReport, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions, ReferencedChunks } from '../store.js';
import { CommitPipeline } from './commit.js';
import { collectLocalGarbage, marksStamp, readMarks, releaseHeldPacks, type LocalGcAccess } from './gc.js';
import { readDirNames } from './fs.js';
import { createLayout, readStoreFile, STORE_VERSION, storePaths, writeStoreFile, type StorePaths } from './layout.js';
import { LooseChunks } from './loose.js';
import { LocalManifests } from './manifests.js';
import { PackIndex } from './pack-index.js';
import { PackReader } from './pack-reader.js';
import { rename } from 'node:fs/promises';
import { SET_ASIDE_HINT, SetAsideList, type SetAsideRecord } from './set-aside.js';
import { removeStaleTempFiles } from './temp.js';
import { readInPackOrder, type PackPlace } from './verify-chunks.js';
import { PackWriterPool } from './writer-pool.js';

/** A chunk whose stored copy in `file` does not hash to its digest (it was set aside). */
function corruptCopy(hex: string, file: string): ChunkCorruptError {
  return new ChunkCorruptError(hex, `the stored copy in ${file} does not hash to it (set aside: ${SET_ASIDE_HINT})`);
}

/** A chunk whose pack `file` ends before its record does (it was set aside). */
function truncatedPack(hex: string, file: string): ChunkCorruptError {
  return new ChunkCorruptError(hex, `pack ${file} ends before the chunk does (truncated; set aside)`);
}

/** Chunks verifyChunks reads through get() at once (those not in a committed pack record). */
const VERIFY_GETS_IN_FLIGHT = 16;

export interface LocalStoreOpenOptions {
  /** Create the store if `dir` holds none; otherwise a missing store is NotFoundError. */
  readonly create: boolean;
  readonly signal?: AbortSignal;
  /** Size at which a pack takes no more chunks; default PACK_TARGET_BYTES. */
  readonly packTargetBytes?: number;
  /** Write and read packs with O_DIRECT where the filesystem allows; default true (see io/direct.ts). */
  readonly directIo?: boolean;
}

/**
 * How often has() looks for chunks other openers set aside (one stat of `<dir>/set-aside`
 * when nothing changed): a push started after a verify found damage never skips it.
 */
export const SET_ASIDE_RECHECK_MS = 100;

/** Where a stored chunk is: for tests and tools that inspect the files. */
export interface ChunkLocation {
  readonly file: string;
  /** Offset of the chunk's bytes in `file`. */
  readonly offset: number;
  readonly length: number;
}

/**
 * A store in a local directory (layout and durability described in ../local.ts).
 * Several LocalStores, in one process or many, may share a directory.
 */
export class LocalStore implements ChunkStore, ManifestStore, GarbageCollecting {
  /** `<dir>/packs`: pack and index files. */
  readonly packDir: string;
  private readonly paths: StorePaths;
  private version = STORE_VERSION;
  /** Directories known to exist, so hot paths do not mkdir per chunk. */
  private readonly knownDirs = new Set<string>();
  private readonly packs: PackIndex;
  private readonly writers: PackWriterPool;
  private readonly pipeline: CommitPipeline;
  private readonly reader: PackReader;
  private readonly manifests: LocalManifests;
  /** Version 1 chunk files (set at open). */
  private loose!: LooseChunks;
  private closed = false;
  /** Chunks found corrupt (set-aside.ts), by any opener of the directory. */
  private readonly aside: SetAsideList;
  /** When the set-aside list was last looked at for other openers' records. */
  private asideCheckedAt = 0;
  private asideReading: Promise<void> | undefined;
  /** When the gc marks were last looked at, what they were (marksStamp), and a look in progress. */
  private marksCheckedMs = -Infinity;
  private marksSeen = '';
  private marksCheck: Promise<void> | undefined;

  private constructor(
    readonly dir: string,
    packTargetBytes: number,
    directIo: boolean,
  ) {
    this.paths = storePaths(dir);
    this.packDir = this.paths.packDir;
    this.packs = new PackIndex(this.packDir);
    this.writers = new PackWriterPool(this.packDir, directIo, packTargetBytes, this.packs, this.knownDirs, () => this.upgradeStoreFile());
    this.pipeline = new CommitPipeline(dir, this.writers, this.packs);
    this.reader = new PackReader(this.packs, directIo, (pack) => this.writers.settledBytes(pack));
    this.manifests = new LocalManifests(dir, this.paths.manifestDir, this.paths.tempDir, this.knownDirs);
    this.aside = new SetAsideList(dir);
  }

  /**
   * Opens the store in `dir`, creating it when `create` is set and it does not exist, and
   * loads its index. Refuses a directory whose store.json declares another format or an
   * unknown version.
   */
  static async open(dir: string, options: LocalStoreOpenOptions): Promise<LocalStore> {
    checkBoolean(options, 'create');
    checkPositiveInteger(options, 'packTargetBytes');
    checkBoolean(options, 'directIo');
    checkSignal(options);
    throwIfAborted(options.signal);
    const root = path.resolve(dir);
    const store = new LocalStore(root, options.packTargetBytes ?? PACK_TARGET_BYTES, options.directIo ?? true);
    const version = await readStoreFile(root);
    if (version === undefined) {
      if (!options.create) throw new NotFoundError(`no xfer store at ${root}`);
      throwIfAborted(options.signal);
      await createLayout(store.paths, store.knownDirs);
    } else store.version = version;
    throwIfAborted(options.signal);
    await removeStaleTempFiles(store.paths.tempDir, options.signal);
    await store.readSetAside(); // places set aside then do not count from the first index load
    await store.packs.refresh();
    await store.checkMarks(true);
    store.loose = await LooseChunks.find(store.paths.chunkDir);
    return store;
  }

  /** Where the stored chunk `id` is, or undefined if it is not stored. */
  async chunkLocation(id: ChunkId): Promise<ChunkLocation | undefined> {
    const hex = checkChunkId(id);
    const p = this.pipeline.find(id);
    if (p) return { file: p.writer.packPath, offset: p.offset, length: p.length };
    const index = this.packs.of(id.algorithm);
    const e = this.packs.findLive(id.algorithm, id.digest);
    if (e >= 0) return { file: this.packs.packPath(index.pack(e)), offset: index.offset(e), length: index.length(e) };
    const size = await this.loose.size(id, hex);
    return size === undefined ? undefined : { file: this.loose.path(id.algorithm, hex), offset: 0, length: size };
  }

  async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    const signal = options?.signal;
    throwIfAborted(signal);
    // Another opener (a verify run, say) may have set chunks aside since: a push must not skip them.
    if (performance.now() - this.asideCheckedAt >= SET_ASIDE_RECHECK_MS) await this.readSetAside();
    await this.checkMarks();
    const out = new Array<boolean>(ids.length);
    const loose: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      validateChunkId(id);
      out[i] = this.pipeline.has(id) || this.packs.findLive(id.algorithm, id.digest) >= 0;
      if (!out[i] && this.loose.present) loose.push(i);
    }
    if (loose.length > 0) {
      const found = await this.loose.has(loose.map((i) => ids[i]!), signal);
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
      await this.packs.refresh(); // another opener may have committed it since
      data = await this.readChunk(id, hex);
    }
    if (data === undefined) {
      if (this.packs.wasSetAside(id.algorithm, id.digest)) throw new ChunkCorruptError(hex, `its copy in ${this.dir} was found damaged and set aside (${SET_ASIDE_HINT})`);
      throw new ChunkMissingError(hex, this.dir);
    }
    throwIfAborted(signal);
    if (options?.unverified !== true && !digestEquals(digestOf(id.algorithm, data.bytes), id.digest)) {
      await this.setAsidePlace(id, hex, data);
      throw corruptCopy(hex, data.file);
    }
    return data.bytes;
  }

  /**
   * ChunkStore.verifyChunks: every chunk in a committed pack record is read in pack order
   * and hashed (verify-chunks.ts); the others (pending in this opener, version 1 chunk
   * files, set aside, not in the index: maybe committed by another opener since) and those
   * of packs a gc deleted meanwhile go through get(), which says what they are.
   */
  async verifyChunks(ids: readonly ChunkId[], onChecked: (i: number, check: ChunkCheck) => void, options?: OpOptions): Promise<void> {
    const signal = options?.signal;
    throwIfAborted(signal);
    await this.checkMarks();
    const places: PackPlace[] = [];
    const viaGet: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      validateChunkId(id);
      const index = this.packs.of(id.algorithm);
      const e = this.pipeline.has(id) ? -1 : index.find(id.digest);
      if (e < 0 || this.packs.isSetAside(id.algorithm, e)) viaGet.push(i);
      else places.push({ i, pack: index.pack(e), offset: index.offset(e), length: index.length(e) });
    }
    await readInPackOrder(places, {
      packPath: (pack) => this.packs.packPath(pack),
      signal,
      onRecord: (p, bytes) => {
        const id = ids[p.i]!;
        if (bytes !== undefined && digestEquals(digestOf(id.algorithm, bytes), id.digest)) return onChecked(p.i, bytes.length);
        const hex = digestToHex(id.digest);
        const file = this.packs.packPath(p.pack);
        return this.setAsidePlace(id, hex, p).then(() => {
          onChecked(p.i, bytes === undefined ? truncatedPack(hex, file) : corruptCopy(hex, file));
        });
      },
      onUnreadable: (unread, err) => {
        // A gc deleted the pack: get() finds another copy, or says the chunk is missing.
        if (!this.packs.isDead(unread[0]!.pack)) throw fromSystemError(err, this.packs.packPath(unread[0]!.pack), 'read pack');
        for (const p of unread) viaGet.push(p.i);
      },
    });
    // After one fails (and this rejects), no more gets start and the others tell nothing more.
    let failed = false;
    await mapBounded(viaGet, VERIFY_GETS_IN_FLIGHT, signal, async (i) => {
      let check: ChunkCheck;
      try {
        check = (await this.get(ids[i]!, { signal })).length;
      } catch (err) {
        if (!isXferError(err, 'XFER_CHUNK_MISSING') && !isXferError(err, 'XFER_CHUNK_CORRUPT')) {
          failed = true;
          throw err;
        }
        check = err as ChunkMissingError | ChunkCorruptError;
      }
      if (!failed) onChecked(i, check);
    });
  }

  /**
   * Sets the chunk aside (ChunkStore.setAside): recorded in `<dir>/set-aside` (set-aside.ts)
   * with the pack and offset of its bytes, which stay there; from then on has() answers
   * false, get() throws ChunkCorruptError saying so, and put() stores it anew. A chunk that is not
   * stored, or only pending in this opener, is left as it is.
   */
  async setAside(id: ChunkId, options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    const hex = checkChunkId(id);
    const index = this.packs.of(id.algorithm);
    const e = this.packs.findLive(id.algorithm, id.digest);
    if (e >= 0) return this.setAsidePlace(id, hex, { pack: index.pack(e), offset: index.offset(e), length: index.length(e) });
    if (this.loose.present && (await this.loose.size(id, hex)) !== undefined) return this.setAsidePlace(id, hex, { file: this.loose.path(id.algorithm, hex) });
  }

  /** Sets aside the copy of `id` at `where` (a committed pack record, or a version 1 chunk file). */
  private async setAsidePlace(id: ChunkId, hex: string, where: { pack?: number; offset?: number; length?: number; file?: string }): Promise<void> {
    const at = new Date().toISOString();
    if (where.pack !== undefined) {
      const pack = this.packs.nameOf(where.pack);
      await this.aside.append({ algorithm: id.algorithm, digest: hex, pack, offset: where.offset!, length: where.length!, at });
      this.packs.setAside(id.algorithm, id.digest, pack, where.offset!);
    } else if (where.file !== undefined && where.file === this.loose.path(id.algorithm, hex)) {
      // A version 1 chunk file: renamed out of the way (loose.ts ignores the name), kept.
      const file = `${where.file}.set-aside`;
      try {
        await rename(where.file, file);
      } catch (err) {
        throw fromSystemError(err, where.file, 'set aside a corrupt chunk');
      }
      await this.aside.append({ algorithm: id.algorithm, digest: hex, pack: '', offset: 0, length: 0, at, file });
    }
    // A pending chunk (this opener's, not committed) is not set aside: it was hashed as it came.
  }

  /** Applies what other openers appended to the set-aside list since the last look. */
  private readSetAside(): Promise<void> {
    this.asideReading ??= (async () => {
      try {
        const records: SetAsideRecord[] = await this.aside.readNew();
        for (const r of records) if (r.pack !== '') this.packs.setAside(r.algorithm, digestFromHex(r.digest), r.pack, r.offset);
        this.asideCheckedAt = performance.now();
      } finally {
        this.asideReading = undefined;
      }
    })();
    return this.asideReading;
  }

  async put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    const signal = options?.signal;
    throwIfAborted(signal);
    checkChunkId(id);
    if (this.closed) throw new IoError(`the store at ${this.dir} is closed`);
    await this.checkMarks();
    if (this.pipeline.has(id) || this.packs.findLive(id.algorithm, id.digest) >= 0) return false;
    if (this.loose.present && (await this.has([id], options))[0]) return false;
    if (options?.trusted !== true && !digestEquals(digestOf(id.algorithm, data), id.digest)) {
      throw new ChunkCorruptError(digestToHex(id.digest), 'the bytes to store do not hash to it');
    }
    return this.pipeline.put(id, data, signal);
  }

  /**
   * Commits every pending chunk (see "Chunks" in ../local.ts). An abort rejects at once;
   * the commit itself runs to its end, as other callers may be waiting for it too.
   */
  async flush(options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    await this.pipeline.flush(options?.signal);
  }

  /** Commits what is pending, then closes the pack files. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.pipeline.unsettled) await this.flush();
    } finally {
      this.closed = true;
      await this.pipeline.close();
      await this.reader.close();
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
    for (const { key, id } of this.pipeline.ids(algorithms)) {
      listed.add(key);
      yield id;
    }
    for (const alg of algorithms) {
      const index = this.packs.of(alg);
      for (let e = 0; e < index.size; e++) {
        if (e % 4096 === 0) throwIfAborted(signal);
        if (!this.packs.isLive(alg, e)) continue;
        const digest = index.digest(e);
        if (listed.has(`${alg}:${digestKey(digest)}`)) continue;
        yield { algorithm: alg, digest };
      }
    }
    for (const alg of algorithms) {
      const index = this.packs.of(alg);
      const skip = (digest: Uint8Array): boolean => listed.has(`${alg}:${digestKey(digest)}`) || this.packs.findLive(alg, digest) >= 0;
      for await (const digest of this.loose.list(alg, skip, signal)) yield { algorithm: alg, digest };
    }
  }

  /** One gc run (local/gc.ts; the scheme: ../gc.ts). */
  collectGarbage(referenced: ReferencedChunks, options: GcOptions): Promise<GcReport> {
    return collectLocalGarbage(this.gcAccess(), referenced, options);
  }

  /**
   * Deletes the packs this opener wrote whose every chunk `held` vouches for: a copy kept
   * elsewhere, and verified, by the caller (a server's rebuilt files, server/held.ts). The
   * pack being written is rolled over first; marked packs are left to gc (local/gc.ts
   * releaseHeldPacks). Returns how many packs and bytes went.
   */
  releasePacks(held: (algorithm: DigestAlgorithm, digest: Uint8Array) => boolean, options?: OpOptions): Promise<{ packs: number; bytes: number }> {
    throwIfAborted(options?.signal);
    const own = this.packs.ownNames().filter((name) => !this.packs.isDead(this.packs.packNumber(name)));
    return releaseHeldPacks(this.gcAccess(), own, held, options?.signal);
  }

  /**
   * Commits what is pending and makes the next put start a new pack: what is put next does
   * not share a pack with what was put before (a server's evacuated chunks, kept, apart
   * from a push's uploads, released once a rebuilt file holds them: server/held.ts).
   */
  async startNewPack(options?: OpOptions): Promise<void> {
    await this.flush(options);
    this.writers.rollOver();
  }

  private gcAccess(): LocalGcAccess {
    return {
      dir: this.dir,
      packDir: this.packDir,
      tempDir: this.paths.tempDir,
      store: this,
      refreshMarks: (extra) => this.applyMarks(extra),
      forgetPack: (name) => this.reader.forget(this.packs.packNumber(name)),
      rollOver: async (signal) => {
        this.writers.rollOver();
        await this.flush({ signal });
        return this.writers.liveNames();
      },
    };
  }

  /**
   * Looks at the gc marks again if GC_MARKS_RECHECK_MS passed since the last look (or
   * `force`), and applies them when they changed: has() and put() then see marked packs'
   * chunks as absent within that time of a gc marking them (../gc.ts).
   */
  private async checkMarks(force = false): Promise<void> {
    if (this.marksCheck !== undefined) return this.marksCheck;
    if (!force && Date.now() - this.marksCheckedMs < GC_MARKS_RECHECK_MS) return;
    this.marksCheck = (async () => {
      try {
        this.marksCheckedMs = Date.now();
        const stamp = await marksStamp(this.dir);
        if (stamp !== this.marksSeen) {
          await this.applyMarks();
          this.marksSeen = stamp;
        }
      } finally {
        this.marksCheck = undefined;
      }
    })();
    return this.marksCheck;
  }

  /** Makes dead the marked packs, those of our view a gc deleted (their .pack is gone), and `extra`. */
  private async applyMarks(extra: Iterable<string> = []): Promise<void> {
    const dead = new Set([...(await readMarks(this.dir)).keys(), ...extra]);
    const present = new Set(await readDirNames(this.packDir, undefined));
    for (const name of this.packs.knownNames()) if (!present.has(`${name}.pack`)) dead.add(name);
    await this.packs.setDead(dead);
  }

  putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    return this.manifests.putManifest(name, source, options);
  }

  /**
   * The manifest's bytes as a stream. The file is opened before this resolves, so the
   * caller reads this version even if it is replaced meanwhile; it stays open until the
   * stream is read to its end or the loop reading it exits.
   */
  getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    return this.manifests.getManifest(name, options);
  }

  listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    return this.manifests.listManifests(prefix, options);
  }

  deleteManifest(name: string, options?: OpOptions): Promise<void> {
    return this.manifests.deleteManifest(name, options);
  }

  /** A version 1 store gets packs: store.json says version 2 first (see ../local.ts). */
  private async upgradeStoreFile(): Promise<void> {
    if (this.version >= STORE_VERSION) return;
    await writeStoreFile(this.paths);
    this.version = STORE_VERSION;
  }

  /**
   * The chunk's bytes (unverified) and where they came from (pack number and offset of a
   * committed record), or undefined if not found. A record its pack ends inside is set aside.
   */
  private async readChunk(id: ChunkId, hex: string): Promise<{ bytes: Buffer; file: string; pack?: number; offset?: number; length?: number } | undefined> {
    const p = this.pipeline.find(id);
    if (p) {
      const w = p.writer;
      return { bytes: await w.read(p.offset, p.length, (o, n) => this.reader.read(p.pack, o, n)), file: w.packPath };
    }
    const index = this.packs.of(id.algorithm);
    const e = index.find(id.digest);
    if (e >= 0 && !this.packs.isSetAside(id.algorithm, e)) {
      const pack = index.pack(e);
      const length = index.length(e);
      const offset = index.offset(e);
      let bytes: Buffer;
      try {
        bytes = await this.reader.read(pack, offset, length);
      } catch (err) {
        if (this.packs.isDead(pack)) return undefined; // a gc deleted it: no copy left here
        throw err;
      }
      if (bytes.length !== length) {
        await this.setAsidePlace(id, hex, { pack, offset, length });
        throw truncatedPack(hex, this.packs.packPath(pack));
      }
      return { bytes, file: this.packs.packPath(pack), pack, offset, length };
    }
    return this.loose.read(id, hex);
  }
}
