/**
 * Whole-manifest helpers for small manifests and tests. They hold every entry and chunk
 * record in memory: never use them for manifests of unbounded size (use ManifestReader
 * and ManifestWriter, which stream).
 */
import { InvalidArgumentError } from '../core/errors.js';
import { openManifest } from './reader.js';
import { ManifestWriter, type ManifestInit } from './writer.js';
import type { ChunkRecord, EntryMeta, ManifestEntry, ManifestHeader } from './types.js';

/**
 * Decodes and fully validates a manifest held in memory. Entries come back in manifest
 * order; a file entry's `size` is its final size and `digest` its whole-file digest.
 * Throws ManifestCorruptError as the streaming reader does.
 */
export async function decodeManifest(bytes: Uint8Array): Promise<{ header: ManifestHeader; entries: ManifestEntry[] }> {
  const reader = await openManifest(single(bytes));
  const entries: ManifestEntry[] = [];
  let meta: EntryMeta | null = null;
  let chunks: ChunkRecord[] = [];
  for await (const event of reader.events()) {
    if (event.kind === 'entry') {
      if (event.meta.type === 'file') {
        meta = event.meta;
        chunks = [];
      } else {
        entries.push({ ...event.meta, chunks: [] });
      }
    } else if (event.kind === 'chunks') {
      chunks.push(...event.records);
    } else {
      entries.push({ ...meta!, size: event.size, chunks, digest: event.digest });
    }
  }
  return { header: reader.header, entries };
}

async function* single(bytes: Uint8Array): AsyncGenerator<Uint8Array, void, undefined> {
  yield bytes;
}

/**
 * Writes `entries` (in manifest order) as a manifest file at `path` through
 * ManifestWriter and returns its header. Each entry's `size` is declared as is; file
 * entries need their `digest`, other entries must have neither chunks nor digest.
 * Throws InvalidArgumentError for anything the writer rejects; the file is then removed.
 */
export async function encodeManifestToFile(path: string, init: ManifestInit, entries: readonly ManifestEntry[]): Promise<ManifestHeader> {
  const writer = await ManifestWriter.create(path, init);
  try {
    for (const entry of entries) {
      const { chunks, digest, ...meta } = entry;
      await writer.beginEntry(meta);
      if (entry.type !== 'file') {
        if (chunks.length > 0 || digest !== undefined) {
          throw new InvalidArgumentError(`entry ${JSON.stringify(entry.path)} is a ${entry.type} and cannot have chunks or a digest`);
        }
        continue;
      }
      if (digest === undefined) throw new InvalidArgumentError(`file entry ${JSON.stringify(entry.path)} has no digest`);
      await writer.addChunks(chunks);
      await writer.endEntry(chunks.reduce((sum, c) => sum + c.length, 0), digest);
    }
    return await writer.finish();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}
