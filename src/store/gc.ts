/**
 * Garbage collection of a store: what no manifest refers to is deleted, packs mostly
 * unused are rewritten, and what killed pushes left is removed. This file holds what every
 * kind of store shares: the set of referenced chunks, computed from every manifest
 * (listManifests('') lists current manifests and every version alike), and the plan for
 * pack stores; each store does the rest itself (GarbageCollecting: local/gc.ts, s3/gc.ts,
 * memory.ts).
 *
 * Safe against pushes running at the same time, by two-phase deletion with a grace period
 * (rustic's and duplicacy's scheme; docs/RELIABILITY.md, "gc and concurrent pushes"):
 *
 * 1. A gc marks what it would delete (a pack no manifest needs, or one it has just
 *    repacked), with the time. From then on the store's has() and put() treat the chunks
 *    of marked packs as absent (other openers see a mark within GC_MARKS_RECHECK_MS), so
 *    a push that starts later stores them again instead of relying on them.
 * 2. A later gc, at least graceMs after the mark, deletes a marked pack, unless a chunk in
 *    it that some manifest now refers to has no other copy: then the pack is recovered
 *    (unmarked). That is the case of a push that asked has() before the mark, was told
 *    "present", skipped the upload and committed its manifest after the mark: as a push
 *    lasts less than graceMs, its manifest is there when the deleting gc lists them.
 *
 * Packs written within graceMs are left alone (a push may still be filling them or about
 * to commit a manifest that needs them), so orphans of killed pushes go once they are
 * graceMs old. With graceMs 0 a gc marks and deletes in one run: for a store no push is
 * using (tests, benchmarks, a maintenance window).
 */
import { throwIfAborted } from '../core/abort.js';
import { isZeroChunk } from '../chunker/zero.js';
import { InvalidArgumentError, InvalidOptionError, isXferError, ManifestCorruptError } from '../core/errors.js';
import { DIGEST_ALGORITHMS, type DigestAlgorithm } from '../core/ids.js';
import { openManifest } from '../manifest/reader.js';
import { DigestIndex } from './digest-index.js';
import { PACK_MAGIC, PACK_RECORD_HEADER_BYTES, type PackEntry } from './pack.js';
import {
  collectsGarbage,
  collectsRemotely,
  type ChunkStore,
  type GcRun,
  type GcOptions,
  type GcReport,
  type ManifestStore,
  type ReferencedChunks,
} from './store.js';

/** restic's default: a pack more than 5% unused is repacked, which bounds the waste of a collected store near 5%. */
export const DEFAULT_MAX_UNUSED_PERCENT = 5;
/** A marked pack is kept a day before a gc may delete it: no push runs longer (rustic keeps 23 h). */
export const DEFAULT_GC_GRACE_MS = 24 * 60 * 60 * 1000;
/** How often a store's has() and put() look again at the marks other processes wrote. */
export const GC_MARKS_RECHECK_MS = 5 * 1000;

/** The chunks any manifest refers to (zero chunks aside: no store holds them). */
export class ReferencedSet implements ReferencedChunks {
  private readonly byAlgorithm = new Map<DigestAlgorithm, DigestIndex>(DIGEST_ALGORITHMS.map((a) => [a, new DigestIndex()]));

  get size(): number {
    let n = 0;
    for (const index of this.byAlgorithm.values()) n += index.size;
    return n;
  }

  add(algorithm: DigestAlgorithm, digest: Uint8Array): void {
    this.byAlgorithm.get(algorithm)!.add(digest, 0, 0, 0);
  }

  has(algorithm: DigestAlgorithm, digest: Uint8Array): boolean {
    return this.byAlgorithm.get(algorithm)!.find(digest) >= 0;
  }
}

/**
 * Reads every manifest of `store` (listManifests('')) and collects the chunks they refer
 * to. A manifest that cannot be read fails the whole gc: its chunks would otherwise count
 * as garbage.
 */
export async function referencedChunks(store: ManifestStore, signal?: AbortSignal): Promise<{ set: ReferencedSet; manifests: number }> {
  const set = new ReferencedSet();
  const names = (await store.listManifests('', { signal })).map((m) => m.name);
  for (const name of names) {
    throwIfAborted(signal);
    let source: AsyncIterable<Uint8Array>;
    try {
      source = await store.getManifest(name, { signal });
    } catch (err) {
      if (isXferError(err, 'XFER_NOT_FOUND')) continue; // deleted since it was listed: it refers to nothing now
      throw err;
    }
    try {
      const reader = await openManifest(source, { signal });
      const algorithm = reader.header.digestAlgorithm;
      for await (const ev of reader.events()) {
        if (ev.kind !== 'chunks') continue;
        for (const r of ev.records) if (!isZeroChunk(algorithm, r.length, r.digest)) set.add(algorithm, r.digest);
      }
    } catch (err) {
      if (err instanceof ManifestCorruptError) {
        throw new ManifestCorruptError(`gc refuses to run: manifest "${name}" cannot be read, so what it refers to is unknown (${err.message})`);
      }
      throw err;
    }
  }
  return { set, manifests: names.length };
}

/** Checks gc options at the library's edge. */
export function checkGcOptions(options: GcOptions): void {
  const p = options.maxUnusedPercent;
  if (typeof p !== 'number' || !Number.isFinite(p) || p < 0 || p > 100) throw new InvalidOptionError('maxUnusedPercent', 'a number from 0 to 100');
  const g = options.graceMs;
  if (typeof g !== 'number' || !Number.isSafeInteger(g) || g < 0) throw new InvalidOptionError('graceMs', 'a non-negative integer (milliseconds)');
  if (options.nowMs !== undefined && (typeof options.nowMs !== 'number' || !Number.isFinite(options.nowMs))) throw new InvalidOptionError('nowMs', 'a number (ms since the epoch)');
}

/**
 * Collects the garbage of `store`: the referenced set from its manifests, then the store's
 * own collectGarbage; a server's store asks the server to do all of it.
 */
export async function collectGarbage(store: ChunkStore & ManifestStore, options: GcOptions): Promise<GcRun> {
  checkGcOptions(options);
  if (collectsRemotely(store)) return store.collectAllGarbage(options);
  if (!collectsGarbage(store)) throw new InvalidArgumentError('this store cannot collect its garbage');
  const { set, manifests } = await referencedChunks(store, options.signal);
  return { ...(await store.collectGarbage(set, options)), manifests };
}

/** A report of nothing done, to fill in. */
export function emptyGcReport(dryRun: boolean, referenced: number): { -readonly [K in keyof GcReport]: GcReport[K] } {
  return {
    dryRun, referencedChunks: referenced, markedPacks: 0, markedBytes: 0, repackedPacks: 0, repackedBytes: 0, deletedPacks: 0,
    deletedChunks: 0, freedBytes: 0, orphanPacks: 0, recoveredPacks: 0, waitingPacks: 0, waitingBytes: 0, nextDeletableAtMs: 0,
    mergedIndexes: 0, abortedUploads: 0, storeBytes: 0,
  };
}

/** What a pack store knows of one pack, for planPackGc. */
export interface PackFacts {
  readonly name: string;
  /** Its size (file or object). */
  readonly bytes: number;
  /** Its chunks as its index names them ([] for a pack no index names). */
  readonly entries: readonly PackEntry[];
  /** When it was last written (ms since epoch). */
  readonly modifiedMs: number;
  /** When a gc marked it, if one did. */
  readonly markedAtMs?: number;
}

/** What a gc does to each pack (planPackGc). */
export interface PackPlan {
  /** Marked at least graceMs ago and not needed: delete. */
  readonly remove: PackFacts[];
  /** Marked, but a manifest refers to a chunk only it holds: unmark. */
  readonly recover: PackFacts[];
  /** Marked, not deletable yet. */
  readonly waiting: PackFacts[];
  /** Nothing in it is used: mark (its chunks lose nothing). Orphans (no index) are among them. */
  readonly mark: PackFacts[];
  /** More than maxUnusedPercent unused: copy `keep` into new packs, then mark. */
  readonly repack: { readonly pack: PackFacts; readonly keep: PackEntry[] }[];
}

/**
 * Copies the used chunks of packs being repacked into new packs: each is read verified and
 * put back (the packs are already dead in `store`, so put stores it anew). A chunk whose
 * copy is damaged, or was set aside before, is left out rather than failing the gc: the
 * read has set it aside (ChunkStore.setAside), so it counts as missing and the next push
 * that has it stores it again, as it would without a gc.
 */
export async function copyKeptChunks(store: ChunkStore, entries: readonly PackEntry[], signal: AbortSignal | undefined): Promise<void> {
  for (const e of entries) {
    throwIfAborted(signal);
    const id = { algorithm: e.algorithm, digest: e.digest };
    let data: Buffer;
    try {
      data = await store.get(id, { signal });
    } catch (err) {
      if (isXferError(err, 'XFER_CHUNK_CORRUPT')) continue;
      throw err;
    }
    await store.put(id, data, { signal, trusted: true }); // get verified these very bytes
  }
}

/** The bytes a chunk takes in a pack (its record header and data). */
export function packedBytes(e: PackEntry): number {
  return PACK_RECORD_HEADER_BYTES + e.length;
}

/**
 * Fills in what `plan` does (the same for every pack store) and returns the packs a run
 * marks now and those it deletes now: marked packs past the grace, and with no grace at
 * all (nothing may be running) the ones it marks.
 */
export function reportPlan(report: ReturnType<typeof emptyGcReport>, plan: PackPlan, options: GcOptions, now: number): { toMark: PackFacts[]; removeNow: PackFacts[] } {
  const toMark = [...plan.mark, ...plan.repack.map((r) => r.pack)];
  const removeNow = [...plan.remove, ...(options.graceMs === 0 ? toMark : [])];
  report.recoveredPacks = plan.recover.length;
  report.markedPacks = toMark.length;
  report.markedBytes = toMark.reduce((n, p) => n + p.bytes, 0);
  report.repackedPacks = plan.repack.length;
  report.repackedBytes = plan.repack.reduce((n, r) => n + r.keep.reduce((m, e) => m + e.length, 0), 0);
  report.deletedPacks = removeNow.length;
  report.deletedChunks = removeNow.reduce((n, p) => n + p.entries.length, 0);
  report.freedBytes = removeNow.reduce((n, p) => n + p.bytes, 0);
  report.orphanPacks = removeNow.filter((p) => p.entries.length === 0).length;
  const waiting = options.graceMs === 0 ? plan.waiting : [...plan.waiting, ...toMark];
  report.waitingPacks = waiting.length;
  report.waitingBytes = waiting.reduce((n, p) => n + p.bytes, 0);
  report.nextDeletableAtMs = waiting.length ? Math.min(...waiting.map((p) => (p.markedAtMs ?? now) + options.graceMs)) : 0;
  return { toMark, removeNow };
}

/**
 * Decides, for a pack store, what to delete, recover, mark and repack (see the scheme at
 * the top). A referenced chunk keeps one copy, its first in an unmarked pack; other copies
 * are unused. Packs modified less than graceMs ago are left alone.
 */
export function planPackGc(packs: readonly PackFacts[], referenced: ReferencedChunks, options: GcOptions): PackPlan {
  const now = options.nowMs ?? Date.now();
  const plan: PackPlan = { remove: [], recover: [], waiting: [], mark: [], repack: [] };
  const kept = new Map<DigestAlgorithm, DigestIndex>(DIGEST_ALGORITHMS.map((a) => [a, new DigestIndex()]));
  const isKept = (e: PackEntry) => kept.get(e.algorithm)!.find(e.digest) >= 0;
  const keep = (e: PackEntry) => kept.get(e.algorithm)!.add(e.digest, 0, 0, 0);
  // The live copy of each referenced chunk, in unmarked packs (oldest first: packs keep their place).
  const unmarked = packs.filter((p) => p.markedAtMs === undefined).sort((a, b) => a.modifiedMs - b.modifiedMs || (a.name < b.name ? -1 : 1));
  const keepers = new Map<PackFacts, PackEntry[]>();
  for (const p of unmarked) {
    const mine: PackEntry[] = [];
    for (const e of p.entries) {
      if (!referenced.has(e.algorithm, e.digest) || isKept(e)) continue;
      keep(e);
      mine.push(e);
    }
    keepers.set(p, mine);
  }
  // Marked packs: a referenced chunk with no live copy brings its pack back.
  for (const p of packs) {
    if (p.markedAtMs === undefined) continue;
    if (p.entries.some((e) => referenced.has(e.algorithm, e.digest) && !isKept(e))) {
      for (const e of p.entries) if (referenced.has(e.algorithm, e.digest)) keep(e);
      plan.recover.push(p);
    } else if (p.markedAtMs + options.graceMs <= now) plan.remove.push(p);
    else plan.waiting.push(p);
  }
  for (const p of unmarked) {
    if (p.modifiedMs + options.graceMs > now) continue; // maybe still being written, or needed by a push about to commit
    const used = keepers.get(p)!;
    if (used.length === 0) {
      plan.mark.push(p);
      continue;
    }
    const usedBytes = PACK_MAGIC.length + used.reduce((n, e) => n + packedBytes(e), 0);
    const unusedShare = ((p.bytes - usedBytes) / p.bytes) * 100;
    if (unusedShare > options.maxUnusedPercent) plan.repack.push({ pack: p, keep: used });
  }
  return plan;
}
