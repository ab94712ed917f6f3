import { throwIfAborted } from '../core/abort.js';
import type { ManifestReader } from '../manifest/reader.js';
import type { ChunkRecord, EntryMeta, ManifestHeader } from '../manifest/types.js';
import { ManifestWriter } from '../manifest/writer.js';

/**
 * Writes to `outPath` the manifest of the tree `reader` describes less the entries
 * `excludes` matches (with everything below an excluded directory, which is not entered):
 * what a pull with --exclude/--include rebuilds. Chunk records and digests are copied as
 * they are, so every file is still verified against the pushed manifest's digests. Reads
 * `reader` through.
 */
export async function selectEntries(
  reader: ManifestReader, outPath: string, excludes: (path: string, isDir: boolean) => boolean, signal?: AbortSignal,
): Promise<ManifestHeader> {
  const h = reader.header;
  const writer = await ManifestWriter.create(outPath, { kind: h.kind, digestAlgorithm: h.digestAlgorithm, chunker: h.chunker }, { signal });
  try {
    let skipBelow: string | undefined;
    let skipping = false;
    for await (const ev of reader.events()) {
      throwIfAborted(signal);
      if (ev.kind === 'entry') {
        const { path, type } = ev.meta;
        if (skipBelow !== undefined && path.startsWith(`${skipBelow}/`)) {
          skipping = true;
          continue;
        }
        skipBelow = undefined;
        skipping = path !== '' && excludes(path, type === 'dir');
        if (skipping) {
          if (type === 'dir') skipBelow = path;
          continue;
        }
        await writer.beginEntry(ev.meta);
      } else if (skipping) continue;
      else if (ev.kind === 'chunks') await writer.addChunks(ev.records);
      else await writer.endEntry(ev.size, ev.digest);
    }
    return await writer.finish();
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
}

/** An entry of a destination's current tree that a push keeps as it is (PushOptions.carry). */
export interface CarriedEntry {
  readonly meta: EntryMeta;
  /** A file's chunks, size and whole-content digest, as the current version has them. */
  readonly records: readonly ChunkRecord[];
  readonly size: number;
  readonly digest?: Uint8Array;
}

/**
 * The entries of tree manifest `reader` that `excludes` matches, with everything below an
 * excluded directory, in manifest order: what a push with those rules must carry over from
 * a server's current version, whose copy mirrors the pushed manifest (rsync keeps excluded
 * entries at the receiver). Reads `reader` through; none for a file manifest.
 */
export async function excludedEntries(reader: ManifestReader, excludes: (path: string, isDir: boolean) => boolean, signal?: AbortSignal): Promise<CarriedEntry[]> {
  const out: CarriedEntry[] = [];
  if (reader.header.kind !== 'tree') {
    await reader.close();
    return out;
  }
  let below: string | undefined;
  let current: { meta: EntryMeta; records: ChunkRecord[] } | undefined;
  for await (const ev of reader.events()) {
    throwIfAborted(signal);
    if (ev.kind === 'entry') {
      current = undefined;
      const { path, type } = ev.meta;
      if (below !== undefined && !path.startsWith(`${below}/`)) below = undefined;
      if (below === undefined && !excludes(path, type === 'dir')) continue;
      if (type === 'dir') below ??= path;
      if (type === 'file') current = { meta: ev.meta, records: [] };
      else out.push({ meta: ev.meta, records: [], size: 0 });
    } else if (!current) continue;
    // The reader's digests may be views of a buffer it reuses: copied.
    else if (ev.kind === 'chunks') for (const r of ev.records) current.records.push({ length: r.length, digest: Uint8Array.from(r.digest) });
    else {
      out.push({ meta: current.meta, records: current.records, size: ev.size, digest: Uint8Array.from(ev.digest) });
      current = undefined;
    }
  }
  return out;
}
