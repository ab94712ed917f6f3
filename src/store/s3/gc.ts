/**
 * Garbage collection of an S3 store (the scheme: ../gc.ts; the layout: docs/FORMAT.md,
 * "S3 layout"), and the merging of its index objects.
 *
 *   <prefix>gc/marks.json   the packs marked for deletion, as the local store's
 *                           (local/gc.ts): {"format":"xfer-gc-marks","version":1,"packs":{...}}
 *
 * A run: list and read every index object and list the packs (an object's LastModified is
 * its time); plan (planPackGc); unmark the recovered packs; copy the used chunks of the
 * packs to repack through the store's put (new packs and a new index object, written by its
 * flush); mark; then write one merged index object naming every pack of the index objects
 * read except those to delete, delete the index objects it replaces, and only then delete
 * the packs (so no index ever names a deleted pack; a crash leaves at worst duplicate index
 * records, merged by the next gc, or packs no index names, collected as orphans). Index
 * objects written by pushes during the run were not read, so they are neither merged nor
 * deleted. Last, incomplete multipart uploads under the prefix started at least graceMs ago
 * (left by killed processes; a running upload is younger) are aborted. One gc at a time per
 * store (a server runs its own one at a time).
 */
import { throwIfAborted } from '../../core/abort.js';
import { IoError } from '../../core/errors.js';
import { copyKeptChunks, emptyGcReport, reportPlan, planPackGc, type PackFacts } from '../gc.js';
import { newPackName, PACK_NAME_RE } from '../pack.js';
import type { ChunkStore, GcOptions, GcReport, ReferencedChunks } from '../store.js';
import { decodeIndexObject, encodeIndexObject, type PackIndex } from './index-object.js';
import type { PendingUpload } from './multipart.js';
import { S3_INDEX_MAX_RECORDS } from './store.js';

const MARKS_NAME = 'marks.json';
const MARKS_FORMAT = 'xfer-gc-marks';
const MARKS_VERSION = 1;

/** What S3 gc needs of its S3Store. */
export interface S3GcAccess {
  /** The object under `key` (a whole key, prefix included) as s3://bucket/key, for messages. */
  url(key: string): string;
  readonly prefix: string;
  key(kind: 'packs' | 'index' | 'gc', name: string): string;
  readonly store: ChunkStore;
  listKeys(prefix: string, signal?: AbortSignal): Promise<{ key: string; bytes: number; mtimeMs: number }[]>;
  getObject(key: string, signal?: AbortSignal): Promise<Buffer | undefined>;
  putObject(key: string, body: Buffer, signal?: AbortSignal): Promise<void>;
  deleteObject(key: string, signal?: AbortSignal): Promise<void>;
  /** Incomplete multipart uploads under `prefix`, and aborting one (multipart.ts). */
  listUploads(prefix: string, signal?: AbortSignal): Promise<PendingUpload[]>;
  abortUpload(upload: PendingUpload, signal?: AbortSignal): Promise<void>;
  /** Makes exactly these packs dead in the store (has/put: absent). */
  setDead(names: Iterable<string>): Promise<void>;
}

/** The marked packs and when each was marked; a damaged object fails (fail closed). */
export async function readS3Marks(access: S3GcAccess, signal: AbortSignal | undefined): Promise<Map<string, number>> {
  const key = access.key('gc', MARKS_NAME);
  const bytes = await access.getObject(key, signal);
  const marks = new Map<string, number>();
  if (bytes === undefined) return marks;
  let parsed: { format?: unknown; version?: unknown; packs?: unknown };
  try {
    parsed = JSON.parse(bytes.toString('utf8')) as typeof parsed;
  } catch {
    throw new IoError(`${access.url(key)}: damaged gc marks (invalid JSON)`);
  }
  if (parsed.format !== MARKS_FORMAT || parsed.version !== MARKS_VERSION || typeof parsed.packs !== 'object' || parsed.packs === null) {
    throw new IoError(`${access.url(key)}: not gc marks of a version this xfer reads`);
  }
  for (const [name, at] of Object.entries(parsed.packs)) if (PACK_NAME_RE.test(name) && typeof at === 'number' && Number.isFinite(at)) marks.set(name, at);
  return marks;
}

async function writeS3Marks(access: S3GcAccess, marks: ReadonlyMap<string, number>, signal: AbortSignal | undefined): Promise<void> {
  const body = `${JSON.stringify({ format: MARKS_FORMAT, version: MARKS_VERSION, packs: Object.fromEntries(marks) })}\n`;
  await access.putObject(access.key('gc', MARKS_NAME), Buffer.from(body), signal);
}

/** Every index object that decodes, by name, with its packs (damaged ones are left out, as the store does). */
export async function listIndexObjects(access: S3GcAccess, signal: AbortSignal | undefined): Promise<{ name: string; packs: PackIndex[] }[]> {
  const base = `${access.prefix}index/`;
  const out: { name: string; packs: PackIndex[] }[] = [];
  for (const k of await access.listKeys(base, signal)) {
    if (!k.key.endsWith('.idx')) continue;
    const name = k.key.slice(base.length, -'.idx'.length);
    if (!PACK_NAME_RE.test(name)) continue;
    const bytes = await access.getObject(k.key, signal);
    const packs = bytes === undefined ? undefined : decodeIndexObject(bytes);
    if (packs !== undefined) out.push({ name, packs });
  }
  return out;
}

/** Index objects of at most S3_INDEX_MAX_RECORDS records each (at least one pack each). */
function indexObjects(packs: readonly PackIndex[]): Buffer[] {
  const out: Buffer[] = [];
  for (let from = 0; from < packs.length; ) {
    let to = from;
    let records = 0;
    do records += packs[to++]!.entries.length;
    while (to < packs.length && records + packs[to]!.entries.length <= S3_INDEX_MAX_RECORDS);
    out.push(encodeIndexObject(packs.slice(from, to)));
    from = to;
  }
  return out;
}

/** One gc run on an S3 store (see the top of this file); the store has flushed. */
export async function collectS3Garbage(access: S3GcAccess, referenced: ReferencedChunks, options: GcOptions): Promise<GcReport> {
  const { signal } = options;
  const dryRun = options.dryRun === true;
  const now = options.nowMs ?? Date.now();
  const report = emptyGcReport(dryRun, referenced.size);
  const marks = await readS3Marks(access, signal);
  const indexes = await listIndexObjects(access, signal);
  const indexed = new Map<string, PackIndex>();
  for (const { packs } of indexes) for (const p of packs) if (!indexed.has(p.name)) indexed.set(p.name, p);
  const packBase = `${access.prefix}packs/`;
  const facts: PackFacts[] = [];
  for (const k of await access.listKeys(packBase, signal)) {
    if (!k.key.endsWith('.pack')) continue;
    const name = k.key.slice(packBase.length, -'.pack'.length);
    if (!PACK_NAME_RE.test(name)) continue;
    const markedAtMs = marks.get(name);
    facts.push({ name, bytes: k.bytes, entries: indexed.get(name)?.entries ?? [], modifiedMs: k.mtimeMs, ...(markedAtMs === undefined ? {} : { markedAtMs }) });
  }
  const stored = new Set(facts.map((p) => p.name));
  const plan = planPackGc(facts, referenced, options);
  const { toMark, removeNow } = reportPlan(report, plan, options, now);
  const removed = new Set(removeNow.map((p) => p.name));
  // Index records of packs that are gone (or go now) are dropped by the merge.
  const mergedPacks = [...indexed.values()].filter((p) => stored.has(p.name) && !removed.has(p.name));
  const merge = indexes.length > 1 || mergedPacks.length !== indexed.size;
  report.mergedIndexes = merge ? indexes.length : 0;
  const staleUploads = (await access.listUploads(access.prefix, signal)).filter((u) => u.initiatedMs + options.graceMs <= now);
  report.abortedUploads = staleUploads.length;
  if (dryRun) {
    report.storeBytes = facts.reduce((n, p) => n + p.bytes, 0) - report.freedBytes;
    return report;
  }
  if (plan.recover.length) {
    for (const p of plan.recover) marks.delete(p.name);
    await writeS3Marks(access, marks, signal);
    await access.setDead(marks.keys());
  }
  if (plan.repack.length) {
    await access.setDead([...marks.keys(), ...plan.repack.map((r) => r.pack.name)]);
    for (const { keep } of plan.repack) await copyKeptChunks(access.store, keep, signal);
    await access.store.flush({ signal }); // the new packs, then their index object
  }
  if (toMark.length) {
    for (const p of toMark) marks.set(p.name, now);
    await writeS3Marks(access, marks, signal);
    await access.setDead(marks.keys());
  }
  if (merge) {
    // The merged index first, then the objects it replaces: never a moment without an index of a pack.
    for (const body of indexObjects(mergedPacks)) await access.putObject(access.key('index', newPackName()), body, signal);
    for (const { name } of indexes) await access.deleteObject(access.key('index', name), signal);
  }
  for (const p of removeNow) {
    throwIfAborted(signal);
    await access.deleteObject(access.key('packs', p.name), signal);
  }
  if (removeNow.length) {
    for (const p of removeNow) marks.delete(p.name);
    await writeS3Marks(access, marks, signal);
    await access.setDead([...marks.keys(), ...removed]);
  }
  for (const u of staleUploads) {
    throwIfAborted(signal);
    await access.abortUpload(u, signal);
  }
  report.storeBytes = (await access.listKeys(packBase, signal)).filter((k) => k.key.endsWith('.pack')).reduce((n, k) => n + k.bytes, 0);
  return report;
}
