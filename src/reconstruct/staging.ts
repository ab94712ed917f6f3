import { createHash, randomBytes } from 'node:crypto';
import { isZeroBytesView, nonZeroRuns } from '../chunker/zero.js';
import { closeSync, constants, fchmodSync, fchownSync, futimesSync, open as openCallback, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import type { FileHandle } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { chmod, copyFile, lchown, link, lstat, mkdir, open, readdir, readlink, rename, rm, rmdir, symlink, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { AlreadyExistsError, fromSystemError, InvalidArgumentError, SpecialFileError, VerifyFailedError } from '../core/errors.js';
import { escapeRegExp } from '../core/regexp.js';
import { DirectBlockWriter, DIRECT_MIN_FILE_BYTES, openDirect, type CloneRange } from '../io/direct.js';
import { checkConfined, confinedParent, segmentsBelow, type CreatedDirs } from '../io/safe-path.js';
import { OWNER_HOST, processAlive } from '../io/owner.js';
import { fsyncPath, syncFilesystem } from '../io/sync.js';
import { cloneRange, cloneUnsupported, exchangePaths, listXattrs, makeNode, setTimesNs, setXattr } from '../io/sys.js';
import { mtimeNsOf, type EntryMeta, type ManifestKind } from '../manifest/types.js';
import { applyAttributes, applyXattrs, attributePolicy, hasAttributes, localOwner, setTimes, utimeArg, type AttributeOptions, type AttributePolicy } from './attributes.js';

/** Temp names beside the target start with this, so they are recognisable and ignorable. */
export const STAGING_PREFIX = '.xfer-';

/**
 * Who owns a non-resumable staging: `<host>~<pid>`, in its name. A process killed
 * mid-push (kill -9, power loss) cannot remove its staging copy, which may be as large as
 * the target; the next staging of the same target on the same host removes those whose
 * process is gone. Another host's (a shared volume) are never touched; a live process
 * that reuses a dead one's pid only delays the removal. The tag never appears in error
 * messages (they name the target): a server's clients are not told its host name or pid.
 */
const HOST_TAG = OWNER_HOST.slice(0, 64);
const OWNER_TAG = `${HOST_TAG}~${process.pid}`;

/**
 * Target names up to this many UTF-8 bytes appear whole in staging names; longer ones are
 * cut and given a hash of the whole name (stagingStem), so that every staging name fits in
 * NAME_MAX (255 bytes) whatever the target's: `.xfer-` (6) + stem (<= 100) + owner part
 * (`.` host <= 64 `~` pid <= 10 `-` 12 hex `.tmp.old`: <= 97) = 203 at most.
 */
const STAGING_STEM_MAX_BYTES = 100;
/** Hex digits of the hash that stands for the cut part of a long name. */
const STAGING_STEM_HASH_CHARS = 16;
/** Random hex digits that keep concurrent stagings of one target apart. */
const STAGING_RANDOM_HEX_CHARS = 12;

/**
 * The part of a staging name that stands for target name `name`: the name itself, or for a
 * long one its first bytes (whole characters), `~` and a hash of the whole name.
 */
export function stagingStem(name: string): string {
  if (Buffer.byteLength(name, 'utf8') <= STAGING_STEM_MAX_BYTES) return name;
  const hash = createHash('sha256').update(name, 'utf8').digest('hex').slice(0, STAGING_STEM_HASH_CHARS);
  let cut = '';
  let bytes = 0;
  for (const ch of name) {
    const b = Buffer.byteLength(ch, 'utf8');
    if (bytes + b > STAGING_STEM_MAX_BYTES - 1 - STAGING_STEM_HASH_CHARS) break;
    cut += ch;
    bytes += b;
  }
  return `${cut}~${hash}`;
}

/**
 * The longest name a staging copy of target `name` (its last segment) can have beside it:
 * a tree's `.tmp.old` with this process's owner tag (a resumable `.partial.prev` is shorter).
 */
export function maxStagingNameBytes(name: string): number {
  const owned = `${STAGING_PREFIX}${stagingStem(name)}.${OWNER_TAG}-${'0'.repeat(STAGING_RANDOM_HEX_CHARS)}.tmp.old`;
  const resumable = `${STAGING_PREFIX}${stagingStem(name)}.partial.prev`;
  return Math.max(Buffer.byteLength(owned, 'utf8'), Buffer.byteLength(resumable, 'utf8'));
}

export { utimeArg } from './attributes.js';

/**
 * Removes the non-resumable stagings of target `name` beside it whose owner on this host is
 * dead: exactly `.xfer-<stem>.<host>~<pid>-<12 hex>.tmp`, or the same with `.old` (the old
 * tree of an interrupted commit). Anything else, such as a user's file that merely looks
 * similar, is never touched.
 */
async function removeOrphanedStagings(parent: string, name: string): Promise<void> {
  const ours = new RegExp(
    `^${escapeRegExp(`${STAGING_PREFIX}${stagingStem(name)}.${HOST_TAG}~`)}([1-9][0-9]{0,9})-[0-9a-f]{${STAGING_RANDOM_HEX_CHARS}}\\.tmp(?:\\.old)?$`,
  );
  let entries: string[];
  try {
    entries = await readdir(parent);
  } catch {
    return; // best effort: a leftover is harmless
  }
  for (const entry of entries) {
    const m = ours.exec(entry);
    if (!m) continue;
    const pid = Number(m[1]);
    if (!Number.isSafeInteger(pid) || pid === process.pid || processAlive(pid)) continue;
    await rm(join(parent, entry), { recursive: true, force: true }).catch(() => {});
  }
}

/** A non-resumable staging name of this host, of any target (see removeOrphanedStagings). */
const ANY_OWNED_STAGING = new RegExp(
  `^${escapeRegExp(STAGING_PREFIX)}.+\\.${escapeRegExp(HOST_TAG)}~([1-9][0-9]{0,9})-[0-9a-f]{${STAGING_RANDOM_HEX_CHARS}}\\.tmp(?:\\.old)?$`,
);

/** The pid of the process of this host whose staging copy `entry` (a name) is, if it is one. */
export function stagingOwnerPid(entry: string): number | undefined {
  const m = ANY_OWNED_STAGING.exec(entry);
  return m ? Number(m[1]) : undefined;
}

/**
 * The directories on the way to the targets of the stagings alive in this process, with
 * how many use each; and of those, the ones a staging made. A staging that fails removes
 * the directories made for it (or for another failed staging) that no live staging uses:
 * a server's stage discarded while the commit of the same path rebuilds in the directories
 * the stage made must not lose them, and the last of the two to fail removes them.
 */
const dirsInUse = new Map<string, number>();
const madeDirs = new Set<string>();

/** See madeDirs: `chain` is a staging's parent directory and those above it, innermost first. */
async function removeMadeDirs(chain: readonly string[]): Promise<void> {
  for (const d of chain) {
    if (!madeDirs.has(d) || dirsInUse.has(d)) return;
    madeDirs.delete(d);
    try {
      await rmdir(d);
    } catch {
      return; // not empty: it holds something else now, and so do the ones above
    }
  }
}

function useDirs(dirs: readonly string[]): void {
  for (const d of dirs) dirsInUse.set(d, (dirsInUse.get(d) ?? 0) + 1);
}

function releaseDirs(dirs: readonly string[]): void {
  for (const d of dirs) {
    const n = (dirsInUse.get(d) ?? 1) - 1;
    if (n > 0) dirsInUse.set(d, n);
    else dirsInUse.delete(d);
  }
}

/** `dir` and every directory above it. */
function ancestorsOf(dir: string): string[] {
  const out = [dir];
  for (let d = dir; d !== dirname(d); d = dirname(d)) out.push(dirname(d));
  return out;
}

/**
 * For tests only: runs just after the first step of a tree swap (the exchange, or the
 * fallback's rename of the old tree aside), where a test kills the process to check that
 * the target is still a complete tree.
 */
export const treeSwapTestSeam: { afterFirstStep?: () => void | Promise<void> } = {};

/**
 * Builds a new version of a target (a file or a whole tree) beside it, then swaps it in.
 *
 * A resumable staging (pulls) has a stable name, `.xfer-<name>.partial`, that survives an
 * interrupted run: a file is reopened as it was (its chunks are checked in place and only
 * the missing ones are fetched); a tree is moved to `<partial>.prev` and serves as an
 * in-place seed for the new partial tree. abort() keeps a resumable partial.
 *
 * Contract: until commit() resolves, the target is untouched; after it resolves, the target
 * is the complete new version, fsynced. A file replaces a file with one rename (atomic).
 * A tree replaces a tree in one atomic exchange of the two names (io/sys.ts exchangePaths),
 * then the old one is removed. Where exchange is unsupported, with two renames (old aside,
 * new in): a crash between them leaves both versions complete beside the target, never a
 * mix, but no tree at the target. abort() removes everything staged, and the directories
 * made for the target.
 *
 * Entries of the existing tree that the new version lacks are kept, as rsync keeps them
 * without --delete: just before the swap they are carried over into the staged tree, files
 * (and symlinks, FIFOs, ...) as hard links of themselves, directories made again with their
 * mode, owner and times around their carried-over contents (carryOver). Nothing is copied,
 * so nothing can be lost: until the swap they are in both trees, after it only the old
 * tree's names go. The staged-tree swap is kept over an update in place because it keeps
 * everything else true: the target is one version or the other, never a mix of files from
 * both, and an interrupted pull resumes from its partial tree. What it cannot keep: an
 * entry created in the existing tree by someone else between the carry-over and the swap
 * (milliseconds for a small tree) is in the old tree only, and removed with it. With
 * `deleteExtra` (--delete) the extras are not carried over but listed (commit's `deleted`).
 *
 * Staging names never exceed NAME_MAX (see stagingStem), and error messages name the target
 * (and an entry's place in it), never the staging copy.
 *
 * `confineTo` (the server's `<root>/files`): the target lies under that directory and is
 * reached without following any symlink (io/safe-path.ts): its parent directories are
 * checked and made one level at a time at create(), checked again before the swap, and the
 * target itself must not be a symlink.
 */
export class Staging {
  readonly target: string;
  readonly kind: ManifestKind;
  private readonly root: string;
  /** The previous partial tree of an interrupted resumable run, if any. */
  readonly previous: string | undefined;
  private readonly resumable: boolean;
  private readonly dirs: EntryMeta[] = [];
  /** Files of the existing tree whose link into the staged tree waits (see linkFile). */
  private readonly unlinked: { readonly meta: EntryMeta; readonly existing: string }[] = [];
  /** Hard links, made at commit once every file they name is on disk (small files are written at their finish). */
  private readonly hardlinks: EntryMeta[] = [];
  /** What of the manifest's attributes this staging applies (owners as root, xattr namespaces, devices). */
  readonly policy: AttributePolicy;
  /** Files opened and not yet finished: abort() closes them. */
  private readonly open = new Set<StagedFile>();
  /**
   * Files of a tree finished without their own fsync: commit() makes them durable all at
   * once (one syncfs; an fsync each where that is unavailable). A tree of thousands of
   * small files would otherwise spend milliseconds per file waiting for its fsync.
   */
  private readonly unsynced: string[] = [];
  private committed = false;
  /** See the class comment: whether entries the new version lacks are removed. */
  private readonly deleteExtra: boolean;
  /**
   * Whether the staged tree differs from the existing one: set by every entry that is not
   * already at the target as it is (a directory or symlink with other attributes, a file
   * written or copied rather than linked from its own path). A tree commit with nothing
   * changed keeps the existing tree and discards the staged one: a second pull of an
   * unchanged tree rewrites nothing, not even its directories.
   */
  private changed = false;
  /** See the class comment; the target's path below it, by segment. */
  private readonly confineTo: { readonly root: string; readonly segments: readonly string[] } | undefined;
  /** The directories this staging holds in use (see dirsInUse) until it is committed or aborted. */
  private usedDirs: readonly string[];

  private constructor(
    target: string,
    kind: ManifestKind,
    root: string,
    resumable: boolean,
    previous: string | undefined,
    confineTo: Staging['confineTo'],
    usedDirs: readonly string[],
    deleteExtra: boolean,
    policy: AttributePolicy,
    private readonly protect?: (path: string, isDir: boolean) => boolean,
  ) {
    this.policy = policy;
    this.deleteExtra = deleteExtra;
    this.usedDirs = usedDirs;
    this.target = target;
    this.kind = kind;
    this.root = root;
    this.resumable = resumable;
    this.previous = previous;
    this.confineTo = confineTo;
  }

  /**
   * `protect`: extras that --delete keeps all the same (rsync's protection of excluded
   * entries), asked with the path in the tree; a protected directory is kept whole.
   */
  /** Where the staging copy is (a file's, or a tree's directory) until it is swapped in. */
  get path(): string {
    return this.root;
  }

  static async create(
    target: string, kind: ManifestKind,
    options: { signal?: AbortSignal; resumable?: boolean; confineTo?: string; deleteExtra?: boolean; protect?: (path: string, isDir: boolean) => boolean; attributes?: AttributeOptions } = {},
  ): Promise<Staging> {
    throwIfAborted(options.signal);
    const confineTo = options.confineTo === undefined ? undefined : { root: options.confineTo, segments: segmentsBelow(options.confineTo, target) };
    // Checked before anything is created: a symlink on the way is refused, not followed.
    if (confineTo) await checkConfined(confineTo.root, confineTo.segments);
    await checkReplaceable(target, kind);
    const parent = dirname(target);
    const createdDirs: CreatedDirs = [];
    // In use before they are looked at: another staging's abort must not remove them
    // between this one's check and its first file in them.
    const usedDirs = ancestorsOf(parent);
    useDirs(usedDirs);
    const resumable = options.resumable ?? false;
    const stem = `${STAGING_PREFIX}${stagingStem(basename(target))}`;
    const root = resumable
      ? join(parent, `${stem}.partial`)
      : join(parent, `${stem}.${OWNER_TAG}-${randomBytes(STAGING_RANDOM_HEX_CHARS / 2).toString('hex')}.tmp`);
    let previous: string | undefined;
    try {
      if (confineTo) await confinedParent(confineTo.root, confineTo.segments, createdDirs);
      else {
        try {
          const first = await mkdir(parent, { recursive: true });
          if (first !== undefined) for (let d = parent; ; d = dirname(d)) {
            createdDirs.unshift(d);
            if (d === first || d === dirname(d)) break;
          }
        } catch (err) {
          throw fromSystemError(err, parent, 'create directory');
        }
      }
      for (const d of createdDirs) madeDirs.add(d);
      if (!resumable) await removeOrphanedStagings(parent, basename(target));
      if (kind === 'tree') {
        try {
          if (resumable) {
            const st = await lstat(root).catch(() => undefined);
            if (st) {
              previous = `${root}.prev`;
              await rm(previous, { recursive: true, force: true });
              if (st.isDirectory()) await rename(root, previous);
              else await rm(root, { force: true });
            }
          }
          await mkdir(root, { mode: 0o700 });
        } catch (err) {
          throw fromSystemError(err, target, 'create staging directory for');
        }
      } else if (resumable) {
        const st = await lstat(root).catch(() => undefined);
        if (st && !st.isFile()) await rm(root, { recursive: true, force: true });
      }
    } catch (err) {
      releaseDirs(usedDirs);
      for (const d of createdDirs) madeDirs.add(d);
      await removeMadeDirs(usedDirs);
      throw err;
    }
    return new Staging(target, kind, root, resumable, previous, confineTo, usedDirs, options.deleteExtra ?? false, attributePolicy(options.attributes), options.protect);
  }

  /**
   * Whether an earlier run of a resumable staging of `target` left anything beside it (its
   * partial tree, the previous one, an old tree aside): create() and commit() take those
   * over and remove them, so a caller that would skip staging stages instead.
   */
  static async hasLeftovers(target: string): Promise<boolean> {
    const root = join(dirname(target), `${STAGING_PREFIX}${stagingStem(basename(target))}.partial`);
    for (const p of [root, `${root}.prev`, `${root}.old`]) if (await exists(p)) return true;
    return false;
  }

  /** Where an entry goes in the target, for messages ('' is the target itself). */
  private shown(rel: string): string {
    return rel === '' ? this.target : join(this.target, ...rel.split('/'));
  }

  /** Where an interrupted run may have left this entry's bytes at their final offsets. */
  previousPathOf(rel: string): string | undefined {
    if (this.kind === 'file') return this.resumable ? this.root : undefined;
    return this.previous === undefined ? undefined : join(this.previous, ...rel.split('/'));
  }

  /** Where an entry of the existing target is ('' is the target itself). */
  private targetPathOf(rel: string): string {
    return rel === '' ? this.target : join(this.target, ...rel.split('/'));
  }

  /**
   * Whether the existing target holds entry `meta` as it is: of the right type (`is`), with
   * its attributes as this staging applies them (hasAttributes: mode, mtime to the
   * nanosecond, owner, xattrs; a time 1 µs off, as earlier versions wrote them, counts as a
   * change: rewritten once, exactly). Entries are made parents first, so a parent found a
   * real directory is not a symlink by the time its children are looked at.
   */
  private async isAtTarget(meta: EntryMeta, is: (st: BigIntStats) => boolean): Promise<boolean> {
    if (this.kind !== 'tree') return false;
    const path = this.targetPathOf(meta.path);
    const st = await lstat(path, { bigint: true }).catch(() => undefined);
    return st !== undefined && is(st) && hasAttributes(path, st, meta, this.policy);
  }

  /** Where an entry's staged copy lives ('' is the file of a file manifest). */
  pathOf(rel: string): string {
    return rel === '' ? this.root : join(this.root, ...rel.split('/'));
  }

  /** A directory entry; the root's own (path '') gives its attributes to the staged tree's root. */
  async mkdir(meta: EntryMeta): Promise<void> {
    if (!this.changed && !(await this.isAtTarget(meta, (st) => st.isDirectory()))) this.changed = true;
    if (meta.path === '') {
      this.dirs.push(meta); // the staged root exists; its attributes come at commit, last
      return;
    }
    const p = this.pathOf(meta.path);
    try {
      await mkdir(p, { mode: 0o700 });
    } catch (err) {
      throw fromSystemError(err, this.shown(meta.path), 'create directory');
    }
    this.dirs.push(meta);
  }

  async symlink(meta: EntryMeta): Promise<void> {
    if (!this.changed) {
      const same = await this.isAtTarget(meta, (st) => st.isSymbolicLink());
      if (!same || (await readlink(this.targetPathOf(meta.path)).catch(() => undefined)) !== meta.linkTarget) this.changed = true;
    }
    const p = this.pathOf(meta.path);
    try {
      await symlink(meta.linkTarget ?? '', p);
    } catch (err) {
      throw fromSystemError(err, this.shown(meta.path), 'create symlink');
    }
    await applyAttributes(p, meta, this.policy, this.shown(meta.path));
  }

  /**
   * A FIFO or device node (mknod). Devices only where the policy makes them (root, and not at
   * a trust boundary): elsewhere the entry is passed over, and counts as unchanged, since
   * the target never holds it (the manifest keeps it for a pull).
   */
  async node(meta: EntryMeta): Promise<void> {
    const kind = meta.type;
    if (kind !== 'fifo' && kind !== 'char' && kind !== 'block') throw new Error(`not a node entry: ${kind}`);
    if (kind !== 'fifo' && !this.policy.devices) return;
    if (!this.changed) {
      const same = await this.isAtTarget(meta, (st) => {
        if (kind === 'fifo') return st.isFIFO();
        const dev = (kind === 'char' ? st.isCharacterDevice() : st.isBlockDevice());
        return dev && deviceNumber(st.rdev) === `${meta.devMajor},${meta.devMinor}`;
      });
      if (!same) this.changed = true;
    }
    const p = this.pathOf(meta.path);
    try {
      makeNode(p, kind, meta.mode, meta.devMajor ?? 0, meta.devMinor ?? 0);
    } catch (err) {
      throw fromSystemError(err, this.shown(meta.path), `create ${kind === 'fifo' ? 'FIFO' : `${kind} device`}`);
    }
    await applyAttributes(p, meta, this.policy, this.shown(meta.path));
  }

  /**
   * A further name of a file of this tree (meta.linkTarget, listed before it): made at
   * commit, when every file is on disk. Unchanged if the existing target has both names as
   * links to one regular file.
   */
  async hardlink(meta: EntryMeta): Promise<void> {
    if (!this.changed) {
      const [a, b] = await Promise.all([
        lstat(this.targetPathOf(meta.path)).catch(() => undefined),
        lstat(this.targetPathOf(meta.linkTarget!)).catch(() => undefined),
      ]);
      if (!(a?.isFile() && b?.isFile() && a.ino === b.ino && a.dev === b.dev)) this.changed = true;
    }
    this.hardlinks.push(meta);
  }

  /**
   * Makes the hard links: each to the regular file this staging made for its linkTarget,
   * reached without following a symlink (checkConfined), never to anything else: a manifest
   * naming a path under one of its own symlinks cannot link a file outside the tree.
   */
  private async makeHardlinks(): Promise<void> {
    for (const meta of this.hardlinks) {
      const file = this.pathOf(meta.linkTarget!);
      const shown = this.shown(meta.path);
      const segments = meta.linkTarget!.split('/');
      try {
        await checkConfined(this.root, segments.slice(0, -1));
        const st = await lstat(file);
        if (!st.isFile()) throw new InvalidArgumentError(`${shown}: is a hard link to ${JSON.stringify(meta.linkTarget)}, which is not a regular file of the tree`);
        await link(file, this.pathOf(meta.path));
      } catch (err) {
        throw fromSystemError(err, shown, 'create hard link');
      }
    }
  }

  /**
   * Puts `existing` (a file of the version being replaced, known to hold exactly this entry:
   * same content, size and mtime) into the staging area as a hard link: nothing is read or
   * written, and the old version stays as it was until the swap. False if the link cannot
   * be made (a filesystem without hard links, say); the caller rebuilds or copies instead.
   *
   * While nothing of the tree has changed, and the file at its own path already has every
   * attribute of the entry, the link waits (`unlinked`): a commit that keeps the existing
   * tree then touches nothing (a link would change the file's ctime); one that swaps makes
   * it first, or a copy where links cannot be made.
   */
  async linkFile(meta: EntryMeta, existing: string, mode = meta.mode): Promise<boolean> {
    if (this.kind === 'tree' && !this.changed && existing === this.targetPathOf(meta.path)) {
      const st = await lstat(existing, { bigint: true }).catch(() => undefined);
      if (st?.isFile() && hasAttributes(existing, st, meta, this.policy, mode)) {
        this.unlinked.push({ meta: { ...meta, mode }, existing });
        return true;
      }
    }
    return this.linkNow(meta, existing, mode);
  }

  /** linkFile without waiting. */
  private async linkNow(meta: EntryMeta, existing: string, mode = meta.mode): Promise<boolean> {
    const p = this.pathOf(meta.path);
    try {
      await link(existing, p);
    } catch {
      return false;
    }
    // The content is the entry's; its other attributes (owner, xattrs, mode, a time off by
    // nanoseconds) are brought to the entry's where they differ, in place (rsync does the same).
    const st = await lstat(p, { bigint: true });
    if (!hasAttributes(p, st, meta, this.policy, mode)) {
      this.changed = true;
      await applyAttributes(p, { ...meta, mode }, this.policy, this.shown(meta.path), { existing: true });
    }
    return true;
  }

  /**
   * linkFile, or where links cannot be made, a copy of `existing` with the entry's mode and
   * mtime (made durable at commit, like written files).
   */
  async keepFile(meta: EntryMeta, existing: string): Promise<void> {
    if (await this.linkFile(meta, existing)) return;
    await this.copyFile(meta, existing);
  }

  /** keepFile's copy, where a link cannot be made. */
  private async copyFile(meta: EntryMeta, existing: string): Promise<void> {
    this.changed = true;
    const p = this.pathOf(meta.path);
    try {
      await copyFile(existing, p, constants.COPYFILE_EXCL);
      await applyAttributes(p, meta, this.policy, this.shown(meta.path));
      if (this.kind === 'tree') this.unsynced.push(p);
      else await fsyncPath(p, this.shown(meta.path));
    } catch (err) {
      throw fromSystemError(err, this.shown(meta.path), 'copy unchanged file');
    }
  }

  async openFile(meta: EntryMeta): Promise<StagedFile> {
    this.changed = true;
    const p = this.pathOf(meta.path);
    // A small file of a tree is assembled in memory and written at finish(): opened on the
    // thread pool, then a few synchronous calls. Through FileHandle, the open, write, chmod,
    // utimes and close of each file cost the main thread about 0.3 ms.
    if (this.kind === 'tree' && meta.size >= 0 && meta.size <= SMALL_STAGED_FILE_BYTES) {
      const f: StagedFile = new SmallStagedFile(p, this.shown(meta.path), meta, this.policy, () => this.open.delete(f), (path) => void this.unsynced.push(path));
      this.open.add(f);
      return f;
    }
    let fh: FileHandle;
    try {
      // A resumable file keeps what an interrupted run wrote; everything else starts empty.
      const flags = this.resumable && this.kind === 'file' ? constants.O_CREAT | constants.O_RDWR : constants.O_CREAT | constants.O_EXCL | constants.O_RDWR;
      fh = await open(p, flags, 0o600);
    } catch (err) {
      throw fromSystemError(err, this.shown(meta.path), 'create file');
    }
    // Zeros are not written where the file is still a hole (a sparse result, see
    // HandleStagedFile.write): all of a new file, beyond what an interrupted run left of a resumed one.
    let sparseFrom = 0;
    if (this.resumable && this.kind === 'file') {
      try {
        sparseFrom = (await fh.stat()).size;
      } catch (err) {
        await fh.close().catch(() => {});
        throw fromSystemError(err, this.shown(meta.path), 'stat');
      }
    }
    // Bulk data goes to disk through O_DIRECT (see io/direct.ts); small files and files of
    // unknown size (stdin) through the page cache.
    let direct: DirectBlockWriter | undefined;
    const sharing = new Sharing(fh.fd);
    // A stream (size -1, unknown until it ends) may be any size: written directly too.
    if (meta.size >= DIRECT_MIN_FILE_BYTES || meta.size < 0) {
      try {
        const dfh = await openDirect(p, 'w');
        if (dfh) direct = new DirectBlockWriter(dfh, meta.size < 0 ? Infinity : meta.size, sparseFrom, sharing.clone);
      } catch (err) {
        await fh.close().catch(() => {});
        throw fromSystemError(err, this.shown(meta.path), 'open file');
      }
    }
    const deferSync = this.kind === 'tree' ? (path: string) => void this.unsynced.push(path) : undefined;
    const resumed = this.resumable && this.kind === 'file';
    const f: StagedFile = new HandleStagedFile(fh, p, this.shown(meta.path), meta, this.policy, direct, () => this.open.delete(f), deferSync, resumed, sparseFrom, sharing);
    this.open.add(f);
    return f;
  }

  /** With deleteExtra: which extras go (all but the protected ones). */
  private mayDelete(): (path: string, isDir: boolean) => boolean {
    const protect = this.protect;
    return protect ? (path, isDir) => !protect(path, isDir) : () => true;
  }

  /**
   * Swaps the staged version in (see the class contract). Resolves with the entries of the
   * existing tree that the new version lacks and that were removed (`deleteExtra`), by path
   * in the tree, each directory after its contents; empty without deleteExtra (they are kept).
   */
  async commit(options: { signal?: AbortSignal } = {}): Promise<CommitResult> {
    throwIfAborted(options.signal);
    const extra: Extra = { deleted: [], dirs: [] };
    // Every entry is at the target as it is (files linked from their own paths): keep the
    // existing tree, unless --delete finds entries to remove. (A file replaced at the target
    // since it was linked is kept as it now is, as if replaced just after the swap.)
    if (this.kind === 'tree' && !this.changed && (await lstat(this.target).then((st) => st.isDirectory(), () => false))) {
      if (this.deleteExtra) {
        await carryOver(this.target, this.root, '', this.mayDelete(), extra, options.signal);
        // Files whose links wait are in the new version, not extras.
        const waiting = new Set(this.unlinked.map((u) => u.meta.path));
        const kept = extra.deleted.filter((p) => !waiting.has(p));
        extra.deleted.splice(0, extra.deleted.length, ...kept);
      }
      if (extra.deleted.length === 0) {
        await rm(this.root, { recursive: true, force: true });
        return this.finishCommit();
      }
      extra.deleted.length = 0;
    }
    // The waiting links (see linkFile): the new tree has these files, so before extras are
    // carried over or listed.
    for (const { meta, existing } of this.unlinked.splice(0)) {
      if (!(await sameFile(existing, meta))) {
        throw new VerifyFailedError(`${this.shown(meta.path)}: changed while the tree was being updated; run again`);
      }
      if (!(await this.linkNow(meta, existing))) await this.copyFile(meta, existing);
    }
    // Hard links before the extras are carried over (an extra must not take a name the new
    // version gives a link) and before the directories get their modes (a read-only one
    // would refuse them).
    await this.makeHardlinks();
    // Before the directories get their modes (a read-only one would refuse the links) and times.
    if (this.kind === 'tree' && (await exists(this.target))) {
      if (this.confineTo) await checkConfined(this.confineTo.root, this.confineTo.segments);
      await checkReplaceable(this.target, this.kind);
      await carryOver(this.target, this.root, '', this.deleteExtra && this.mayDelete(), extra, options.signal);
    }
    // Directory attributes last, deepest first (the root's own last of all), so writing
    // children does not disturb their times.
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const d = this.dirs[i]!;
      await applyAttributes(this.pathOf(d.path), d, this.policy, this.shown(d.path));
    }
    if (this.kind === 'tree') {
      if (!(await syncFilesystem(this.root))) {
        for (const f of this.unsynced) await fsyncPath(f, this.target);
        for (const d of this.dirs) await fsyncPath(this.pathOf(d.path), this.shown(d.path));
        for (const d of extra.dirs) await fsyncPath(this.pathOf(d), this.shown(d));
      }
      await fsyncPath(this.root, this.target);
    }
    // The renames go by name: the way to the target is checked again just before them.
    if (this.confineTo) await checkConfined(this.confineTo.root, this.confineTo.segments);
    await checkReplaceable(this.target, this.kind);
    const parent = dirname(this.target);
    if (this.kind === 'file') {
      try {
        // A staged file that is a hard link of the target itself (an unchanged file kept by
        // keepFile): rename(2) of two links to one file does nothing and would leave the
        // staging name behind. The target already is the file: drop the staging name.
        if (await sameInode(this.root, this.target)) await unlink(this.root);
        else await rename(this.root, this.target);
      } catch (err) {
        throw fromSystemError(err, this.target, 'replace');
      }
    } else {
      const old = await exists(this.target);
      const aside = `${this.root}.old`;
      let exchanged = false;
      try {
        // An earlier run of this staging (a resumable one keeps its name) killed while its
        // old tree was being removed leaves that old tree here; it would block the rename
        // (ENOTEMPTY) forever. It is ours and superseded by the verified tree being swapped in.
        await rm(aside, { recursive: true, force: true });
        // One step (renameat2 RENAME_EXCHANGE): the target is the old tree, then the new
        // one, never missing. The old tree is left at the staging name, removed below, or
        // after a kill as a dead owner's staging (removeOrphanedStagings, the server's
        // start-up sweep; a resumable partial is reused as a verified seed, then removed).
        // Two renames only where the kernel or file system cannot exchange.
        if (old) exchanged = exchangePaths(this.root, this.target);
        if (old && !exchanged) await rename(this.target, aside);
        await treeSwapTestSeam.afterFirstStep?.();
        if (!exchanged) await rename(this.root, this.target);
      } catch (err) {
        throw fromSystemError(err, this.target, 'replace');
      }
      await fsyncPath(parent);
      if (exchanged) await rm(this.root, { recursive: true, force: true });
      else if (old) await rm(aside, { recursive: true, force: true });
    }
    await fsyncPath(parent);
    return this.finishCommit(extra.deleted);
  }

  /** The target is the new version: let go of what the staging held. */
  private async finishCommit(deleted: readonly string[] = []): Promise<CommitResult> {
    this.committed = true;
    // The directories on the way now hold a target: no longer anyone's to remove.
    for (const d of this.usedDirs) madeDirs.delete(d);
    this.release();
    if (this.previous) await rm(this.previous, { recursive: true, force: true });
    // An earlier run killed between its two renames left its old tree aside: the target is
    // now the verified new version, also where this run kept the existing tree unchanged
    // and never reached the swap (soak seed 424243, case 132).
    if (this.kind === 'tree') await rm(`${this.root}.old`, { recursive: true, force: true });
    return { deleted };
  }

  /** Lets go of the directories held in use (once); returns them. */
  private release(): readonly string[] {
    const used = this.usedDirs;
    releaseDirs(used);
    this.usedDirs = [];
    return used;
  }

  /** Removes what was staged; a resumable staging keeps its partial for the next run. */
  async abort(): Promise<void> {
    if (this.committed) return;
    for (const f of [...this.open]) await f.close();
    if (this.previous) await rm(this.previous, { recursive: true, force: true }).catch(() => {});
    if (!this.resumable) await rm(this.root, { recursive: true, force: true }).catch(() => {});
    const used = this.release();
    if (!this.resumable) await removeMadeDirs(used);
  }
}

/**
 * A file being written into the staging area; positional writes in any order. Every byte
 * of the file must be passed to write() once, including bytes found already in place
 * (`inPlace`): a direct writer needs them to complete its blocks, a buffered one skips them.
 */
export interface StagedFile {
  readonly path: string;
  /** Whether writes bypass the page cache (O_DIRECT). */
  readonly isDirect: boolean;
  /**
   * `shared`: the bytes are the clone source's at the same offsets (see shareFrom): where
   * the file system can, the file shares that file's blocks instead of writing them.
   */
  write(data: Uint8Array, position: number, inPlace?: boolean, shared?: boolean): Promise<void>;
  /**
   * Names the older version (the existing target) whose blocks writes marked `shared` may
   * share (reflink); at most once, before the first write. A file that cannot (in memory,
   * another file system, ext4) ignores it and writes.
   */
  shareFrom(source: CloneSource): void;
  /**
   * For a writer that does not know which bytes the older version `path` holds (a local
   * push reads its source whole): opens it as the clone source, owned and closed by this
   * file, and compares every write with it at the same offsets; equal ranges are shared.
   * The comparing stops at the file system's first refusal to share (ext4: no reads
   * wasted after the first).
   */
  shareWithOlder(path: string): Promise<void>;
  /** Bytes shared with the clone source so far (not written). */
  readonly bytesShared: number;
  /**
   * Sets the final size, mode and mtime, fsyncs (or defers that to the tree's commit) and
   * closes. Resolves with the disk space the file takes (st_blocks; its size if unknown).
   */
  finish(size: number): Promise<number>;
  /** The size on disk so far (an interrupted run's partial). */
  size(): Promise<number>;
  /** Reads `length` bytes at `position`; fewer if the file is shorter. */
  readAt(length: number, position: number): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * Files of a tree up to this size are staged in memory (SmallStagedFile). Measured A/B,
 * alternating: at 64 KiB the bench tree (7,643 files, 35 KB on average) pushed in
 * 3.3-4.7 s locally and 4.0-4.2 s to a server, against 4.8-5.0 s and 4.8-4.9 s without;
 * at 1 MiB a DICOM series of 255 files of ~500 KB got slower (1.1-1.3 s against 0.8-1.1 s:
 * the extra copy and the synchronous writes of large files cost more than they save).
 */
export const SMALL_STAGED_FILE_BYTES = 64 * 1024;

/**
 * A small file of a tree: its bytes are assembled in memory and the file is created,
 * written, given its mode and mtime and closed in one go at finish(): created on the thread
 * pool, the rest with synchronous calls (each a few microseconds for a file this small).
 * Its fsync is left to the tree's commit. Nothing exists on disk before finish().
 */
const openFd = promisify(openCallback);

class SmallStagedFile implements StagedFile {
  readonly isDirect = false;
  readonly bytesShared = 0;
  private readonly data: Buffer;

  constructor(
    readonly path: string,
    /** Where the file goes in the target: what messages name. */
    private readonly shown: string,
    private readonly meta: EntryMeta,
    private readonly policy: AttributePolicy,
    private readonly onClose: () => void,
    private readonly deferSync: (path: string) => void,
  ) {
    this.data = Buffer.allocUnsafe(meta.size);
  }

  async write(data: Uint8Array, position: number): Promise<void> {
    if (position + data.length > this.data.length) {
      throw new VerifyFailedError(`${data.length} bytes at offset ${position} are beyond the file's declared size ${this.data.length}`);
    }
    this.data.set(data, position);
  }

  async finish(size: number): Promise<number> {
    try {
      if (size > this.data.length) throw new VerifyFailedError(`${this.shown}: ${size} bytes, declared ${this.data.length}`);
      let fd: number | undefined;
      try {
        // Opened on the thread pool: creating a file is the one expensive call (ext4 looks for a
        // free inode, which took 0.1-0.3 ms per file after many deletions, 0.9 s of a 7,643-file
        // tree on this thread). The rest is cheap, and one round trip costs less than four.
        fd = await openFd(this.path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
        for (let done = 0; done < size; ) done += writeSync(fd, this.data, done, size - done, done);
        // Owner before mode: chown clears the set-user-ID and set-group-ID bits.
        const { uid, gid } = localOwner(this.meta, this.policy);
        if (uid !== -1 || gid !== -1) fchownSync(fd, uid, gid);
        fchmodSync(fd, this.meta.mode);
        // An mtime with nanoseconds is set once, to the nanosecond, by finishAttributes below
        // (setTimes): a millisecond one here first would be one more system call per file.
        if ((this.meta.mtimeExtraNs ?? 0) === 0) futimesSync(fd, utimeArg(this.meta.mtimeMs), utimeArg(this.meta.mtimeMs));
      } catch (err) {
        throw fromSystemError(err, this.shown, 'write');
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
      await finishAttributes(this.path, this.meta, this.policy, this.shown);
      this.deferSync(this.path);
      return size;
    } finally {
      await this.close();
    }
  }

  /** Written whole at finish(), a few KiB: nothing worth sharing. */
  shareFrom(): void {}

  async shareWithOlder(): Promise<void> {}

  async size(): Promise<number> {
    return 0;
  }

  async readAt(): Promise<Buffer> {
    return Buffer.alloc(0);
  }

  async close(): Promise<void> {
    this.onClose();
  }
}

/**
 * What a write compared with the older version (shareWithOlder) is cut into: a changed
 * byte costs this much written instead of shared. Measured with a 4 KiB edit of 32 MiB on
 * XFS: whole writes (the push's pieces of several MiB) wrote 8.5 MB, 64 KiB pieces 0.2 MB.
 */
const COMPARE_PIECE_BYTES = 64 * 1024;

class HandleStagedFile implements StagedFile {
  readonly path: string;
  private readonly fh: FileHandle;
  private readonly meta: EntryMeta;
  private readonly direct: DirectBlockWriter | undefined;
  private readonly onClose: () => void;

  /** When set, finish() does not fsync but hands the path over (see Staging.unsynced). */
  private readonly deferSync: ((path: string) => void) | undefined;

  /** Opened over what an interrupted run left (may hold bytes beyond the new size). */
  private readonly resumed: boolean;

  /** Where the file goes in the target: what messages name. */
  private readonly shown: string;

  private readonly policy: AttributePolicy;

  /** From this offset on the file is a hole: zeros written there are skipped (see write()). */
  private readonly sparseFrom: number;

  /** The clone source of shared writes and what was shared (see shareFrom). */
  private readonly sharing: Sharing;

  constructor(fh: FileHandle, path: string, shown: string, meta: EntryMeta, policy: AttributePolicy, direct: DirectBlockWriter | undefined, onClose: () => void, deferSync?: (path: string) => void, resumed = true, sparseFrom = Infinity, sharing = new Sharing(fh.fd)) {
    this.sharing = sharing;
    this.sparseFrom = sparseFrom;
    this.policy = policy;
    this.resumed = resumed;
    this.fh = fh;
    this.path = path;
    this.shown = shown;
    this.meta = meta;
    this.direct = direct;
    this.onClose = onClose;
    this.deferSync = deferSync;
  }

  /** Whether writes bypass the page cache (O_DIRECT). */
  get isDirect(): boolean {
    return this.direct !== undefined;
  }

  shareFrom(source: CloneSource): void {
    this.sharing.source ??= source;
  }

  async shareWithOlder(path: string): Promise<void> {
    if (this.sharing.source) return;
    const source = await CloneSource.open(path);
    if (!source) return;
    // A file system already found unable to share: comparing would only cost reads.
    if (NO_CLONE_DEVICES.has(source.device)) {
      await source.close();
      return;
    }
    this.sharing.source = source;
    this.owned = source;
  }

  /** The clone source opened by shareWithOlder: compared with every write, closed with this file. */
  private owned: CloneSource | undefined;

  get bytesShared(): number {
    return this.sharing.bytes;
  }

  async write(data: Uint8Array, position: number, inPlace = false, shared = false): Promise<void> {
    if (!this.owned || shared || !this.sharing.active) return this.writeOnce(data, position, inPlace, shared);
    // Compared piece by piece (a push writes pieces of several MiB): the pieces equal to
    // the older version's are shared, the others written; neighbours of a kind go together.
    const older = this.owned;
    let from = 0;
    let same: boolean | undefined;
    for (let at = 0; at < data.length; ) {
      const end = Math.min(data.length, at + COMPARE_PIECE_BYTES - ((position + at) % COMPARE_PIECE_BYTES));
      const equal = await older.holds(data.subarray(at, end), position + at);
      if (same !== undefined && equal !== same) {
        await this.writeOnce(data.subarray(from, at), position + from, inPlace, same);
        from = at;
      }
      same = equal;
      at = end;
    }
    if (from < data.length) await this.writeOnce(data.subarray(from), position + from, inPlace, same ?? false);
  }

  private async writeOnce(data: Uint8Array, position: number, inPlace: boolean, shared: boolean): Promise<void> {
    if (this.direct) {
      try {
        return await this.direct.write(data, position, shared);
      } catch (err) {
        throw fromSystemError(err, this.shown, 'write');
      }
    }
    if (inPlace) return;
    // Where the file is still a hole, all-zero 4 KiB pieces are not written: they stay
    // holes (a sparse image lands sparse; finish() truncates to the size). Known zeros
    // (a view of zeroBytes(): zero chunks) are not even looked at.
    if (position >= this.sparseFrom && isZeroBytesView(data)) return;
    let runs: Array<[number, number]> = position >= this.sparseFrom ? nonZeroRuns(data, position) : [[0, data.length]];
    try {
      // The whole file system blocks of a shared chunk are shared; its edges are written.
      const got = shared ? this.sharing.clone(position, data.length) : undefined;
      if (got) runs = runs.flatMap(([from, to]): Array<[number, number]> => [[from, Math.min(to, got[0] - position)], [Math.max(from, got[1] - position), to]]).filter(([from, to]) => from < to);
      for (const [from, to] of runs) {
        for (let done = from; done < to; ) {
          const { bytesWritten } = await this.fh.write(data, done, to - done, position + done);
          done += bytesWritten;
        }
      }
    } catch (err) {
      throw fromSystemError(err, this.shown, 'write');
    }
  }

  /** Sets the final size, mode and mtime, fsyncs (or defers that to the tree's commit) and closes; resolves with st_blocks in bytes. */
  async finish(size: number): Promise<number> {
    try {
      // Shared blocks were compared, not written: the older version must not have changed since.
      if (this.owned && this.sharing.bytes > 0 && (await this.owned.changedSinceOpen())) {
        throw new VerifyFailedError(`${this.shown}: the existing file changed while its blocks were being shared; nothing replaced, run again`);
      }
      // Every byte below `size` was written or verified in place. A direct writer pads its
      // last block; a resumed partial of an older, longer version may have bytes beyond it;
      // a fresh buffered file is exactly `size` (no fstat per file for those).
      // Zeros left as holes at the end: the size comes from the truncate.
      if (this.direct) {
        await this.direct.finish(size);
        await this.fh.truncate(size);
      } else if ((this.resumed || this.sparseFrom < size) && (await this.fh.stat()).size !== size) await this.fh.truncate(size);
      const { uid, gid } = localOwner(this.meta, this.policy);
      if (uid !== -1 || gid !== -1) await this.fh.chown(uid, gid);
      await this.fh.chmod(this.meta.mode);
      await this.fh.utimes(utimeArg(this.meta.mtimeMs), utimeArg(this.meta.mtimeMs));
      await finishAttributes(this.path, this.meta, this.policy, this.shown, this.resumed);
      if (this.deferSync) this.deferSync(this.path);
      else await this.fh.datasync();
      // After the data is on its way: delayed allocation is counted by then (ext4, xfs).
      return (await this.fh.stat()).blocks * 512;
    } catch (err) {
      throw fromSystemError(err, this.shown, 'finish');
    } finally {
      await this.close();
    }
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  /** Reads `length` bytes at `position`; fewer if the file is shorter. */
  async readAt(length: number, position: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.fh.read(buf, 0, length, position);
    return bytesRead === length ? buf : buf.subarray(0, bytesRead);
  }

  async close(): Promise<void> {
    this.onClose();
    await this.owned?.close();
    await this.direct?.close();
    await this.fh.close().catch(() => {});
  }
}

/**
 * The older version of a file being staged (the existing target), open for sharing its
 * blocks (CloneRange): opened without following a symlink, a regular file only. Its
 * identity and change time are taken at open; a file changed after that (another writer
 * while a pull runs) may have handed over blocks that are no longer what was verified, so
 * the caller checks changedSinceOpen() and then reads the result back (reconstruct.ts).
 */
export class CloneSource {
  private constructor(
    private readonly fh: FileHandle,
    private readonly opened: BigIntStats,
  ) {}

  /** `path` open for sharing, or undefined (not a regular file, not there, not readable). */
  static async open(path: string): Promise<CloneSource | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      return undefined;
    }
    const st = await fh.stat({ bigint: true }).catch(() => undefined);
    if (!st?.isFile()) {
      await fh.close().catch(() => {});
      return undefined;
    }
    return new CloneSource(fh, st);
  }

  get fd(): number {
    return this.fh.fd;
  }

  /** The file system's device number (st_dev). */
  get device(): bigint {
    return this.opened.dev;
  }

  /** The file system's block size: what a shared range is aligned to. */
  get blockBytes(): number {
    return Number(this.opened.blksize) || 4096;
  }

  /** Whether the file holds exactly `data` at `position` (read and compared). */
  async holds(data: Uint8Array, position: number): Promise<boolean> {
    if (position + data.length > Number(this.opened.size)) return false;
    const buf = Buffer.allocUnsafe(data.length);
    const { bytesRead } = await this.fh.read(buf, 0, data.length, position).catch(() => ({ bytesRead: -1 }));
    return bytesRead === data.length && buf.equals(data);
  }

  /** Whether the file was written, truncated or replaced in place since it was opened. */
  async changedSinceOpen(): Promise<boolean> {
    const now = await this.fh.stat({ bigint: true }).catch(() => undefined);
    const was = this.opened;
    return !now || now.size !== was.size || now.mtimeNs !== was.mtimeNs || now.ctimeNs !== was.ctimeNs;
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/**
 * The file systems (st_dev) that refused to share blocks (ext4, tmpfs) in this process:
 * a local push does not compare its writes with the old version there (shareWithOlder).
 * A few entries at most (one per file system written to).
 */
const NO_CLONE_DEVICES = new Set<bigint>();

/**
 * The sharing of one staged file's blocks with its clone source: `clone` reflinks the
 * whole file system blocks of a range (CloneRange), and stops trying for good at the first
 * refusal that means "not here" (ext4, tmpfs, another file system: cloneUnsupported); the
 * caller writes what was not shared.
 */
class Sharing {
  source: CloneSource | undefined;
  /** Bytes shared so far. */
  bytes = 0;
  private refused = false;

  constructor(private readonly destFd: number) {}

  /** Whether sharing may still happen (a source, and no refusal yet). */
  get active(): boolean {
    return this.source !== undefined && !this.refused;
  }

  readonly clone: CloneRange = (offset, length) => {
    const source = this.source;
    if (!source || this.refused) return undefined;
    const block = source.blockBytes;
    const from = Math.ceil(offset / block) * block;
    const to = Math.floor((offset + length) / block) * block;
    if (to <= from) return undefined;
    try {
      cloneRange(source.fd, this.destFd, from, to - from);
    } catch (err) {
      if (!cloneUnsupported(err)) throw err;
      this.refused = true;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP') NO_CLONE_DEVICES.add(source.device);
      return undefined;
    }
    this.bytes += to - from;
    return [from, to];
  };
}

/**
 * What a staged file gets after its content, mode and millisecond time (set through its
 * descriptor): its xattrs, and its time to the nanosecond where it has nanoseconds past the
 * millisecond. `existing`: the file may hold xattrs of an earlier run (a resumed partial).
 */
async function finishAttributes(path: string, meta: EntryMeta, policy: AttributePolicy, shown: string, existing = false): Promise<void> {
  try {
    if (meta.xattrs?.length || existing) applyXattrs(path, meta, policy, existing);
    if ((meta.mtimeExtraNs ?? 0) !== 0) await setTimes(path, meta);
  } catch (err) {
    throw fromSystemError(err, shown, 'set attributes of');
  }
}

/** "major,minor" of a device number as glibc's gnu_dev_major/minor decode it. */
export function deviceNumber(rdev: bigint | number): string {
  const r = BigInt(rdev);
  const major = ((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn);
  const minor = (r & 0xffn) | ((r >> 12n) & ~0xffn);
  return `${major},${minor}`;
}

export interface CommitResult {
  /** Entries of the existing tree removed because the new version lacks them (deleteExtra). */
  readonly deleted: readonly string[];
}

/** What carryOver found: entries removed (deleteExtra), directories it made in the staged tree. */
interface Extra {
  readonly deleted: string[];
  readonly dirs: string[];
}

/**
 * Carries the entries of existing directory `from` that staged directory `to` lacks into
 * `to` (see the Staging class comment), or with `del` lists them in `extra.deleted`. An entry
 * the new version has replaces the old one whatever its type (a file where a directory was,
 * say); a directory in both is gone through. Only real directories are entered (readdir's
 * types are lstat's): a symlink is carried over as itself, never followed.
 */
async function carryOver(from: string, to: string, rel: string, del: false | ((path: string, isDir: boolean) => boolean), extra: Extra, signal?: AbortSignal): Promise<void> {
  let entries;
  try {
    entries = await readdir(from, { withFileTypes: true });
  } catch (err) {
    throw fromSystemError(err, from, 'read directory');
  }
  for (const e of entries) {
    throwIfAborted(signal);
    const src = join(from, e.name);
    const dst = join(to, e.name);
    const path = rel === '' ? e.name : `${rel}/${e.name}`;
    const staged = await lstat(dst).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw fromSystemError(err, src, 'stat');
    });
    if (staged) {
      if (staged.isDirectory() && e.isDirectory()) await carryOver(src, dst, path, del, extra, signal);
      continue;
    }
    if (del && del(path, e.isDirectory())) {
      if (e.isDirectory()) await listAll(src, path, extra.deleted);
      extra.deleted.push(path);
      continue;
    }
    try {
      if (!e.isDirectory()) {
        await link(src, dst);
        continue;
      }
      const st = await lstat(src, { bigint: true });
      await mkdir(dst, { mode: 0o700 });
      extra.dirs.push(path);
      await carryOver(src, dst, path, false, extra, signal);
      // Made again as it was: owner (as root), xattrs and ACLs, mode, times to the ns.
      if (process.getuid?.() === 0) await lchown(dst, Number(st.uid), Number(st.gid));
      for (const x of listXattrs(src)) setXattr(dst, x.name, x.value);
      await chmod(dst, Number(st.mode & 0o7777n));
      setTimesNs(dst, st.atimeNs, st.mtimeNs);
    } catch (err) {
      throw fromSystemError(err, src, 'keep (an entry the new version lacks)');
    }
  }
}

/** Every entry below directory `dir` (at `rel`), each directory after its contents. */
async function listAll(dir: string, rel: string, out: string[]): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = `${rel}/${e.name}`;
    if (e.isDirectory()) await listAll(join(dir, e.name), path, out);
    out.push(path);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fromSystemError(err, p, 'stat');
  }
}

/** Whether two paths are links to one file (both exist, same device and inode). */
async function sameInode(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([lstat(a).catch(() => undefined), lstat(b).catch(() => undefined)]);
  return x !== undefined && y !== undefined && x.dev === y.dev && x.ino === y.ino;
}

/**
 * cp's rules: a file never replaces a directory, a tree never replaces a non-directory.
 * And a device node, FIFO or socket is never replaced at all (SpecialFileError): a rename
 * over `/dev/sdb` would swap the node for a regular file and report success while the
 * device was never written. (A symlink target is replaced, as cp --remove-destination
 * would: the rename does not follow it.)
 */
async function checkReplaceable(target: string, kind: ManifestKind): Promise<void> {
  let st;
  try {
    st = await lstat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fromSystemError(err, target, 'stat');
  }
  const special = st.isBlockDevice() ? 'a block device' : st.isCharacterDevice() ? 'a character device' : st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : undefined;
  if (special) throw new SpecialFileError(`${target}: is ${special}; xfer replaces only regular files and directories`);
  if (kind === 'file' && st.isDirectory()) throw new AlreadyExistsError(`${target}: cannot overwrite a directory with a file`);
  if (kind === 'tree' && !st.isDirectory()) throw new AlreadyExistsError(`${target}: cannot overwrite a non-directory with a directory`);
}

/**
 * Whether `path` is still the file a manifest entry describes: a regular file of its size
 * and mtime, and its permission bits if `mode` is given (the quick check). Times are written
 * exactly (utimeArg); the rounding accepts copies written by earlier versions, 1 µs early.
 */
export async function sameFile(path: string, entry: { readonly size: number; readonly mtimeMs: number; readonly mtimeExtraNs?: number; readonly mode?: number }): Promise<boolean> {
  const st = await lstat(path, { bigint: true }).catch(() => undefined);
  if (st === undefined || !st.isFile() || st.size !== BigInt(entry.size)) return false;
  if (entry.mode !== undefined && Number(st.mode & 0o7777n) !== entry.mode) return false;
  // With nanoseconds recorded (version 2, where not 0), the full time; else the millisecond.
  if ((entry.mtimeExtraNs ?? 0) !== 0) return st.mtimeNs === mtimeNsOf(entry);
  return Number((st.mtimeNs + 500_000n) / 1_000_000n) === entry.mtimeMs;
}
