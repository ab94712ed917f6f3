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
 *   <dir>/set-aside                   chunks found corrupt, one JSON line each (digest,
 *                                     pack, offset): their bytes stay in the pack, the
 *                                     index records of those places no longer count, and
 *                                     the next put stores them anew (local/set-aside.ts)
 *   <dir>/gc/marks.json               packs a gc marked for deletion, and when (local/gc.ts)
 *   <dir>/gc/lock                     held by a running gc
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
 *
 * The code, one file per job under local/: store.ts (LocalStore, composing the others),
 * layout.ts (paths, store.json and versions), temp.ts (temp names, crash leftovers),
 * manifests.ts, commit.ts (the put/commit pipeline), writer-pool.ts (pack writers),
 * pack-file.ts (pack I/O with O_DIRECT), pack-reader.ts (open packs, read-ahead),
 * pack-index.ts (index loading and refresh), loose.ts (version 1 chunk files),
 * set-aside.ts (the list of chunks found corrupt), verify-chunks.ts (many chunks read
 * back in pack order, for verify), fs.ts.
 * The pack format itself is pack.ts, apart, for any backend to reuse.
 */
import { resolve } from 'node:path';
import { storePaths } from './local/layout.js';
import { LocalManifests } from './local/manifests.js';
import type { ManifestStore } from './store.js';

export { LocalStore, SET_ASIDE_RECHECK_MS, type ChunkLocation, type LocalStoreOpenOptions } from './local/store.js';
export { SET_ASIDE_FILE } from './local/set-aside.js';
export { STORE_FORMAT, STORE_VERSION } from './local/layout.js';
export { STALE_TEMP_AGE_MS } from './local/temp.js';
export { COMMIT_BATCH_BYTES, COMMIT_BATCH_CHUNKS, MAX_UNCOMMITTED_AGE_MS } from './local/commit.js';

/**
 * The manifests of the local store in `dir` alone, without opening its chunks (no pack
 * index is loaded): for callers that only look at targets (is a name a pushed target,
 * what does a store list). Reads see what a LocalStore would; a store that does not exist
 * has no manifests (getManifest: NotFoundError, listManifests: none).
 */
export function localManifests(dir: string): ManifestStore {
  const paths = storePaths(resolve(dir));
  return new LocalManifests(paths.dir, paths.manifestDir, paths.tempDir, new Set());
}
