/**
 * The validity rules of manifest entries, shared by the writer (where a violation is the
 * caller's mistake: InvalidArgumentError) and the reader (where it means the bytes are
 * corrupt: ManifestCorruptError). Every check returns a one-line message naming what is
 * wrong, or null; the caller picks the error class.
 */
import {
  FORMAT_VERSION,
  FORMAT_VERSION_1,
  MAX_ENTRY_XATTR_BYTES,
  MAX_LINK_TARGET_BYTES,
  MAX_MODE,
  MAX_MTIME_EXTRA_NS,
  MAX_OWNER_NAME_BYTES,
  MAX_PATH_BYTES,
  MAX_XATTR_NAME_BYTES,
  MAX_XATTR_VALUE_BYTES,
  MAX_XATTRS_PER_ENTRY,
  NO_ID,
  isDevice,
} from './format.js';
import type { EntryMeta, ManifestKind } from './types.js';

const SLASH = 0x2f;

/** `entry "a/b"`, or `the file entry` for the single entry of a file manifest. */
export function describeEntry(path: string): string {
  return path === '' ? 'the file entry' : `entry ${JSON.stringify(path)}`;
}

/** Lone UTF-16 surrogates cannot be encoded as UTF-8 and would not survive a round trip. */
const LONE_SURROGATE_RE = /\p{Cs}/u;

/**
 * Problems of a tree entry path: '/'-separated, relative, 1..MAX_PATH_BYTES UTF-8 bytes,
 * every segment non-empty and neither '.' nor '..', no NUL, no backslash.
 */
export function pathProblem(path: string): string | null {
  if (path === '') return 'entry path is empty';
  // Messages are built only for a problem: a tree manifest's parse checks every path.
  const q = { toString: () => JSON.stringify(path) };
  if (LONE_SURROGATE_RE.test(path)) return `entry path ${q} is not valid Unicode`;
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) return `entry path ${q} is longer than ${MAX_PATH_BYTES} bytes`;
  if (path.includes('\0')) return `entry path ${q} contains a NUL byte`;
  if (path.includes('\\')) return `entry path ${q} contains a backslash`;
  if (path.startsWith('/')) return `entry path ${q} is absolute`;
  if (path.endsWith('/')) return `entry path ${q} ends with '/'`;
  for (const segment of path.split('/')) {
    if (segment === '') return `entry path ${q} has an empty segment`;
    if (segment === '.' || segment === '..') return `entry path ${q} has a '${segment}' segment`;
  }
  return null;
}

/**
 * Whether a scan records an xattr of this name: `user.*`, `security.*`, `trusted.*` and the
 * POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`), as rsync -AX does. Other
 * `system.*` names are the file system's own views (NFSv4 ACLs, ...), not carried.
 */
export function recordedXattr(name: string): boolean {
  return /^(user\.|security\.|trusted\.|system\.posix_acl_(access|default)$)/.test(name);
}

const V1_TYPES: ReadonlySet<string> = new Set(['file', 'dir', 'symlink']);
const V2_TYPES: ReadonlySet<string> = new Set(['file', 'dir', 'symlink', 'hardlink', 'fifo', 'char', 'block']);

/**
 * Problems of the root entry of a tree manifest (version 2: type dir, path '', first), given
 * how many entries came before it; null also for any entry that is not at path ''.
 */
export function rootProblem(meta: EntryMeta, kind: ManifestKind, version: number, entriesBefore: number): string | null {
  if (kind !== 'tree' || meta.path !== '') return null;
  if (version === FORMAT_VERSION_1) return 'entry path is empty';
  if (entriesBefore > 0) return 'the root entry (path "") must be the first entry';
  if (meta.type !== 'dir') return `the root entry (path "") must be a dir, not a ${meta.type}`;
  return null;
}

/** Whether `s` is a string that UTF-8 can carry whole, without NUL, of 1..max bytes. */
function nameProblem(s: unknown, max: number): string | null {
  if (typeof s !== 'string' || s === '') return 'is empty or not a string';
  if (LONE_SURROGATE_RE.test(s)) return 'is not valid Unicode';
  if (s.includes('\0')) return 'contains a NUL byte';
  if (Buffer.byteLength(s, 'utf8') > max) return `is longer than ${max} bytes`;
  return null;
}

const isU32 = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffff_ffff;

/** Problems of the version 2 attributes of an entry (all optional). */
function attributeProblem(meta: EntryMeta, what: { toString(): string }): string | null {
  const { type, mtimeExtraNs, uid, gid, owner, group, devMajor, devMinor, xattrs } = meta;
  if (mtimeExtraNs !== undefined && !(Number.isInteger(mtimeExtraNs) && mtimeExtraNs >= 0 && mtimeExtraNs <= MAX_MTIME_EXTRA_NS)) {
    return `${what} has mtime nanoseconds ${mtimeExtraNs} outside 0..${MAX_MTIME_EXTRA_NS}`;
  }
  if (uid !== undefined && !(isU32(uid) && uid !== NO_ID)) return `${what} has uid ${uid} outside 0..${NO_ID - 1}`;
  if (gid !== undefined && !(isU32(gid) && gid !== NO_ID)) return `${what} has gid ${gid} outside 0..${NO_ID - 1}`;
  const ownerProblem = owner === undefined ? null : nameProblem(owner, MAX_OWNER_NAME_BYTES);
  if (ownerProblem !== null) return `${what} has an owner name that ${ownerProblem}`;
  const groupProblem = group === undefined ? null : nameProblem(group, MAX_OWNER_NAME_BYTES);
  if (groupProblem !== null) return `${what} has an group name that ${groupProblem}`;
  if (isDevice(type)) {
    if (!isU32(devMajor) || !isU32(devMinor)) return `${what} is a ${type} device without a valid device number`;
  } else if (devMajor !== undefined || devMinor !== undefined) {
    return `${what} is a ${type} and cannot have a device number`;
  }
  if (xattrs !== undefined) {
    if (!Array.isArray(xattrs)) return `${what} has xattrs that are not a list`;
    if (xattrs.length > MAX_XATTRS_PER_ENTRY) return `${what} has ${xattrs.length} xattrs (at most ${MAX_XATTRS_PER_ENTRY})`;
    let total = 0;
    let previous: Buffer | undefined;
    for (const x of xattrs) {
      const p = nameProblem(x?.name, MAX_XATTR_NAME_BYTES);
      if (p !== null) return `${what} has an xattr name that ${p}`;
      if (!(x.value instanceof Uint8Array)) return `${what} has xattr ${JSON.stringify(x.name)} without a byte value`;
      if (x.value.length > MAX_XATTR_VALUE_BYTES) return `${what} has xattr ${JSON.stringify(x.name)} of ${x.value.length} bytes (at most ${MAX_XATTR_VALUE_BYTES})`;
      const name = Buffer.from(x.name, 'utf8');
      if (previous !== undefined && Buffer.compare(previous, name) >= 0) return `${what} has xattrs not sorted by name or repeated (${JSON.stringify(x.name)})`;
      previous = name;
      total += name.length + x.value.length;
    }
    if (total > MAX_ENTRY_XATTR_BYTES) return `${what} has ${total} bytes of xattrs (at most ${MAX_ENTRY_XATTR_BYTES})`;
  }
  return null;
}

/**
 * Problems of an entry's metadata in a manifest of `kind` and format `version`, except, in
 * a tree manifest, the path's own rules (pathProblem), its place in the order (EntryOrder)
 * and the root entry's (rootProblem). `meta.size` is the declared size.
 */
export function metaProblem(meta: EntryMeta, kind: ManifestKind, version = FORMAT_VERSION): string | null {
  const { type, path, mode, mtimeMs, size, linkTarget } = meta;
  if (!(version === FORMAT_VERSION_1 ? V1_TYPES : V2_TYPES).has(type)) return `unknown entry type ${JSON.stringify(type)}`;
  if (typeof path !== 'string') return 'entry path must be a string';
  // Described only in a message: every entry of a manifest read or written is checked.
  const what = { toString: () => describeEntry(path) };
  if (kind === 'file') {
    if (type !== 'file') return `the entry of a file manifest must be a file, not a ${type}`;
    if (path !== '') return `the entry of a file manifest must have the path "", not ${JSON.stringify(path)}`;
  }
  if (!Number.isInteger(mode) || mode < 0 || mode > MAX_MODE) return `${what} has mode ${mode} outside 0..0o7777`;
  if (!Number.isSafeInteger(mtimeMs)) return `${what} has a modification time ${mtimeMs} that is not a safe integer`;
  if (type === 'file') {
    if (size !== -1 && !(Number.isSafeInteger(size) && size >= 0)) return `${what} has an invalid declared size ${size}`;
  } else if (size !== 0) {
    return `${what} is a ${type} with size ${size} (must be 0)`;
  }
  if (type === 'symlink') {
    if (typeof linkTarget !== 'string' || linkTarget === '') return `${what} is a symlink without a target`;
    if (LONE_SURROGATE_RE.test(linkTarget)) return `${what} has a symlink target that is not valid Unicode`;
    if (Buffer.byteLength(linkTarget, 'utf8') > MAX_LINK_TARGET_BYTES) {
      return `${what} has a symlink target longer than ${MAX_LINK_TARGET_BYTES} bytes`;
    }
    if (linkTarget.includes('\0')) return `${what} has a symlink target containing a NUL byte`;
  } else if (type === 'hardlink') {
    // Only within the tree, to a name listed before: a consumer links to what it made itself.
    if (typeof linkTarget !== 'string') return `${what} is a hardlink without the path of its file`;
    const p = pathProblem(linkTarget);
    if (p !== null) return `${what} is a hardlink to an invalid path: ${p}`;
    if (comparePaths(linkTarget, path) >= 0) return `${what} is a hardlink to ${JSON.stringify(linkTarget)}, which is not listed before it`;
  } else if (linkTarget !== undefined) {
    return `${what} is a ${type} and cannot have a link target`;
  }
  if (version === FORMAT_VERSION_1) return null;
  return attributeProblem(meta, what);
}

/**
 * Orders UTF-8 path bytes the way a tree manifest lists entries: segment by segment, each
 * segment by its bytes, a path before every path below it. That is a pre-order walk with
 * siblings sorted by name bytes. It equals plain byte order with '/' counted as lower than
 * any other byte (segments cannot contain NUL, the only lower byte).
 */
export function comparePathBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return (x === SLASH ? 0 : x) - (y === SLASH ? 0 : y);
  }
  return a.length - b.length;
}

/** comparePathBytes for strings: sorts a tree's paths into the order a manifest needs. */
export function comparePaths(a: string, b: string): number {
  return comparePathBytes(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Checks, entry by entry, that a tree manifest's paths are unique, sorted (comparePathBytes)
 * and that each entry's parent directory came before it. Because the order is a pre-order
 * walk, the only directories a new entry may be placed in are those on the path of the
 * previous entry, so this needs the previous path only: memory stays O(path length)
 * however many entries a tree has.
 */
export class EntryOrder {
  private readonly prev = Buffer.alloc(MAX_PATH_BYTES);
  private prevLength = -1;
  private prevIsDir = false;

  /** `bytes` is the UTF-8 encoding of `path`, a path that passed pathProblem. */
  check(path: string, bytes: Uint8Array, isDir: boolean): string | null {
    const problem = this.problem(path, bytes);
    if (problem !== null) return problem;
    this.prev.set(bytes);
    this.prevLength = bytes.length;
    this.prevIsDir = isDir;
    return null;
  }

  private problem(path: string, bytes: Uint8Array): string | null {
    const prev = this.prev.subarray(0, Math.max(this.prevLength, 0));
    if (this.prevLength >= 0) {
      const order = comparePathBytes(bytes, prev);
      if (order === 0) return `duplicate entry path ${JSON.stringify(path)}`;
      if (order < 0) {
        return `entry ${JSON.stringify(path)} is out of order after ${JSON.stringify(prev.toString('utf8'))} (entries are sorted by path, parents first)`;
      }
    }
    const parentLength = bytes.lastIndexOf(SLASH);
    if (parentLength < 0) return null;
    const samePrefix = prev.length >= parentLength && prev.compare(bytes, 0, parentLength, 0, parentLength) === 0;
    const insidePrev = samePrefix && prev.length > parentLength && prev[parentLength] === SLASH;
    const isPrev = samePrefix && prev.length === parentLength;
    if (insidePrev || (isPrev && this.prevIsDir)) return null;
    const parent = JSON.stringify(path.slice(0, path.lastIndexOf('/')));
    if (isPrev) return `entry ${JSON.stringify(path)} is inside ${parent}, which is not a directory`;
    return `parent directory ${parent} of entry ${JSON.stringify(path)} is not listed before it`;
  }
}
