/**
 * The system calls Node.js lacks and a faithful copy needs (rsync -aHAX): extended
 * attributes, device and FIFO nodes, nanosecond timestamps, an atomic exchange of two
 * paths, user/group name lookups, and for disk images: where a file's data and holes are
 * (SEEK_DATA/SEEK_HOLE), a block device's size, blocks shared between files (reflink) and
 * holes punched into a file.
 *
 * Contract: every function here has two implementations giving identical results, the
 * native addon's (native/sys.c, used when it is built) and a TypeScript twin (this file),
 * which uses the standard tools `getfattr`/`setfattr` (Debian's attr), `mknod`, `touch`
 * and /etc/passwd, /etc/group. XFER_NO_NATIVE=1 forces the twin (tests compare the two).
 * None of them follows a symlink in the last component: they act on the link itself.
 * All are synchronous: each is one short system call (the twin's are one child process).
 * Errors are Node-style (err.code = 'ENOENT', 'ENOTSUP', 'EPERM', ...), thrown as is;
 * callers decide what is fatal.
 */
import { chmodSync, closeSync, constants, fstatSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { usableAddon } from '../native/addon.js';

/** One extended attribute: its full name (with namespace, e.g. 'user.mime') and raw value. */
export interface Xattr {
  readonly name: string;
  readonly value: Buffer;
}

export type NodeKind = 'fifo' | 'char' | 'block';

/** What the native addon exports for this module (native/sys.c). All optional: an old build lacks them. */
export interface NativeSys {
  /** llistxattr + lgetxattr of each; [] when the file system has no xattr support (ENOTSUP). */
  readonly listXattrs?: (path: string) => Array<{ name: string; value: Buffer }>;
  /** lsetxattr(name, value, 0). */
  readonly setXattr?: (path: string, name: string, value: Buffer) => void;
  /** lremovexattr. */
  readonly removeXattr?: (path: string, name: string) => void;
  /** mknod(path, type | mode, makedev(major, minor)); type 0 = fifo, 1 = char, 2 = block. */
  readonly mknod?: (path: string, type: number, mode: number, major: number, minor: number) => void;
  /** utimensat(AT_FDCWD, path, {atime, mtime}, AT_SYMLINK_NOFOLLOW); times as [sec, nsec] pairs. */
  readonly lutimesNs?: (path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number) => void;
  /** renameat2(RENAME_EXCHANGE); throws ENOSYS/EINVAL where unsupported. */
  readonly exchange?: (a: string, b: string) => void;
  /** getpwuid_r / getgrgid_r / getpwnam_r / getgrnam_r; null when there is no such entry. */
  readonly userName?: (uid: number) => string | null;
  readonly groupName?: (gid: number) => string | null;
  readonly userId?: (name: string) => number | null;
  readonly groupId?: (name: string) => number | null;
  /** lseek(fd, offset, SEEK_DATA / SEEK_HOLE); -1 for ENXIO (no data at or after offset). */
  readonly seekData?: (fd: number, offset: number) => number;
  readonly seekHole?: (fd: number, offset: number) => number;
  /** ioctl(fd, BLKGETSIZE64): a block device's size in bytes. */
  readonly blockDeviceSize?: (fd: number) => number;
  /** ioctl(destFd, FICLONERANGE) of [offset, offset + length) of srcFd to the same offset. */
  readonly cloneRange?: (srcFd: number, destFd: number, offset: number, length: number) => void;
  /** fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length). */
  readonly punchHole?: (fd: number, offset: number, length: number) => void;
  /** mincore over a shared read-only mapping: bytes of [offset, offset + length) in the page cache. */
  readonly residentBytes?: (fd: number, offset: number, length: number) => number;
  /** mallopt(M_MMAP_THRESHOLD, bytes) under glibc; false where it was not set. */
  readonly mallocMmapThreshold?: (bytes: number) => boolean;
  /**
   * An ArrayBuffer over a 2 MiB-aligned anonymous mapping advised for huge pages: a pooled
   * one of the same length (a collected buffer's) or a fresh one.
   */
  readonly hugeBuffer?: (bytes: number) => ArrayBuffer;
  /** Unmaps the pooled mappings that waited `ms` or longer; returns the bytes still pooled or alive. */
  readonly hugeBufferTrim?: (ms: number) => number;
  readonly hugeBufferStats?: () => LargeBufferStats;
  /** madvise(MADV_DONTNEED) over a hugeBuffer's pages: given back, the mapping kept. */
  readonly hugeBufferDiscard?: (buffer: ArrayBuffer) => void;
}

/** The addon's large-buffer counters since the process started (largeBufferStats). */
export interface LargeBufferStats {
  /** Fresh mappings made. */
  readonly mapped: number;
  /** Buffers served from the pool of collected ones' mappings. */
  readonly reused: number;
  /** Mappings given back to the system (the pool full, or trimmed). */
  readonly unmapped: number;
  readonly pooledBytes: number;
  readonly liveBytes: number;
  /** The most the addon pools (native/sys.c HUGE_POOL_MAX_BYTES). */
  readonly poolMaxBytes: number;
}

function native(): NativeSys | null {
  return usableAddon() as NativeSys | null;
}

/** Whether the native implementation of these calls is in use (for `--json` reports and tests). */
export function sysIsNative(): boolean {
  return typeof native()?.listXattrs === 'function';
}

/**
 * node:child_process and node:util are loaded when first needed (the twin's tools, an
 * error's wording), not with this module: every scan worker imports it for seekData and
 * seekHole alone, and child_process (which loads net and dgram) with util cost each worker
 * about 17 more of Node's internal modules and 8 ms of CPU at start, before its first segment.
 */
let systemErrors: Map<string, readonly [number, string]> | undefined;

/** errno name -> [negative errno, libuv's message], the wording of Node's own fs errors. */
function systemError(code: string): readonly [number, string] | undefined {
  systemErrors ??= new Map([...process.getBuiltinModule('node:util').getSystemErrorMap()].map(([no, [name, message]]) => [name, [no, message] as const]));
  return systemErrors.get(code);
}

/** A Node-shaped system error (as fs throws, and as the native addon throws): code, errno, syscall, path. */
function errnoError(code: string, syscall: string, path: string, detail?: string): NodeJS.ErrnoException {
  const known = systemError(code);
  const err = new Error(`${code}: ${known?.[1] ?? 'unknown error'}, ${syscall} '${path}'${detail ? ` (${detail})` : ''}`) as NodeJS.ErrnoException;
  err.code = code;
  if (known) err.errno = known[0];
  err.syscall = syscall;
  err.path = path;
  return err;
}

/** glibc's strerror texts, as the tools print them, and their errno names. */
const TOOL_MESSAGES: ReadonlyArray<readonly [RegExp, string]> = [
  [/No such file/, 'ENOENT'], [/Operation not supported/, 'ENOTSUP'], [/Permission denied/, 'EACCES'],
  [/Operation not permitted/, 'EPERM'], [/File exists/, 'EEXIST'], [/No data available|No such attribute/, 'ENODATA'],
  [/Argument list too long/, 'E2BIG'], [/No space left/, 'ENOSPC'], [/Not a directory/, 'ENOTDIR'],
  [/Numerical result out of range/, 'ERANGE'], [/Read-only file system/, 'EROFS'], [/Too many levels of symbolic links/, 'ELOOP'],
  [/File name too long/, 'ENAMETOOLONG'], [/Invalid argument/, 'EINVAL'], [/Disk quota exceeded/, 'EDQUOT'],
];

/**
 * Runs a tool of the twin. Its failure is thrown as the error the native call `syscall`
 * would throw (the errno its message names); a missing tool is ENOTSUP, an unrecognised
 * message EIO with the tool's words.
 */
function run(tool: string, args: readonly string[], path: string, syscall: string): Buffer {
  try {
    return process.getBuiltinModule('node:child_process').execFileSync(tool, args, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    // A path with a NUL byte: the same TypeError (ERR_INVALID_ARG_VALUE) the native call throws.
    if (e.code === 'ERR_INVALID_ARG_VALUE') throw err;
    if (e.code === 'ENOENT') throw errnoError('ENOTSUP', syscall, path, `${tool} is not installed and the native addon is not built`);
    const msg = e.stderr?.toString() ?? e.message;
    const code = TOOL_MESSAGES.find(([re]) => re.test(msg))?.[1];
    throw code ? errnoError(code, syscall, path) : errnoError('EIO', syscall, path, msg.trim().split('\n')[0]);
  }
}

/** getfattr writes a name's '=', '\\', control and space bytes as \ooo (octal); this undoes that. */
function unescapeName(latin1: string): string {
  const bytes = latin1.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

/**
 * The extended attributes of `path` itself (not a symlink's target), every namespace the
 * caller may read (user.* always; trusted.* and security.* as root), sorted by name.
 * [] on a file system without xattrs.
 */
export function listXattrs(path: string): Xattr[] {
  const n = native();
  let out: Xattr[];
  if (n?.listXattrs) {
    out = n.listXattrs(path).map((x) => ({ name: x.name, value: Buffer.from(x.value) }));
  } else {
    let text: string;
    try {
      // -h: the link itself; -m '': every namespace; -e base64: values exactly.
      // latin1: byte for byte, so escaped names are rebuilt from their bytes (unescapeName).
      text = run('getfattr', ['-h', '-d', '-m', '', '-e', 'base64', '--absolute-names', '--', path], path, 'llistxattr').toString('latin1');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTSUP' && !/not installed/.test((err as Error).message)) return [];
      throw err;
    }
    out = [];
    for (const line of text.split('\n')) {
      const eq = line.indexOf('=');
      if (line.startsWith('#') || eq <= 0) continue;
      const name = unescapeName(line.slice(0, eq));
      const raw = line.slice(eq + 1);
      // -e base64 writes every value as 0s<base64> (an empty one as a bare 0s).
      out.push({ name, value: raw.startsWith('0s') ? Buffer.from(raw.slice(2), 'base64') : Buffer.alloc(0) });
    }
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Sets one extended attribute on `path` itself, creating or replacing it. */
export function setXattr(path: string, name: string, value: Buffer): void {
  const n = native();
  if (n?.setXattr) return n.setXattr(path, name, value);
  // An empty value goes without -v: setfattr silently sets nothing for `-v 0s`.
  const v = value.length > 0 ? ['-v', `0s${Buffer.from(value).toString('base64')}`] : [];
  run('setfattr', ['-h', '-n', name, ...v, '--', path], path, 'lsetxattr');
}

/** Removes one extended attribute from `path` itself. */
export function removeXattr(path: string, name: string): void {
  const n = native();
  if (n?.removeXattr) return n.removeXattr(path, name);
  run('setfattr', ['-h', '-x', name, '--', path], path, 'lremovexattr');
}

/** Linux's O_PATH (asm-generic/fcntl.h), which Node's fs.constants lacks: a descriptor naming a file without opening it. */
const O_PATH = 0o10000000;

const NODE_TYPES: Readonly<Record<NodeKind, number>> = { fifo: 0, char: 1, block: 2 };

/** Creates a FIFO or device node (devices need root); `mode` is the permission bits. Never replaces: EEXIST. */
export function makeNode(path: string, kind: NodeKind, mode: number, major = 0, minor = 0): void {
  const n = native();
  if (n?.mknod) return n.mknod(path, NODE_TYPES[kind], mode & 0o7777, major, minor);
  const type = kind === 'fifo' ? ['p'] : [kind === 'char' ? 'c' : 'b', String(major), String(minor)];
  run('mknod', ['-m', (mode & 0o777).toString(8), '--', path, ...type], path, 'mknod');
  // The tool refuses setuid/setgid/sticky bits: set them as the native call does, through
  // an O_PATH descriptor of the node just made (never a name swapped for a symlink meanwhile).
  if ((mode & 0o7000) === 0) return;
  const fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  try {
    if ((fstatSync(fd).mode & constants.S_IFMT) !== (kind === 'fifo' ? constants.S_IFIFO : kind === 'char' ? constants.S_IFCHR : constants.S_IFBLK)) {
      throw errnoError('EEXIST', 'mknod', path);
    }
    chmodSync(`/proc/self/fd/${fd}`, mode & 0o7777);
  } finally {
    closeSync(fd);
  }
}

/** Splits nanoseconds since the epoch into whole seconds and the nanosecond remainder (0..999,999,999). */
export function splitNs(ns: bigint): [number, number] {
  const NS_PER_S = 1_000_000_000n;
  let sec = ns / NS_PER_S;
  let nsec = ns % NS_PER_S;
  if (nsec < 0n) { nsec += NS_PER_S; sec -= 1n; }
  return [Number(sec), Number(nsec)];
}

/** Sets the access and modification times of `path` itself (a symlink's own times), to the nanosecond. */
export function setTimesNs(path: string, atimeNs: bigint, mtimeNs: bigint): void {
  const [as, an] = splitNs(atimeNs);
  const [ms, mn] = splitNs(mtimeNs);
  const n = native();
  if (n?.lutimesNs) return n.lutimesNs(path, as, an, ms, mn);
  // touch reads '@-1.5' as -(1.5) s: write the signed value, not the floor and remainder.
  const stamp = (ns: bigint) => {
    const abs = ns < 0n ? -ns : ns;
    return `@${ns < 0n ? '-' : ''}${abs / 1_000_000_000n}.${String(abs % 1_000_000_000n).padStart(9, '0')}`;
  };
  run('touch', ['-h', '-a', '-d', stamp(atimeNs), '--', path], path, 'utimensat');
  run('touch', ['-h', '-m', '-d', stamp(mtimeNs), '--', path], path, 'utimensat');
}

/**
 * Swaps the two paths atomically (renameat2 RENAME_EXCHANGE): both must exist; afterwards
 * each name refers to what the other did, and no moment exists in which either is missing.
 * Returns false, changing nothing, when the kernel, the file system or a missing addon
 * cannot do it; the caller then falls back to two renames.
 */
export function exchangePaths(a: string, b: string): boolean {
  const n = native();
  if (!n?.exchange) return false;
  try {
    n.exchange(a, b);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSYS' || code === 'EINVAL' || code === 'ENOTSUP' || code === 'EOPNOTSUPP') return false;
    throw err;
  }
}

/** Exchange when possible, else the classic two renames (b aside to `aside`, a to b). Used by tests of both paths. */
export function exchangeOrRename(a: string, b: string, aside: string): 'exchanged' | 'renamed' {
  if (exchangePaths(a, b)) return 'exchanged';
  renameSync(b, aside);
  renameSync(a, b);
  return 'renamed';
}

type Db = { byId: Map<number, string>; byName: Map<string, number> };
const dbs = new Map<string, Db>();
function db(file: '/etc/passwd' | '/etc/group'): Db {
  let d = dbs.get(file);
  if (!d) {
    d = { byId: new Map(), byName: new Map() };
    let text = '';
    try { text = readFileSync(file, 'utf8'); } catch { /* no database: no names */ }
    for (const line of text.split('\n')) {
      const [name, , id] = line.split(':');
      const n = Number(id);
      if (!name || !Number.isInteger(n)) continue;
      if (!d.byId.has(n)) d.byId.set(n, name);
      if (!d.byName.has(name)) d.byName.set(name, n);
    }
    dbs.set(file, d);
  }
  return d;
}

/** The name of user `uid` on this machine, or undefined. */
export function userName(uid: number): string | undefined {
  const n = native();
  if (n?.userName) return n.userName(uid) ?? undefined;
  return db('/etc/passwd').byId.get(uid);
}
/** The name of group `gid` on this machine, or undefined. */
export function groupName(gid: number): string | undefined {
  const n = native();
  if (n?.groupName) return n.groupName(gid) ?? undefined;
  return db('/etc/group').byId.get(gid);
}
/** The uid of user `name` on this machine, or undefined. */
export function userId(name: string): number | undefined {
  const n = native();
  if (n?.userId) return n.userId(name) ?? undefined;
  return db('/etc/passwd').byName.get(name);
}
/** The gid of group `name` on this machine, or undefined. */
export function groupId(name: string): number | undefined {
  const n = native();
  if (n?.groupId) return n.groupId(name) ?? undefined;
  return db('/etc/group').byName.get(name);
}

/**
 * The size in bytes of the block device open as `fd` (ioctl BLKGETSIZE64: st_size of a
 * device node is 0). The twin reads the kernel's count of 512-byte sectors from
 * /sys/dev/block/<major>:<minor>/size. ENOTTY for a descriptor that is not a block device.
 */
export function blockDeviceSize(fd: number): number {
  const n = native();
  if (n?.blockDeviceSize) return n.blockDeviceSize(fd);
  const st = fstatSync(fd, { bigint: true });
  if (!st.isBlockDevice()) throw errnoError('ENOTTY', 'ioctl', `fd ${fd}`);
  const r = st.rdev;
  const major = ((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn);
  const minor = (r & 0xffn) | ((r >> 12n) & ~0xffn);
  const SECTOR_BYTES = 512;
  try {
    return Number(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * SECTOR_BYTES;
  } catch {
    throw errnoError('ENOTSUP', 'ioctl', `fd ${fd}`, 'no /sys/dev/block entry and the native addon is not built');
  }
}

/** The size of what `fd` reads: a regular file's st_size, a block device's size. */
function readableSize(fd: number): number {
  const st = fstatSync(fd);
  return st.isBlockDevice() ? blockDeviceSize(fd) : st.size;
}

/**
 * Where the next data of the file open as `fd` begins at or after `offset` (lseek
 * SEEK_DATA), or -1 when there is none (the rest is a hole, or offset is at the end).
 * Holes are ranges the file system holds no blocks for and that read as zeros; a reader
 * may skip them. The twin (and a file system without the feature) reports every byte as
 * data: always correct, only slower. Moves the descriptor's position: read with pread.
 */
export function seekData(fd: number, offset: number): number {
  const n = native();
  if (n?.seekData) return n.seekData(fd, offset);
  return offset < readableSize(fd) ? offset : -1;
}

/**
 * Where the next hole of the file open as `fd` begins at or after `offset` (lseek
 * SEEK_HOLE): the end of the file counts as a hole, so this is the end of the data that
 * begins at `offset`; -1 when offset is at or past the end. See seekData.
 */
export function seekHole(fd: number, offset: number): number {
  const n = native();
  if (n?.seekHole) return n.seekHole(fd, offset);
  const size = readableSize(fd);
  return offset < size ? size : -1;
}

/**
 * Makes [offset, offset + length) of `destFd` share the blocks of the same range of `srcFd`
 * (a reflink, FICLONERANGE: XFS, btrfs; the data is neither read nor written). Offset and
 * length must be multiples of the file system's block size (EINVAL otherwise). Throws
 * EOPNOTSUPP/ENOTSUP where the file system cannot share blocks (ext4, tmpfs), EXDEV when
 * the two files are on different file systems; the twin always throws ENOTSUP (no tool
 * clones a range). Callers then write the bytes themselves (see cloneUnsupported).
 */
export function cloneRange(srcFd: number, destFd: number, offset: number, length: number): void {
  const n = native();
  if (n?.cloneRange) return n.cloneRange(srcFd, destFd, offset, length);
  throw errnoError('ENOTSUP', 'ioctl FICLONERANGE', `fd ${destFd}`, 'the native addon is not built');
}

/**
 * Whether an error of cloneRange or punchHole means "not here" (this file system, this
 * pair of files, this alignment) rather than a failure of the disk: the caller writes the
 * bytes instead.
 */
export function cloneUnsupported(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'EINVAL' || code === 'ENOTTY' || code === 'ENOSYS' || code === 'EBADF' || code === 'ETXTBSY' || code === 'EPERM';
}

/** Zeros, written by the twin (and where a file system cannot punch) one piece at a time. */
const PUNCH_ZEROS_BYTES = 1024 * 1024;
let punchZeros: Buffer | undefined;

/**
 * Makes [offset, offset + length) of the regular file open as `fd` read as zeros without
 * holding data (fallocate PUNCH_HOLE | KEEP_SIZE: whole blocks freed, partial blocks at
 * the ends zeroed; the size stays). Returns true when punched; false when the twin or a
 * file system that cannot punch (EOPNOTSUPP) wrote the zeros instead: always correct, only
 * not sparse.
 */
export function punchHole(fd: number, offset: number, length: number): boolean {
  if (length <= 0) return true;
  const n = native();
  if (n?.punchHole) {
    try {
      n.punchHole(fd, offset, length);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
    }
  }
  punchZeros ??= Buffer.alloc(PUNCH_ZEROS_BYTES);
  for (let done = 0; done < length; ) {
    done += writeSync(fd, punchZeros, 0, Math.min(punchZeros.length, length - done), offset + done);
  }
  return false;
}

/**
 * How many bytes of [offset, offset + length) of the file open as `fd` are in the page
 * cache (whole pages; cut at the file's end), or undefined where that cannot be known:
 * without the addon (no tool tells it for a range) or where mincore fails. Advice only,
 * for choosing buffered reads over O_DIRECT (io/direct.ts), which needs the addon too.
 */
export function residentBytes(fd: number, offset: number, length: number): number | undefined {
  const n = native();
  if (!n?.residentBytes) return undefined;
  try {
    return n.residentBytes(fd, offset, length);
  } catch {
    return undefined;
  }
}

/** Buffers of at least this many bytes are what largeBuffer maps on its own. */
export const LARGE_BUFFER_MIN_BYTES = 1024 * 1024;
/**
 * A collected large buffer's mapping waits this long in the addon's pool for a buffer of
 * its length before it is given back: a server between two pushes gives back what the
 * first one used (its resident size falls back), a push's or pull's next windows, blocks
 * and spans reuse what its last ones left.
 */
export const LARGE_BUFFER_IDLE_MS = 3000;

/**
 * A Buffer of `bytes` for bulk data (spans, windows, slabs, O_DIRECT blocks), contents
 * unspecified (as Buffer.allocUnsafeSlow's). From LARGE_BUFFER_MIN_BYTES on, with the addon,
 * it is a mapping of its own advised for transparent huge pages (native/sys.c hugeBuffer):
 * each 4 KiB page of fresh memory costs a fault when first written, and on a virtual
 * machine that is dear. Measured here (2-core VM, THP in "madvise" mode): filling 256 MiB
 * of fresh 8 MiB Buffers took 720-790 ms with 4 KiB pages and 60-160 ms with this. When
 * collected, its mapping goes to the addon's pool (at most 16 MiB), and the next buffer of
 * that length reuses it without faulting fresh pages in (whose zeroing was 13-24% of a
 * server's CPU serving a pull or an incremental push); pooled mappings are unmapped after
 * LARGE_BUFFER_IDLE_MS. The twin (no addon, XFER_NO_NATIVE=1) is allocUnsafeSlow.
 */
export function largeBuffer(bytes: number): Buffer<ArrayBuffer> {
  const huge = bytes >= LARGE_BUFFER_MIN_BYTES ? hugeMapping(bytes, native()) : undefined;
  return huge ?? Buffer.allocUnsafeSlow(bytes);
}

/**
 * Bytes of large buffers given back by their owners (recycleLargeBuffer) that are kept for
 * reuse: resident memory nobody uses until it is taken again, so a bound on a server's
 * peak (with 64 MiB here and 64 MiB in the addon's pool, a 64 GiB sparse push peaked at
 * 310-365 MiB; with 32 and 16, under 300, and no more CPU in the push and pull rows).
 */
export const LARGE_BUFFER_RECYCLE_BYTES = 32 * 1024 * 1024;

/** Buffers hugeMapping made: the only ones recycleLargeBuffer takes (aligned, of their own memory). */
const mappedByUs = new WeakSet<ArrayBufferLike>();
/** Given back and not taken again, by length; `recycledNow` guards against a buffer given back twice. */
const recycled = new Map<number, Buffer<ArrayBuffer>[]>();
const recycledNow = new WeakSet<ArrayBufferLike>();
let recycledBytes = 0;
let lastUseMs = 0;

/**
 * largeBuffer's mapping from `addon` (io/direct.ts passes the one it loaded), or undefined
 * without it: one given back of that length, else the addon's (pooled or fresh).
 */
export function hugeMapping(bytes: number, addon: Pick<NativeSys, 'hugeBuffer' | 'hugeBufferTrim'> | null): Buffer<ArrayBuffer> | undefined {
  if (!addon?.hugeBuffer) return undefined;
  lastUseMs = Date.now();
  if (addon.hugeBufferTrim) armTrim(addon.hugeBufferTrim);
  const again = recycled.get(bytes)?.pop();
  if (again) {
    recycledNow.delete(again.buffer);
    recycledBytes -= bytes;
    return again;
  }
  const b = Buffer.from(addon.hugeBuffer(bytes));
  mappedByUs.add(b.buffer);
  return b;
}

/**
 * The owner of a largeBuffer (or an O_DIRECT alignedBuffer of LARGE_BUFFER_MIN_BYTES or
 * more) is done with it: the next buffer of its length is this one, with its pages already
 * in, instead of a fresh mapping, whose pages the kernel zeroes as they are first touched
 * (a collected buffer's mapping is reused too, but only after a garbage collection finds
 * it). Contract: no view of `buf` is used after this call, by anyone; given back twice, the
 * second is ignored. Other buffers (the twin's, views of part of a buffer) are ignored, and
 * so are buffers over LARGE_BUFFER_RECYCLE_BYTES in all; what is kept goes after
 * LARGE_BUFFER_IDLE_MS without use (its pages given back at once). Returns whether it was
 * kept (else the caller may keep it itself, or drop it).
 */
export function recycleLargeBuffer(buf: Uint8Array): boolean {
  const ab = buf.buffer;
  if (!mappedByUs.has(ab) || recycledNow.has(ab) || buf.byteOffset !== 0 || buf.byteLength !== ab.byteLength) return false;
  if (recycledBytes + buf.byteLength > LARGE_BUFFER_RECYCLE_BYTES) return false;
  const list = recycled.get(buf.byteLength) ?? [];
  list.push(Buffer.from(ab as ArrayBuffer));
  recycled.set(buf.byteLength, list);
  recycledNow.add(ab);
  recycledBytes += buf.byteLength;
  lastUseMs = Date.now();
  return true;
}

/**
 * One timer per thread gives back what waits for reuse once idle LARGE_BUFFER_IDLE_MS:
 * the buffers recycled here (dropped: collected, their mappings go to the addon's pool),
 * and the addon's pooled mappings that waited that long (unmapped). It runs while there
 * are pooled or live large buffers (a collection may pool them at any time); unref'd, it
 * never keeps a process alive.
 */
let trimTimer: NodeJS.Timeout | undefined;
function armTrim(trim: (ms: number) => number): void {
  if (trimTimer) return;
  trimTimer = setTimeout(() => {
    trimTimer = undefined;
    if (trimWith(trim, LARGE_BUFFER_IDLE_MS) > 0) armTrim(trim);
  }, LARGE_BUFFER_IDLE_MS);
  trimTimer.unref();
}

/** Something that keeps large buffers of its own for its next use (a held file's reader's windows, a server's free slabs). */
export interface KeepsLargeBuffers {
  /** Gives back (recycleLargeBuffer) what it keeps and does not use now; it takes new ones when next used. */
  relinquish(): void;
}
const keepers = new Set<WeakRef<KeepsLargeBuffers>>();
/** The `lastUseMs` the idle keepers and collector last ran for: once per idle spell. */
let relinquishedFor = -1;
/** Callers that asked for a collection per idle spell (collectWhenIdle), and V8's collector once found. */
let idleCollections = 0;
let fullCollection: (() => void) | null | undefined;

/**
 * `owner` is told to give back what it keeps (relinquish) each time the process's large
 * buffers fall idle (LARGE_BUFFER_IDLE_MS without one taken or given back), before the
 * buffers waiting for reuse are given back: an idle server then holds none for its next
 * command. Held weakly: an owner collected is forgotten at the next idle spell; one that
 * ends (a reader closed) calls the function returned, so that a busy process never idle
 * does not gather the references of readers long gone.
 */
export function keepsLargeBuffers(owner: KeepsLargeBuffers): () => void {
  const ref = new WeakRef(owner);
  keepers.add(ref);
  return () => {
    keepers.delete(ref);
  };
}

/** Owners registered with keepsLargeBuffers and not forgotten (for tests). */
export function largeBufferKeepers(): number {
  return keepers.size;
}

/**
 * While asked (a server, from its start to its close), the process makes one full garbage
 * collection per idle spell, after the keepers gave back: the large buffers its last
 * command dropped are otherwise resident until V8 next collects, which an idle process may
 * not do for long (a server 5 s after two 256 MiB pushes: 184 MiB anonymous, 143 MiB after
 * a collection). V8's collector is reached through --expose-gc, set now and taken by a
 * context made after it; where that is refused, nothing is collected. Returns the
 * function that stops asking.
 */
export function collectWhenIdle(): () => void {
  idleCollections++;
  let asked = true;
  return () => {
    if (asked) idleCollections--;
    asked = false;
  };
}

function collectNow(): void {
  if (fullCollection === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      fullCollection = runInNewContext('gc') as () => void;
    } catch {
      fullCollection = null;
    }
  }
  fullCollection?.();
}

/** The trim timer's work, for `idleMs`; returns the bytes a later trim could still give back. */
function trimWith(trim: (ms: number) => number, idleMs: number): number {
  if (Date.now() - lastUseMs >= idleMs) {
    if (relinquishedFor !== lastUseMs) {
      for (const ref of keepers) {
        const owner = ref.deref();
        if (owner) owner.relinquish();
        else keepers.delete(ref);
      }
      if (idleCollections > 0) collectNow();
      // What they gave back counts as no use: given back below, and the spell goes on.
      relinquishedFor = lastUseMs = Math.min(lastUseMs, Date.now() - idleMs);
    }
    // Nobody uses them (recycleLargeBuffer's contract): their pages go back now, not once a
    // collection finds them (an idle server may not collect for a long time).
    const discard = native()?.hugeBufferDiscard;
    for (const list of recycled.values()) for (const b of list) discard?.(b.buffer);
    recycled.clear();
    recycledBytes = 0;
  }
  return trim(idleMs) + recycledBytes;
}

/**
 * What the idle timer does, now, for buffers idle `idleMs` or longer (0: all): drops the
 * recycled buffers if none was taken or given back for that long, unmaps the addon's pooled
 * mappings that waited that long. For tests and benchmarks; a no-op without the addon.
 */
export function trimLargeBuffers(idleMs = LARGE_BUFFER_IDLE_MS): void {
  const trim = native()?.hugeBufferTrim;
  if (trim) trimWith(trim, idleMs);
}

/** The addon's large-buffer counters (mappings made, reused, unmapped; bytes pooled and alive); undefined without it. */
export function largeBufferStats(): LargeBufferStats | undefined {
  return native()?.hugeBufferStats?.();
}

/**
 * Makes the C library give every allocation of at least `bytes` (Buffers of a few MiB: pack
 * blocks, read-ahead windows, stage slabs) a mapping of its own, returned to the system
 * when freed: mallopt(M_MMAP_THRESHOLD) under glibc, which also stops glibc's sliding
 * threshold. Left alone, glibc raises the threshold to the size of each mapped block freed,
 * so after the first 4 MiB Buffer is collected the later ones come from the heap, and the
 * heap keeps the pages of freed blocks below its top: a server's resident size stayed at
 * the high-water mark of Buffers alive and awaiting collection, plus the holes between
 * them (measured: a 512 MiB push after a sparse 64 GiB one peaked at 345-365 MiB RSS,
 * 293 MiB with the threshold fixed at 1 MiB). Returns whether it was set: false with the
 * twin, which cannot reach the allocator (nothing changes then but the resident size), and
 * with a C library other than glibc.
 */
export function mallocMmapThreshold(bytes: number): boolean {
  if (!Number.isInteger(bytes) || bytes <= 0 || bytes > 0x7fffffff) throw new TypeError(`mallocMmapThreshold: ${bytes} is not a positive number of bytes`);
  return native()?.mallocMmapThreshold?.(bytes) ?? false;
}
