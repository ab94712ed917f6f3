import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromSystemError } from '../core/errors.js';
import { OWNER_TAG, ownerGone } from './owner.js';

/** Prefixes of the temporary directories xfer makes, each followed by `<host>~<pid>-<random>`. */
export const TEMP_PREFIXES = ['xfer-push-', 'xfer-pull-'] as const;
export type TempPrefix = (typeof TEMP_PREFIXES)[number];

/** `<host>~<pid>-<random>`: host names here hold no '~' (see io/owner.ts). */
const OWNED_NAME_RE = /^([^~]+~\d+)-[^~]+$/;

/** Temporary directories of this process not yet removed: removed at exit, however it comes. */
const live = new Set<string>();
let exitHookInstalled = false;

/**
 * A new private directory under the system's temp directory (TMPDIR), named
 * `<prefix><host>~<pid>-<random>`, failing with a one-line error. The caller removes it
 * (removeTempDir); if it does not, the process's exit does, and if the process is killed
 * (kill -9), the next makeTempDir on this host removes it once the pid is gone.
 */
export async function makeTempDir(prefix: TempPrefix): Promise<string> {
  await removeOrphanedTempDirs();
  let dir: string;
  try {
    dir = await mkdtemp(join(tmpdir(), `${prefix}${OWNER_TAG}-`));
  } catch (err) {
    throw fromSystemError(err, tmpdir(), 'create a temporary directory');
  }
  live.add(dir);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const d of live) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}

/** Removes a directory made by makeTempDir; never fails (a leftover is removed later). */
export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true }).catch(() => {});
  live.delete(dir);
}

/**
 * Removes xfer's temporary directories (TEMP_PREFIXES) whose owner is a dead process of
 * this host. Best effort: another host's, a live process's, and ones named otherwise (made
 * by older versions: their owner is unknown) are left alone.
 */
export async function removeOrphanedTempDirs(): Promise<void> {
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return;
  }
  for (const name of names) {
    const prefix = TEMP_PREFIXES.find((p) => name.startsWith(p));
    const owner = prefix && OWNED_NAME_RE.exec(name.slice(prefix.length))?.[1];
    if (owner && ownerGone(owner)) await rm(join(tmpdir(), name), { recursive: true, force: true }).catch(() => {});
  }
}
