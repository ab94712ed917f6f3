/**
 * Garbage collection of a local store (the scheme: ../gc.ts; the layout: ../local.ts).
 *
 *   <dir>/gc/marks.json   {"format":"xfer-gc-marks","version":1,"packs":{"<pack name>": <marked at, ms>}}
 *                         packs marked for deletion; replaced atomically (temp file, rename)
 *   <dir>/gc/lock         held by a running gc (store/lock.ts): one gc at a time
 *
 * A run, under the lock: read every pack's size, time and index; plan (planPackGc);
 * unmark the recovered packs; copy the used chunks of the packs to repack into new packs
 * (through the store's put, verified by its get) and make them durable; mark; then delete
 * the packs marked at least graceMs ago (their .idx first, so that a crash between leaves
 * an orphan pack, collected later, never an index naming missing bytes), and unmark them.
 * Chunk files of a version 1 store are not collected.
 */
import { lstat, mkdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { throwIfAborted } from '../../core/abort.js';
import { fromSystemError, IoError } from '../../core/errors.js';
import { fsyncPath } from '../../io/sync.js';
import { DIRECT_ALIGN_BYTES } from '../../io/direct.js';
import { copyKeptChunks, emptyGcReport, reportPlan, packedBytes, planPackGc, type PackFacts } from '../gc.js';
import { acquireLock } from '../lock.js';
import { decodeIndexRecords, IDX_MAGIC, PACK_MAGIC, PACK_NAME_RE, type PackEntry } from '../pack.js';
import type { ChunkStore, GcOptions, GcReport, ReferencedChunks } from '../store.js';
import { isMissing, readDirNames, writeDurably } from './fs.js';
import { newTempPath } from './temp.js';

const MARKS_FORMAT = 'xfer-gc-marks';
const MARKS_VERSION = 1;

export function gcDir(storeDir: string): string {
  return path.join(storeDir, 'gc');
}

function marksPath(storeDir: string): string {
  return path.join(gcDir(storeDir), 'marks.json');
}

/** What identifies the marks file's current content without reading it ('' when there is none). */
export async function marksStamp(storeDir: string): Promise<string> {
  try {
    const s = await stat(marksPath(storeDir));
    return `${s.ino}:${s.mtimeMs}:${s.size}`;
  } catch (err) {
    if (isMissing(err)) return '';
    throw fromSystemError(err, marksPath(storeDir), 'read gc marks');
  }
}

/** The marked packs and when each was marked. A damaged file fails (fail closed: its packs would look live). */
export async function readMarks(storeDir: string): Promise<Map<string, number>> {
  const file = marksPath(storeDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isMissing(err)) return new Map();
    throw fromSystemError(err, file, 'read gc marks');
  }
  let parsed: { format?: unknown; version?: unknown; packs?: unknown };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    throw new IoError(`${file}: damaged gc marks (invalid JSON); restore or remove it after checking no gc runs`);
  }
  if (parsed.format !== MARKS_FORMAT || parsed.version !== MARKS_VERSION || typeof parsed.packs !== 'object' || parsed.packs === null) {
    throw new IoError(`${file}: not gc marks of a version this xfer reads`);
  }
  const marks = new Map<string, number>();
  for (const [name, at] of Object.entries(parsed.packs)) {
    if (PACK_NAME_RE.test(name) && typeof at === 'number' && Number.isFinite(at)) marks.set(name, at);
  }
  return marks;
}

async function writeMarks(storeDir: string, tempDir: string, marks: ReadonlyMap<string, number>): Promise<void> {
  const dir = gcDir(storeDir);
  await mkdir(dir, { recursive: true }).catch((err: unknown) => {
    throw fromSystemError(err, dir, 'create gc directory');
  });
  const body = `${JSON.stringify({ format: MARKS_FORMAT, version: MARKS_VERSION, packs: Object.fromEntries(marks) })}\n`;
  const temp = newTempPath(tempDir);
  try {
    await writeDurably(temp, [Buffer.from(body)], undefined);
    await rename(temp, marksPath(storeDir)).catch((err: unknown) => {
      throw fromSystemError(err, marksPath(storeDir), 'write gc marks');
    });
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await fsyncPath(dir);
}

/** What local gc needs of its LocalStore. */
export interface LocalGcAccess {
  readonly dir: string;
  readonly packDir: string;
  readonly tempDir: string;
  /** The store itself: repacked chunks are read (verified) and put again through it. */
  readonly store: ChunkStore;
  /** Reads the marks again and makes exactly the marked (and deleted) packs dead; `extra` too. */
  refreshMarks(extra?: Iterable<string>): Promise<void>;
  /** A pack was deleted: close its file. */
  forgetPack(name: string): void;
  /**
   * Commits what is pending and makes the next put start a new pack, so that repacked
   * chunks never go into a pack this gc judges; returns the packs still being written
   * here (left alone).
   */
  rollOver(signal: AbortSignal | undefined): Promise<string[]>;
}

/** Reads what is known of every pack in the directory: size, time, index records, mark. */
async function packFacts(packDir: string, marks: ReadonlyMap<string, number>, signal: AbortSignal | undefined): Promise<PackFacts[]> {
  const out: PackFacts[] = [];
  for (const file of await readDirNames(packDir, signal)) {
    if (!file.endsWith('.pack')) continue;
    const name = file.slice(0, -'.pack'.length);
    if (!PACK_NAME_RE.test(name)) continue;
    throwIfAborted(signal);
    const facts = await onePackFacts(packDir, name, marks);
    if (facts) out.push(facts);
  }
  return out;
}

/** What is known of pack `name`: size, time, index records, mark; undefined if it is not a regular file (or gone). */
async function onePackFacts(packDir: string, name: string, marks: ReadonlyMap<string, number>): Promise<PackFacts | undefined> {
  const file = path.join(packDir, `${name}.pack`);
  let s;
  try {
    s = await lstat(file);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw fromSystemError(err, file, 'read pack');
  }
  if (!s.isFile()) return undefined;
  let entries: PackEntry[] = [];
  let modifiedMs = s.mtimeMs;
  const idxFile = path.join(packDir, `${name}.idx`);
  try {
    const bytes = await readFile(idxFile);
    modifiedMs = Math.max(modifiedMs, (await stat(idxFile)).mtimeMs);
    if (bytes.subarray(0, IDX_MAGIC.length).equals(IDX_MAGIC)) entries = decodeIndexRecords(bytes.subarray(IDX_MAGIC.length)).entries;
  } catch (err) {
    if (!isMissing(err)) throw fromSystemError(err, idxFile, 'read pack index');
  }
  const markedAtMs = marks.get(name);
  return { name, bytes: s.size, entries, modifiedMs, ...(markedAtMs === undefined ? {} : { markedAtMs }) };
}

async function removeIfThere(file: string): Promise<void> {
  await unlink(file).catch((err: unknown) => {
    if (!isMissing(err)) throw fromSystemError(err, file, 'delete');
  });
}

/** One gc run on a local store (see the top of this file). */
export async function collectLocalGarbage(access: LocalGcAccess, referenced: ReferencedChunks, options: GcOptions): Promise<GcReport> {
  const { signal } = options;
  const dryRun = options.dryRun === true;
  const now = options.nowMs ?? Date.now();
  const report = emptyGcReport(dryRun, referenced.size);
  await mkdir(gcDir(access.dir), { recursive: true }).catch(() => undefined);
  const lock = dryRun ? undefined : await acquireLock(path.join(gcDir(access.dir), 'lock'), { signal });
  try {
    const live = new Set(dryRun ? [] : await access.rollOver(signal));
    const marks = await readMarks(access.dir);
    const packs = (await packFacts(access.packDir, marks, signal)).filter((p) => !live.has(p.name));
    const plan = planPackGc(packs, referenced, options);
    const { toMark, removeNow } = reportPlan(report, plan, options, now);
    if (dryRun) {
      // The new packs' size as a writer makes them: magic, records, the end aligned for O_DIRECT.
      const repacked = plan.repack.length ? PACK_MAGIC.length + plan.repack.reduce((n, r) => n + r.keep.reduce((m, e) => m + packedBytes(e), 0), 0) : 0;
      report.storeBytes = packs.reduce((n, p) => n + p.bytes, 0) - report.freedBytes + Math.ceil(repacked / DIRECT_ALIGN_BYTES) * DIRECT_ALIGN_BYTES;
      return report;
    }
    if (plan.recover.length) {
      for (const p of plan.recover) marks.delete(p.name);
      await writeMarks(access.dir, access.tempDir, marks);
      await access.refreshMarks();
    }
    if (plan.repack.length) {
      // Dead in this store first, so that put() stores the used chunks again (in new packs).
      await access.refreshMarks(plan.repack.map((r) => r.pack.name));
      for (const { keep } of plan.repack) await copyKeptChunks(access.store, keep, signal);
      await access.store.flush({ signal });
    }
    if (toMark.length) {
      for (const p of toMark) marks.set(p.name, now);
      await writeMarks(access.dir, access.tempDir, marks);
      await access.refreshMarks();
    }
    for (const p of removeNow) {
      throwIfAborted(signal);
      await removeIfThere(path.join(access.packDir, `${p.name}.idx`));
      await removeIfThere(path.join(access.packDir, `${p.name}.pack`));
      access.forgetPack(p.name);
    }
    if (removeNow.length) {
      await fsyncPath(access.packDir);
      for (const p of removeNow) marks.delete(p.name);
      await writeMarks(access.dir, access.tempDir, marks);
      // The deleted packs stay dead here: their names are gone from the directory.
      await access.refreshMarks(removeNow.map((p) => p.name));
    }
    report.storeBytes = (await packFacts(access.packDir, new Map(), signal)).reduce((n, p) => n + p.bytes, 0);
    return report;
  } finally {
    await lock?.release();
  }
}

/**
 * Deletes those of `own` (packs this opener wrote) whose every indexed chunk `held` says is
 * kept elsewhere, verified (a server's rebuilt file that holds it: server/held.ts), at once
 * and without a mark: nothing is lost, as no chunk of theirs lacks another copy. Under the
 * gc lock (no gc judges them meanwhile); the packs still being written are rolled over
 * first and left alone; marked packs are left to gc. Their .idx goes before their .pack, as
 * in a gc. Returns how many packs and bytes went.
 */
export async function releaseHeldPacks(
  access: LocalGcAccess, own: readonly string[], held: (algorithm: PackEntry['algorithm'], digest: Uint8Array) => boolean, signal: AbortSignal | undefined,
): Promise<{ packs: number; bytes: number }> {
  await mkdir(gcDir(access.dir), { recursive: true }).catch(() => undefined);
  const lock = await acquireLock(path.join(gcDir(access.dir), 'lock'), { signal });
  try {
    const live = new Set(await access.rollOver(signal));
    const marks = await readMarks(access.dir);
    const gone: PackFacts[] = [];
    for (const name of own) {
      if (live.has(name) || marks.has(name)) continue;
      throwIfAborted(signal);
      const facts = await onePackFacts(access.packDir, name, marks);
      if (!facts || facts.entries.length === 0 || !facts.entries.every((e) => held(e.algorithm, e.digest))) continue;
      await removeIfThere(path.join(access.packDir, `${name}.idx`));
      await removeIfThere(path.join(access.packDir, `${name}.pack`));
      access.forgetPack(name);
      gone.push(facts);
    }
    if (gone.length) {
      await fsyncPath(access.packDir);
      await access.refreshMarks(gone.map((p) => p.name));
    }
    return { packs: gone.length, bytes: gone.reduce((n, p) => n + p.bytes, 0) };
  } finally {
    await lock.release();
  }
}
