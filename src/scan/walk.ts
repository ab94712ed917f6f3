import type { Dirent, Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { fromSystemError, InvalidArgumentError } from '../core/errors.js';
import type { EntryMeta } from '../manifest/types.js';

/** An entry of a source with where to read it. */
export interface SourceEntry {
  readonly meta: EntryMeta;
  /** Absolute path on disk. */
  readonly absPath: string;
}

/** Something a walk passed over (sockets, FIFOs, devices inside a tree), for the caller to report. */
export interface WalkSkip {
  readonly path: string;
  readonly reason: string;
}

function metaOf(st: Stats, path: string, type: EntryMeta['type'], linkTarget?: string): EntryMeta {
  return {
    type,
    path,
    mode: st.mode & 0o7777,
    mtimeMs: Math.trunc(st.mtimeMs),
    size: type === 'file' ? st.size : 0,
    ...(linkTarget !== undefined ? { linkTarget } : {}),
  };
}

/** lstat calls in flight ahead of the walk's position in a directory. */
const STAT_AHEAD = 32;

const byteOrder = (a: Dirent, b: Dirent): number => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));

/**
 * Walks a directory tree depth-first, parents before children, siblings in byte order of
 * their names: the manifest order. Symlinks are recorded, never followed. The root itself is
 * not an entry. Memory is bounded by the depth times the widest directory.
 */
export async function* walkTree(root: string, options: { signal?: AbortSignal; onSkip?: (s: WalkSkip) => void } = {}): AsyncGenerator<SourceEntry> {
  async function* walk(dirAbs: string, dirRel: string): AsyncGenerator<SourceEntry> {
    throwIfAborted(options.signal);
    let names: Dirent[];
    try {
      names = await readdir(dirAbs, { withFileTypes: true });
    } catch (err) {
      throw fromSystemError(err, dirAbs, 'read directory');
    }
    names.sort(byteOrder);
    // lstat runs up to STAT_AHEAD entries ahead of the one yielded: one at a time, a tree of
    // many small files waited a thread-pool round trip per entry.
    const stats: (Promise<Stats> | undefined)[] = new Array(names.length);
    const statFrom = (i: number): void => {
      for (let k = i; k < Math.min(names.length, i + STAT_AHEAD); k++) {
        if (stats[k]) continue;
        const p = lstat(join(dirAbs, names[k]!.name));
        p.catch(() => {}); // awaited in order below
        stats[k] = p;
      }
    };
    for (const [i, d] of names.entries()) {
      const abs = join(dirAbs, d.name);
      const rel = dirRel ? `${dirRel}/${d.name}` : d.name;
      if (d.name.includes('\\')) throw new InvalidArgumentError(`${abs}: names containing a backslash are not supported`);
      statFrom(i);
      let st: Stats;
      try {
        st = await stats[i]!;
        stats[i] = undefined;
      } catch (err) {
        throw fromSystemError(err, abs, 'stat');
      }
      if (st.isDirectory()) {
        yield { meta: metaOf(st, rel, 'dir'), absPath: abs };
        yield* walk(abs, rel);
      } else if (st.isFile()) {
        yield { meta: metaOf(st, rel, 'file'), absPath: abs };
      } else if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = await readlink(abs);
        } catch (err) {
          throw fromSystemError(err, abs, 'read link');
        }
        yield { meta: metaOf(st, rel, 'symlink', target), absPath: abs };
      } else {
        options.onSkip?.({ path: abs, reason: 'not a regular file, directory or symlink' });
      }
    }
  }
  yield* walk(root, '');
}
