import type { ChunkerSpec, ChunkId, DigestAlgorithm } from '../core/ids.js';
import type { ChunkRecord, ManifestHeader, ManifestKind, EntryMeta } from '../manifest/types.js';
import type { ChunkStore, OpOptions } from '../store/store.js';

export interface BeginOptions extends OpOptions {
  /** The digest algorithm of the push's chunks (default blake3). */
  readonly digestAlgorithm?: DigestAlgorithm;
  /** The push's chunker: a known file (knownFile) must have been cut by the same one. */
  readonly chunker?: ChunkerSpec;
  /**
   * The push reads every file (--checksum): a destination that keeps its current copy by
   * size and mtime re-hashes it instead (a server is told so, see docs/PROTOCOL.md).
   */
  readonly checksum?: boolean;
}

/**
 * Where a push goes: a chunk store plus a way to commit a manifest. Implemented by each
 * kind of destination (local directory now, HTTP server and S3 later); push.ts knows
 * only this interface.
 */
export interface PushDestination {
  readonly chunks: ChunkStore;
  /** A human-readable name of the target, for messages. */
  readonly description: string;
  begin(kind: ManifestKind, options?: BeginOptions): Promise<PushSession>;
  /**
   * The quick check (rsync's): the destination's current version of file entry `meta`, if
   * it had the same size and mtime there and every chunk of it is still stored; the push
   * then reuses its chunk list and digest without reading the file, and passes it to
   * PushSession.entry as `known`. Destinations that cannot tell leave it out, and every
   * file is read.
   */
  knownFile?(meta: EntryMeta, options?: OpOptions): Promise<KnownFile | undefined>;
  /**
   * Chunks the destination is known to store (after begin): those of its current version
   * that it said it has, answered once for the quick check (KnownFiles.storedChunks). The
   * push does not ask `chunks.has` about them. Undefined when nothing is known.
   */
  storedChunks?(options?: OpOptions): Promise<((id: ChunkId) => boolean) | undefined>;
  /**
   * Whether chunk `id` of `length` bytes at `placement` takes the place of another chunk of
   * the current version (the same file, the same offset, other content: it will go as a
   * delta against that one). Such a chunk is new content: the push sends it without asking
   * (UNASKED_CHANGED_BYTES); a destination that has it keeps one copy.
   */
  replacesChunk?(id: ChunkId, length: number, placement: { readonly path: string; readonly offset: number }): boolean;
  /**
   * Destinations that send changed chunks as deltas (HttpDestination): how many went so,
   * and how many chunk bytes did not travel thanks to them.
   */
  deltaStats?(): { chunks: number; savedBytes: number };
  /**
   * The size and whole-content digest of file `path` in the target's current version, if the
   * destination knows them (after begin): a pushed file with both is not counted as
   * transferred (PushOptions.onFile).
   */
  previousFile?(path: string): { readonly size: number; readonly digest: Uint8Array } | undefined;
  close(): Promise<void>;
}

/** A file as the destination already has it (see PushDestination.knownFile). */
export interface KnownFile {
  readonly size: number;
  readonly digest: Uint8Array;
  readonly records: readonly ChunkRecord[];
}

/**
 * Follows a file while it is scanned (see PushSession.entry), in one of two ways: a
 * destination that copies the scanned bytes (a local directory) takes write(); one that
 * rebuilds from chunks while the push runs (a server stage) takes chunks().
 */
export interface FileSink {
  write?(data: Uint8Array, position: number): Promise<void>;
  /** The file's next chunk records, in order; called before their chunks are sent. */
  chunks?(records: readonly ChunkRecord[]): void;
  /** The file's final size and whole-content digest. */
  finish(size: number, digest: Uint8Array): Promise<void>;
}

export interface EntryOptions extends OpOptions {
  /**
   * The file is one the destination already has as it is (knownFile): it is not read, and
   * the destination keeps its current copy (no sink is returned).
   */
  readonly known?: KnownFile;
}

export interface PushSession {
  /**
   * Called for each entry in manifest order. A destination that follows files while they
   * are scanned returns a FileSink for them; others return undefined and rebuild from
   * chunks at commit.
   */
  entry(meta: EntryMeta, options?: EntryOptions): Promise<FileSink | undefined>;
  /**
   * A destination that follows a tree's manifest while it is written (a server stage)
   * receives its body bytes here, in order (ManifestWriterOptions.onBody); the view is
   * valid only during the call.
   */
  readonly manifestBody?: (bytes: Uint8Array) => void;
  /**
   * Makes the push visible: the chunks are durable, the manifest (a complete, verified file
   * at manifestPath) is stored under the target's name, and the target is replaced
   * atomically. Nothing is visible before this resolves. Entries of an existing target tree
   * that the pushed tree lacks are kept, unless the destination was opened to delete them: it
   * then resolves with those it removed (`deleted`, by path in the tree).
   */
  commit(manifestPath: string, header: ManifestHeader, options?: OpOptions): Promise<{ readonly deleted?: readonly string[] } | void>;
  /** Discards everything staged; the previous version stays as it was. */
  abort(): Promise<void>;
}
