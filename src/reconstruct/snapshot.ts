/**
 * A local snapshot of a pulled tree, as git's index is of a work tree: what a tree pull found
 * unchanged, entry by entry (inode, size, mtime and ctime to the nanosecond), with the tag of
 * the manifest it matched (manifest/tag.ts). The next pull of the same target asks the
 * server only whether that tag is still current (a conditional GET) and lstats every entry:
 * if nothing moved, the pull is a no-op without reading the manifest or any xattr.
 *
 * Why ctime: the kernel sets it to "now" whenever an inode's content, mode, owner, link
 * count or xattrs change, and no system call sets it to a chosen value. An entry with the
 * recorded inode number and ctime has therefore had none of those changed since the
 * snapshot; a directory with its recorded ctime had no entry added, removed or renamed (its
 * mtime moves, so its ctime). A replaced entry is a new inode, with a new ctime even where
 * its number is reused. "Racily clean" entries, whose recorded ctime is within
 * RACY_MARGIN_NS of the time the snapshot's lstats began, are not trusted: a change made
 * just after the lstat can carry the same (coarse) ctime. The snapshot is then useless, and
 * the pull takes the full path, which writes a fresh one.
 *
 * The snapshot is only a hint, never trusted for anything but skipping work: it is a file of
 * the user's cache (XDG_CACHE_HOME/xfer/snapshots or ~/.cache/xfer/snapshots), named by the
 * target's absolute path and its root's device and inode, written atomically, bounded in
 * size and number. Missing, unreadable, damaged, made under other conditions, for another
 * tag, or any entry that differs: the pull goes the full way (manifest, quick check,
 * staging if needed). What is not covered: a clock set back (ctime can then repeat), and a
 * change of what an owner's name maps to through NSS other than /etc/passwd and /etc/group
 * (whose mtimes are part of the conditions).
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, readlinkSync, statfsSync, type BigIntStats } from 'node:fs';
import { mtimeNsOf, type ManifestEvent } from '../manifest/types.js';
import { lstat, open, readdir, rename, rm, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { userCacheDir } from '../core/cache-dir.js';

/** A snapshot file larger than this is not read (about 100 bytes an entry: a million entries). */
export const MAX_SNAPSHOT_BYTES = 128 * 1024 * 1024;
/** A tree of more entries is not recorded. */
export const MAX_SNAPSHOT_ENTRIES = 1_000_000;
/** Snapshots kept in the cache directory; past this the least recently written go. */
export const MAX_SNAPSHOTS = 64;
/**
 * How close to the start of the snapshot's lstats a recorded ctime makes an entry racily
 * clean, on a file system not known to be local: 2 s covers file systems that keep times in
 * 2 s steps (FAT) and small clock drift between a network file system's server and this host.
 */
export const RACY_MARGIN_NS = 2e9;
/**
 * The same on a local Linux file system with nanosecond times (LOCAL_FS_TYPES): the kernel
 * stamps ctime from a coarse clock at most one tick (1-10 ms) behind the precise one that
 * takenNs is read from, so a change after an lstat gets a ctime at least takenNs - 11 ms;
 * an entry recorded 20 ms before takenNs cannot have the ctime of a later change.
 */
export const LOCAL_RACY_MARGIN_NS = 20e6;
/** statfs f_type of local file systems with nanosecond times: ext2/3/4, XFS, btrfs, tmpfs, overlayfs. */
const LOCAL_FS_TYPES = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x794c7630]);

/** The racy margin for entries under `path` (see RACY_MARGIN_NS and LOCAL_RACY_MARGIN_NS). */
export function racyMarginNs(path: string): number {
  try {
    return LOCAL_FS_TYPES.has(statfsSync(path).type) ? LOCAL_RACY_MARGIN_NS : RACY_MARGIN_NS;
  } catch {
    return RACY_MARGIN_NS;
  }
}

const FORMAT = 'xfer-snapshot-1';
/**
 * Numbers recorded per entry, in `nums`: inode, size, mtime and ctime in ns, each as
 * Number() of lstat's bigint: a double, deterministic, exact to ~256 ns. Enough: a change
 * after the snapshot has a ctime at least RACY_MARGIN_NS past the recorded one.
 */
const NUMS_PER_ENTRY = 4;

/** What a no-op pull reports, kept with the snapshot. */
export interface SnapshotResult {
  readonly bytesTotal: number;
  readonly chunksTotal: number;
  /** Bytes of the files kept (the result's bytesReused). */
  readonly fileBytes: number;
  /** The manifest's digest, hex (the result's digest). */
  readonly digest: string;
}

/** What a snapshot is valid for, besides the target's entries. */
export interface SnapshotKey {
  /** Where the tree was pulled from (the server's origin and remote path). */
  readonly source: string;
  /** The tag of the manifest the target was found to be (manifest/tag.ts). */
  readonly tag: string;
  /** snapshotConditions(): the options and the process state the check depended on. */
  readonly conditions: string;
}

export interface Snapshot extends SnapshotKey {
  readonly result: SnapshotResult;
  /** Wall-clock time before the snapshot's first lstat, in ns. */
  readonly takenNs: number;
  readonly dev: number;
  /** Entry paths, the target ('') first, in manifest order. */
  readonly paths: readonly string[];
  /** NUMS_PER_ENTRY numbers an entry. */
  readonly nums: readonly number[];
  /** The same numbers of the directory holding the target, if it could be lstat'ed. */
  readonly parent: readonly number[] | undefined;
}

/**
 * What an unchanged check depends on besides the manifest and the entries: --delete (it
 * also found no extra to delete), --numeric-ids, the user (owners and privileged xattrs are
 * applied only as root), and the files owner names are mapped through.
 */
export function snapshotConditions(options: { readonly delete: boolean; readonly numericIds: boolean }): string {
  const mtime = (path: string) => {
    try {
      return String(lstatSync(path, { bigint: true }).mtimeNs);
    } catch {
      return '-';
    }
  };
  const uid = process.geteuid?.() ?? -1;
  const names = uid === 0 && !options.numericIds ? `;passwd=${mtime('/etc/passwd')};group=${mtime('/etc/group')}` : '';
  return `delete=${options.delete ? 1 : 0};numericIds=${options.numericIds ? 1 : 0};euid=${uid}${names}`;
}

/** The directory snapshots go to; undefined where there is no cache directory to use. */
export function snapshotDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const cache = userCacheDir(env);
  return cache && join(cache, 'snapshots');
}

function snapshotFile(dir: string, target: string, root: BigIntStats): string {
  const key = createHash('sha256').update(`${target}\0${root.dev}\0${root.ino}`).digest('hex').slice(0, 32);
  return join(dir, `${key}.json`);
}


/**
 * Gathers what an unchanged check (unchanged.ts) lstat'ed, in manifest order, for a
 * snapshot. `done` is set when the check found the whole target unchanged.
 */
export class SnapshotRecorder {
  readonly paths: string[] = [];
  readonly nums: number[] = [];
  /** The directory holding the target (see parentAsRecorded). */
  parent: number[] | undefined;
  /** Wall-clock time before the first lstat, in ns: see RACY_MARGIN_NS. */
  takenNs = 0;
  root: BigIntStats | undefined;
  done = false;
  /** Too many entries, or one on another device: no snapshot. */
  private unusable = false;

  /** Before the first lstat of the check. */
  start(target: string): void {
    this.takenNs = Date.now() * 1e6;
    try {
      this.parent = numbersOf(lstatSync(dirname(resolve(target)), { bigint: true }));
    } catch {
      this.parent = undefined;
    }
    try {
      const st = lstatSync(target, { bigint: true });
      if (st.isDirectory()) {
        this.root = st;
        this.push('', st);
        return;
      }
    } catch {
      // no snapshot
    }
    this.unusable = true;
  }

  /** An entry (not the target itself: start() recorded it) as the check lstat'ed it. */
  add(path: string, st: BigIntStats): void {
    if (path === '' || this.unusable) return;
    if (st.dev !== this.root!.dev || this.paths.length >= MAX_SNAPSHOT_ENTRIES) {
      this.unusable = true;
      this.paths.length = 0;
      this.nums.length = 0;
      return;
    }
    this.push(path, st);
  }

  private push(path: string, st: BigIntStats): void {
    this.paths.push(path);
    this.nums.push(...numbersOf(st));
  }

  get usable(): boolean {
    return this.done && !this.unusable && this.root !== undefined;
  }
}

/**
 * Records, in `recorder`, the tree a pull has just written at `target` from the manifest
 * whose events are `events`, so that the next pull of it can be a no-op without reading
 * the manifest. Waits until every entry the pull wrote is past the racy margin (a few
 * milliseconds on a local file system; on another, whose margin is 2 s, nothing is
 * recorded: the wait would cost more than it saves), then lstats each entry in manifest
 * order and checks it is what the pull made of it: its type, a file's size and mtime to the
 * nanosecond, a symlink's target. Any difference (a change made since the commit) or a
 * missing entry leaves the recorder not done, and no snapshot is written. Resolves with the
 * bytes of the tree's files (the snapshot's fileBytes).
 */
export async function recordPulledTree(target: string, events: AsyncIterable<ManifestEvent>, recorder: SnapshotRecorder, signal?: AbortSignal): Promise<number> {
  const margin = racyMarginNs(target);
  if (margin > LOCAL_RACY_MARGIN_NS) return 0;
  // Past the margin from now: every ctime the pull set is then older than the snapshot's start.
  await new Promise((r) => setTimeout(r, Math.ceil(margin / 1e6) + 2));
  signal?.throwIfAborted();
  recorder.start(target);
  const root = join(target, '/');
  let fileBytes = 0;
  for await (const ev of events) {
    if (ev.kind !== 'entry' || ev.meta.path === '') continue;
    const meta = ev.meta;
    let st: BigIntStats | undefined;
    try {
      st = lstatSync(root + meta.path, { bigint: true, throwIfNoEntry: false });
    } catch {
      return 0;
    }
    // Device nodes and FIFOs are made only where the pull's policy allows: one not there is not recorded.
    if (st === undefined && (meta.type === 'fifo' || meta.type === 'char' || meta.type === 'block')) continue;
    if (st === undefined) return 0;
    const same =
      meta.type === 'dir' ? st.isDirectory()
        : meta.type === 'file' ? st.isFile() && st.size === BigInt(meta.size) && st.mtimeNs === mtimeNsOf(meta)
          : meta.type === 'hardlink' ? st.isFile()
            : meta.type === 'symlink' ? st.isSymbolicLink() && readlinkOr(root + meta.path) === meta.linkTarget
              : meta.type === 'fifo' ? st.isFIFO()
                : meta.type === 'char' ? st.isCharacterDevice() : st.isBlockDevice();
    if (!same) return 0;
    if (meta.type === 'file') fileBytes += meta.size;
    recorder.add(meta.path, st);
  }
  recorder.done = true;
  return fileBytes;
}

function readlinkOr(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

function numbersOf(st: BigIntStats): number[] {
  return [Number(st.ino), Number(st.size), Number(st.mtimeNs), Number(st.ctimeNs)];
}

/**
 * Writes the snapshot of `target` that `recorder` gathered (when usable), replacing any
 * earlier one atomically, and prunes the directory to MAX_SNAPSHOTS. Never fails: a
 * snapshot that cannot be written only costs the next pull its shortcut.
 */
export async function writeSnapshot(target: string, recorder: SnapshotRecorder, key: SnapshotKey, result: SnapshotResult): Promise<void> {
  const dir = snapshotDir();
  if (!dir || !recorder.usable) return;
  const abs = resolve(target);
  const root = recorder.root!;
  const body = JSON.stringify({
    format: FORMAT, target: abs, dev: Number(root.dev), ino: String(root.ino), source: key.source, tag: key.tag, conditions: key.conditions,
    takenNs: recorder.takenNs, result, paths: recorder.paths, nums: recorder.nums, parent: recorder.parent,
  });
  if (Buffer.byteLength(body) > MAX_SNAPSHOT_BYTES) return;
  const file = snapshotFile(dir, abs, root);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(tmp, body, { mode: 0o600, flag: 'wx' });
    await rename(tmp, file);
    await prune(dir);
  } catch {
    await rm(tmp, { force: true }).catch(() => {});
  }
}

/** Keeps the MAX_SNAPSHOTS most recently written snapshots (and leaves others' files alone). */
function prune(dir: string): Promise<void> {
  return keepNewest(dir, /^[0-9a-f]{32}\.json$/, MAX_SNAPSHOTS);
}

/**
 * Keeps the `keep` most recently written files of `dir` whose names match `ours` and
 * removes the rest of them; other files are left alone. For the user's cache directories.
 */
export async function keepNewest(dir: string, ours: RegExp, keep: number): Promise<void> {
  const names = (await readdir(dir)).filter((n) => ours.test(n));
  if (names.length <= keep) return;
  const dated = await Promise.all(names.map(async (n) => ({ n, t: (await lstat(join(dir, n)).catch(() => undefined))?.mtimeMs ?? 0 })));
  dated.sort((a, b) => b.t - a.t);
  for (const { n } of dated.slice(keep)) await rm(join(dir, n), { force: true });
}

/**
 * The snapshot of `target` if there is one, readable, well-formed and for that very
 * directory (path, device and inode of its root); else undefined.
 */
export async function readSnapshot(target: string): Promise<Snapshot | undefined> {
  const dir = snapshotDir();
  if (!dir) return undefined;
  const abs = resolve(target);
  let root: BigIntStats;
  try {
    root = await lstat(abs, { bigint: true });
  } catch {
    return undefined;
  }
  if (!root.isDirectory()) return undefined;
  let text: string;
  try {
    const fh = await open(snapshotFile(dir, abs, root), 'r');
    try {
      if ((await fh.stat()).size > MAX_SNAPSHOT_BYTES) return undefined;
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
  try {
    return parseSnapshot(text, abs, root);
  } catch {
    return undefined;
  }
}

/** An absolute path, an empty, '.' or '..' segment, a trailing '/' or a NUL. */
const BAD_PATH_RE = /^\/|\/\/|\/$|(^|\/)\.\.?(\/|$)|\0/;

/** Undefined, or throws (anything), for a snapshot that is not well-formed or not of this target. */
function parseSnapshot(text: string, target: string, root: BigIntStats): Snapshot | undefined {
  const o = JSON.parse(text) as Record<string, unknown>;
  const str = (v: unknown): string => {
    if (typeof v !== 'string') throw new Error('not a string');
    return v;
  };
  const count = (v: unknown): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error('not a count');
    return v;
  };
  if (o.format !== FORMAT || str(o.target) !== target || o.dev !== Number(root.dev) || o.ino !== String(root.ino)) return undefined;
  const r = o.result as Record<string, unknown>;
  const result: SnapshotResult = { bytesTotal: count(r.bytesTotal), chunksTotal: count(r.chunksTotal), fileBytes: count(r.fileBytes), digest: str(r.digest) };
  const { paths, nums, takenNs } = o;
  if (!Array.isArray(paths) || !Array.isArray(nums) || typeof takenNs !== 'number') return undefined;
  if (paths.length === 0 || paths.length > MAX_SNAPSHOT_ENTRIES || nums.length !== paths.length * NUMS_PER_ENTRY) return undefined;
  // The first entry is the target itself (SnapshotRecorder.start); the others relative,
  // normalized paths below it: never a way out of it (the lstats only read, but still).
  if (paths[0] !== '') return undefined;
  for (let i = 1; i < paths.length; i++) if (BAD_PATH_RE.test(str(paths[i]))) return undefined;
  for (const n of nums) if (typeof n !== 'number') return undefined;
  const parent = Array.isArray(o.parent) && o.parent.length === NUMS_PER_ENTRY && o.parent.every((n) => typeof n === 'number') ? (o.parent as number[]) : undefined;
  return { source: str(o.source), tag: str(o.tag), conditions: str(o.conditions), result, takenNs, dev: Number(root.dev), paths: paths as string[], nums: nums as number[], parent };
}

/**
 * Whether every entry of `target` the snapshot records is still the inode it recorded, with
 * its size, mtime and ctime, on the same device, and none was racily clean (see the top of
 * this file). Reads only: one lstat an entry, parents before children, stopping at the
 * first difference (an entry replaced by a symlink differs before anything below it is
 * looked at).
 */
export function stillAsRecorded(target: string, snapshot: Snapshot): boolean {
  const racy = snapshot.takenNs - racyMarginNs(target);
  const base = resolve(target);
  const prefix = join(base, '/');
  const { paths, nums } = snapshot;
  for (let i = 0, n = 0; i < paths.length; i++, n += NUMS_PER_ENTRY) {
    const ctimeNs = nums[n + 3]!;
    if (!(ctimeNs < racy)) return false;
    let st: BigIntStats | undefined;
    try {
      st = lstatSync(i === 0 ? base : prefix + paths[i], { bigint: true, throwIfNoEntry: false });
    } catch {
      return false;
    }
    if (st === undefined || Number(st.ctimeNs) !== ctimeNs || Number(st.ino) !== nums[n] || Number(st.dev) !== snapshot.dev || Number(st.size) !== nums[n + 1] || Number(st.mtimeNs) !== nums[n + 2]) return false;
  }
  return true;
}

/**
 * Whether the directory holding `target` is as the snapshot recorded it (and was not racily
 * clean): then nothing was created in it since, no leftover of an interrupted pull beside
 * the target (there was none when the snapshot was taken: see Staging.hasLeftovers and
 * reconstruct). False says only "maybe": the caller looks for leftovers itself.
 */
export function parentAsRecorded(target: string, snapshot: Snapshot): boolean {
  const p = snapshot.parent;
  if (!p || !(p[3]! < snapshot.takenNs - racyMarginNs(dirname(resolve(target))))) return false;
  try {
    const st = lstatSync(dirname(resolve(target)), { bigint: true });
    return numbersOf(st).every((n, i) => n === p[i]);
  } catch {
    return false;
  }
}
