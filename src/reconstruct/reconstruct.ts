import { lstat, open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { isZeroChunk, MAX_ZERO_CHUNK_BYTES, zeroBytes } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import { VerifyFailedError } from '../core/errors.js';
import type { ChunkId, DigestAlgorithm } from '../core/ids.js';
import { digestToHex } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { createHasher, digestOf, type Hasher } from '../hash/digest.js';
import { DIGEST_THREAD_MIN_BYTES, largeFileHasher, type LargeFileHasher } from '../scan/digest-thread.js';
import { DIRECT_MIN_FILE_BYTES, DirectRangeReader, windowViews } from '../io/direct.js';
import { digestOfFile } from '../scan/file-digest.js';
import { checkConfined, RealDirs, segmentsBelow } from '../io/safe-path.js';
import type { ManifestReader } from '../manifest/reader.js';
import type { ChunkRecord, EntryMeta, ManifestEvent, ManifestKind } from '../manifest/types.js';
import type { ScanPool } from '../scan/pool.js';
import type { ChunkStore } from '../store/store.js';
import { Window } from '../core/window.js';
import { RecentChunks, type Lender } from './recent.js';
import { SeedIndex } from './seeds.js';
import { applyAttributes, attributePolicy, type AttributeOptions } from './attributes.js';
import { CloneSource, sameFile, Staging, type StagedFile } from './staging.js';
import { checkUnchanged } from './unchanged.js';
import type { SnapshotRecorder } from './snapshot.js';

/** The set-user-ID and set-group-ID permission bits (see ReconstructOptions.clearSetId). */
export const SET_ID_BITS = 0o6000;

export interface ReconstructOptions {
  readonly signal?: AbortSignal;
  /** Extra local files whose chunks may be reused (like casync/desync --seed). */
  readonly seeds?: readonly string[];
  /** Reuse chunks of the existing target (default true). */
  readonly reuseTarget?: boolean;
  /**
   * Re-hash every chunk read from the store (default true). False only where the store is
   * the caller's own and the whole-file digests, always checked, are proof enough: a
   * damaged stored chunk then fails its file's digest (VerifyFailedError), and a caller
   * that wants the chunk named runs again verifying (the server does).
   */
  readonly verifyStoreChunks?: boolean;
  /** Chunk fetches in flight. */
  readonly concurrency?: number;
  /**
   * Bytes of chunks fetched and not yet written and hashed, at most (default
   * MAX_FETCH_INFLIGHT_BYTES, sized for a remote store's latency). A store on local disk
   * needs far less, and each of these bytes is memory held (with a lender, the window each
   * chunk was read into).
   */
  readonly inFlightBytes?: number;
  /**
   * Lends the buffers the store's get() returns (the server's stages: chunks uploaded a
   * moment ago, server/arrivals.ts): each is held once for the rebuild, which releases it
   * once written and hashed (RecentChunks holds what it remembers).
   */
  readonly lender?: Lender;
  /**
   * Bytes of recently seen chunks kept for repeats later in the file (RecentChunks;
   * default RECENT_CHUNK_CACHE_BYTES). A server passes less (SERVER_RECENT_CHUNK_BYTES).
   */
  readonly recentChunkBytes?: number;
  /** Needed to index seeds (chunking them); without one, seeds and target reuse are skipped. */
  readonly pool?: ScanPool;
  /**
   * Keep an interrupted run's partial result beside the target and resume from it
   * (default true). The server, which rebuilds from its own store, turns this off.
   */
  readonly resumable?: boolean;
  /**
   * The whole-content digest the existing target is known to have, if the caller knows it
   * (the server: the manifest it last committed there). When it differs from the manifest's,
   * the target is not read through to check whether it is unchanged.
   */
  readonly targetDigest?: Uint8Array;
  /**
   * The caller knows the result differs from the existing target, or cannot know the
   * manifest's digest yet (a server stage, whose header digest is a placeholder): skip the
   * read-through that checks whether the target is already the manifest's file.
   */
  readonly assumeChanged?: boolean;
  /**
   * The files the target holds now, by entry path ('' for a single file), as a manifest
   * describes them (the server: its committed manifest; a pull: the manifest being pulled,
   * see filesOf). A tree file whose new entry has the same size, mode, mtime and whole-file
   * digest, and whose file at the target still has that size, mtime and mode (the quick
   * check rsync makes), is hard-linked into the staging tree instead of being rebuilt; a
   * single file with that size and mtime is kept without being read (given targetDigest).
   */
  readonly previousFiles?: ReadonlyMap<string, PreviousFile>;
  /**
   * The quick check compares a tree's files with their own manifest entries (a pull: rsync
   * compares the destination with the source's entries), as previousFiles would if it were
   * built from this manifest, without reading the manifest twice to build it.
   */
  readonly previousIsManifest?: boolean;
  /** Gathers the target's lstats when a tree is found unchanged, for a snapshot (snapshot.ts). */
  readonly unchangedRecord?: SnapshotRecorder;
  /**
   * Runs after everything is written and verified, just before the target is swapped in;
   * given the staging copy about to be swapped in (undefined when the target is kept as it is).
   */
  readonly beforeCommit?: (staged?: string) => Promise<void>;
  /**
   * A directory the target lies below and must be reached in without following any symlink
   * (the server's `<root>/files`, see Staging and io/safe-path.ts). Refused with
   * InvalidArgumentError (a symlink) or AlreadyExistsError (a non-directory on the way)
   * before anything is read or created.
   */
  readonly confineTo?: string;
  /**
   * Clear the set-user-ID and set-group-ID bits of the files written (the server: a remote
   * client must not be able to make setuid files owned by the server's user). The manifest
   * keeps the bits; the quick check expects them cleared on disk.
   */
  readonly clearSetId?: boolean;
  /**
   * Which recorded attributes are applied (see reconstruct/attributes.ts): --numeric-ids,
   * and `untrusted` for the server's copy (no security.* or trusted.* xattrs, no devices).
   */
  readonly attributes?: AttributeOptions;
  readonly onProgress?: (p: PullProgress) => void;
  /**
   * Remove the entries of an existing target tree that the manifest lacks (rsync --delete);
   * by default they are kept (see Staging). Listed in the result's `deleted`.
   */
  readonly deleteExtra?: boolean;
  /** Extras that deleteExtra keeps all the same: the user's excluded entries (Staging.create's `protect`). */
  readonly protect?: (path: string, isDir: boolean) => boolean;
}

export interface PreviousFile {
  readonly size: number;
  readonly mode: number;
  readonly mtimeMs: number;
  /** Nanoseconds past mtimeMs (version 2). */
  readonly mtimeExtraNs?: number;
  readonly digest: Uint8Array;
}

/** A file's previous version for the quick check; without a digest, the entry's own (previousIsManifest). */
export type QuickCheckFile = Omit<PreviousFile, 'digest'> & { readonly digest?: Uint8Array };

/** Manifests of more entries than this are not indexed for the quick check (~150 bytes an entry). */
export const MAX_PREVIOUS_FILES = 1_000_000;

/**
 * A manifest's files by entry path, for ReconstructOptions.previousFiles; read through (and
 * closed). Undefined for a manifest of more than MAX_PREVIOUS_FILES entries.
 */
export async function filesOf(reader: ManifestReader, signal?: AbortSignal): Promise<Map<string, PreviousFile> | undefined> {
  if (reader.header.entryCount > MAX_PREVIOUS_FILES) {
    await reader.close();
    return undefined;
  }
  const files = new Map<string, PreviousFile>();
  let meta: EntryMeta | undefined;
  for await (const ev of reader.events()) {
    throwIfAborted(signal);
    if (ev.kind === 'entry') meta = ev.meta;
    else if (ev.kind === 'entryEnd' && meta) files.set(meta.path, { size: ev.size, mode: meta.mode, mtimeMs: meta.mtimeMs, mtimeExtraNs: meta.mtimeExtraNs, digest: ev.digest });
  }
  return files;
}

export interface PullProgress {
  readonly bytesTotal: number;
  readonly bytesDone: number;
  readonly bytesReceived: number;
  readonly bytesReused: number;
  /** Of bytesReused, the bytes of zero chunks: synthesised, left as holes (chunker/zero.ts). */
  readonly bytesZero: number;
}

export interface PullResult {
  readonly kind: ManifestKind;
  readonly bytesTotal: number;
  readonly bytesReceived: number;
  readonly bytesReused: number;
  /** Of bytesReused, the bytes of zero chunks: synthesised, not fetched, written as holes. */
  readonly bytesZero: number;
  /**
   * Disk space the rebuilt files take (st_blocks): less than bytesTotal where zeros were
   * left as holes. Files kept or linked as they were count their size.
   */
  readonly bytesAllocated: number;
  /**
   * Of bytesReused, the bytes shared with the existing target's blocks (a reflink on XFS
   * and btrfs) instead of written; 0 where the file system cannot (ext4).
   */
  readonly bytesShared?: number;
  readonly chunksTotal: number;
  readonly seconds: number;
  readonly digest: string;
  /** Entries of the existing tree removed because the manifest lacks them (deleteExtra), by path in the tree. */
  readonly deleted: readonly string[];
}

/**
 * Chunks being fetched at once: enough to keep two batched fetch requests (of up to 256
 * chunks, store/http.ts) in flight. Measured pulling 2 GiB over loopback: 256 6.1-6.6 s,
 * 512 5.8-6.0 s, 1024 6.0 s.
 */
export const DEFAULT_FETCH_CONCURRENCY = 512;
export const MAX_FETCH_INFLIGHT_BYTES = 96 * MiB;
/** Files being verified and closed while later files are rebuilt. */
export const FILES_IN_FLIGHT = 16;

/**
 * Rebuilds a manifest's file or tree at `target` from a chunk store, reusing chunks found in
 * seeds (the existing target and any --seed files). Every chunk is verified (the store
 * verifies what it returns, seeds are re-hashed), every file's whole-content digest is
 * checked in order as chunks complete, and the result replaces the target atomically
 * (see Staging). On any error the target is left as it was.
 */
export async function reconstruct(reader: ManifestReader, store: ChunkStore, target: string, options: ReconstructOptions): Promise<PullResult> {
  const started = performance.now();
  const { signal, pool } = options;
  const header = reader.header;
  const algorithm = header.digestAlgorithm;
  // Before the target is read (a kept target is chmod'ed, and chmod follows symlinks).
  if (options.confineTo !== undefined) await checkConfined(options.confineTo, segmentsBelow(options.confineTo, target));
  /** A file entry's mode as written to disk (see clearSetId). */
  const diskMode = (mode: number) => (options.clearSetId ? mode & ~SET_ID_BITS : mode);
  // Reading a large target whole to learn it is unchanged costs as much as rebuilding it: the
  // server, which knows the digest its target has (its stored manifest's), skips that when
  // the digests differ.
  const maybeUnchanged = options.assumeChanged !== true && (options.targetDigest === undefined || Buffer.compare(options.targetDigest, header.digest) === 0);
  if (header.kind === 'file' && maybeUnchanged) {
    // The target is the committed version (its digest is the manifest's) and still has the
    // size and mtime it was committed with: kept without reading it through.
    const committed = options.targetDigest !== undefined ? options.previousFiles?.get('') : undefined;
    if (committed && Buffer.compare(committed.digest, header.digest) === 0 && (await sameFile(target, { size: committed.size, mtimeMs: committed.mtimeMs, mtimeExtraNs: committed.mtimeExtraNs }))) return keepUnchanged(reader, target, options, diskMode, started);
    if (await fileHasDigest(target, header.totalBytes, algorithm, header.digest, signal)) return keepUnchanged(reader, target, options, diskMode, started);
  }
  // A tree pull onto the tree it already is: checked entry by entry before anything is
  // staged (see unchanged.ts); then nothing is made, linked or renamed at all.
  /** A tree file's previous version (see previousFiles, previousIsManifest). */
  const previousOf = (m: EntryMeta): QuickCheckFile | undefined =>
    options.previousIsManifest ? { size: m.size, mode: m.mode, mtimeMs: m.mtimeMs, mtimeExtraNs: m.mtimeExtraNs } : options.previousFiles?.get(m.path);
  const events = reader.events();
  let held: ManifestEvent[] = [];
  if (header.kind === 'tree' && maybeUnchanged && (options.previousFiles || options.previousIsManifest) && (await isDirectory(target)) && !((options.resumable ?? true) && (await Staging.hasLeftovers(target)))) {
    const protect = options.protect;
    let check;
    try {
      check = await checkUnchanged(events, target, {
        policy: attributePolicy(options.attributes), previousOf, diskMode, signal,
        deletable: options.deleteExtra ? (path, isDir) => !protect?.(path, isDir) : undefined, record: options.unchangedRecord,
      });
    } catch (err) {
      await events.return(undefined).catch(() => {});
      throw err;
    }
    if (check.unchanged) {
      await options.beforeCommit?.();
      options.onProgress?.({ bytesTotal: header.totalBytes, bytesDone: check.fileBytes, bytesReceived: 0, bytesReused: check.fileBytes, bytesZero: 0 });
      return {
        kind: header.kind, bytesTotal: header.totalBytes, bytesReceived: 0, bytesReused: check.fileBytes, bytesZero: 0, bytesAllocated: check.fileBytes, chunksTotal: header.chunkCount,
        seconds: (performance.now() - started) / 1000, digest: digestToHex(header.digest), deleted: [],
      };
    }
    held = check.held;
  }
  // A partly read manifest (the check above) is closed if staging cannot begin.
  const staging = await Staging.create(target, header.kind, { signal, resumable: options.resumable ?? true, confineTo: options.confineTo, deleteExtra: options.deleteExtra, protect: options.protect, attributes: options.attributes }).catch(async (err: unknown) => {
    await events.return(undefined).catch(() => {});
    throw err;
  });
  const globalSeeds = new SeedIndex(header.chunker, algorithm);
  if (pool) for (const s of options.seeds ?? []) await globalSeeds.add(s, pool, signal);
  const window = new Window(options.concurrency ?? DEFAULT_FETCH_CONCURRENCY, options.inFlightBytes ?? MAX_FETCH_INFLIGHT_BYTES);
  const recent = new RecentChunks(options.recentChunkBytes, options.lender);
  let bytesReceived = 0;
  let bytesReused = 0;
  let bytesDone = 0;
  let bytesZero = 0;
  let bytesAllocated = 0;
  let bytesShared = 0;
  const progress = () => options.onProgress?.({ bytesTotal: header.totalBytes, bytesDone, bytesReceived, bytesReused, bytesZero });
  /**
   * A chunk job's end: its bytes written at their offset, then hashed into the file's digest
   * in order. The job (and its window slot) lasts until they are hashed: see completed().
   */
  const place = async (f: OpenFile, staged: StagedFile, seq: number, data: Uint8Array, offset: number, inPlace: boolean, shared: boolean): Promise<void> => {
    await staged.write(data, offset, inPlace, shared);
    bytesDone += data.length;
    progress();
    await f.completed(seq, data);
    if (isLarge(f.hasher)) await f.hasher.ready();
  };

  // Files are pipelined: a file's chunks are fetched while earlier files are still being
  // verified and closed (FILES_IN_FLIGHT at once), and the next file is opened without
  // waiting for them. One at a time, trees of thousands of small files spent most of
  // their time waiting on per-file opens, fstats and closes (a server rebuilt 15,287 files
  // in 12.7 s, idle three quarters of it).
  const finishes = new Window(FILES_IN_FLIGHT, Infinity);
  // Without a target (a first copy) no file of it can be reused: skip a stat per file.
  const targetExists = await stat(target).then(() => true, () => false);
  // The existing tree's files are read and linked by the manifest's paths: never through a
  // symlink of that tree (an old version's `l -> /elsewhere` where the new one has a
  // directory `l`), which would read, or worse hard-link, a file outside the target.
  const realDirs = new RealDirs(target);
  const open = new Set<OpenFile>();
  let file: OpenFile | undefined;
  let deleted: readonly string[] = [];
  try {
    /** One manifest event: a directory, symlink or file entry, a file's chunks, its end. */
    const handle = async (ev: ManifestEvent): Promise<void> => {
      if (ev.kind === 'entry') {
        const meta = ev.meta.type === 'file' && diskMode(ev.meta.mode) !== ev.meta.mode ? { ...ev.meta, mode: diskMode(ev.meta.mode) } : ev.meta;
        if (meta.type === 'dir') await staging.mkdir(meta);
        else if (meta.type === 'symlink') await staging.symlink(meta);
        else if (meta.type === 'hardlink') await staging.hardlink(meta);
        else if (meta.type !== 'file') await staging.node(meta);
        else {
          const existing = meta.path === '' ? target : join(target, ...meta.path.split('/'));
          // Opened without waiting: the chunk jobs and the finish wait for it, the next
          // entries need not.
          const ready = (async () => {
            const staged = await staging.openFile(meta);
            // In place first (an interrupted run's partial, then the existing file at the
            // same offsets: cheap, and enough for overwrites); the existing file is chunked
            // as a content-defined seed only when a chunk is not found in place (insertions).
            const reachable = targetExists && (await realDirs.reaches(meta.path));
            const existingPlace = reachable ? await InPlace.open(existing, staged, algorithm) : undefined;
            const inPlace = [await InPlace.open(staging.previousPathOf(meta.path), staged, algorithm), existingPlace].filter((x): x is InPlace => x !== undefined);
            // The existing file's chunks found at their offsets are not written again where
            // the file system can share its blocks (a reflink: XFS, btrfs): an edit of a few
            // bytes costs a few blocks, not a new copy of the file.
            const cloneSource = existingPlace ? await CloneSource.open(existing) : undefined;
            if (cloneSource) staged.shareFrom(cloneSource);
            return { staged, inPlace, existingPlace, cloneSource };
          })();
          const indexExisting = pool && options.reuseTarget !== false && targetExists
            ? async () => {
                const local = new SeedIndex(header.chunker, algorithm);
                if (await realDirs.reaches(meta.path)) await local.add(existing, pool, signal);
                return local;
              }
            : undefined;
          // A large file's digest is computed alongside the writes, on other threads.
          const hasher = meta.size >= DIGEST_THREAD_MIN_BYTES ? largeFileHasher(algorithm) : createHasher(algorithm);
          file = new OpenFile(meta, existing, ready, hasher, globalSeeds, indexExisting);
          open.add(file);
        }
      } else if (ev.kind === 'chunks') {
        const f = file!;
        const records = ev.records;
        for (let i = 0; i < records.length; i++) {
          const rec = records[i]!;
          if (isZeroChunk(algorithm, rec.length, rec.digest)) {
            // A run of zero chunks (a hole of a disk image) is one job: synthesised, never
            // fetched (chunker/zero.ts), written as a hole, hashed as known zeros. A job
            // per chunk cost this thread about 15 us each: 262,144 of them for the holes of
            // a 64 GiB image, while the server's stage let the chunks uploaded meanwhile
            // go to packs, to be read back.
            let length = rec.length;
            while (i + 1 < records.length && length + records[i + 1]!.length <= MAX_ZERO_CHUNK_BYTES && isZeroChunk(algorithm, records[i + 1]!.length, records[i + 1]!.digest)) length += records[++i]!.length;
            const seq = f.nextSeq++;
            const offset = f.offset;
            f.offset += length;
            f.started();
            // No bytes held: it takes a slot of the window, not room in its bytes.
            await window.run(0, async () => {
              try {
                const { staged } = await f.ready;
                bytesZero += length;
                bytesReused += length;
                await place(f, staged, seq, zeroBytes(length), offset, false, false);
              } catch (err) {
                f.abandon();
                throw err;
              } finally {
                f.settled();
              }
            });
            continue;
          }
          const seq = f.nextSeq++;
          const offset = f.offset;
          f.offset += rec.length;
          const id: ChunkId = { algorithm, digest: rec.digest };
          f.started();
          await window.run(rec.length, async () => {
            /** Bytes from the store, held for this job (options.lender) until it settles. */
            let lent: Buffer | undefined;
            /** Bytes read from a place (a view of a read-ahead window), given back when it settles. */
            let placed: Buffer | undefined;
            try {
              const { staged, inPlace: places, existingPlace } = await f.ready;
              // (Zero chunks are runs above.) 1. already in place (an interrupted run), 2. a
              // local seed, 3. the store.
              let data: Buffer | undefined;
              let inPlace = false;
              /** Found at this offset of the existing target: its blocks may be shared. */
              let shared = false;
              for (const p of places) {
                data = placed = await p.match(rec, offset);
                if (data) {
                  inPlace = p.isTarget;
                  shared = p === existingPlace;
                  break;
                }
              }
              if (!data) data = await f.fromSeed(rec);
              if (data) bytesReused += rec.length;
              else {
                // 3. the store, once per distinct chunk (repeats come from RecentChunks)
                const got = await recent.get(rec.digest, () => store.get(id, { signal, unverified: options.verifyStoreChunks === false }));
                data = lent = got.data;
                if (data.length !== rec.length) throw new VerifyFailedError(`chunk ${digestToHex(rec.digest)} has ${data.length} bytes, manifest says ${rec.length}`);
                if (got.fetched) bytesReceived += rec.length;
                else bytesReused += rec.length;
              }
              await place(f, staged, seq, data, offset, inPlace, shared);
            } catch (err) {
              f.abandon();
              throw err;
            } finally {
              // Written (the write has settled) and hashed (hashers copy what they keep), or failed.
              if (lent) options.lender?.release(lent);
              if (placed) windowViews.release(placed);
              f.settled();
            }
          });
        }
      } else {
        const f = file!;
        file = undefined;
        const end = ev;
        await finishes.run(0, async () => {
          const { staged } = await f.ready;
          await f.idle();
          // A chunk job of this file failed: the window reports it; only close here.
          if (f.nextSeq !== f.hashedCount()) return;
          const digest = await f.hasher.digest();
          if (!digest.equals(end.digest)) {
            throw new VerifyFailedError(`${f.describe()}: content digest ${digest.toString('hex')} does not match the manifest's ${digestToHex(end.digest)}`);
          }
          if (f.offset !== end.size) throw new VerifyFailedError(`${f.describe()}: ${f.offset} bytes written, manifest says ${end.size}`);
          // Shared blocks were not written from the verified bytes but taken from the
          // existing file: if it changed since (another writer), they are read back.
          const { cloneSource } = await f.ready;
          if (staged.bytesShared > 0 && cloneSource && (await cloneSource.changedSinceOpen())) {
            const again = await digestOfStaged(staged, end.size, algorithm, signal);
            if (!again.equals(end.digest)) throw new VerifyFailedError(`${f.describe()}: the existing file changed while its blocks were being shared; content digest ${again.toString('hex')} does not match the manifest's ${digestToHex(end.digest)}`);
          }
          bytesShared += staged.bytesShared;
          bytesAllocated += await staged.finish(end.size);
          open.delete(f);
          await f.closeSeeds();
        });
      }
    };
    // A file that may be linked from the old tree (options.previousFiles): its chunk
    // events are held until its end says whether its digest is the old one.
    let linkable: { meta: EntryMeta; previous: QuickCheckFile; held: ManifestEvent[] } | undefined;
    /** Files that could not be linked after all: rebuilt after the last entry. */
    const relink: ManifestEvent[][] = [];
    for await (const event of resume(held, events)) {
      throwIfAborted(signal);
      if (linkable && event.kind !== 'entryEnd') {
        linkable.held.push(event);
        continue;
      }
      let events: ManifestEvent[] = [event];
      if (linkable && event.kind === 'entryEnd') {
        const { meta, previous, held } = linkable;
        linkable = undefined;
        const existing = join(target, ...meta.path.split('/'));
        const replay: ManifestEvent[] = [{ kind: 'entry', meta }, ...held, event];
        if ((previous.digest === undefined || Buffer.compare(previous.digest, event.digest) === 0) && previous.size === event.size) {
          // Checked and linked while later entries go on (a link is two round trips to the
          // thread pool; one by one, they were most of a tree's commit); a file that fails
          // the check is rebuilt after the last entry. The mode is checked too: a link
          // keeps the file's own.
          const size = event.size;
          await finishes.run(0, async () => {
            if ((await realDirs.reaches(meta.path)) && (await sameFile(existing, { ...previous, mode: diskMode(previous.mode) })) && (await staging.linkFile(meta, existing, diskMode(meta.mode)))) {
              bytesReused += size;
              bytesDone += size;
              bytesAllocated += size;
              progress();
            } else relink.push(replay);
          });
          continue;
        }
        events = replay;
      } else if (event.kind === 'entry' && event.meta.type === 'file' && targetExists) {
        const previous = previousOf(event.meta);
        const m = event.meta;
        if (previous && previous.size === m.size && previous.mode === m.mode && previous.mtimeMs === m.mtimeMs && (previous.mtimeExtraNs ?? 0) === (m.mtimeExtraNs ?? 0)) {
          linkable = { meta: m, previous, held: [] };
          continue;
        }
      }
      for (const ev of events) await handle(ev);
    }
    await finishes.drain();
    for (const events of relink) for (const ev of events) await handle(ev);
    await window.drain();
    await finishes.drain();
    await options.beforeCommit?.(staging.path);
    ({ deleted } = await staging.commit({ signal }));
  } catch (err) {
    await window.drain().catch(() => {});
    await finishes.drain().catch(() => {});
    for (const f of open) {
      await f.ready.then(({ staged }) => staged.close(), () => {});
      await f.closeSeeds();
    }
    await staging.abort();
    throw err;
  } finally {
    recent.clear();
    await globalSeeds.close();
  }
  return {
    kind: header.kind,
    bytesTotal: header.totalBytes,
    bytesReceived,
    bytesReused,
    bytesZero,
    bytesAllocated,
    bytesShared,
    chunksTotal: header.chunkCount,
    seconds: (performance.now() - started) / 1000,
    digest: digestToHex(header.digest),
    deleted,
  };
}

/** The whole-file digest of a staged file's first `size` bytes, read back. */
async function digestOfStaged(staged: StagedFile, size: number, algorithm: DigestAlgorithm, signal?: AbortSignal): Promise<Buffer> {
  const hasher = createHasher(algorithm);
  const READ_BYTES = 4 * MiB;
  for (let pos = 0; pos < size; ) {
    throwIfAborted(signal);
    const piece = await staged.readAt(Math.min(READ_BYTES, size - pos), pos);
    if (piece.length === 0) break;
    hasher.update(piece);
    pos += piece.length;
  }
  return Buffer.from(hasher.digest());
}

/** `held` (events already read), then the rest of `events`; ending early closes `events`. */
async function* resume(held: readonly ManifestEvent[], events: AsyncIterator<ManifestEvent>): AsyncGenerator<ManifestEvent, void, undefined> {
  try {
    yield* held;
    for (let next = await events.next(); !next.done; next = await events.next()) yield next.value;
  } finally {
    await events.return?.(undefined);
  }
}

/** Whether `path` itself (not followed if a symlink) is a directory. */
async function isDirectory(path: string): Promise<boolean> {
  return lstat(path).then((st) => st.isDirectory(), () => false);
}

/**
 * Whether `path` is a regular file of `size` bytes whose content hashes to `digest` (a
 * sequential read: far cheaper than rewriting and fsyncing an unchanged file).
 */
async function fileHasDigest(path: string, size: number, algorithm: DigestAlgorithm, digest: Uint8Array, signal?: AbortSignal): Promise<boolean> {
  try {
    const st = await stat(path);
    if (!st.isFile() || st.size !== size) return false;
    // An unchanged target is usually not in the page cache (or was just written with
    // O_DIRECT): read directly (3x faster cold), its holes not read, a large one hashed in
    // parallel spans (digestOfFile). A file shorter than its size hashes differently.
    return (await digestOfFile(path, size, algorithm, signal)).equals(digest);
  } catch (err) {
    if ((err as { code?: string }).code === 'XFER_ABORTED') throw err;
    return false;
  }
}

/**
 * The target already is the manifest's file: read the manifest through (so a corrupt one is
 * still refused), set the entry's mode and mtime, keep the file. Nothing is fetched.
 */
async function keepUnchanged(reader: ManifestReader, target: string, options: ReconstructOptions, diskMode: (mode: number) => number, started: number): Promise<PullResult> {
  const header = reader.header;
  let meta: EntryMeta | undefined;
  for await (const ev of reader.events()) {
    throwIfAborted(options.signal);
    if (ev.kind === 'entry') meta = ev.meta;
  }
  await options.beforeCommit?.();
  if (meta) await applyAttributes(target, { ...meta, mode: diskMode(meta.mode) }, attributePolicy(options.attributes), target, { existing: true });
  options.onProgress?.({ bytesTotal: header.totalBytes, bytesDone: header.totalBytes, bytesReceived: 0, bytesReused: header.totalBytes, bytesZero: 0 });
  const allocated = await stat(target).then((st) => st.blocks * 512, () => header.totalBytes);
  return {
    kind: header.kind,
    bytesTotal: header.totalBytes,
    bytesReceived: 0,
    bytesReused: header.totalBytes,
    bytesZero: 0,
    bytesAllocated: allocated,
    chunksTotal: header.chunkCount,
    seconds: (performance.now() - started) / 1000,
    digest: digestToHex(header.digest),
    deleted: [],
  };
}

function isLarge(h: Hasher | LargeFileHasher): h is LargeFileHasher {
  return 'close' in h;
}

/**
 * A file being rebuilt. Chunks complete out of order; the whole-file hasher must see them
 * in order, so completions wait in `done` until their predecessors are hashed (bounded
 * by the fetch window).
 */
class OpenFile {
  nextSeq = 0;
  offset = 0;
  private hashedSeq = 0;
  private readonly done = new Map<number, Uint8Array>();
  /** Chunk jobs waiting for their chunk to be hashed (see completed()), by sequence number. */
  private readonly waiting = new Map<number, () => void>();
  private abandoned = false;
  /** Chunk jobs started and not yet settled, and who waits for them all. */
  private running = 0;
  private onIdle: (() => void) | undefined;

  constructor(
    private readonly meta: EntryMeta,
    /** Where the file goes, for messages. */
    private readonly target: string,
    /** The staged file once open, and the in-place sources found for it. */
    readonly ready: Promise<{ readonly staged: StagedFile; readonly inPlace: readonly InPlace[]; readonly existingPlace?: InPlace; readonly cloneSource?: CloneSource }>,
    /** Fed in order by completed(); a large file's hasher is closed by closeSeeds(). */
    readonly hasher: Hasher | LargeFileHasher,
    private readonly seeds: SeedIndex,
    private readonly indexExisting: (() => Promise<SeedIndex>) | undefined,
  ) {
    ready.catch(() => {}); // awaited by the chunk jobs and the finish, which report it
  }

  /** The existing file chunked as a seed, built at most once, on the first miss in place. */
  private existing: Promise<SeedIndex> | undefined;

  describe(): string {
    return this.meta.path === '' ? this.target : this.meta.path;
  }

  async fromSeed(rec: ChunkRecord): Promise<Buffer | undefined> {
    if (this.seeds.has(rec.digest)) {
      const data = await this.seeds.read(rec.digest);
      if (data) return data;
    }
    if (!this.indexExisting) return undefined;
    this.existing ??= this.indexExisting();
    const local = await this.existing;
    return local.has(rec.digest) ? local.read(rec.digest) : undefined;
  }

  started(): void {
    this.running++;
  }

  /** A chunk job ended, done or failed. */
  settled(): void {
    if (--this.running === 0) this.onIdle?.();
  }

  /** Resolves once every chunk job started so far has settled. */
  idle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => (this.onIdle = resolve));
  }

  /** Chunks hashed into the whole-file digest so far (all of them once the file is complete). */
  hashedCount(): number {
    return this.hashedSeq;
  }

  /**
   * Hashes chunk `seq` into the whole-file digest once every chunk before it is; resolves
   * when it has been. The chunk job awaits this, so a chunk that completed early holds its
   * fetch window slot (and its bytes) meanwhile: what waits here is bounded by the window.
   * Without that, chunks that complete at once (repeats from RecentChunks, zero chunks)
   * piled up behind one slow fetch without limit: a 20 GiB sparse image pulled at 1.8 GB
   * of RSS. The earliest unhashed chunk of a file always started before the later ones,
   * so it holds a slot and the wait ends.
   */
  completed(seq: number, data: Uint8Array): Promise<void> {
    if (this.abandoned) return Promise.resolve();
    if (seq !== this.hashedSeq) {
      this.done.set(seq, data);
      return new Promise((resolve) => this.waiting.set(seq, resolve));
    }
    this.hasher.update(data);
    this.hashedSeq++;
    for (let d = this.done.get(this.hashedSeq); d; d = this.done.get(this.hashedSeq)) {
      this.done.delete(this.hashedSeq);
      this.hasher.update(d);
      this.waiting.get(this.hashedSeq)?.();
      this.waiting.delete(this.hashedSeq);
      this.hashedSeq++;
    }
    return Promise.resolve();
  }

  /** A chunk job failed: the file will not complete; release the jobs waiting to be hashed. */
  abandon(): void {
    this.abandoned = true;
    for (const resolve of this.waiting.values()) resolve();
    this.waiting.clear();
    this.done.clear();
  }

  /** Closes this file's own sources and its digest thread; the global seeds are shared and closed by reconstruct. */
  async closeSeeds(): Promise<void> {
    if (isLarge(this.hasher)) await this.hasher.close();
    if (this.existing) await (await this.existing.catch(() => undefined))?.close();
    const ready = await this.ready.catch(() => undefined);
    for (const p of ready?.inPlace ?? []) await p.close();
    await ready?.cloneSource?.close();
  }
}

/**
 * What an interrupted run left at a file's final offsets: the resumable partial file
 * itself (isTarget: a match needs no write) or the file of the previous partial tree.
 * A chunk counts only if the bytes at its offset hash to its digest.
 */
class InPlace {
  private constructor(
    readonly isTarget: boolean,
    private readonly sizeBytes: number,
    private readonly read: (length: number, position: number) => Promise<Buffer>,
    private readonly algorithm: DigestAlgorithm,
    private readonly release: () => Promise<void>,
  ) {}

  static async open(path: string | undefined, staged: StagedFile, algorithm: DigestAlgorithm): Promise<InPlace | undefined> {
    if (path === undefined) return undefined;
    if (path === staged.path) {
      const size = await staged.size();
      return size > 0 ? new InPlace(true, size, (l, p) => staged.readAt(l, p), algorithm, async () => {}) : undefined;
    }
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile() || st.size === 0) return undefined;
    if (st.size >= DIRECT_MIN_FILE_BYTES) {
      // Compared in order, chunk by chunk: read in big O_DIRECT windows (a bulk target was
      // written with O_DIRECT, so it is not in the page cache).
      let reader: DirectRangeReader;
      try {
        reader = await DirectRangeReader.open(path, st.size);
      } catch {
        return undefined;
      }
      return new InPlace(false, st.size, (l, p) => reader.read(l, p), algorithm, () => reader.close());
    }
    // A small file (most of a tree's): a 4 MiB window each would cost far more than it saves.
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch {
      return undefined;
    }
    const read = async (length: number, position: number) => {
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await fh.read(buf, 0, length, position);
      return buf.subarray(0, bytesRead);
    };
    return new InPlace(false, st.size, read, algorithm, () => fh.close());
  }

  /**
   * The chunk's bytes if they are at `offset`; undefined if not there or unreadable. The
   * caller gives the bytes back (windowViews.release) when done with them.
   */
  async match(rec: ChunkRecord, offset: number): Promise<Buffer | undefined> {
    if (offset + rec.length > this.sizeBytes) return undefined;
    const data = await this.read(rec.length, offset).catch(() => undefined);
    if (data && data.length === rec.length && digestOf(this.algorithm, data).equals(rec.digest)) return data;
    if (data) windowViews.release(data);
    return undefined;
  }

  async close(): Promise<void> {
    await this.release().catch(() => {});
  }
}

