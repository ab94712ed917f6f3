import { lstat as lstatCallback, type BigIntStats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { fromSystemError, InvalidArgumentError } from '../core/errors.js';
import { groupName, listXattrs, userName } from '../io/sys.js';
import { MAX_ENTRY_XATTR_BYTES, MAX_XATTR_NAME_BYTES, MAX_XATTR_VALUE_BYTES, MAX_XATTRS_PER_ENTRY } from '../manifest/format.js';
import type { EntryMeta, EntryXattr } from '../manifest/types.js';
import { recordedXattr } from '../manifest/rules.js';
import { escapeName, strictUtf8 } from './names.js';

/** An entry of a source with where to read it. */
export interface SourceEntry {
  readonly meta: EntryMeta;
  /** Absolute path on disk. */
  readonly absPath: string;
  /** The mtime as lstat gave it, at full precision (meta's is whole milliseconds). */
  readonly mtimeExactMs: number;
}

/**
 * Something a walk passed over, for the caller to report: a socket, FIFO or device inside
 * a tree (as rsync skips them), or an entry that cannot be carried (`lost`): a name, or a
 * symlink target, that is not valid UTF-8. A transfer that lost entries is partial.
 */
export interface WalkSkip {
  /** The path on disk, invalid bytes escaped (scan/names.ts escapeName). */
  readonly path: string;
  readonly reason: string;
  /** True if the entry is a file, directory or symlink that the copy will lack. */
  readonly lost: boolean;
}

const NS_PER_MS = 1_000_000n;

/** Names of ids, looked up once each per process (a tree has few owners). */
const userNames = new Map<bigint, string | undefined>();
const groupNames = new Map<bigint, string | undefined>();

/**
 * The xattrs of `abs` a manifest records (user.*, and as root security.*, trusted.* and
 * the POSIX ACLs: whatever listXattrs may read), sorted by name bytes. One that a manifest
 * cannot hold (a name of invalid UTF-8, beyond the format's limits) fails the scan with a
 * message naming it: leaving it out silently would lose it.
 */
function xattrsOf(abs: string): EntryXattr[] {
  let all;
  try {
    all = listXattrs(abs);
  } catch (err) {
    throw fromSystemError(err, abs, 'read extended attributes');
  }
  const out: EntryXattr[] = [];
  let total = 0;
  for (const x of all) {
    if (!recordedXattr(x.name)) continue;
    const nameBytes = Buffer.byteLength(x.name, 'utf8');
    if (nameBytes > MAX_XATTR_NAME_BYTES || x.value.length > MAX_XATTR_VALUE_BYTES) {
      throw new InvalidArgumentError(`${abs}: extended attribute ${JSON.stringify(x.name)} is larger than a manifest holds (${MAX_XATTR_NAME_BYTES}-byte names, ${MAX_XATTR_VALUE_BYTES}-byte values)`);
    }
    total += nameBytes + x.value.length;
    out.push({ name: x.name, value: x.value });
  }
  if (out.length > MAX_XATTRS_PER_ENTRY || total > MAX_ENTRY_XATTR_BYTES) {
    throw new InvalidArgumentError(`${abs}: has more extended attributes than a manifest holds (${MAX_XATTRS_PER_ENTRY}, ${MAX_ENTRY_XATTR_BYTES} bytes)`);
  }
  return out.sort((a, b) => Buffer.compare(Buffer.from(a.name, 'utf8'), Buffer.from(b.name, 'utf8')));
}

/**
 * An entry's metadata from its lstat (bigint: nanoseconds and full ids): permission bits,
 * mtime to the nanosecond, owner and group with their names, a device's number, and its
 * xattrs (read from `abs`). Used for every entry of a tree, its root and a single file.
 */
export function entryMetaOf(abs: string, st: BigIntStats, path: string, type: EntryMeta['type'], linkTarget?: string, numericIds = false): EntryMeta {
  let ms = st.mtimeNs / NS_PER_MS;
  if (ms * NS_PER_MS > st.mtimeNs) ms -= 1n; // floor, also before 1970
  const extraNs = Number(st.mtimeNs - ms * NS_PER_MS);
  if (!userNames.has(st.uid)) userNames.set(st.uid, userName(Number(st.uid)));
  if (!groupNames.has(st.gid)) groupNames.set(st.gid, groupName(Number(st.gid)));
  const owner = numericIds ? undefined : userNames.get(st.uid);
  const group = numericIds ? undefined : groupNames.get(st.gid);
  const xattrs = type === 'hardlink' ? [] : xattrsOf(abs);
  let device = {};
  if (type === 'char' || type === 'block') {
    const r = st.rdev;
    device = { devMajor: Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn)), devMinor: Number((r & 0xffn) | ((r >> 12n) & ~0xffn)) };
  }
  return {
    type,
    path,
    mode: Number(st.mode & 0o7777n),
    mtimeMs: Number(ms),
    size: type === 'file' ? Number(st.size) : 0,
    ...(linkTarget !== undefined ? { linkTarget } : {}),
    ...(extraNs !== 0 ? { mtimeExtraNs: extraNs } : {}),
    uid: Number(st.uid),
    gid: Number(st.gid),
    ...(owner !== undefined ? { owner } : {}),
    ...(group !== undefined ? { group } : {}),
    ...device,
    ...(xattrs.length > 0 ? { xattrs } : {}),
  };
}

/** lstat of a source path as entryMetaOf needs it. */
export async function lstatExact(abs: string): Promise<BigIntStats> {
  try {
    return await lstat(abs, { bigint: true });
  } catch (err) {
    throw fromSystemError(err, abs, 'stat');
  }
}

/** lstat calls in flight ahead of the walk's position in a directory. */
const STAT_AHEAD = 32;

/** A directory entry: its name's bytes, and the name if they are valid UTF-8. */
interface DirName {
  readonly raw: Buffer;
  readonly name: string | undefined;
}

const byteOrder = (a: DirName, b: DirName): number => Buffer.compare(a.raw, b.raw);

/** lstat through the callback API: about half the main-thread cost of fs/promises' (measured on 8,600 entries). */
function lstatCb(path: string): Promise<BigIntStats> {
  return new Promise((resolve, reject) => lstatCallback(path, { bigint: true }, (err, st) => (err ? reject(err) : resolve(st))));
}

/** A directory being walked: its sorted entries, the lstats started ahead, the position. */
interface DirFrame {
  readonly abs: string;
  readonly rel: string;
  readonly names: DirName[];
  readonly stats: (Promise<BigIntStats> | undefined)[];
  next: number;
}

export interface WalkOptions {
  readonly signal?: AbortSignal;
  readonly onSkip?: (s: WalkSkip) => void;
  /**
   * Entries to leave out, with everything under them, asked with the entry's absolute
   * path: a push's own destination inside the tree it reads (its target, store and staging
   * copies change while the walk reads them). Left out silently, as an rsync --exclude.
   */
  readonly exclude?: (absPath: string) => boolean;
  /**
   * The user's --exclude/--include rules (scan/filter.ts), asked with the entry's path in
   * the tree once its type is known: true leaves it out, and a directory's contents with it.
   */
  readonly excludes?: (path: string, isDir: boolean) => boolean;
  /** rsync --numeric-ids: record owners and groups by number only, without their names. */
  readonly numericIds?: boolean;
}

/**
 * Walks a directory tree depth-first, parents before children, siblings in byte order of
 * their names: the manifest order. The first entry is the root's own (type dir, path '').
 * Symlinks are recorded, never followed; FIFOs and device nodes are entries; sockets are
 * skipped (onSkip), as rsync skips them. The second and later names of a file with several
 * links in the tree are hardlink entries naming the first (rsync -H); only files whose
 * link count is above 1 are remembered, each until all its names are seen. Memory is
 * bounded by the depth times the widest directory, plus those files. One generator with an
 * explicit stack: nested generators (yield* per level) cost every entry a resumption per
 * level of depth.
 */
export async function* walkTree(root: string, options: WalkOptions = {}): AsyncGenerator<SourceEntry> {
  const { exclude, numericIds } = options;
  /** Files with more links than seen so far, by device and inode: their first path and the names still to come. */
  const linked = new Map<string, { path: string; left: bigint }>();
  const rootSt = await lstatExact(root);
  yield { meta: entryMetaOf(root, rootSt, '', 'dir', undefined, numericIds), absPath: root, mtimeExactMs: Number(rootSt.mtimeNs) / 1e6 };
  const rootAbs = exclude ? resolve(root) : '';
  const open = async (abs: string, rel: string): Promise<DirFrame> => {
    throwIfAborted(options.signal);
    let raw: Buffer[];
    try {
      // As bytes: a name that is not valid UTF-8 would come back altered (see names.ts).
      raw = await readdir(abs, { encoding: 'buffer' });
    } catch (err) {
      throw fromSystemError(err, abs, 'read directory');
    }
    const names = raw.map((r) => ({ raw: r, name: strictUtf8(r) }));
    names.sort(byteOrder);
    return { abs, rel, names, stats: new Array(names.length), next: 0 };
  };
  // lstat runs up to STAT_AHEAD entries ahead of the one yielded: one at a time, a tree of
  // many small files waited a thread-pool round trip per entry.
  const statFrom = (f: DirFrame, i: number): void => {
    for (let k = i; k < Math.min(f.names.length, i + STAT_AHEAD); k++) {
      const name = f.names[k]!.name;
      if (f.stats[k] || name === undefined) continue;
      const p = lstatCb(join(f.abs, name));
      p.catch(() => {}); // awaited in order below
      f.stats[k] = p;
    }
  };
  const stack: DirFrame[] = [await open(root, '')];
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    if (f.next === f.names.length) {
      stack.pop();
      continue;
    }
    const i = f.next++;
    const { raw, name } = f.names[i]!;
    if (name === undefined) {
      options.onSkip?.({ path: join(f.abs, escapeName(raw)), reason: 'its name is not valid UTF-8, which a manifest cannot hold', lost: true });
      continue;
    }
    const abs = join(f.abs, name);
    const rel = f.rel ? `${f.rel}/${name}` : name;
    if (exclude?.(join(rootAbs, rel))) continue;
    if (name.includes('\\')) throw new InvalidArgumentError(`${abs}: names containing a backslash are not supported`);
    statFrom(f, i);
    let st: BigIntStats;
    try {
      st = await f.stats[i]!;
      f.stats[i] = undefined;
    } catch (err) {
      throw fromSystemError(err, abs, 'stat');
    }
    if (options.excludes?.(rel, st.isDirectory())) continue;
    const mtimeExactMs = Number(st.mtimeNs) / 1e6;
    if (st.isDirectory()) {
      yield { meta: entryMetaOf(abs, st, rel, 'dir', undefined, numericIds), absPath: abs, mtimeExactMs };
      stack.push(await open(abs, rel));
    } else if (st.isFile()) {
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        const first = linked.get(key);
        if (first) {
          if (--first.left === 0n) linked.delete(key);
          yield { meta: entryMetaOf(abs, st, rel, 'hardlink', first.path, numericIds), absPath: abs, mtimeExactMs };
          continue;
        }
        linked.set(key, { path: rel, left: st.nlink - 1n });
      }
      yield { meta: entryMetaOf(abs, st, rel, 'file', undefined, numericIds), absPath: abs, mtimeExactMs };
    } else if (st.isSymbolicLink()) {
      let targetBytes: Buffer;
      try {
        targetBytes = await readlink(abs, { encoding: 'buffer' });
      } catch (err) {
        throw fromSystemError(err, abs, 'read link');
      }
      const target = strictUtf8(targetBytes);
      if (target === undefined) {
        options.onSkip?.({ path: abs, reason: `its target ${escapeName(targetBytes)} is not valid UTF-8, which a manifest cannot hold`, lost: true });
        continue;
      }
      yield { meta: entryMetaOf(abs, st, rel, 'symlink', target, numericIds), absPath: abs, mtimeExactMs };
    } else if (st.isFIFO()) {
      yield { meta: entryMetaOf(abs, st, rel, 'fifo', undefined, numericIds), absPath: abs, mtimeExactMs };
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      yield { meta: entryMetaOf(abs, st, rel, st.isCharacterDevice() ? 'char' : 'block', undefined, numericIds), absPath: abs, mtimeExactMs };
    } else {
      options.onSkip?.({ path: abs, reason: st.isSocket() ? 'a socket, which cannot be copied (rsync skips them too)' : 'not a file, directory, symlink, FIFO or device', lost: false });
    }
  }
}
