/**
 * The tree manifests this user last pushed to servers, kept in the user's cache
 * (XDG_CACHE_HOME/xfer/pushed or ~/.cache/xfer/pushed, beside the pull snapshots), one file
 * per server and target. The next push of the same target asks the server for its current
 * manifest with `If-None-Match` naming the kept one's tag (docs/PROTOCOL.md): a tree pushed
 * again from here is then read from disk instead of travelling whole (a 1.3 MB manifest for
 * 7,643 files, several round trips of slow start on a long link). Only a hint, as the
 * snapshots are: a kept manifest is read through and checked (checksum, body digest) before
 * it is used, and anything wrong with it or with the cache only means the manifest is
 * fetched as usual.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { isXferError } from '../core/errors.js';
import { openManifest, type ManifestReader } from '../manifest/reader.js';
import { manifestTag } from '../manifest/tag.js';
import type { HttpStore } from '../store/http/store.js';
import { validateManifestName } from '../store/names.js';
import type { OpOptions } from '../store/store.js';
import { keepNewest } from '../reconstruct/snapshot.js';
import { userCacheDir } from '../core/cache-dir.js';

/** Kept manifests at most; the oldest (by when they were kept) go first. */
export const MAX_PUSHED_MANIFESTS = 64;

/** The cache's directory; undefined where there is no cache directory to use. */
export function pushedDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const cache = userCacheDir(env);
  return cache && join(cache, 'pushed');
}

function pushedFile(dir: string, base: URL, name: string): string {
  return join(dir, `${createHash('sha256').update(`${base.origin}\0${name}`).digest('hex').slice(0, 32)}.manifest`);
}

/**
 * Keeps `manifestPath`, the tree manifest just committed to `name` at `base`, for the next
 * push (atomically: a copy, then a rename). Best effort: never fails.
 */
export async function rememberPushed(base: URL, name: string, manifestPath: string): Promise<void> {
  const dir = pushedDir();
  if (!dir) return;
  const file = pushedFile(dir, base, name);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await copyFile(manifestPath, tmp);
    await rename(tmp, file);
    await prune(dir);
  } catch {
    await rm(tmp, { force: true }).catch(() => {});
  }
}

/** Removes the oldest kept manifests beyond MAX_PUSHED_MANIFESTS (and leftover temporaries of ours). */
function prune(dir: string): Promise<void> {
  return keepNewest(dir, /^[0-9a-f]{32}\.manifest(\.\d+\.tmp)?$/, MAX_PUSHED_MANIFESTS);
}

/**
 * The kept manifest at `file`, opened, with its header read and its tag; undefined if there
 * is none (or it is a file's, or its header is unreadable: then it is removed). Read through
 * the returned handle: a push that keeps another meanwhile replaces the name, not what this
 * handle reads.
 */
async function openKept(file: string, options: OpOptions): Promise<{ fh: FileHandle; reader: ManifestReader; tag: string } | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const reader = await openManifest(fh.createReadStream({ start: 0, autoClose: false }), { signal: options.signal });
    const tag = manifestTag(reader.header);
    if (tag !== undefined) return { fh, reader, tag };
    await reader.close();
  } catch (err) {
    if (isXferError(err, 'XFER_ABORTED')) {
      await fh.close();
      throw err;
    }
  }
  await fh.close();
  await rm(file, { force: true }).catch(() => {});
  return undefined;
}

/** Whether `reader`'s body reads through intact (checksum, digest); an abort is thrown. */
async function readsThrough(reader: ManifestReader): Promise<boolean> {
  try {
    for await (const _ of reader.events());
    return true;
  } catch (err) {
    if (isXferError(err, 'XFER_ABORTED')) throw err;
    return false;
  }
}

/**
 * The current manifest of target `name` on `store`'s server, as getManifest gives it: read
 * from the kept copy when the server says that is still its current one and the copy reads
 * through intact, else fetched. The server is asked while the copy is read through.
 */
export async function currentManifest(store: HttpStore, name: string, options: OpOptions = {}): Promise<AsyncIterable<Uint8Array>> {
  const dir = pushedDir();
  const file = dir && pushedFile(dir, store.base, name);
  const kept = file ? await openKept(file, options) : undefined;
  if (!file || !kept) return store.getManifest(name, options);
  const intact = readsThrough(kept.reader);
  intact.catch(() => {}); // awaited below, whatever the server answers
  let body: AsyncIterable<Uint8Array> | undefined;
  let ok: boolean;
  try {
    body = await store.client.getManifestUnlessTag(validateManifestName(name), kept.tag, options.signal);
    ok = await intact;
  } catch (err) {
    await intact.catch(() => {});
    await kept.fh.close();
    throw err;
  }
  if (!ok) await rm(file, { force: true }).catch(() => {});
  if (body || !ok) {
    await kept.fh.close();
    return body ?? store.getManifest(name, options);
  }
  return kept.fh.createReadStream({ start: 0, autoClose: true });
}
