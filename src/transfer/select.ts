import { throwIfAborted } from '../core/abort.js';
import type { ManifestReader } from '../manifest/reader.js';
import type { ManifestHeader } from '../manifest/types.js';
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
