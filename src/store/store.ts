import type { ChunkCorruptError, ChunkMissingError } from '../core/errors.js';
import type { ChunkId } from '../core/ids.js';

export interface OpOptions {
  readonly signal?: AbortSignal;
}

export interface PutOptions extends OpOptions {
  /**
   * The caller hashed exactly these bytes itself, in this process, and vouches for the
   * digest. Only the scanner's own output may set this, or a caller that has just
   * re-hashed received bytes itself and compared them with the digest (the server's
   * uploads: in groups off the main thread, server/routes/chunks.ts; gc's moves, after a
   * verified get); anything else received from outside (network, another process) is
   * re-hashed by the store.
   */
  readonly trusted?: boolean;
  /**
   * Where the chunk lies in what is being pushed: entry path ('' for a single file) and
   * byte offset. A push destination that knows the target's previous version may send the
   * chunk as a delta against the old chunk at that place (endpoint/http-delta.ts); stores
   * ignore it.
   */
  readonly placement?: { readonly path: string; readonly offset: number };
}

export interface GetOptions extends OpOptions {
  /**
   * The caller re-hashes the bytes itself, so the store may skip its own check. Only for
   * a caller that passes the bytes on to someone who verifies every chunk: the server
   * answering a fetch (its client re-hashes what it receives, a trust boundary). A
   * store that verifies anyway (HttpStore) ignores it.
   */
  readonly unverified?: boolean;
}

/**
 * A content-addressed chunk store. Every implementation (local directory, HTTP, S3,
 * memory) satisfies test/store-conformance.ts.
 *
 * Contracts:
 * - has: answers for each id, in order, whether a complete, durable-or-pending chunk is
 *   stored. Batches of any size are accepted; implementations split them as they need.
 * - get: returns the chunk's bytes after checking they hash to the id. A chunk that is
 *   not stored throws ChunkMissingError; bytes that do not match throw ChunkCorruptError
 *   naming the digest. Never returns unverified data, unless the caller asks for it
 *   (GetOptions.unverified) because it has them verified downstream. The bytes may be a
 *   view of a larger buffer the store read (or received) them in: callers read them and
 *   must not write to them.
 * - put: stores bytes under id unless already present. Verifies the bytes against the id
 *   unless `trusted`; a mismatch throws ChunkCorruptError and stores nothing. Idempotent:
 *   concurrent puts of the same id are safe. Returns true if this call wrote the chunk (a
 *   store that buffers writes, HttpStore, answers when it queues them: see its comment).
 *   A chunk becomes visible to has/get only complete (never a partial file).
 * - flush: every put that has resolved before flush was called is durable (survives a
 *   crash) when flush resolves. Callers flush before committing a manifest that refers
 *   to the chunks.
 * - setAside (optional): the chunk was found corrupt. It stops counting as present (has
 *   answers false, get throws ChunkCorruptError saying it was set aside) and its bytes are kept aside for
 *   inspection, never rewritten in place; the next put of the chunk stores it again, and
 *   gets then return that copy. A no-op for a chunk not stored. A store whose own get finds
 *   bytes that do not match calls it itself before throwing ChunkCorruptError, so callers
 *   call it only for damage they found by other means.
 * - verifyChunks (optional, for a store that checks many chunks faster than one get() each:
 *   the local store reads its packs in order): re-hashes every chunk of `ids` and tells
 *   onChecked(i, check) once for each, in any order, before it resolves; the outcome for
 *   each chunk is get()'s (a stored length, or ChunkMissingError / ChunkCorruptError, a
 *   corrupt copy set aside the same way). Rejects on what get() would throw otherwise (an
 *   unreadable pack, an abort), with some chunks told and others not. Callers without it
 *   call get() per chunk (transfer/verify.ts).
 * - Every method rejects with AbortedError once its signal is aborted.
 */
export interface ChunkStore {
  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]>;
  get(id: ChunkId, options?: GetOptions): Promise<Buffer>;
  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean>;
  flush(options?: OpOptions): Promise<void>;
  close(): Promise<void>;
  setAside?(id: ChunkId, options?: OpOptions): Promise<void>;
  verifyChunks?(ids: readonly ChunkId[], onChecked: (i: number, check: ChunkCheck) => void, options?: OpOptions): Promise<void>;
}

/**
 * What ChunkStore.verifyChunks found of one chunk: its stored length when its bytes hash to
 * its digest, else the error get() would have thrown for it.
 */
export type ChunkCheck = number | ChunkMissingError | ChunkCorruptError;

/** A stored manifest's name and facts, as listings report it. */
export interface ManifestInfo {
  readonly name: string;
  readonly bytes: number;
  readonly mtimeMs: number;
}

/**
 * Manifests by name. Names are '/'-separated relative paths (validated by
 * validateManifestName). put replaces atomically: readers see the old or the new
 * manifest, never a mix; the new one is durable when put resolves.
 */
export interface ManifestStore {
  putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void>;
  /** Throws NotFoundError naming the manifest if absent. */
  getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>>;
  listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]>;
  deleteManifest(name: string, options?: OpOptions): Promise<void>;
}

/** What a garbage collection is asked to do (store/gc.ts describes the scheme). */
export interface GcOptions extends OpOptions {
  /** Change nothing; report what would be marked, repacked and deleted. */
  readonly dryRun?: boolean;
  /**
   * A pack whose bytes are more than this share (0-100) unused (chunks no manifest refers
   * to, copies of chunks stored elsewhere, bytes no index names) is repacked: its used
   * chunks are copied into new packs and it is marked for deletion.
   */
  readonly maxUnusedPercent: number;
  /**
   * How long a marked pack (or chunk) is kept before a gc may delete it, and how old a
   * pack no index names must be to count as an orphan: longer than any push runs.
   */
  readonly graceMs: number;
  /** The time gc takes as now (tests); Date.now() if not given. */
  readonly nowMs?: number;
}

/** What a garbage collection did (or, with dryRun, would do). Sizes in bytes. */
export interface GcReport {
  readonly dryRun: boolean;
  /** Distinct chunks the manifests refer to. */
  readonly referencedChunks: number;
  /** Marked for deletion by this run (deleted by a gc at least graceMs later). */
  readonly markedPacks: number;
  readonly markedBytes: number;
  /** Packs rewritten: their used chunks copied into new packs, then marked. */
  readonly repackedPacks: number;
  readonly repackedBytes: number;
  /** Deleted by this run: packs (or chunks) marked at least graceMs ago, and orphans. */
  readonly deletedPacks: number;
  readonly deletedChunks: number;
  readonly freedBytes: number;
  /** Of those, packs no index named (left by killed pushes). */
  readonly orphanPacks: number;
  /** Marked packs brought back because a manifest committed since refers to their chunks. */
  readonly recoveredPacks: number;
  /** Marked and not yet deletable: count, bytes, and when the first becomes deletable (ms since epoch; 0 if none). */
  readonly waitingPacks: number;
  readonly waitingBytes: number;
  readonly nextDeletableAtMs: number;
  /** Index objects merged into one (S3). */
  readonly mergedIndexes: number;
  /** Incomplete multipart uploads under the store's prefix, started at least graceMs ago, aborted (S3). */
  readonly abortedUploads: number;
  /** Bytes the store holds after the run (packs and chunk files, manifests aside). */
  readonly storeBytes: number;
}

/**
 * A store that can collect its own garbage (each kind beside its store: local/gc.ts,
 * s3/gc.ts, memory.ts). `referenced` holds every chunk any manifest refers to, computed by
 * store/gc.ts from listManifests('') (current manifests and every version); the store
 * deletes nothing it holds, and nothing marked less than graceMs ago. Contract, with the
 * scheme (docs/RELIABILITY.md, "gc and concurrent pushes"): a chunk in a pack marked for
 * deletion is not present for has() and put() from the moment the mark is seen (at most
 * GC_MARKS_RECHECK_MS later for other openers), so a push stores it again rather than
 * relying on it; a gc deletes a marked pack only after graceMs, and only if none of its
 * chunks that a manifest refers to lacks another copy (else it is recovered).
 */
export interface GarbageCollecting {
  collectGarbage(referenced: ReferencedChunks, options: GcOptions): Promise<GcReport>;
}

/** The chunks some manifest refers to (store/gc.ts). */
export interface ReferencedChunks {
  readonly size: number;
  has(algorithm: ChunkId['algorithm'], digest: Uint8Array): boolean;
}

export function collectsGarbage(store: object): store is GarbageCollecting {
  return typeof (store as Partial<GarbageCollecting>).collectGarbage === 'function';
}

/** A gc's report with the number of manifests whose chunks were kept. */
export interface GcRun extends GcReport {
  readonly manifests: number;
}

/**
 * A store that runs a whole gc where its data is, references included: a server's
 * (HttpStore asks the server, which collects its own store).
 */
export interface RemotelyCollecting {
  collectAllGarbage(options: GcOptions): Promise<GcRun>;
}

export function collectsRemotely(store: object): store is RemotelyCollecting {
  return typeof (store as Partial<RemotelyCollecting>).collectAllGarbage === 'function';
}
