/**
 * The start-up sweep of staging copies that dead server processes left under `files/`.
 *
 * A server killed while it rebuilt a target (a stage, a commit) leaves its staging copy
 * beside the target: `.xfer-<stem>.<host>~<pid>-<12 hex>.tmp` (or `.tmp.old`, or since tree
 * swaps exchange, the old tree under the `.tmp` name). Staging removes such copies only
 * when the same target is staged again; a restarted server sweeps them all once, in the
 * background, while it serves.
 *
 * Contract: removes only entries whose name is a staging name of this host
 * (reconstruct/staging.ts stagingOwnerPid) and whose owner process is gone (another
 * host's, a live process's, this process's are kept); never follows a symlink (a
 * symlinked directory is not entered, and the way to each removal is checked again just
 * before it, io/safe-path.ts); visits at most SWEEP_MAX_ENTRIES entries and
 * SWEEP_MAX_DEPTH levels; never throws (an entry that cannot be read or removed is left
 * for Staging's own sweep); stops when `signal` aborts (the server closing).
 */
import { opendir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../io/owner.js';
import { checkConfined } from '../io/safe-path.js';
import { STAGING_PREFIX, stagingOwnerPid } from '../reconstruct/staging.js';
import type { ServerLogger } from './log.js';

/** Directory entries the sweep looks at, at most (a huge files/ is swept in part: the rest waits for Staging's sweep). */
export const SWEEP_MAX_ENTRIES = 1_000_000;
/** Directory levels below files/ the sweep enters, at most (PATH_MAX allows about 2,000). */
export const SWEEP_MAX_DEPTH = 256;

export interface SweepResult {
  /** Staging copies removed. */
  readonly removed: number;
  /** Directory entries looked at. */
  readonly visited: number;
  /** Whether it stopped at a bound or on abort before seeing everything. */
  readonly partial: boolean;
}

/** Sweeps `filesDir` (see the module comment). Resolves when done; never rejects. */
export async function sweepDeadStagings(filesDir: string, options: { signal?: AbortSignal; log?: ServerLogger } = {}): Promise<SweepResult> {
  let removed = 0;
  let visited = 0;
  let partial = false;
  // Depth first with an explicit stack: path segments below filesDir.
  const stack: string[][] = [[]];
  while (stack.length > 0) {
    if (options.signal?.aborted || visited >= SWEEP_MAX_ENTRIES) {
      partial = true;
      break;
    }
    const segments = stack.pop()!;
    const dir = join(filesDir, ...segments);
    let entries;
    try {
      entries = await opendir(dir);
    } catch {
      continue; // gone or unreadable meanwhile: nothing of ours to reach there
    }
    try {
      for await (const e of entries) {
        if (options.signal?.aborted || ++visited > SWEEP_MAX_ENTRIES) {
          partial = true;
          break;
        }
        const pid = e.name.startsWith(STAGING_PREFIX) ? stagingOwnerPid(e.name) : undefined;
        if (pid !== undefined) {
          if (pid === process.pid || processAlive(pid)) continue;
          try {
            // The way here was a directory when listed; a directory on it may have been
            // swapped for a symlink since (a tree commit): then nothing is removed.
            await checkConfined(filesDir, [...segments, e.name]);
            await rm(join(dir, e.name), { recursive: true, force: true });
            removed++;
          } catch (err) {
            options.log?.debug({ entry: [...segments, e.name].join('/'), error: (err as Error).message }, 'dead staging copy not removed');
          }
        } else if (e.isDirectory() && !e.name.startsWith(STAGING_PREFIX)) {
          // isDirectory() is the entry's own type: a symlink to a directory is not entered.
          if (segments.length < SWEEP_MAX_DEPTH) stack.push([...segments, e.name]);
          else partial = true;
        }
      }
    } catch {
      // The directory went away while it was read: skip the rest of it.
    }
  }
  const result = { removed, visited, partial };
  options.log?.[removed > 0 ? 'info' : 'debug'](result, 'start-up sweep of dead servers\' staging copies done');
  return result;
}
