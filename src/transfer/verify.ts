import { throwIfAborted } from '../core/abort.js';
import { isXferError } from '../core/errors.js';
import { digestToHex, type ChunkId } from '../core/ids.js';
import { openManifest } from '../manifest/reader.js';
import type { ChunkStore, ManifestStore } from '../store/store.js';
import { Window } from './window.js';

export type DamageKind = 'missing' | 'corrupt' | 'manifest';

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
  readonly damaged: readonly Damage[];
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
  manifests: ManifestStore, chunks: ChunkStore, names: readonly string[], options: { signal?: AbortSignal } = {},
): Promise<VerifyReport> {
  const { signal } = options;
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
      for await (const ev of reader.events()) {
        if (ev.kind === 'entry') {
          path = ev.meta.path;
          if (ev.meta.type === 'file') files++;
          continue;
        }
        if (ev.kind !== 'chunks') continue;
        const filePath = path;
        for (const rec of ev.records) {
          chunkCount++;
          bytes += rec.length;
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
  return { manifests: names.length, files, chunks: chunkCount, bytes, damaged };
}
