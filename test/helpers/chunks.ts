import { strict as assert } from 'node:assert';
import type { Chunker } from '../../src/chunker/chunker.js';
import { createChunker } from '../../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../../src/chunker/params.js';
import { digestOf } from '../../src/hash/digest.js';
import type { ChunkRecord, EntryMeta } from '../../src/manifest/types.js';
import { ManifestWriter } from '../../src/manifest/writer.js';
import type { ChunkStore } from '../../src/store/store.js';

/** Cuts a whole in-memory input with one chunker, in one buffer; returns chunk lengths. */
export function cutAll(chunker: Chunker, data: Uint8Array): number[] {
  const out = new Uint32Array(1024);
  const lengths: number[] = [];
  let pos = 0;
  while (pos < data.length) {
    const n = chunker.cut(data, pos, data.length, true, Infinity, out);
    assert.ok(n > 0, 'chunker made no progress');
    for (let i = 0; i < n; i++) {
      lengths.push(out[i]!);
      pos += out[i]!;
    }
  }
  return lengths;
}

/**
 * `data` cut with the default chunker and each chunk put into `store` (BLAKE3 ids); its
 * chunk records, in order.
 */
export async function putChunksOf(store: Pick<ChunkStore, 'put'>, data: Buffer): Promise<ChunkRecord[]> {
  const records: ChunkRecord[] = [];
  let o = 0;
  for (const len of cutAll(createChunker(DEFAULT_CHUNKER), data)) {
    const digest = digestOf('blake3', data.subarray(o, o + len));
    await store.put({ algorithm: 'blake3', digest }, data.subarray(o, o + len));
    records.push({ length: len, digest });
    o += len;
  }
  return records;
}

/** Writes at `path` the manifest of a file target holding `data`, whose chunks are `records`; returns its entry. */
export async function writeFileManifest(path: string, data: Buffer, records: readonly ChunkRecord[]): Promise<EntryMeta> {
  const w = await ManifestWriter.create(path, { kind: 'file', digestAlgorithm: 'blake3', chunker: DEFAULT_CHUNKER });
  const meta: EntryMeta = { type: 'file', path: '', mode: 0o644, mtimeMs: 1_700_000_000_000, size: data.length };
  await w.beginEntry(meta);
  await w.addChunks(records);
  await w.endEntry(data.length, digestOf('blake3', data));
  await w.finish();
  return meta;
}
