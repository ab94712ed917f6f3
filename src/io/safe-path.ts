/**
 * Paths under a root that must never be left through a symbolic link: the server's
 * `<root>/files`, where remote clients name targets.
 *
 * Node has no openat(2)/O_NOFOLLOW walk, so confinement is checked by name: every
 * component below the root is lstat'ed (never stat'ed), a symlink or a non-directory on
 * the way is refused, and missing directories are created one level at a time (mkdir
 * without `recursive`, which would follow a symlink planted on the way) and lstat'ed again
 * to confirm they are real directories. Callers check before anything is created and again
 * just before the final rename; what remains is the race with a local user who swaps a
 * directory for a symlink between the check and the use, which a name-based API cannot
 * close (and which needs write access to the root itself).
 */
import { lstat, mkdir } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { AlreadyExistsError, fromSystemError, InvalidArgumentError } from '../core/errors.js';

/** Linux PATH_MAX: the longest path a system call takes, in bytes, its NUL included. */
export const PATH_MAX_BYTES = 4096;
/** Linux NAME_MAX: the longest single path component, in bytes. */
export const NAME_MAX_BYTES = 255;

/**
 * What confinedParent made: directories created for a target, outermost first, so a failed
 * staging can remove them again.
 */
export type CreatedDirs = string[];

/**
 * Checks `segments` (a relative path below `root`, already free of '.', '..' and empty
 * segments) against the confinement rules without creating anything: each existing
 * component before the last must be a real directory, and the last, if it exists, must not
 * be a symlink. Stops at the first missing component (nothing below it exists). Throws
 * InvalidArgumentError for a symlink, AlreadyExistsError for a non-directory on the way;
 * messages name the relative path only (a server's clients are not told where its root is).
 */
export async function checkConfined(root: string, segments: readonly string[]): Promise<void> {
  await walk(root, segments, undefined);
}

/**
 * checkConfined, creating the missing directories before the last segment one level at a
 * time (pushed into `created`, outermost first). Resolves the last segment's full path.
 */
export async function confinedParent(root: string, segments: readonly string[], created: CreatedDirs): Promise<string> {
  return walk(root, segments, created);
}

async function walk(root: string, segments: readonly string[], created: CreatedDirs | undefined): Promise<string> {
  let p = root;
  let missing = false;
  for (let i = 0; i < segments.length; i++) {
    const last = i === segments.length - 1;
    p = join(p, segments[i]!);
    const rel = segments.slice(0, i + 1).join('/');
    if (!missing) {
      const st = await lstatOrUndefined(p, rel);
      if (st?.isSymbolicLink()) throw new InvalidArgumentError(`"${rel}" is a symbolic link on the server: targets are never written through symbolic links`);
      if (st && !last && !st.isDirectory()) throw new AlreadyExistsError(`"${rel}" is not a directory on the server: it cannot hold "${segments.join('/')}"`);
      if (st) continue;
      missing = true;
    }
    if (last || created === undefined) break;
    try {
      await mkdir(p, { mode: 0o777 });
      created.push(p);
    } catch (err) {
      // Made meanwhile by a concurrent commit of a neighbour: confirmed below like ours.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(err, rel, 'create directory');
    }
    const st = await lstatOrUndefined(p, rel);
    if (!st?.isDirectory()) throw new InvalidArgumentError(`"${rel}" changed while it was being created on the server (now not a directory)`);
    missing = false;
  }
  return p;
}

async function lstatOrUndefined(p: string, rel: string) {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromSystemError(err, rel, 'stat');
  }
}

/** The UTF-8 length of a path or name, the unit of PATH_MAX_BYTES and NAME_MAX_BYTES. */
export function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** `target`'s path below `root`, by segment (the target must lie below it). */
export function segmentsBelow(root: string, target: string): string[] {
  const rel = relative(root, target);
  if (rel === '' || rel.startsWith('..') || rel.split(sep).some((s) => s === '..' || s === '')) {
    throw new InvalidArgumentError(`${target}: not below ${root}`);
  }
  return rel.split(sep);
}

/**
 * Answers whether a path below `root` is reached through real directories only (every
 * component before the last lstat'ed as a directory, none a symlink), caching each
 * directory's answer: a tree's files come in pre-order, so this costs an lstat per
 * directory, not per file. For reading or linking the files of an existing tree by the
 * paths of a manifest: the tree's own symlinks (or a directory a user swapped for one)
 * must not lead there to files outside it.
 */
export class RealDirs {
  private readonly known = new Map<string, Promise<boolean>>();

  constructor(private readonly root: string) {}

  /** `rel`: a '/'-separated path below the root; '' and single segments are always inside. */
  async reaches(rel: string): Promise<boolean> {
    const slash = rel.lastIndexOf('/');
    return slash < 0 ? true : this.isRealDir(rel.slice(0, slash));
  }

  private isRealDir(dir: string): Promise<boolean> {
    let answer = this.known.get(dir);
    if (answer === undefined) {
      answer = (async () => {
        if (!(await this.reaches(dir))) return false;
        const st = await lstat(join(this.root, ...dir.split('/'))).catch(() => undefined);
        return st !== undefined && st.isDirectory();
      })();
      this.known.set(dir, answer);
    }
    return answer;
  }
}
