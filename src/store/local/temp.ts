/**
 * The local store's temp files (`<dir>/tmp/`): names that say whose they are, and the
 * removal at open of what crashed writers left. Temp files are never read by name.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { mapBounded } from '../../core/window.js';
import { ownerGone, OWNER_TAG } from '../../io/owner.js';
import { FS_CONCURRENCY, readDirNames } from './fs.js';

/** Temp files older than this are crash leftovers; open removes them. */
export const STALE_TEMP_AGE_MS = 60 * 60 * 1000;

/**
 * Temp names are `<host>~<pid>-<12 hex>-<n>.tmp`: the owner tag (io/owner.ts) says whose
 * they are, so that open removes a dead writer's at once (removeStaleTempFiles); the
 * random part keeps processes sharing a store (even with equal pids, in containers) from
 * picking the same name; 'wx' opens would fail loudly if they did.
 */
const TEMP_PREFIX = `${OWNER_TAG}-${randomBytes(6).toString('hex')}`;
/** A temp name of ours; group 1 is its owner tag. */
const TEMP_NAME_RE = /^([A-Za-z0-9_.-]+~[0-9]+)-[0-9a-f]{12}-[0-9]+\.tmp$/;
let tempCounter = 0;

/** A new temp file name in `tempDir` (temp.ts). */
export function newTempPath(tempDir: string): string {
  tempCounter += 1;
  return path.join(tempDir, `${TEMP_PREFIX}-${tempCounter}.tmp`);
}

/**
 * Removes crash leftovers: temp files whose name says their writer is a dead process of
 * this host (ownerGone), at once, and any other temp file (another host's, a live
 * process's, a name not ours) once older than STALE_TEMP_AGE_MS. Best effort: a
 * leftover is harmless (never read by name), so a file that cannot be removed, as in
 * a read-only store, is left alone.
 */
export async function removeStaleTempFiles(tempDir: string, signal: AbortSignal | undefined): Promise<void> {
  // A store copied without its tmp/ gets one back if it is writable; a read-only one needs none.
  await mkdir(tempDir, { recursive: true }).catch(() => undefined);
  const cutoffMs = Date.now() - STALE_TEMP_AGE_MS;
  const names = await readDirNames(tempDir, signal);
  await mapBounded(names, FS_CONCURRENCY, signal, async (name) => {
    const file = path.join(tempDir, name);
    try {
      const s = await lstat(file);
      const owner = TEMP_NAME_RE.exec(name)?.[1];
      const writerGone = owner !== undefined && ownerGone(owner);
      if (s.isFile() && (writerGone || s.mtimeMs < cutoffMs)) await unlink(file);
    } catch {
      // See above: leaving a leftover in place is always safe.
    }
  });
}
