/**
 * One copy on disk at the server (issue 17 item 5; the design and its crash argument:
 * docs/FORMAT.md, "Server root: one copy on disk"). A chunk of a current file target's
 * rebuilt copy is *held* by that file: the store finds it there (file, offset, length)
 * instead of keeping it in a pack, and packs keep only what no current file holds.
 *
 * HeldStore is a ChunkStore decorator over the server's LocalStore (`<root>/store`): it
 * answers has/get of held chunks from the files under `<root>/files` and passes the rest
 * on. Its records, `<root>/held/<key>.held` (and `<key>.staged.held` during a commit), say
 * which version's manifest describes which file, and the file's identity (dev, ino, size,
 * mtime in ns): chunk offsets are the running sums of the manifest's chunk lengths.
 *
 * Trust: held bytes lie outside the store's control (a local user may edit a rebuilt
 * file). Every get re-hashes them (but for a caller that re-hashes them itself,
 * GetOptions.unverified: a fetch's client, a rebuild's whole-file digests); a file whose identity no longer matches its record, or
 * whose bytes do not hash right, is dropped for this process (its chunks count as missing,
 * as set-aside ones do: verify names them, the next push uploads them into packs). Wrong
 * bytes are never served. Files are opened below `files/` without following a symlink
 * (io/safe-path.ts, O_NOFOLLOW), never a FIFO or device (O_NONBLOCK, then fstat).
 *
 * Held: single-file targets rebuilt atomically, and every file of a tree target of at
 * least HELD_TREE_FILE_MIN_BYTES (one record per tree, a line per file). Never held:
 * in-place targets (an in-place write overwrites the chunks it replaces, so they could not
 * be moved out first), zero chunks (never stored, chunker/zero.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { DIRECT_MIN_FILE_BYTES, DirectRangeReader, directIoAvailable, readRange, windowViews } from '../io/direct.js';
import { isZeroChunk } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import { ChunkCorruptError, fromSystemError, isXferError, type ChunkMissingError } from '../core/errors.js';
import { DIGEST_ALGORITHMS, digestFromHex, digestKey, digestToHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { mapBounded } from '../core/window.js';
import { digestEquals, digestOf } from '../hash/digest.js';
import { JsonLines } from '../io/json-lines.js';
import { checkConfined } from '../io/safe-path.js';
import { fsyncPath } from '../io/sync.js';
import { openManifest, openManifestFile, type ManifestReader } from '../manifest/reader.js';
import { SET_ASIDE_RECHECK_MS, type LocalStore } from '../store/local.js';
import type {
  ChunkCheck, ChunkStore, GarbageCollecting, GcOptions, GcReport, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions, ReferencedChunks,
} from '../store/store.js';
import type { ServerLogger } from './log.js';

/** The held index's directory under the server's root. */
export const HELD_DIR = 'held';
export const HELD_FORMAT = 'xfer-held';
export const HELD_VERSION = 1;
/** How long an identity check of a held file (fstat of its fd, lstat of its path) is trusted before it is made again. */
export const HELD_IDENTITY_RECHECK_MS = 100;
/**
 * Held files whose descriptors stay open at most; the least recently used beyond it are
 * closed and reopened (identity checked again) when used. A tree holds a file per file, and
 * a client may push one of any number of files: without a bound they would take every
 * descriptor of the process (20,000 here) and every other open would fail.
 */
export const MAX_HELD_OPEN_FILES = 1024;
/**
 * Held files of at least this size are read in read-ahead windows (io/direct.ts
 * DirectRangeReader over the held descriptor), smaller ones a chunk per read: a window
 * each would cost a tree of small files far more than it saves.
 */
const HELD_WINDOWED_FILE_MIN_BYTES = DIRECT_MIN_FILE_BYTES;
/** A read this close to where the last one ended counts as in order (concurrent fetches of a batch finish out of order). */
const HELD_WINDOW_REORDER_BYTES = 1024 * 1024;
/** Held chunks re-hashed at once by verifyChunks and gc. */
const HELD_READS_IN_FLIGHT = 8;
/** Chunks asked of the store at once while evacuating or checking pack copies. */
const HELD_BATCH_CHUNKS = 4096;
/**
 * Damaged chunks a record lists at most (a file with more is not re-adopted: it is
 * dropped, as one changed behind the server's back is).
 */
export const MAX_DAMAGED_RECORDED = 10_000;
/**
 * A tree's files of at least this size are held; smaller ones (empty files: nothing to
 * hold) keep their chunks in packs. No higher threshold: a push's upload packs mix the
 * chunks of every file of the tree in arrival order, and a pack is released (step 8) only
 * when a rebuilt file holds every chunk in it, so leaving the small files' chunks in packs
 * would keep nearly every upload pack, i.e. the whole tree twice. What holding a small file
 * costs instead is one record line (about 200 bytes) and one open descriptor while loaded:
 * about what its pack index record and header cost.
 */
export const HELD_TREE_FILE_MIN_BYTES = 1;
/**
 * The list of held chunks found damaged by another process (`xfer verify <root>`, which
 * opens the index read-only), `<root>/held/damaged`: without it a running server would
 * keep answering has() for them until restarted, and a plain push would not repair them.
 * One JSON object per line, appended (O_APPEND, then fdatasync) by the verify:
 *
 *   {"target":"<name>","entry":"<path in the target, '' for a file target>","dev":"N","ino":"N","offset":N,"algorithm":"blake3","digest":"<hex>","at":"<ISO time>"}
 *
 * A server reads what was appended since its last look at most every SET_ASIDE_RECHECK_MS
 * (one stat when nothing changed, as the store's set-aside list) and drops each place named
 * whose file still has that dev and ino (a line about a file a commit has since replaced is
 * ignored), recording it in the record's `damaged` once no commit is active. A line that
 * does not parse (a torn append) is ignored. The list only grows, by damage found.
 */
export const HELD_DAMAGE_FILE = 'damaged';

interface DamageLine {
  readonly target: string;
  readonly entry: string;
  readonly dev: bigint;
  readonly ino: bigint;
  readonly offset: number;
  readonly id: ChunkId;
}

function parseDamageLine(r: Record<string, unknown>): DamageLine | undefined {
  if (typeof r.target !== 'string' || typeof r.entry !== 'string') return undefined;
  if (typeof r.dev !== 'string' || !DECIMAL_RE.test(r.dev) || typeof r.ino !== 'string' || !DECIMAL_RE.test(r.ino)) return undefined;
  if (!Number.isSafeInteger(r.offset) || (r.offset as number) < 0) return undefined;
  if (!DIGEST_ALGORITHMS.includes(r.algorithm as DigestAlgorithm) || typeof r.digest !== 'string' || !/^(?:[0-9a-f]{2})+$/.test(r.digest)) return undefined;
  return {
    target: r.target, entry: r.entry, dev: BigInt(r.dev), ino: BigInt(r.ino), offset: r.offset as number,
    id: { algorithm: r.algorithm as DigestAlgorithm, digest: digestFromHex(r.digest) },
  };
}

/** `<root>/held/damaged` (HELD_DAMAGE_FILE): read from where the last read ended, appended durably (io/json-lines.ts). */
class HeldDamageList {
  private readonly lines: JsonLines<DamageLine>;

  constructor(file: string) {
    this.lines = new JsonLines(file, 'held damage list', parseDamageLine);
  }

  /** The lines appended since the last call (all of them the first time); one stat when nothing changed. */
  readNew(): Promise<DamageLine[]> {
    return this.lines.readNew();
  }

  /** Appends `file`'s damaged chunk `id` at `offset`, durably. */
  append(file: HeldFile, id: ChunkId, offset: number): Promise<void> {
    return this.lines.append({
      target: file.target, entry: file.entry, dev: String(file.identity.dev), ino: String(file.identity.ino), offset,
      algorithm: id.algorithm, digest: digestToHex(id.digest), at: new Date().toISOString(),
    });
  }
}

/** Bytes of evacuated chunks between two flushes of the store. */
const EVACUATE_FLUSH_BYTES = 256 * 1024 * 1024;
/** An evacuated chunk this close after the one before it (same file) is read through a window; farther, exactly. */
const EVACUATE_WINDOW_GAP_BYTES = 64 * 1024;

/**
 * For tests only: `XFER_TEST_HELD_CRASH_STEP=<n>` kills the server (SIGKILL, no cleanup)
 * right after commit step n (docs/FORMAT.md's numbering; 71 is after the record of step 7,
 * before the staged one goes), so that a test can restart it and check the start-up rules.
 */
export const HELD_CRASH_ENV = 'XFER_TEST_HELD_CRASH_STEP';

export function crashPoint(step: number): void {
  if (process.env[HELD_CRASH_ENV] === String(step)) process.kill(process.pid, 'SIGKILL');
}

/** What identifies a file: lstat's dev, ino, size and mtime in nanoseconds. */
interface Identity {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
}

interface HeldFileLine {
  readonly entry: string;
  readonly path: string;
  readonly identity: Identity;
  /** Offsets of chunks found not to hash right in the file: they are not held (missing until pushed again), across restarts. */
  readonly damaged?: readonly number[];
}

interface HeldRecord {
  readonly target: string;
  /** The version's manifest name (.xfer/versions/...), which describes the file. */
  readonly manifest: string;
  readonly files: readonly HeldFileLine[];
  /**
   * A staged record of a tree: dev and ino of the staged tree's root directory. The swap
   * (an exchange of names) keeps it, so after a crash it tells whether the target is the
   * staged tree (step 6 done): its files alone cannot, as an unchanged file is the same
   * inode, linked, in both trees.
   */
  readonly dir?: { readonly dev: bigint; readonly ino: bigint };
}

/** The key of target `name` in held/: the first 32 hex digits of SHA-256 of the name (as versions' keys). */
export function heldKey(name: string): string {
  return createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 32);
}

function identityOf(st: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint }): Identity {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
}

function sameIdentity(a: Identity, b: Identity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** JSON lines: a header, one line per file, and `{"end":<lines before it>}` (a record without it is absent). */
function encodeRecord(r: HeldRecord): string {
  const dir = r.dir ? { dir: { dev: String(r.dir.dev), ino: String(r.dir.ino) } } : {};
  const lines = [JSON.stringify({ format: HELD_FORMAT, version: HELD_VERSION, target: r.target, manifest: r.manifest, ...dir })];
  for (const f of r.files) {
    const i = f.identity;
    const damaged = f.damaged !== undefined && f.damaged.length > 0 ? { damaged: f.damaged.map(String) } : {};
    lines.push(JSON.stringify({ entry: f.entry, path: f.path, dev: String(i.dev), ino: String(i.ino), size: String(i.size), mtimeNs: String(i.mtimeNs), ...damaged }));
  }
  lines.push(JSON.stringify({ end: lines.length }));
  return `${lines.join('\n')}\n`;
}

const DECIMAL_RE = /^\d{1,30}$/;

/** The record in `text`, or undefined if it is not a whole one of this version (then it counts as absent). */
function parseRecord(text: string): HeldRecord | undefined {
  try {
    const lines = text.split('\n');
    if (lines.pop() !== '') return undefined;
    const end = JSON.parse(lines.pop() ?? '') as { end?: unknown };
    if (end.end !== lines.length || lines.length < 1) return undefined;
    const head = JSON.parse(lines[0]!) as Record<string, unknown>;
    if (head.format !== HELD_FORMAT || head.version !== HELD_VERSION || typeof head.target !== 'string' || typeof head.manifest !== 'string') return undefined;
    let dir: HeldRecord['dir'];
    if (head.dir !== undefined) {
      const d = head.dir as Record<string, unknown>;
      if (typeof d.dev !== 'string' || typeof d.ino !== 'string' || !DECIMAL_RE.test(d.dev) || !DECIMAL_RE.test(d.ino)) return undefined;
      dir = { dev: BigInt(d.dev), ino: BigInt(d.ino) };
    }
    const files: HeldRecord['files'][number][] = [];
    for (const line of lines.slice(1)) {
      const f = JSON.parse(line) as Record<string, unknown>;
      const nums = [f.dev, f.ino, f.size, f.mtimeNs];
      if (typeof f.entry !== 'string' || typeof f.path !== 'string' || !nums.every((n) => typeof n === 'string' && DECIMAL_RE.test(n))) return undefined;
      const [dev, ino, size, mtimeNs] = nums.map((n) => BigInt(n as string)) as [bigint, bigint, bigint, bigint];
      let damaged: number[] | undefined;
      if (f.damaged !== undefined) {
        if (!Array.isArray(f.damaged) || f.damaged.length > MAX_DAMAGED_RECORDED) return undefined;
        damaged = f.damaged.map((d) => (typeof d === 'string' && DECIMAL_RE.test(d) ? Number(d) : NaN));
        if (!damaged.every((d) => Number.isSafeInteger(d))) return undefined;
      }
      files.push({ entry: f.entry, path: f.path, identity: { dev, ino, size, mtimeNs }, ...(damaged ? { damaged } : {}) });
    }
    return { target: head.target, manifest: head.manifest, files, ...(dir ? { dir } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * The record of a target's loaded held files: each one's identity now (as recorded while
 * not yet re-adopted: only a re-hash vouches for a new one) and its damaged offsets.
 */
function recordOf(files: readonly HeldFile[]): HeldRecord {
  const first = files[0]!;
  return {
    target: first.target,
    manifest: first.manifest,
    files: files.map((f) => ({ entry: f.entry, path: f.path, identity: f.unadopted ? f.recorded : f.identity, damaged: [...f.damaged].sort((a, b) => a - b) })),
  };
}

/** The path under files/ of entry `entry` of target `target` ('' : a file target's own). */
function entryPath(target: string, entry: string): string {
  return entry === '' ? target : `${target}/${entry}`;
}

/** A path below files/ as its segments, if it is one a target may have (no '', '.', '..'). */
function segmentsOf(path: string): string[] | undefined {
  const segments = path.split('/');
  return segments.every((s) => s !== '' && s !== '.' && s !== '..') ? segments : undefined;
}

/** One held file: a current target's rebuilt copy. */
class HeldFile {
  fd: FileHandle | undefined;
  /** fd was opened with O_DIRECT (a large file: see HeldStore.openHeld); reads are aligned then. */
  direct = false;
  opening: Promise<FileHandle | undefined> | undefined;
  dropped = false;
  /** A commit is swapping this target: its path is not checked (the fd still reads this file). */
  swapping = false;
  checkedAtMs = -Infinity;
  /** Calls using its descriptor now: it is not evicted meanwhile (HeldStore.touch). */
  busy = 0;
  /**
   * Reads of a large file through fd in read-ahead windows (HeldStore.readPlace); dropped
   * with the descriptor. A window read ahead may still be in flight when the descriptor is
   * closed: FileHandle.close waits for it, and nobody reads that window any more.
   */
  reader: DirectRangeReader | undefined;
  /** Where the last read of its chunks ended (HeldStore.readPlace: in order or not). */
  readEnd = 0;
  /** The chunk keys it holds (to take them out of the map again). */
  readonly keys: string[] = [];
  /**
   * Found at start with another dev and ino than recorded but the same size and mtime (a
   * copied, restored or moved root): not usable until re-hashed (HeldStore.readopt).
   */
  unadopted = false;
  readopting: Promise<void> | undefined;
  /** A rewrite of its record with its damaged offsets is queued (HeldStore.persistDamage). */
  damagePending = false;

  /** Its identity as its record gives it (HeldFile.identity is the file's now, once re-adopted). */
  readonly recorded: Identity;

  constructor(
    readonly key: string,
    readonly target: string,
    readonly manifest: string,
    /** Its path in the target ('' for a file target). */
    readonly entry: string,
    readonly path: string,
    readonly segments: readonly string[],
    public identity: Identity,
    /** Offsets of its chunks that do not hash right: not held (its record lists them). */
    readonly damaged: Set<number>,
  ) {
    this.recorded = identity;
  }
}

interface Place {
  readonly file: HeldFile;
  readonly offset: number;
  readonly length: number;
}

interface HeldChunk {
  readonly id: ChunkId;
  readonly places: Place[];
}

export interface HeldStoreOptions {
  /** The server's root: records are in `<root>/held`. */
  readonly root: string;
  /** `<root>/files`. */
  readonly filesDir: string;
  readonly log: ServerLogger;
  readonly signal?: AbortSignal;
  /**
   * Writes nothing under `held/` but lines appended to its damage list (an offline verify
   * of a root, server/root.ts): the start-up rules and re-adoptions apply in memory only;
   * a held chunk found damaged is appended to HELD_DAMAGE_FILE (not to its record, which
   * only the server writes), so that a running server stops counting it present and the
   * next push repairs it. The other calls that change the index (commits, gc) are not for
   * such a store.
   */
  readonly readOnly?: boolean;
  /** Descriptors of held files kept open at most (default MAX_HELD_OPEN_FILES; tests set fewer). */
  readonly maxOpenFiles?: number;
}

function chunkKey(algorithm: DigestAlgorithm, digest: Uint8Array): string {
  return `${algorithm}:${digestKey(digest)}`;
}

/**
 * The chunks of the files a manifest's copy holds, with their entry (its path in the target,
 * '' for a file manifest's) and offsets in its file: a file manifest's one file, a tree's
 * files of at least HELD_TREE_FILE_MIN_BYTES (zero chunks left out).
 */
async function* placesOf(reader: ManifestReader): AsyncGenerator<{ entry: string; id: ChunkId; offset: number; length: number }> {
  const algorithm = reader.header.digestAlgorithm;
  const tree = reader.header.kind === 'tree';
  let entry: string | undefined;
  let offset = 0;
  for await (const ev of reader.events()) {
    if (ev.kind === 'entry') {
      entry = ev.meta.type === 'file' && (!tree || ev.meta.size >= HELD_TREE_FILE_MIN_BYTES) ? (tree ? ev.meta.path : '') : undefined;
      offset = 0;
      continue;
    }
    if (ev.kind !== 'chunks' || entry === undefined) continue;
    for (const r of ev.records) {
      if (!isZeroChunk(algorithm, r.length, r.digest)) yield { entry, id: { algorithm, digest: r.digest }, offset, length: r.length };
      offset += r.length;
    }
  }
}

/** A chunk's place in a held file: its offset and length there. */
interface EntryPlace {
  readonly id: ChunkId;
  readonly offset: number;
  readonly length: number;
}

/**
 * The files a manifest's copy holds (see placesOf): entry paths, in manifest order, and
 * each one's chunk places (a commit's load then needs no second read of the manifest).
 */
async function heldEntriesOf(reader: ManifestReader): Promise<{ entries: string[]; chunks: Set<string>; places: Map<string, EntryPlace[]> }> {
  const entries: string[] = [];
  const chunks = new Set<string>();
  const places = new Map<string, EntryPlace[]>();
  let list: EntryPlace[] = [];
  for await (const p of placesOf(reader)) {
    if (entries[entries.length - 1] !== p.entry) {
      entries.push(p.entry);
      places.set(p.entry, (list = []));
    }
    list.push({ id: p.id, offset: p.offset, length: p.length });
    chunks.add(chunkKey(p.id.algorithm, p.id.digest));
  }
  // A file target is held even if it has no stored chunk (all zeros): its record says so.
  if (reader.header.kind === 'file' && entries.length === 0) entries.push('');
  return { entries, chunks, places };
}

/**
 * The server's store with held chunks (see the top of this file). Every ChunkStore call
 * answers for held chunks first and passes the rest on to the LocalStore; the commit path
 * (server/routes/) drives a HeldCommit per commit or rm of a target.
 */
export class HeldStore implements ChunkStore, ManifestStore, GarbageCollecting {
  /** The held files of each target, by heldKey (one for a file target, a tree's in manifest order). */
  private readonly targets = new Map<string, HeldFile[]>();
  private readonly chunks = new Map<string, HeldChunk>();
  private readonly dir: string;
  /** Commits (and rms) in their held steps; a gc waits for none, and they wait for a gc. */
  private active = 0;
  private idle: (() => void)[] = [];
  /** Runs that no commit's held steps may overlap (a gc, a record rewrite for damage found): commits wait for them. */
  private readonly exclusive = new Set<Promise<unknown>>();
  /** The re-adoptions begun at open, one file at a time (readoptAll). */
  private readoptions: Promise<void> = Promise.resolve();
  private closed = false;
  /** Settles when close() begins (what waits for no commit to be active must not outlive the store). */
  private readonly closing: Promise<void>;
  private startClosing!: () => void;
  /** The held files with an open descriptor, least recently used first (touch). */
  private readonly open = new Set<HeldFile>();
  private readonly maxOpenFiles: number;
  /**
   * Descriptors of held files being opened (reserved by reserveOpen) or closed (closeFile,
   * until close(2) returns): they count against maxOpenFiles with `open`, so the bound holds
   * at every moment, not only once the closes behind an eviction have run.
   */
  private opensInFlight = 0;
  private closesInFlight = 0;
  /** Record rewrites begun by persistDamage (and a read-only store's appends to the damage list), awaited by close(). */
  private readonly pending = new Set<Promise<unknown>>();
  /** Damage found by another process (HELD_DAMAGE_FILE). */
  private readonly damageList: HeldDamageList;
  private damageCheckedAtMs = -Infinity;
  private damageReading: Promise<void> | undefined;

  private constructor(readonly inner: LocalStore, private readonly options: HeldStoreOptions) {
    this.dir = join(options.root, HELD_DIR);
    this.damageList = new HeldDamageList(join(this.dir, HELD_DAMAGE_FILE));
    this.maxOpenFiles = options.maxOpenFiles ?? MAX_HELD_OPEN_FILES;
    this.closing = new Promise((resolve) => (this.startClosing = resolve));
  }

  /**
   * Opens the held index: applies the start-up rules to staged records (docs/FORMAT.md:
   * promoted if the target's current manifest is theirs and the target is their file,
   * else dropped), then loads every record whose file still has its identity. Run before
   * the staging sweep.
   */
  static async open(inner: LocalStore, options: HeldStoreOptions): Promise<HeldStore> {
    const s = new HeldStore(inner, options);
    if (options.readOnly !== true) {
      await mkdir(s.dir, { recursive: true }).catch((err: unknown) => {
        throw fromSystemError(err, s.dir, 'create directory');
      });
    }
    await s.recover();
    await s.checkDamageList(true);
    return s;
  }

  /** `<root>/files`, where the held files lie. */
  get filesDir(): string {
    return this.options.filesDir;
  }

  // --- ChunkStore -------------------------------------------------------------------------

  async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    throwIfAborted(options?.signal);
    await this.checkDamageList();
    const out = new Array<boolean>(ids.length).fill(false);
    const rest: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      if (await this.heldPlace(ids[i]!)) out[i] = true;
      else rest.push(i);
    }
    if (rest.length > 0) {
      const found = await this.inner.has(rest.map((i) => ids[i]!), options);
      rest.forEach((i, k) => (out[i] = found[k]!));
    }
    return out;
  }

  async get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    throwIfAborted(options?.signal);
    await this.checkDamageList();
    let damaged: HeldFile | undefined;
    for (const p of [...(this.chunks.get(chunkKey(id.algorithm, id.digest))?.places ?? [])]) {
      if (!(await this.usable(p.file))) continue;
      const bytes = await this.readPlace(p);
      // Re-hashed (these bytes are outside the store's control) unless the caller re-hashes
      // them downstream (GetOptions.unverified: a fetch, whose client re-hashes what it
      // receives; the server's own rebuild, whose whole-file digests are checked).
      if (bytes && (options?.unverified === true || digestEquals(digestOf(id.algorithm, bytes), id.digest))) return bytes;
      this.dropPlace(id, p, true);
      damaged = p.file;
    }
    try {
      return await this.inner.get(id, options);
    } catch (err) {
      if (damaged && isXferError(err, 'XFER_CHUNK_MISSING')) {
        throw new ChunkCorruptError(digestToHex(id.digest), `its copy in the rebuilt file files/${damaged.path} was changed behind the server's back (no other copy; the next push stores it again)`);
      }
      throw err;
    }
  }

  /** A chunk a current file holds is present: nothing is stored (the client's bytes are dropped unread). */
  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    // A chunk no file holds goes to the store in this very turn, as a direct put would: the
    // upload route relies on a put being pending (has() true) as soon as it is made.
    if (!this.chunks.has(chunkKey(id.algorithm, id.digest))) return this.inner.put(id, data, options);
    return this.heldPlace(id).then((p) => (p ? false : this.inner.put(id, data, options)));
  }

  flush(options?: OpOptions): Promise<void> {
    return this.inner.flush(options);
  }

  async close(): Promise<void> {
    // A re-adoption in progress stops at its next chunk and records nothing.
    this.closed = true;
    this.startClosing();
    await this.readoptions;
    await Promise.allSettled([...this.pending]);
    for (const list of this.targets.values()) for (const f of list) await this.closeFile(f);
    await this.inner.close();
  }

  /** Damage found elsewhere: the files holding the chunk are dropped for this process, the store's copy set aside. */
  async setAside(id: ChunkId, options?: OpOptions): Promise<void> {
    for (const p of [...(this.chunks.get(chunkKey(id.algorithm, id.digest))?.places ?? [])]) this.dropPlace(id, p);
    await this.inner.setAside(id, options);
  }

  /** Held chunks are re-hashed from their files (get); the rest by the LocalStore, in pack order. */
  async verifyChunks(ids: readonly ChunkId[], onChecked: (i: number, check: ChunkCheck) => void, options?: OpOptions): Promise<void> {
    const signal = options?.signal;
    const held: number[] = [];
    const rest: number[] = [];
    for (let i = 0; i < ids.length; i++) ((await this.heldPlace(ids[i]!)) ? held : rest).push(i);
    await mapBounded(held, HELD_READS_IN_FLIGHT, signal, async (i) => {
      let check: ChunkCheck;
      try {
        check = (await this.get(ids[i]!, { signal })).length;
      } catch (err) {
        if (!isXferError(err, 'XFER_CHUNK_MISSING') && !isXferError(err, 'XFER_CHUNK_CORRUPT')) throw err;
        check = err as ChunkMissingError | ChunkCorruptError;
      }
      onChecked(i, check);
    });
    if (rest.length > 0) await this.inner.verifyChunks(rest.map((i) => ids[i]!), (k, check) => onChecked(rest[k]!, check), options);
  }

  /** Where a chunk is, for fetch read-ahead (server/context.ts ChunkSizes): its length. */
  async chunkLocation(id: ChunkId): Promise<{ readonly length: number } | undefined> {
    const p = await this.heldPlace(id);
    return p ? { length: p.length } : this.inner.chunkLocation(id);
  }

  // --- ManifestStore: the LocalStore's -----------------------------------------------------

  putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    return this.inner.putManifest(name, source, options);
  }

  getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    return this.inner.getManifest(name, options);
  }

  listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    return this.inner.listManifests(prefix, options);
  }

  deleteManifest(name: string, options?: OpOptions): Promise<void> {
    return this.inner.deleteManifest(name, options);
  }

  // --- gc ----------------------------------------------------------------------------------

  /**
   * A gc of the LocalStore in which a pack copy of a chunk a current file holds counts as
   * unused, once the held copy is re-hashed (a file changed behind an unchanged mtime must
   * not cost the only copy). Runs while no commit is in its held steps (an evacuation
   * relies on pack copies being live), and commits wait for it.
   */
  async collectGarbage(referenced: ReferencedChunks, options: GcOptions): Promise<GcReport> {
    const run = (async () => {
      await this.whenIdle();
      const unused = new Set<string>();
      const held = [...this.chunks.values()];
      for (let i = 0; i < held.length; i += HELD_BATCH_CHUNKS) {
        const batch = held.slice(i, i + HELD_BATCH_CHUNKS);
        const inPacks = await this.inner.has(batch.map((c) => c.id), options);
        await mapBounded(batch.filter((_, k) => inPacks[k]), HELD_READS_IN_FLIGHT, options.signal, async (c) => {
          if (await this.verifiedHeld(c)) unused.add(chunkKey(c.id.algorithm, c.id.digest));
        });
      }
      // A chunk whose held copy was dropped since it was re-hashed (its file changed) is used again.
      const filtered: ReferencedChunks = {
        size: referenced.size,
        has: (algorithm, digest) => {
          const k = chunkKey(algorithm, digest);
          return referenced.has(algorithm, digest) && !(unused.has(k) && this.chunks.has(k));
        },
      };
      return this.inner.collectGarbage(filtered, options);
    })();
    return this.runExclusive(run);
  }

  /** Keeps commits from beginning their held steps until `run` settles. */
  private async runExclusive<T>(run: Promise<T>): Promise<T> {
    this.exclusive.add(run);
    try {
      return await run;
    } finally {
      this.exclusive.delete(run);
    }
  }

  // --- commits -----------------------------------------------------------------------------

  /**
   * Starts the held part of a commit (or rm) of target `name`: waits for a gc in progress,
   * and keeps the next from starting until the HeldCommit ends.
   */
  async beginCommit(name: string): Promise<HeldCommit> {
    // No await between the last check and the count: a run added later sees this commit active.
    while (this.exclusive.size > 0) await Promise.allSettled([...this.exclusive]);
    this.active++;
    return new HeldCommit(this, name);
  }

  /** @internal HeldCommit's end. */
  endCommit(): void {
    if (--this.active === 0) for (const wake of this.idle.splice(0)) wake();
  }

  private whenIdle(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }

  /**
   * Whether target `name`'s held file has chunks found not to hash right (its record lists
   * them): a commit must then not keep that file on its size and mtime (manifests route).
   */
  hasDamage(name: string): boolean {
    return this.filesOf(name).some((f) => f.damaged.size > 0);
  }

  /** @internal The held files of target `name` that are loaded (dropped or not); none: []. */
  filesOf(name: string): readonly HeldFile[] {
    return this.targets.get(heldKey(name)) ?? [];
  }

  /** Whether `file` is one of its target's loaded files (not replaced by a commit since). */
  private isLoaded(file: HeldFile): boolean {
    return this.targets.get(file.key)?.includes(file) === true;
  }

  /**
   * @internal Step 3: every chunk `files` (a target's) hold that `keep` does not have is
   * appended to a pack (read from its file, re-hashed) and made durable. A chunk whose held
   * copy is damaged is lost to the versions that need it (the price, docs/FORMAT.md): logged.
   */
  async evacuate(files: readonly HeldFile[], keep: ReadonlySet<string> | undefined, signal: AbortSignal | undefined): Promise<void> {
    /** Each chunk once, at its place in the first of `files` that holds it. */
    const mine = new Map<string, { c: HeldChunk; p: Place }>();
    for (const file of files) {
      if (!(await this.usable(file))) continue;
      for (const k of file.keys) {
        if (keep?.has(k) || mine.has(k)) continue;
        const c = this.chunks.get(k);
        const p = c?.places.find((q) => q.file === file);
        if (c && p) mine.set(k, { c, p });
      }
    }
    // In file order; a chunk is read through a window only where the one before it ends
    // close by: the chunks an incremental push leaves behind are scattered, and a window
    // each read 4 MiB for one chunk (80 MiB for the bench's 200 edits of 256 MiB).
    const todo = [...mine.values()].sort((a, b) => (a.p.file === b.p.file ? a.p.offset - b.p.offset : a.p.file.path < b.p.file.path ? -1 : 1));
    /** Views of held files' windows put since the last flush: given back once the store has them durably. */
    let viewsPut: Buffer[] = [];
    const flushed = async () => {
      await this.inner.flush({ signal });
      for (const v of viewsPut) windowViews.release(v);
      viewsPut = [];
    };
    let unflushed = 0;
    // Apart from the uploads of this push, which the new copy holds: their packs are released (step 8).
    if (todo.length > 0) await this.inner.startNewPack({ signal });
    for (let i = 0; i < todo.length; i += HELD_BATCH_CHUNKS) {
      const batch = todo.slice(i, i + HELD_BATCH_CHUNKS);
      const inPacks = await this.inner.has(batch.map((x) => x.c.id), { signal });
      for (let k = 0; k < batch.length; k++) {
        if (inPacks[k]) continue;
        const { c, p } = batch[k]!;
        const file = p.file;
        if (!(await this.usable(file))) {
          this.options.log.warn({ target: file.target, path: file.path, chunk: digestToHex(c.id.digest) }, 'held file changed before its chunk was moved into the store: older versions that need it are damaged');
          continue;
        }
        const before = todo[i + k - 1]?.p;
        const dense = before !== undefined && before.file === file && p.offset - (before.offset + before.length) <= EVACUATE_WINDOW_GAP_BYTES;
        const bytes = await this.readPlace(p, !dense);
        if (!bytes || !digestEquals(digestOf(c.id.algorithm, bytes), c.id.digest)) {
          this.dropPlace(c.id, p);
          this.options.log.warn({ target: file.target, chunk: digestToHex(c.id.digest) }, 'held chunk damaged: not moved into the store, older versions that need it are damaged');
          continue;
        }
        viewsPut.push(bytes);
        await this.inner.put(c.id, bytes, { signal, trusted: true });
        unflushed += bytes.length;
        if (unflushed >= EVACUATE_FLUSH_BYTES) {
          await flushed();
          unflushed = 0;
        }
      }
    }
    await flushed();
  }

  /** @internal Writes a record durably: temp file, fsync, rename, fsync of held/. */
  async writeRecord(file: string, record: HeldRecord): Promise<void> {
    const path = join(this.dir, file);
    const tmp = join(this.dir, `.${file}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(encodeRecord(record));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
      await fsyncPath(this.dir);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw fromSystemError(err, path, 'write held record');
    }
  }

  /** @internal Removes a record durably (absent already: nothing to do). */
  async removeRecord(file: string): Promise<void> {
    const path = join(this.dir, file);
    try {
      await unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw fromSystemError(err, path, 'remove held record');
    }
    await fsyncPath(this.dir);
  }

  /** @internal Takes `files` (a target's) out of the index (their record is the caller's) and closes them. */
  async unload(files: readonly HeldFile[]): Promise<void> {
    const going = new Set(files);
    for (const key of new Set(files.map((f) => f.key))) {
      const rest = (this.targets.get(key) ?? []).filter((f) => !going.has(f));
      if (rest.length > 0) this.targets.set(key, rest);
      else this.targets.delete(key);
    }
    for (const file of files) {
      this.unmap(file);
      await this.closeFile(file);
    }
  }

  /**
   * @internal Loads a record's files: each opened and checked against its identity, then
   * the manifest's chunks mapped to them. A file that is not there as recorded is loaded
   * dropped (its chunks are missing; logged; its line stays in the record, so it stays
   * dropped after a restart). Resolves with the files, or undefined (nothing loaded) if the
   * record does not fit its manifest or the manifest cannot be read. `known`: the places of
   * each entry, as the commit that wrote the record read them from its manifest (then the
   * manifest is not read again: 50-250 ms per commit of a 256 MiB file).
   */
  async load(record: HeldRecord, signal?: AbortSignal, mayReadopt = false, known?: ReadonlyMap<string, readonly EntryPlace[]>): Promise<HeldFile[] | undefined> {
    const key = heldKey(record.target);
    const placed = known ?? (await this.placesInManifest(record, signal));
    if (!placed) return undefined;
    const files: HeldFile[] = [];
    for (const f of record.files) {
      const file = new HeldFile(key, record.target, record.manifest, f.entry, f.path, segmentsOf(f.path)!, f.identity, new Set(f.damaged));
      files.push(file);
      if (mayReadopt) {
        // A copy of the root (cp -a, a restore from backup, a move to another disk) gives
        // every file a new dev and ino and keeps its size and mtime: such a file is held
        // again only once its bytes hash to its manifest (readopt), never on its metadata.
        // Its descriptor is the file's (openHeld): usable() below checks it against the
        // identity (a mismatch drops the file).
        const fh = await this.openHeld(file);
        const st = fh ? identityOf(await fh.stat({ bigint: true })) : undefined;
        if (st && !sameIdentity(st, file.identity) && st.size === file.identity.size && st.mtimeNs === file.identity.mtimeNs) {
          file.identity = st;
          file.unadopted = true;
        }
        this.touch(file);
      }
      if (!(await this.usable(file, true))) await this.closeFile(file);
    }
    const old = this.targets.get(key);
    if (old) await this.unload(old);
    this.targets.set(key, files);
    for (const file of files) {
      if (file.dropped) continue;
      for (const p of placed.get(file.entry) ?? []) if (!file.damaged.has(p.offset)) this.place(file, p.id, p.offset, p.length);
    }
    return files;
  }

  /** The places of each of `record`'s entries, as its manifest gives them; undefined (logged) if the record does not fit it or it cannot be read. */
  private async placesInManifest(record: HeldRecord, signal: AbortSignal | undefined): Promise<Map<string, EntryPlace[]> | undefined> {
    const placed = new Map<string, EntryPlace[]>();
    try {
      const reader = await openManifest(await this.inner.getManifest(record.manifest, { signal }), { signal });
      // A file manifest's record has one line, its entry ''; a tree's a line per file
      // below the target, by its entry path.
      const fits = reader.header.kind === 'file'
        ? record.files.length === 1 && record.files[0]!.entry === ''
        : record.files.every((f) => f.entry !== '' && f.path === entryPath(record.target, f.entry));
      if (!fits || !record.files.every((f) => segmentsOf(f.path) !== undefined)) {
        await reader.close();
        throw new Error('its lines do not fit the manifest');
      }
      const wanted = new Set(record.files.map((f) => f.entry));
      for await (const p of placesOf(reader)) {
        if (!wanted.has(p.entry)) continue;
        let list = placed.get(p.entry);
        if (!list) placed.set(p.entry, (list = []));
        list.push(p);
      }
    } catch (err) {
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      this.options.log.warn({ target: record.target, manifest: record.manifest, error: (err as Error).message }, 'held record names a manifest that cannot be read: its files hold nothing');
      return undefined;
    }
    return placed;
  }

  /**
   * @internal Releases the packs this opener wrote whose chunks are all in `chunks` (step
   * 8). The commit is complete without it: a failure is logged, and gc releases them later.
   */
  async releasePacks(chunks: ReadonlySet<string>, signal: AbortSignal | undefined): Promise<void> {
    try {
      const r = await this.inner.releasePacks((algorithm, digest) => chunks.has(chunkKey(algorithm, digest)), { signal });
      if (r.packs > 0) this.options.log.debug(r, 'packs released: a rebuilt file holds their chunks');
    } catch (err) {
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      this.options.log.warn({ error: (err as Error).message }, 'packs a rebuilt file holds not released (gc will)');
    }
  }

  /**
   * @internal Opens `<files>/<path>` confined (no symlink on the way or at the end), a
   * regular file only; with O_DIRECT if `direct` asks and the file system takes it (see
   * openHeld), which `onDirect` is told.
   */
  async openConfined(path: string, segments: readonly string[], direct = false, onDirect?: (direct: boolean) => void): Promise<FileHandle | undefined> {
    try {
      await checkConfined(this.options.filesDir, segments);
      const flags = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
      const at = join(this.options.filesDir, ...segments);
      let fh: FileHandle | undefined;
      if (direct && directIoAvailable()) {
        fh = await open(at, flags | fsc.O_DIRECT).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'EINVAL') return undefined; // refused by the file system: read through the cache
          throw err;
        });
      }
      onDirect?.(fh !== undefined);
      fh ??= await open(at, flags);
      if (!(await fh.stat()).isFile()) {
        await fh.close();
        return undefined;
      }
      return fh;
    } catch (err) {
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      this.options.log.debug({ path, error: (err as Error).message }, 'held file not opened');
      return undefined;
    }
  }

  // --- internals ---------------------------------------------------------------------------

  /** A usable place of `id` in a held file, if any. */
  private async heldPlace(id: ChunkId): Promise<Place | undefined> {
    const c = this.chunks.get(chunkKey(id.algorithm, id.digest));
    if (!c) return undefined;
    for (const p of [...c.places]) if (await this.usable(p.file)) return p;
    return undefined;
  }

  /**
   * Whether `file` may be read: not dropped, and (checked at most every
   * HELD_IDENTITY_RECHECK_MS, or always with `now`) its open file and its path still have
   * the recorded identity. A file that does not is dropped.
   */
  private async usable(file: HeldFile, now = false): Promise<boolean> {
    if (file.dropped) return false;
    if (file.unadopted && file.keys.length > 0) {
      await this.readopt(file);
      if (file.dropped) return false;
    }
    return this.checkIdentity(file, now);
  }

  /**
   * usable() without the re-adoption: (re)opens `file` if it has no descriptor (never
   * evicted meanwhile: HeldFile.busy) and checks its identity.
   */
  private async checkIdentity(file: HeldFile, now: boolean): Promise<boolean> {
    if (file.dropped) return false;
    const t = performance.now();
    if (!now && file.fd !== undefined && t - file.checkedAtMs < HELD_IDENTITY_RECHECK_MS) {
      this.touch(file);
      return true;
    }
    file.busy++;
    try {
      return await this.checkIdentityBusy(file);
    } finally {
      file.busy--;
    }
  }

  private async checkIdentityBusy(file: HeldFile): Promise<boolean> {
    if (file.fd === undefined) {
      // Opened once, however many callers ask at the same time.
      file.opening ??= this.openHeld(file);
      const fd = await file.opening;
      file.opening = undefined;
      if (file.dropped) {
        if (file.fd !== fd) await fd?.close().catch(() => undefined);
        return false;
      }
      if (file.fd === fd) this.touch(file);
      else await fd?.close().catch(() => undefined);
    }
    if (!file.fd) {
      this.drop(file, 'it is gone or not a regular file');
      return false;
    }
    try {
      const st = identityOf(await file.fd.stat({ bigint: true }));
      let same = sameIdentity(st, file.identity);
      if (same && !file.swapping) {
        const at = await lstat(join(this.options.filesDir, ...file.segments), { bigint: true }).catch(() => undefined);
        same = at !== undefined && at.dev === st.dev && at.ino === st.ino;
      }
      if (!same) {
        this.drop(file, 'it was changed or replaced behind the server\'s back');
        return false;
      }
    } catch (err) {
      this.drop(file, (err as Error).message);
      return false;
    }
    file.checkedAtMs = performance.now();
    this.touch(file);
    return true;
  }

  /**
   * Opens `file` (confined) within the descriptor budget: room is made first (reserveOpen),
   * and the descriptor is its file's and counted in `open` before the reservation ends.
   */
  private async openHeld(file: HeldFile): Promise<FileHandle | undefined> {
    await this.reserveOpen();
    try {
      // A large file's chunks are read with O_DIRECT, as packs are: it was written with
      // O_DIRECT (reconstruct), so it is not in the page cache, and reading it through the
      // cache cost a pull's server 0.43 CPU-s per 256 MiB in copies (old code, packs: none).
      let direct = false;
      const fd = await this.openConfined(file.path, file.segments, Number(file.identity.size) >= HELD_WINDOWED_FILE_MIN_BYTES, (d) => (direct = d));
      if (fd && !file.dropped && file.fd === undefined) {
        file.fd = fd;
        file.direct = direct;
        this.open.add(file);
      }
      return fd;
    } finally {
      this.opensInFlight--;
    }
  }

  /**
   * Reserves a descriptor of the budget: closes the least recently used held files not in
   * use, and waits for their close(2), until one is free. If every open one is in use the
   * open goes ahead over the budget (waiting could deadlock a read that holds one).
   */
  private async reserveOpen(): Promise<void> {
    for (;;) {
      if (this.open.size + this.opensInFlight + this.closesInFlight < this.maxOpenFiles) break;
      let victim: HeldFile | undefined;
      for (const f of this.open) {
        if (f.busy === 0 && f.opening === undefined) {
          victim = f;
          break;
        }
      }
      if (!victim) break;
      await this.closeFile(victim);
    }
    this.opensInFlight++;
  }

  /**
   * Marks `file`'s descriptor the most recently used and closes the least recently used
   * ones beyond MAX_HELD_OPEN_FILES (a tree of many files must not take every descriptor
   * of the process): those not in use (HeldFile.busy); an evicted file is reopened, and its
   * identity checked again, at its next use.
   */
  private touch(file: HeldFile): void {
    if (file.fd === undefined) return;
    this.open.delete(file);
    this.open.add(file);
    if (this.open.size <= this.maxOpenFiles) return;
    for (const f of this.open) {
      if (this.open.size <= this.maxOpenFiles) break;
      if (f === file || f.busy > 0 || f.opening !== undefined) continue;
      void this.closeFile(f);
    }
  }

  /** Drops a file for this process: its chunks count as missing (logged, as a set-aside is). */
  private drop(file: HeldFile, why: string): void {
    if (file.dropped) return;
    file.dropped = true;
    this.unmap(file);
    this.options.log.warn({ target: file.target, path: file.path, chunks: file.keys.length, why }, 'held file dropped: its chunks count as missing until pushed again');
    void this.closeFile(file);
  }

  /**
   * A held copy that does not hash right (its file's identity unchanged): that place no
   * longer counts, as a set-aside chunk does (logged); the file's other chunks, each
   * re-hashed when read, still do. With `persist` its offset is added to the file's record
   * (persistDamage), so that it stays dropped after a restart.
   */
  private dropPlace(id: ChunkId, place: Place, persist = false): void {
    if (persist && this.options.readOnly === true) {
      // Another process (a verify of the root) found it: the running server learns it from the damage list.
      const run = this.damageList.append(place.file, id, place.offset).catch((err: unknown) => {
        this.options.log.warn({ target: place.file.target, error: (err as Error).message }, 'held damage not written to the damage list (a running server finds it when it reads the chunk)');
      });
      this.pending.add(run);
      void run.finally(() => this.pending.delete(run));
      persist = false;
    }
    const k = chunkKey(id.algorithm, id.digest);
    const c = this.chunks.get(k);
    const i = c?.places.indexOf(place) ?? -1;
    if (!c || i < 0) return;
    c.places.splice(i, 1);
    if (c.places.length === 0) this.chunks.delete(k);
    this.options.log.warn({ target: place.file.target, path: place.file.path, chunk: digestToHex(id.digest), offset: place.offset }, 'held chunk does not hash to its digest: set aside (missing until pushed again)');
    if (persist) {
      place.file.damaged.add(place.offset);
      this.persistDamage(place.file);
    }
  }

  /**
   * Rewrites the record of `file`'s target with its damaged offsets, in the background, once no commit is
   * in its held steps (and none begins meanwhile: a commit's record of a newer copy is
   * never overwritten). A file replaced or dropped meanwhile needs nothing; a failure is
   * logged (the damage is then found again after a restart, by a re-hash).
   */
  private persistDamage(file: HeldFile): void {
    if (file.damagePending || this.options.readOnly === true) return;
    if (file.damaged.size > MAX_DAMAGED_RECORDED) {
      this.options.log.warn({ target: file.target, damaged: file.damaged.size }, 'held file has too many damaged chunks to record: they are found again after a restart');
      return;
    }
    file.damagePending = true;
    const run = (async () => {
      await Promise.race([this.whenIdle(), this.closing]);
      file.damagePending = false;
      if (this.closed || file.dropped || file.unadopted || !this.isLoaded(file)) return;
      await this.writeRecord(`${file.key}.held`, recordOf(this.targets.get(file.key)!));
    })().catch((err: unknown) => {
      this.options.log.warn({ target: file.target, error: (err as Error).message }, 'held record not rewritten with a damaged chunk (found again after a restart)');
    });
    this.pending.add(run);
    void this.runExclusive(run).finally(() => this.pending.delete(run));
  }

  /**
   * Drops the places the damage list (HELD_DAMAGE_FILE) names that were appended since the
   * last look, at most every SET_ASIDE_RECHECK_MS (or `now`): a file's place only while the
   * file has the dev and ino of the line. A server records them (persistDamage); a
   * read-only store drops them in memory. A list that cannot be read is logged, not fatal.
   */
  private async checkDamageList(now = false): Promise<void> {
    const t = performance.now();
    if (!now && t - this.damageCheckedAtMs < SET_ASIDE_RECHECK_MS) return;
    this.damageCheckedAtMs = t;
    this.damageReading ??= (async () => {
      let lines: DamageLine[];
      try {
        lines = await this.damageList.readNew();
      } catch (err) {
        this.options.log.warn({ error: (err as Error).message }, 'held damage list not read (tried again later)');
        return;
      }
      for (const d of lines) {
        const file = this.targets.get(heldKey(d.target))?.find((f) => f.entry === d.entry && !f.dropped && f.identity.dev === d.dev && f.identity.ino === d.ino);
        if (!file) continue;
        const place = this.chunks.get(chunkKey(d.id.algorithm, d.id.digest))?.places.find((p) => p.file === file && p.offset === d.offset);
        if (place) this.dropPlace(d.id, place, this.options.readOnly !== true);
      }
    })().finally(() => (this.damageReading = undefined));
    await this.damageReading;
  }

  private unmap(file: HeldFile): void {
    for (const k of file.keys) {
      const c = this.chunks.get(k);
      if (!c) continue;
      const rest = c.places.filter((p) => p.file !== file);
      if (rest.length === 0) this.chunks.delete(k);
      else c.places.splice(0, c.places.length, ...rest);
    }
  }

  private place(file: HeldFile, id: ChunkId, offset: number, length: number): void {
    const k = chunkKey(id.algorithm, id.digest);
    let c = this.chunks.get(k);
    if (!c) this.chunks.set(k, (c = { id, places: [] }));
    if (c.places.some((p) => p.file === file)) return; // a repeat in the same file: its first place serves
    c.places.push({ file, offset, length });
    file.keys.push(k);
  }

  private async closeFile(file: HeldFile): Promise<void> {
    const fd = file.fd;
    file.fd = undefined;
    file.reader = undefined;
    file.checkedAtMs = -Infinity;
    this.open.delete(file);
    if (!fd) return;
    this.closesInFlight++;
    try {
      await fd.close().catch(() => undefined);
    } finally {
      this.closesInFlight--;
    }
  }

  /**
   * The bytes of a place, or undefined if they cannot be read whole (its file reopened first
   * if its descriptor was evicted). `exact`: read just these bytes, not through a window.
   */
  private async readPlace(p: Place, exact = false): Promise<Buffer | undefined> {
    const file = p.file;
    file.busy++;
    try {
      if (file.fd === undefined && !(await this.checkIdentityBusy(file))) return undefined;
      const fd = file.fd;
      if (!fd) return undefined;
      const size = Number(file.identity.size);
      // A fetch or a rebuild reads a held file's chunks in order: 4 MiB windows read ahead,
      // and views of them, instead of a read(2) and a Buffer per chunk (a restore of 256 MiB
      // spent 0.47 s of the server's main thread on 3,365 reads). Reads far from the last
      // one (an evacuation's scattered chunks) would cost a window each: read exactly.
      const near = p.offset >= file.readEnd - HELD_WINDOW_REORDER_BYTES && p.offset <= file.readEnd + HELD_WINDOW_REORDER_BYTES;
      file.readEnd = p.offset + p.length;
      if (size >= HELD_WINDOWED_FILE_MIN_BYTES && near && !exact) {
        file.reader ??= DirectRangeReader.over(fd, size, file.direct);
        const data = await file.reader.read(p.length, p.offset).catch(() => undefined);
        return data?.length === p.length ? data : undefined; // shorter than recorded: damaged
      }
      const data = await readRange(fd, file.direct, p.offset, p.length).catch(() => undefined);
      return data?.length === p.length ? data : undefined; // shorter than recorded: damaged
    } finally {
      file.busy--;
    }
  }

  /** Whether a held copy of `c` reads back right (a damaged one drops its file). */
  private async verifiedHeld(c: HeldChunk): Promise<boolean> {
    for (const p of [...c.places]) {
      if (!(await this.usable(p.file, true))) continue;
      const bytes = await this.readPlace(p);
      if (bytes && digestEquals(digestOf(c.id.algorithm, bytes), c.id.digest)) return true;
      this.dropPlace(c.id, p, true);
    }
    return false;
  }

  /** The start-up rules (docs/FORMAT.md), then every record loaded. */
  private async recover(): Promise<void> {
    const signal = this.options.signal;
    const readOnly = this.options.readOnly === true;
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      // A root never served with files has no held/ (read-only: not made).
      if (readOnly && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw fromSystemError(err, this.dir, 'list');
    }
    for (const n of names) {
      // A temp file of a record write a crash cut short: never read.
      if (n.startsWith('.') && n.endsWith('.tmp') && !readOnly) await unlink(join(this.dir, n)).catch(() => undefined);
    }
    /** Read-only: the records promoted in memory, by file name. */
    const promoted = new Map<string, HeldRecord>();
    for (const n of names.filter((x) => x.endsWith('.staged.held'))) {
      const key = n.slice(0, -'.staged.held'.length);
      const staged = await this.readRecordFile(n);
      const record = staged && heldKey(staged.target) === key ? await this.promoted(staged) : undefined;
      if (record) {
        // Crash between steps 6 and 7: the target is the staged copy; step 7 redone.
        if (readOnly) promoted.set(`${key}.held`, record);
        else await this.writeRecord(`${key}.held`, record);
        this.options.log.info({ target: record.target, files: record.files.length }, 'held record of a commit cut short after its swap: promoted');
      }
      if (!readOnly) await this.removeRecord(n);
    }
    // Again: a promotion above may have written a record there was none of (a first push).
    names = await readdir(this.dir).catch((err: unknown) => {
      throw fromSystemError(err, this.dir, 'list');
    });
    const records = new Set([...names.filter((x) => x.endsWith('.held') && !x.endsWith('.staged.held')), ...promoted.keys()]);
    for (const n of records) {
      const record = promoted.get(n) ?? (await this.readRecordFile(n));
      if (!record || heldKey(record.target) !== n.slice(0, -'.held'.length)) {
        this.options.log.warn({ record: n }, 'held record damaged or misnamed: removed (its chunks are missing)');
        if (!readOnly) await this.removeRecord(n);
        continue;
      }
      // rm cut short after the manifests went: the record names a manifest that is gone.
      const exists = await this.inner.getManifest(record.manifest, { signal }).then(async (body) => {
        for await (const _ of body) break;
        return true;
      }, () => false);
      if (!exists) {
        if (!readOnly) await this.removeRecord(n);
        continue;
      }
      // A file not as recorded is loaded dropped (logged): its chunks are missing until pushed again.
      await this.load(record, signal, true);
    }
    this.readoptions = this.readoptAll();
  }

  /**
   * Re-adopts, in the background, one at a time, the files load found moved (the server
   * listens meanwhile): a use of such a file first waits for (or starts) its own
   * re-adoption, so the first request for it pays at most one read of that file, and once
   * its record is rewritten no later start pays again.
   */
  private async readoptAll(): Promise<void> {
    for (const f of [...this.targets.values()].flat()) {
      if (this.closed) return;
      if (f.unadopted && !f.dropped) await this.readopt(f);
    }
  }

  /** Re-adopts `file` once, however many ask (see readoptOnce). */
  private readopt(file: HeldFile): Promise<void> {
    file.readopting ??= this.readoptOnce(file).catch((err: unknown) => {
      this.drop(file, `its re-hash failed: ${(err as Error).message}`);
    });
    return file.readopting;
  }

  /**
   * A moved file (HeldFile.unadopted): every chunk it holds is read and re-hashed, in
   * file order. Those that hash right are held again, those that do not are dropped (as
   * a damaged held chunk is) and listed in the record; the record is rewritten, durably,
   * with the file's identity now, once no other file of its target (a tree's) waits for
   * its own re-adoption. A file that cannot be read through is dropped for this process
   * (its line is left as it was: the next start tries again). Stopped by close().
   */
  private async readoptOnce(file: HeldFile): Promise<void> {
    const signal = this.options.signal;
    const places: { id: ChunkId; place: Place }[] = [];
    for (const k of new Set(file.keys)) {
      const c = this.chunks.get(k);
      const p = c?.places.find((q) => q.file === file);
      if (c && p) places.push({ id: c.id, place: p });
    }
    places.sort((a, b) => a.place.offset - b.place.offset);
    const bad: { id: ChunkId; place: Place }[] = [];
    let bytes = 0;
    for (const x of places) {
      if (this.closed || signal?.aborted || file.dropped) return;
      const data = await this.readPlace(x.place);
      if (this.closed || signal?.aborted || file.dropped) return;
      if (!data) throw new Error(`files/${file.path} could not be read at offset ${x.place.offset}`);
      if (!digestEquals(digestOf(x.id.algorithm, data), x.id.digest)) bad.push(x);
      bytes += data.length;
    }
    if (bad.length > MAX_DAMAGED_RECORDED) throw new Error(`${bad.length} of its chunks do not hash right`);
    for (const x of bad) {
      this.dropPlace(x.id, x.place);
      file.damaged.add(x.place.offset);
    }
    file.unadopted = false;
    const target = this.targets.get(file.key);
    if (target?.includes(file) && target.every((f) => !f.unadopted || f.dropped) && this.options.readOnly !== true) {
      // The commits of this target wait for this (their use of its files does), so no
      // record of theirs is overwritten.
      await this.writeRecord(`${file.key}.held`, recordOf(target)).catch((err: unknown) => {
        this.options.log.warn({ target: file.target, error: (err as Error).message }, 'held record of a re-adopted file not rewritten (the next start re-hashes the file again)');
      });
    }
    this.options.log.info({ target: file.target, path: file.path, bytes, chunks: places.length, damaged: bad.length }, 'held file re-adopted: its identity changed (a copied or moved root) but its chunks hash to its manifest');
  }

  private async readRecordFile(n: string): Promise<HeldRecord | undefined> {
    const text = await readFile(join(this.dir, n), 'utf8').catch(() => undefined);
    return text === undefined ? undefined : parseRecord(text);
  }

  /**
   * The record a staged one is promoted to, or undefined if it is not to be: the target's
   * current manifest is the one it names (step 5 done) and the target path is its copy
   * (step 6 done). For a file: the file at the target has its dev, ino and size (the mtime
   * may have been set by the attributes applied after the swap). For a tree: the directory
   * at the target is the staged tree's root (dev and ino: see HeldRecord.dir); then each
   * of its lines whose file is there with its dev, ino and size is kept. The lines get the
   * files' identities now (step 7 redone).
   */
  private async promoted(staged: HeldRecord): Promise<HeldRecord | undefined> {
    const targetSegments = segmentsOf(staged.target);
    if (staged.files.length === 0 || !targetSegments || !staged.files.every((f) => segmentsOf(f.path) !== undefined)) return undefined;
    if (staged.dir === undefined && staged.files.length !== 1) return undefined;
    const [current, version] = await Promise.all([this.manifestDigest(staged.target), this.manifestDigest(staged.manifest)]);
    if (current === undefined || version === undefined || current !== version) return undefined;
    if (staged.dir !== undefined) {
      try {
        await checkConfined(this.options.filesDir, targetSegments);
        const st = await lstat(join(this.options.filesDir, ...targetSegments), { bigint: true });
        if (!st.isDirectory() || st.dev !== staged.dir.dev || st.ino !== staged.dir.ino) return undefined;
      } catch (err) {
        if (isXferError(err, 'XFER_ABORTED')) throw err;
        return undefined;
      }
    }
    const files: HeldFileLine[] = [];
    for (const f of staged.files) {
      const fh = await this.openConfined(f.path, segmentsOf(f.path)!);
      if (!fh) continue;
      try {
        const st = await fh.stat({ bigint: true });
        if (st.dev === f.identity.dev && st.ino === f.identity.ino && st.size === f.identity.size) files.push({ entry: f.entry, path: f.path, identity: identityOf(st) });
      } finally {
        await fh.close();
      }
    }
    if (files.length === 0) return undefined;
    return { target: staged.target, manifest: staged.manifest, files };
  }

  /** SHA-256 of a stored manifest's bytes, or undefined if it cannot be read. */
  private async manifestDigest(name: string): Promise<string | undefined> {
    try {
      const h = createHash('sha256');
      for await (const piece of await this.inner.getManifest(name, { signal: this.options.signal })) h.update(piece);
      return h.digest('hex');
    } catch {
      return undefined;
    }
  }
}

/** What the next copy of a commit holds. */
export interface NextCopy {
  /** The new version's manifest (a local file) and its version name (.xfer/versions/...). */
  readonly manifestFile: string;
  readonly version: string;
  /** The staging copy about to be swapped in; undefined when the target is kept as it is. */
  readonly staged: string | undefined;
}

/** A file the next copy holds: its entry, its path under files/, its identity when staged (step 4). */
interface NextLine {
  readonly entry: string;
  readonly path: string;
  identity?: Identity;
}

/**
 * The held steps of one commit (or rm) of a target, in docs/FORMAT.md's order. The caller
 * runs: prepare (steps 3 and 4, before the manifest is stored), the swap, finish (7, 8);
 * end() in every case. An rm runs evacuateAll, removes the manifests, then dropRecord.
 * A tree's files go through the same steps together: one evacuation, one staged record,
 * one record (a line per file).
 */
export class HeldCommit {
  private readonly key: string;
  /** The new copy: its chunks, its files' lines, and each file's chunk places (for load in finish). */
  private next: (NextCopy & { chunks: Set<string>; lines: NextLine[]; places: Map<string, EntryPlace[]> }) | undefined;
  private ended = false;

  constructor(private readonly held: HeldStore, private readonly name: string) {
    this.key = heldKey(name);
  }

  /**
   * Steps 3 and 4 before the manifest of the new version is stored. `next`: the copy that
   * will be held (a file rebuilt atomically, or a tree: its files of at least
   * HELD_TREE_FILE_MIN_BYTES), or undefined when the new copy holds nothing (an in-place
   * write, store-only): then every chunk the current files hold is evacuated and the
   * record removed before the copy changes.
   */
  async prepare(next: NextCopy | undefined, signal: AbortSignal | undefined): Promise<void> {
    const current = this.held.filesOf(this.name);
    let wanted: { entries: string[]; chunks: Set<string>; places: Map<string, EntryPlace[]>; tree: boolean } | undefined;
    if (next) {
      const reader = await openManifestFile(next.manifestFile, { signal });
      const tree = reader.header.kind === 'tree';
      wanted = { ...(await heldEntriesOf(reader)), tree };
    }
    for (const f of current) f.swapping = true;
    if (current.length > 0) await this.held.evacuate(current, wanted?.chunks, signal);
    crashPoint(3);
    if (!next || !wanted || wanted.entries.length === 0) {
      await this.held.removeRecord(`${this.key}.held`);
      await this.held.unload(current);
      return;
    }
    const lines: NextLine[] = wanted.entries.map((entry) => ({ entry, path: entryPath(this.name, entry) }));
    this.next = { ...next, chunks: wanted.chunks, lines, places: wanted.places };
    if (next.staged !== undefined) {
      let dir: HeldRecord['dir'];
      if (!wanted.tree) lines[0]!.identity = identityOf(await lstat(next.staged, { bigint: true }));
      else {
        // A tree's file is in the staged tree, or (an unchanged file whose link into it
        // waits: reconstruct/staging.ts linkFile) at the target, the same inode.
        for (const l of lines) {
          const segments = l.entry.split('/');
          const st = (await lstat(join(next.staged, ...segments), { bigint: true }).catch(() => undefined))
            ?? (await lstat(join(this.held.filesDir, ...l.path.split('/')), { bigint: true }).catch(() => undefined));
          if (st?.isFile()) l.identity = identityOf(st);
        }
        const root = await lstat(next.staged, { bigint: true });
        dir = { dev: root.dev, ino: root.ino };
      }
      const files = lines.filter((l) => l.identity !== undefined).map((l) => ({ entry: l.entry, path: l.path, identity: l.identity! }));
      await this.held.writeRecord(`${this.key}.staged.held`, { target: this.name, manifest: next.version, files, ...(dir ? { dir } : {}) });
    }
    crashPoint(4);
  }

  /**
   * Steps 7 and 8, after the swap (and the attributes applied to the target): the record
   * is written anew for the files now at the target, the staged one removed; the packs
   * whose chunks the files this commit rebuilt all hold are released. A file that is not
   * the staged one (replaced meanwhile) is not held.
   */
  async finish(signal: AbortSignal | undefined): Promise<void> {
    crashPoint(6);
    const next = this.next;
    if (!next) return;
    const current = this.held.filesOf(this.name);
    const previous = new Map(current.map((f) => [f.entry, f]));
    const files: HeldFileLine[] = [];
    /** Entries whose file is new (not the previous copy's inode): rebuilt and verified by this commit. */
    const rebuilt = new Set<string>();
    for (const l of next.lines) {
      const fh = await this.held.openConfined(l.path, l.path.split('/'));
      const st = fh ? await fh.stat({ bigint: true }) : undefined;
      await fh?.close();
      if (!st) continue;
      if (next.staged !== undefined && (l.identity === undefined || st.dev !== l.identity.dev || st.ino !== l.identity.ino)) continue;
      // A file kept as it is (the same inode as before) keeps the damaged chunks its line lists.
      const old = previous.get(l.entry);
      const kept = old !== undefined && old.identity.dev === st.dev && old.identity.ino === st.ino;
      const damaged = kept && old.damaged.size <= MAX_DAMAGED_RECORDED ? [...old.damaged] : [];
      files.push({ entry: l.entry, path: l.path, identity: identityOf(st), damaged });
      if (!kept) rebuilt.add(l.entry);
    }
    if (files.length === 0) {
      await this.held.removeRecord(`${this.key}.held`);
      await this.held.removeRecord(`${this.key}.staged.held`);
      await this.held.unload(current);
      return;
    }
    const record: HeldRecord = { target: this.name, manifest: next.version, files };
    await this.held.writeRecord(`${this.key}.held`, record);
    crashPoint(7);
    await this.held.removeRecord(`${this.key}.staged.held`);
    crashPoint(71);
    await this.held.unload(current);
    // The places prepare read from this very manifest: not read and parsed again.
    const loaded = await this.held.load(record, signal, false, next.places);
    // Only a copy rebuilt and verified by this commit vouches for its chunks' pack copies.
    if (loaded && next.staged !== undefined) {
      const vouched = new Set<string>();
      for (const f of loaded) if (!f.dropped && rebuilt.has(f.entry)) for (const k of f.keys) vouched.add(k);
      if (vouched.size > 0) await this.held.releasePacks(vouched, signal);
    }
    crashPoint(8);
  }

  /** rm, first step: every chunk the target's files hold is moved into the store (step 3 for an rm). */
  async evacuateAll(signal: AbortSignal | undefined): Promise<void> {
    const current = this.held.filesOf(this.name);
    for (const f of current) f.swapping = true;
    if (current.length > 0) await this.held.evacuate(current, undefined, signal);
  }

  /** rm, after the manifests went: the record goes, then the caller removes the copy. */
  async dropRecord(): Promise<void> {
    await this.held.removeRecord(`${this.key}.held`);
    await this.held.removeRecord(`${this.key}.staged.held`);
    await this.held.unload(this.held.filesOf(this.name));
  }

  /** Ends the commit's held part (once; a failed commit leaves at worst a staged record, dropped at the next start). */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    try {
      for (const f of this.held.filesOf(this.name)) f.swapping = false;
      if (this.next) await this.held.removeRecord(`${this.key}.staged.held`).catch(() => undefined);
    } finally {
      this.held.endCommit();
    }
  }
}

/**
 * Where the held chunks of the server root `root` lie, as its records and their manifests
 * say (nothing checked, nothing changed): for tests and tools that inspect the files, as
 * LocalStore.chunkLocation is.
 */
export async function heldChunkPlaces(root: string, manifests: Pick<ManifestStore, 'getManifest'>): Promise<{ id: ChunkId; file: string; offset: number; length: number }[]> {
  const dir = join(root, HELD_DIR);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: { id: ChunkId; file: string; offset: number; length: number }[] = [];
  for (const n of names) {
    if (!n.endsWith('.held') || n.endsWith('.staged.held')) continue;
    const record = parseRecord(await readFile(join(dir, n), 'utf8').catch(() => ''));
    if (!record) continue;
    const lines = new Map(record.files.filter((f) => segmentsOf(f.path) !== undefined).map((f) => [f.entry, f]));
    try {
      const reader = await openManifest(await manifests.getManifest(record.manifest), {});
      for await (const p of placesOf(reader)) {
        const f = lines.get(p.entry);
        if (f && !(f.damaged ?? []).includes(p.offset)) out.push({ id: p.id, file: join(root, 'files', ...f.path.split('/')), offset: p.offset, length: p.length });
      }
    } catch {
      // A record whose manifest is gone holds nothing.
    }
  }
  return out;
}
