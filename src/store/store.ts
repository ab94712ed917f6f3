import type { ChunkId } from '../core/ids.js';

export interface OpOptions {
  readonly signal?: AbortSignal;
}

export interface PutOptions extends OpOptions {
  /**
   * The caller hashed exactly these bytes itself, in this process, and vouches for the
   * digest. Only the scanner's own output may set this; anything received from outside
   * (network, another process) is re-hashed by the store.
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
 * - Every method rejects with AbortedError once its signal is aborted.
 */
export interface ChunkStore {
  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]>;
  get(id: ChunkId, options?: GetOptions): Promise<Buffer>;
  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean>;
  flush(options?: OpOptions): Promise<void>;
  close(): Promise<void>;
  setAside?(id: ChunkId, options?: OpOptions): Promise<void>;
}

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
