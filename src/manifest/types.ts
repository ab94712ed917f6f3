import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';

/**
 * The in-memory model of a manifest (docs/FORMAT.md is the byte-level contract).
 * A manifest is a header followed by entries. A `file` manifest has exactly one entry,
 * of type file, with path ''. A `tree` manifest has one entry per directory, file and
 * symlink below the tree's root (the root itself is not an entry), parents before
 * children, in a deterministic order (sorted by path bytes within each directory).
 */
export type ManifestKind = 'file' | 'tree';
export type EntryType = 'file' | 'dir' | 'symlink';

export interface ManifestHeader {
  readonly formatVersion: number;
  readonly kind: ManifestKind;
  readonly digestAlgorithm: DigestAlgorithm;
  readonly chunker: ChunkerSpec;
  /** Sum of the sizes of all file entries. */
  readonly totalBytes: number;
  readonly entryCount: number;
  readonly chunkCount: number;
  /**
   * file kind: the digest of the whole file's content (what `b3sum`/`sha256sum` print).
   * tree kind: the digest of the manifest body (all entry records, in order).
   */
  readonly digest: Uint8Array;
}

export interface EntryMeta {
  readonly type: EntryType;
  /** '/'-separated, relative, normalized; '' only for the single entry of a file manifest. */
  readonly path: string;
  /** Permission bits (mode & 0o7777). */
  readonly mode: number;
  /** Modification time in milliseconds since the epoch (integer). */
  readonly mtimeMs: number;
  /**
   * File size in bytes as declared when the entry starts: from stat for files on disk,
   * -1 when not known in advance (stdin). The authoritative size of a file entry is the
   * one in its 'entryEnd' event (the sum of its chunk lengths). 0 for dirs and symlinks.
   */
  readonly size: number;
  /** Symlink target, verbatim; only for symlinks. */
  readonly linkTarget?: string;
}

/** One chunk of a file: its length and digest. Offsets are implied by the running sum. */
export interface ChunkRecord {
  readonly length: number;
  readonly digest: Uint8Array;
}

/** A fully materialized entry (size is the final size); only for small manifests and tests. */
export interface ManifestEntry extends EntryMeta {
  readonly chunks: readonly ChunkRecord[];
  /** Whole-file digest; file entries only. */
  readonly digest?: Uint8Array;
}

/**
 * What a streaming reader yields, in order: for each entry an 'entry' event; for files
 * then zero or more 'chunks' batches and one 'entryEnd' with the whole-file digest.
 * The manifest's trailing checksum is checked after the last event: a consumer must treat
 * nothing as valid until iteration has completed without throwing.
 */
export type ManifestEvent =
  | { readonly kind: 'entry'; readonly meta: EntryMeta }
  | { readonly kind: 'chunks'; readonly records: readonly ChunkRecord[] }
  | { readonly kind: 'entryEnd'; readonly size: number; readonly digest: Uint8Array };
