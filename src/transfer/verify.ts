import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { isZeroChunk } from '../chunker/zero.js';
import { InvalidArgumentError, isXferError, NotFoundError } from '../core/errors.js';
import { digestKey, digestToHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { digestOfFile } from '../scan/file-digest.js';
import { openManifest } from '../manifest/reader.js';
import type { EntryMeta } from '../manifest/types.js';
import { isReservedName } from '../store/names.js';
import type { ChunkCheck, ChunkStore, ManifestStore } from '../store/store.js';
import { versionsPrefix } from '../store/versions.js';
import { Window } from '../core/window.js';

/*
 * Verify jobs (`xfer verify`, the server's POST /v1/verify, `serve --verify-every`), one
 * algorithm for every store: restic's `check` in xfer's terms.
 *
 * - Existence (always): every chunk every named manifest refers to is asked of the store
 *   with has(), in batches: answered from the store's index (local packs, S3 index
 *   objects), no chunk data is read.
 * - Data (readData): each chunk is read back with get(), which re-hashes it (the store's
 *   contract): a flipped byte is found. A store that has verifyChunks (the local store:
 *   it reads its packs in order) is handed them in batches of VERIFY_SORT_BATCH_CHUNKS
 *   instead, with the same outcome per chunk. A subset reads a part of them
 *   (ReadDataSubset) and checks the rest for existence only.
 * - Rebuilt files (targetOf): each file entry's copy where the target was rebuilt (a local
 *   destination, a server's files/) is checked as rsync's quick check does: present, a
 *   regular file, of the manifest's size and mtime (to the millisecond). With readData
 *   (and the file in the subset, by its content digest) it is read and re-hashed against
 *   the manifest's whole-file digest, so a copy damaged with its mtime kept is found too.
 *
 * Damage is collected, never thrown: the report names every damaged chunk and every file
 * (manifest and path inside it) that refers to it. Failures of the job itself (a store that
 * cannot be reached, an abort) are thrown.
 */

/**
 * missing/corrupt: a stored chunk; manifest: a manifest that does not parse; file: a
 * rebuilt file that is gone, of another type, size or mtime, or does not hash to its digest.
 */
export type DamageKind = 'missing' | 'corrupt' | 'manifest' | 'file';

/** One damaged thing and the file it breaks: a damaged chunk has one per file referring to it. */
export interface Damage {
  /** The target (manifest name). */
  readonly manifest: string;
  /** Path of the file inside the target ('' for a file target). */
  readonly path: string;
  readonly kind: DamageKind;
  /** The chunk's digest (hex), for kinds missing and corrupt. */
  readonly digest?: string;
  readonly message: string;
}

/** A damaged chunk and every file that refers to it. */
export interface DamagedChunk {
  readonly digest: string;
  readonly algorithm: DigestAlgorithm;
  readonly kind: 'missing' | 'corrupt';
  readonly message: string;
  readonly files: readonly { readonly manifest: string; readonly path: string }[];
}

export interface VerifyReport {
  /** Targets' manifests checked, and older versions' (their chunks are checked too). */
  readonly manifests: number;
  readonly versions: number;
  /** Files of the targets (not counting their older versions'). */
  readonly files: number;
  /** Chunk references of the manifests, and their bytes (a chunk used twice counts twice). */
  readonly chunks: number;
  readonly bytes: number;
  /** Chunks read back and re-hashed (readData), and their bytes. */
  readonly chunksRead: number;
  readonly bytesRead: number;
  /** What data was read: 'none', 'all', or the subset as given ('10%', '2/5'). */
  readonly readData: string;
  /** Whether rebuilt files were checked (VerifyOptions.targetOf). */
  readonly rebuilt: boolean;
  /** Why no rebuilt file was checked where a caller could expect it (a store-only server: `xfer serve --no-files`). */
  readonly rebuiltSkipped?: string;
  /** Rebuilt files checked (0 unless targets were given), and of those read and re-hashed. */
  readonly filesChecked: number;
  readonly filesRead: number;
  /** Every problem, one per damaged chunk and file it breaks (at most MAX_DAMAGE_REPORTED). */
  readonly damaged: readonly Damage[];
  /** Every damaged chunk with the files it breaks (at most MAX_DAMAGE_REPORTED). */
  readonly damagedChunks: readonly DamagedChunk[];
}

/** What a verify has done so far (VerifyOptions.onProgress). */
export interface VerifyProgress {
  readonly manifestsDone: number;
  readonly manifests: number;
  readonly chunks: number;
  readonly bytes: number;
  readonly chunksRead: number;
  readonly bytesRead: number;
  readonly filesChecked: number;
  readonly damaged: number;
}

/**
 * Which chunks `--read-data-subset` reads, restic's two forms: `part` n of `of` t (1 <= n
 * <= t) selects the chunks whose digest's first four bytes, as an unsigned big-endian
 * integer, are n-1 modulo t, so that the t runs 1/t .. t/t read every chunk exactly once
 * and a run reads the same chunks each time; `fraction` reads each chunk with that
 * probability, at random (a new sample each run).
 */
export type ReadDataSubset = { readonly part: number; readonly of: number } | { readonly fraction: number };

/** The most parts a subset may be cut into (n/t with t up to this). */
export const MAX_SUBSET_PARTS = 1 << 16;

/** Parses `--read-data-subset`: `n/t` or a percentage `p%` (0 < p <= 100). */
export function parseReadDataSubset(text: string): ReadDataSubset {
  const part = /^(\d+)\/(\d+)$/.exec(text);
  if (part) {
    const n = Number(part[1]);
    const t = Number(part[2]);
    if (t < 1 || t > MAX_SUBSET_PARTS || n < 1 || n > t) throw new InvalidArgumentError(`read-data subset "${text}": n/t needs 1 <= n <= t <= ${MAX_SUBSET_PARTS}`);
    return { part: n, of: t };
  }
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(text);
  if (pct) {
    const p = Number(pct[1]);
    if (!(p > 0 && p <= 100)) throw new InvalidArgumentError(`read-data subset "${text}": a percentage must be above 0 and at most 100`);
    return { fraction: p / 100 };
  }
  throw new InvalidArgumentError(`read-data subset "${text}": expected n/t (e.g. 1/5) or a percentage (e.g. 10%)`);
}

/** The subset as the user writes it (`2/5`, `10%`). */
export function formatReadDataSubset(subset: ReadDataSubset): string {
  return 'part' in subset ? `${subset.part}/${subset.of}` : `${+(subset.fraction * 100).toPrecision(12)}%`;
}

/** Whether the chunk (or whole file) of `digest` is in the subset. */
export function inSubset(subset: ReadDataSubset, digest: Uint8Array): boolean {
  if ('part' in subset) {
    const v = ((digest[0]! << 24) | (digest[1]! << 16) | (digest[2]! << 8) | digest[3]!) >>> 0;
    return v % subset.of === subset.part - 1;
  }
  return Math.random() < subset.fraction;
}

export interface VerifyOptions {
  readonly signal?: AbortSignal;
  /**
   * Where each manifest's target is rebuilt (a local destination's directory, a server's
   * `files/`): when given, every file entry's rebuilt copy is checked (see the top). A
   * target that is not there at all is reported as damage too. undefined for a manifest
   * that has no rebuilt copy (hasRebuiltCopy).
   */
  readonly targetOf?: (name: string) => string | undefined;
  /** Read back and re-hash the chunks (and the rebuilt files), not only ask whether they exist. */
  readonly readData?: boolean;
  /** Read only this part of the data (implies readData). */
  readonly subset?: ReadDataSubset;
  /** Told what was done so far, at most every VERIFY_PROGRESS_INTERVAL_MS, and once at the end. */
  readonly onProgress?: (progress: VerifyProgress) => void;
}

/** Chunk reads (and rebuilt files read) in flight at once. */
export const VERIFY_CONCURRENCY = 16;
/** Bytes of chunks being read at once, at most. */
export const VERIFY_WINDOW_BYTES = 64 * 1024 * 1024;
/**
 * Chunks handed to a store's verifyChunks at once: it sorts them by where they are stored,
 * so more is more in order (65,536 chunks of 64 KiB: 4 GiB); bounded, as their ids (about
 * 250 bytes each with the store's sorting) are held until it is done.
 */
export const VERIFY_SORT_BATCH_CHUNKS = 1 << 16;
/** Chunk ids asked of the store in one has() call. */
export const HAS_BATCH_IDS = 8192;
/** Digests already checked in this run (repeats are not asked again); bounded. */
export const VERIFIED_CACHE_ENTRIES = 1 << 20;
/** Damage entries reported at most per run (in each of the report's two lists). */
export const MAX_DAMAGE_REPORTED = 10_000;
export const VERIFY_PROGRESS_INTERVAL_MS = 500;


/**
 * Verifies the named manifests of `manifests` against the chunks of `chunks` (see the top
 * of this file). Never throws for damage: it is in the report.
 */
export async function verifyManifests(
  manifests: ManifestStore, chunks: ChunkStore, names: readonly string[], options: VerifyOptions = {},
): Promise<VerifyReport> {
  const { signal, subset, onProgress } = options;
  const readData = options.readData === true || subset !== undefined;
  const window = new Window(VERIFY_CONCURRENCY, VERIFY_WINDOW_BYTES);
  const seen = new Set<string>();
  /** Damaged chunks by `<algorithm>:<hex>`; `files` filled by the second pass. */
  const bad = new Map<string, { digest: string; algorithm: DigestAlgorithm; kind: 'missing' | 'corrupt'; message: string; files: Map<string, { manifest: string; path: string }> }>();
  const otherDamage: Damage[] = [];
  let manifestsDone = 0;
  let files = 0;
  let chunkCount = 0;
  let bytes = 0;
  let chunksRead = 0;
  let bytesRead = 0;
  let filesChecked = 0;
  let filesRead = 0;
  let lastProgress = -Infinity;
  const damageCount = () => bad.size + otherDamage.length;
  const progress = (force = false) => {
    if (!onProgress) return;
    const now = performance.now();
    if (!force && now - lastProgress < VERIFY_PROGRESS_INTERVAL_MS) return;
    lastProgress = now;
    onProgress({ manifestsDone, manifests: names.length, chunks: chunkCount, bytes, chunksRead, bytesRead, filesChecked, damaged: damageCount() });
  };
  const chunkDamage = (id: ChunkId, kind: 'missing' | 'corrupt', message: string) => {
    const hex = digestToHex(id.digest);
    const key = `${id.algorithm}:${hex}`;
    if (!bad.has(key) && bad.size < MAX_DAMAGE_REPORTED) bad.set(key, { digest: hex, algorithm: id.algorithm, kind, message, files: new Map() });
  };
  const other = (d: Damage) => {
    if (otherDamage.length < MAX_DAMAGE_REPORTED) otherDamage.push(d);
  };

  // Ids only: the files a missing chunk breaks are found by the second pass (findFilesOf).
  let batch: ChunkId[] = [];
  const askBatch = async () => {
    if (batch.length === 0) return;
    const asked = batch;
    batch = [];
    await window.run(0, async () => {
      const present = await chunks.has(asked, { signal });
      for (let i = 0; i < asked.length; i++) {
        if (!present[i]) chunkDamage(asked[i]!, 'missing', `chunk ${digestToHex(asked[i]!.digest)} is missing`);
      }
      progress();
    });
  };
  /** What reading back chunk `p` (of `length` bytes, says the manifest) found. */
  const checked = (p: ChunkId, length: number, check: ChunkCheck) => {
    if (typeof check === 'number') {
      chunksRead++;
      bytesRead += check;
      if (check !== length) chunkDamage(p, 'corrupt', `chunk ${digestToHex(p.digest)} has ${check} bytes, the manifest says ${length}`);
    } else if (check.code === 'XFER_CHUNK_MISSING') chunkDamage(p, 'missing', check.message);
    else {
      chunksRead++; // read, and found not to hash to its digest
      bytesRead += length;
      chunkDamage(p, 'corrupt', check.message);
    }
    progress();
  };
  const readChunk = async (p: ChunkId, length: number) => {
    await window.run(length, async () => {
      let check: ChunkCheck;
      try {
        check = (await chunks.get(p, { signal })).length;
      } catch (err) {
        if (!isXferError(err, 'XFER_CHUNK_MISSING') && !isXferError(err, 'XFER_CHUNK_CORRUPT')) throw err;
        check = err as ChunkCheck;
      }
      checked(p, length, check);
    });
  };
  // The store's own way to check many chunks at once, if it has one.
  const verifyChunks = chunks.verifyChunks?.bind(chunks);
  let toRead: { id: ChunkId; length: number }[] = [];
  const readBatch = async () => {
    if (toRead.length === 0 || verifyChunks === undefined) return;
    const asked = toRead;
    toRead = [];
    await verifyChunks(asked.map((a) => a.id), (i, check) => checked(asked[i]!.id, asked[i]!.length, check), { signal });
  };

  for (const name of names) {
    throwIfAborted(signal);
    let path = '';
    try {
      const reader = await openManifest(await manifests.getManifest(name, { signal }), { signal });
      const algorithm = reader.header.digestAlgorithm;
      const target = options.targetOf?.(name);
      let meta: EntryMeta | undefined;
      for await (const ev of reader.events()) {
        if (ev.kind === 'entry') {
          meta = ev.meta;
          path = ev.meta.path;
          if (ev.meta.type === 'file' && !isReservedName(name)) files++;
          continue;
        }
        if (ev.kind === 'entryEnd') {
          if (target === undefined || meta === undefined) continue;
          const filePath = path;
          const file = filePath === '' ? target : join(target, ...filePath.split('/'));
          const hash = readData && (subset === undefined || inSubset(subset, ev.digest));
          const { size, digest } = ev;
          const mtimeMs = meta.mtimeMs;
          filesChecked++;
          if (hash) filesRead++;
          await window.run(hash ? Math.min(size, VERIFY_WINDOW_BYTES) : 0, async () => {
            const problem = await rebuiltFileProblem(file, { size, mtimeMs, algorithm, digest: hash ? Buffer.from(digest) : undefined }, signal);
            if (problem) other({ manifest: name, path: filePath, kind: 'file', message: problem });
          });
          continue;
        }
        if (ev.kind !== 'chunks') continue;
        for (const rec of ev.records) {
          chunkCount++;
          bytes += rec.length;
          // A zero chunk is in no store: its bytes are known (chunker/zero.ts).
          if (isZeroChunk(algorithm, rec.length, rec.digest)) continue;
          // The reader gives each batch of records digests of their own: kept as they are.
          const id: ChunkId = { algorithm, digest: rec.digest };
          if (readData && (subset === undefined || inSubset(subset, rec.digest))) {
            // A chunk used again is read once (an existence check costs less than the Set).
            const key = digestKey(rec.digest);
            if (seen.has(key)) continue;
            if (seen.size >= VERIFIED_CACHE_ENTRIES) seen.clear();
            seen.add(key);
            if (verifyChunks === undefined) await readChunk(id, rec.length);
            else {
              toRead.push({ id, length: rec.length });
              if (toRead.length >= VERIFY_SORT_BATCH_CHUNKS) await readBatch();
            }
          } else {
            batch.push(id);
            if (batch.length >= HAS_BATCH_IDS) await askBatch();
          }
        }
      }
    } catch (err) {
      if (isXferError(err, 'XFER_MANIFEST_CORRUPT')) other({ manifest: name, path, kind: 'manifest', message: err.message });
      // A manifest removed since it was listed (rm, forget) has nothing left to check.
      else if (!(isXferError(err, 'XFER_NOT_FOUND') && path === '' && names.length > 1)) throw err;
    }
    manifestsDone++;
    progress();
  }
  await askBatch();
  await readBatch();
  await window.drain();
  if (bad.size > 0) await findFilesOf(manifests, names, bad, signal);
  progress(true);

  // Damage in an older version is named as `xfer pull` takes it: <target>@<version id>.
  const shown = versionDisplayNames(names);
  const show = <T extends { readonly manifest: string }>(f: T): T => ({ ...f, manifest: shown.get(f.manifest) ?? f.manifest });
  const damagedChunks: DamagedChunk[] = [...bad.values()].map((c) => ({ digest: c.digest, algorithm: c.algorithm, kind: c.kind, message: c.message, files: [...c.files.values()].map(show) }));
  const damaged: Damage[] = [];
  for (const c of damagedChunks) {
    for (const f of c.files) damaged.push({ manifest: f.manifest, path: f.path, kind: c.kind, digest: c.digest, message: c.message });
  }
  damaged.push(...otherDamage.map(show));
  damaged.splice(MAX_DAMAGE_REPORTED);
  const versions = names.filter(isReservedName).length;
  return { manifests: names.length - versions, versions, files, chunks: chunkCount, bytes, chunksRead, bytesRead, readData: subset ? formatReadDataSubset(subset) : readData ? 'all' : 'none', rebuilt: options.targetOf !== undefined, filesChecked, filesRead, damaged, damagedChunks };
}

/**
 * The second pass, run only when chunks were found damaged: every file of the named
 * manifests that refers to one of them (the first pass checks each chunk once, at its
 * first reference, so it cannot know the others).
 */
async function findFilesOf(
  manifests: ManifestStore, names: readonly string[],
  bad: Map<string, { files: Map<string, { manifest: string; path: string }> }>, signal?: AbortSignal,
): Promise<void> {
  let total = 0;
  for (const name of names) {
    throwIfAborted(signal);
    try {
      const reader = await openManifest(await manifests.getManifest(name, { signal }), { signal });
      const algorithm = reader.header.digestAlgorithm;
      let path = '';
      for await (const ev of reader.events()) {
        if (ev.kind === 'entry') path = ev.meta.path;
        if (ev.kind !== 'chunks') continue;
        for (const rec of ev.records) {
          const c = bad.get(`${algorithm}:${digestToHex(rec.digest)}`);
          const fileKey = `${name}\0${path}`;
          if (!c || c.files.has(fileKey) || total >= MAX_DAMAGE_REPORTED) continue;
          c.files.set(fileKey, { manifest: name, path });
          total++;
        }
      }
    } catch (err) {
      // Reported by the first pass (corrupt), or gone since (removed).
      if (!isXferError(err, 'XFER_MANIFEST_CORRUPT') && !isXferError(err, 'XFER_NOT_FOUND')) throw err;
    }
  }
}

/**
 * Why the rebuilt copy at `path` is not the manifest's file, or undefined if it is. Without
 * `digest` only what lstat tells is compared (size and mtime, rsync's quick check).
 */
async function rebuiltFileProblem(
  path: string, expected: { size: number; mtimeMs: number; algorithm: DigestAlgorithm; digest?: Uint8Array }, signal?: AbortSignal,
): Promise<string | undefined> {
  const { size, algorithm, digest } = expected;
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error) return st.code === 'ENOENT' ? 'the rebuilt file is missing' : `the rebuilt file cannot be read (${st.code ?? st.message})`;
  if (!st.isFile()) return 'the rebuilt copy is not a regular file';
  if (st.size !== size) return `the rebuilt file has ${st.size} bytes, the manifest says ${size}`;
  if (digest === undefined) {
    return Math.floor(st.mtimeMs) === expected.mtimeMs ? undefined : `the rebuilt file was modified: mtime ${new Date(st.mtimeMs).toISOString()}, the manifest says ${new Date(expected.mtimeMs).toISOString()}`;
  }
  let got: Buffer;
  try {
    // Holes are not read, and a large file is hashed in parallel spans (digestOfFile).
    got = await digestOfFile(path, size, algorithm, signal);
  } catch (err) {
    if (isXferError(err, 'XFER_ABORTED')) throw err;
    return `the rebuilt file cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  return got.equals(digest) ? undefined : `the rebuilt file's content differs from its manifest (digest ${digestToHex(got)}, expected ${digestToHex(digest)})`;
}

/**
 * The manifests a verify of `path` covers: every one ('' ), the target `path`, or those
 * of the folder `path` (one listing, no manifest opened). NotFoundError (naming it as
 * `describe` does) when there is none.
 */
export async function manifestsAt(store: ManifestStore, path: string, options: { readonly signal?: AbortSignal; readonly describe?: (name: string) => string } = {}): Promise<string[]> {
  const names = (await store.listManifests(path, { signal: options.signal })).map((m) => m.name).filter((n) => path === '' || n === path || n.startsWith(`${path}/`));
  if (names.length === 0 && path !== '') throw new NotFoundError(`${options.describe?.(path) ?? path}: no such target`);
  return names;
}

/**
 * Whether manifest `name` is a target with a rebuilt copy (a local destination's, a
 * server's): not one of the store's own (versions of targets, under `.xfer/`).
 */
export function hasRebuiltCopy(name: string): boolean {
  return !isReservedName(name);
}

/**
 * `<target>@<version id>` for each version among `names` whose target is among them too
 * (a version's name holds a hash of its target's name, store/versions.ts).
 */
function versionDisplayNames(names: readonly string[]): Map<string, string> {
  const targetOfPrefix = new Map(names.filter((n) => !isReservedName(n)).map((n) => [versionsPrefix(n), n] as const));
  const shown = new Map<string, string>();
  for (const n of names) {
    if (!isReservedName(n)) continue;
    const cut = n.lastIndexOf('/') + 1;
    const target = targetOfPrefix.get(n.slice(0, cut));
    if (target !== undefined) shown.set(n, `${target}@${n.slice(cut)}`);
  }
  return shown;
}
