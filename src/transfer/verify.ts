import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { isZeroChunk } from '../chunker/zero.js';
import { isXferError } from '../core/errors.js';
import { digestToHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { createHasher } from '../hash/digest.js';
import { readSequential } from '../io/direct.js';
import { openManifest } from '../manifest/reader.js';
import type { ChunkStore, ManifestStore } from '../store/store.js';
import { Window } from '../core/window.js';

/**
 * missing/corrupt: a stored chunk; manifest: a manifest that does not parse; file: a
 * rebuilt file that is gone, of another type or size, or does not hash to its digest.
 */
export type DamageKind = 'missing' | 'corrupt' | 'manifest' | 'file';

export interface Damage {
  readonly manifest: string;
  /** Path of the file inside the manifest ('' for a file manifest). */
  readonly path: string;
  readonly kind: DamageKind;
  readonly digest?: string;
  readonly message: string;
}

export interface VerifyReport {
  readonly manifests: number;
  readonly files: number;
  readonly chunks: number;
  readonly bytes: number;
  /** Rebuilt files read and re-hashed (0 unless `files` was given). */
  readonly filesChecked: number;
  readonly damaged: readonly Damage[];
}

export interface VerifyOptions {
  readonly signal?: AbortSignal;
  /**
   * Where each manifest's target is rebuilt (a local destination's directory, a server's
   * `files/`): when given, every file entry's rebuilt copy is read and re-hashed against the
   * manifest's whole-file digest, so a copy damaged on disk (even with its mtime kept) is
   * found. A target that is not there at all is reported as damage too.
   */
  readonly targetOf?: (name: string) => string;
}

export const VERIFY_CONCURRENCY = 16;
/** Digests already checked in this run (repeats are not re-read); bounded. */
export const VERIFIED_CACHE_ENTRIES = 1 << 18;
/** Damage entries reported at most per run; the counts stay exact. */
export const MAX_DAMAGE_REPORTED = 10_000;

/**
 * Checks that every chunk each named manifest refers to is present and intact (read back
 * and re-hashed by the store). Never throws for damage: it is collected in the report.
 */
export async function verifyManifests(
  manifests: ManifestStore, chunks: ChunkStore, names: readonly string[], options: VerifyOptions = {},
): Promise<VerifyReport> {
  const { signal } = options;
  let filesChecked = 0;
  const damaged: Damage[] = [];
  const verified = new Set<string>();
  const window = new Window(VERIFY_CONCURRENCY, Number.MAX_SAFE_INTEGER);
  let files = 0;
  let chunkCount = 0;
  let bytes = 0;
  const report = (d: Damage) => {
    if (damaged.length < MAX_DAMAGE_REPORTED) damaged.push(d);
  };
  for (const name of names) {
    throwIfAborted(signal);
    let path = '';
    try {
      const reader = await openManifest(await manifests.getManifest(name, { signal }), { signal });
      const algorithm = reader.header.digestAlgorithm;
      const target = options.targetOf?.(name);
      for await (const ev of reader.events()) {
        if (ev.kind === 'entry') {
          path = ev.meta.path;
          if (ev.meta.type === 'file') files++;
          continue;
        }
        if (ev.kind === 'entryEnd') {
          if (target === undefined) continue;
          const filePath = path;
          const file = filePath === '' ? target : join(target, ...filePath.split('/'));
          const { size, digest } = ev;
          filesChecked++;
          await window.run(Math.max(size, 1), async () => {
            const problem = await rebuiltFileProblem(file, size, algorithm, digest, signal);
            if (problem) report({ manifest: name, path: filePath, kind: 'file', message: problem });
          });
          continue;
        }
        if (ev.kind !== 'chunks') continue;
        const filePath = path;
        for (const rec of ev.records) {
          chunkCount++;
          bytes += rec.length;
          // A zero chunk is in no store: its bytes are known (chunker/zero.ts).
          if (isZeroChunk(algorithm, rec.length, rec.digest)) continue;
          const key = `${algorithm}:${digestToHex(rec.digest)}`;
          if (verified.has(key)) continue;
          if (verified.size >= VERIFIED_CACHE_ENTRIES) verified.clear();
          verified.add(key);
          const id: ChunkId = { algorithm, digest: rec.digest };
          await window.run(rec.length, async () => {
            try {
              const data = await chunks.get(id, { signal });
              if (data.length !== rec.length) {
                report({ manifest: name, path: filePath, kind: 'corrupt', digest: digestToHex(rec.digest), message: `chunk has ${data.length} bytes, manifest says ${rec.length}` });
              }
            } catch (err) {
              if (isXferError(err, 'XFER_CHUNK_MISSING')) report({ manifest: name, path: filePath, kind: 'missing', digest: digestToHex(rec.digest), message: err.message });
              else if (isXferError(err, 'XFER_CHUNK_CORRUPT')) report({ manifest: name, path: filePath, kind: 'corrupt', digest: digestToHex(rec.digest), message: err.message });
              else throw err;
            }
          });
        }
      }
      await window.drain();
    } catch (err) {
      if (isXferError(err, 'XFER_MANIFEST_CORRUPT')) report({ manifest: name, path, kind: 'manifest', message: err.message });
      else throw err;
    }
  }
  await window.drain();
  return { manifests: names.length, files, chunks: chunkCount, bytes, filesChecked, damaged };
}

/** Why the rebuilt copy at `path` is not the manifest's file, or undefined if it is. */
async function rebuiltFileProblem(path: string, size: number, algorithm: DigestAlgorithm, digest: Uint8Array, signal?: AbortSignal): Promise<string | undefined> {
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error) return st.code === 'ENOENT' ? 'the rebuilt file is missing' : `the rebuilt file cannot be read (${st.code ?? st.message})`;
  if (!st.isFile()) return 'the rebuilt copy is not a regular file';
  if (st.size !== size) return `the rebuilt file has ${st.size} bytes, the manifest says ${size}`;
  const hasher = createHasher(algorithm);
  try {
    for await (const piece of readSequential(path, size)) {
      throwIfAborted(signal);
      hasher.update(piece);
    }
  } catch (err) {
    if (isXferError(err, 'XFER_ABORTED')) throw err;
    return `the rebuilt file cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  const got = hasher.digest();
  return got.equals(digest) ? undefined : `the rebuilt file's content differs from its manifest (digest ${digestToHex(got)}, expected ${digestToHex(digest)})`;
}
