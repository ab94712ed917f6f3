import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';

/**
 * The in-memory model of a manifest (docs/FORMAT.md is the byte-level contract).
 * A manifest is a header followed by entries. A `file` manifest has exactly one entry,
 * of type file, with path ''. A `tree` manifest has one entry per directory, file,
 * symlink, hard link, FIFO and device node below the tree's root, parents before
 * children, in a deterministic order (sorted by path bytes within each directory); from
 * format version 2 it may begin with the root's own entry (type dir, path ''), whose
 * attributes a consumer applies to the target directory itself and never lists as a child.
 */
export type ManifestKind = 'file' | 'tree';
/**
 * 'hardlink' (version 2): a further name of a file listed earlier in the same tree, whose
 * path is its linkTarget; it has no content or attributes of its own (they are the file's).
 * 'fifo', 'char', 'block' (version 2): a named pipe, a character or block device node.
 */
export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo' | 'char' | 'block';

/** One extended attribute: its full name, namespace included ('user.mime'), and raw value. */
export interface EntryXattr {
  readonly name: string;
  readonly value: Uint8Array;
}

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
  /**
   * Symlink target, verbatim; only for symlinks. For a hardlink: the path of the file entry,
   * earlier in the same tree, whose file this entry is another name of.
   */
  readonly linkTarget?: string;
  // ---- format version 2; absent when read from a version 1 manifest ----
  /** Nanoseconds past mtimeMs (0..999,999): the mtime is mtimeMs * 10^6 + this, in ns. */
  readonly mtimeExtraNs?: number;
  /** Numeric owner and group; absent when not recorded (stdin, version 1). */
  readonly uid?: number;
  readonly gid?: number;
  /** The owner's user and group names where the source knew them (mapped back by name when applied). */
  readonly owner?: string;
  readonly group?: string;
  /** Device number of a char or block entry. */
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** Extended attributes, sorted by name bytes, names unique (POSIX ACLs are system.posix_acl_*). */
  readonly xattrs?: readonly EntryXattr[];
}

/** The entry's mtime in nanoseconds since the epoch, at the precision the manifest has. */
export function mtimeNsOf(meta: Pick<EntryMeta, 'mtimeMs' | 'mtimeExtraNs'>): bigint {
  return BigInt(meta.mtimeMs) * 1_000_000n + BigInt(meta.mtimeExtraNs ?? 0);
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
