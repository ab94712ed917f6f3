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
    // Left-out files, kept (chunk records only) in case a later name of theirs is pulled:
    // that name then becomes the file (rsync -H sends such a name as a regular file), and
    // further names of the same file link to it.
    const left = new Map<string, Promoted>();
    let leftOut: { meta: EntryMeta; records: ChunkRecord[] } | undefined;
    /** Original file path -> the name that now holds it. */
    const moved = new Map<string, string>();
    for await (const ev of reader.events()) {
      throwIfAborted(signal);
      if (ev.kind === 'entry') {
        leftOut = undefined;
        const { path, type } = ev.meta;
        if (skipBelow !== undefined && path.startsWith(`${skipBelow}/`)) skipping = true;
        else {
          skipBelow = undefined;
          skipping = path !== '' && excludes(path, type === 'dir');
          if (skipping && type === 'dir') skipBelow = path;
        }
        if (skipping) {
          if (type === 'file') leftOut = { meta: ev.meta, records: [] };
          continue;
        }
        if (type === 'hardlink' && ev.meta.linkTarget !== undefined) {
          const to = moved.get(ev.meta.linkTarget);
          const dropped = left.get(ev.meta.linkTarget);
          if (to !== undefined) await writer.beginEntry({ ...ev.meta, linkTarget: to });
          else if (dropped) {
            await writer.beginEntry({ ...dropped.meta, path });
            await writer.addChunks(dropped.records);
            await writer.endEntry(dropped.size, dropped.digest);
            moved.set(ev.meta.linkTarget, path);
            left.delete(ev.meta.linkTarget);
          } else await writer.beginEntry(ev.meta);
          continue;
        }
        await writer.beginEntry(ev.meta);
      } else if (skipping) {
        if (!leftOut) continue;
        if (ev.kind === 'chunks') for (const r of ev.records) leftOut.records.push({ length: r.length, digest: Uint8Array.from(r.digest) });
        else {
          left.set(leftOut.meta.path, { meta: leftOut.meta, records: leftOut.records, size: ev.size, digest: Uint8Array.from(ev.digest) });
          leftOut = undefined;
        }
      } else if (ev.kind === 'chunks') await writer.addChunks(ev.records);
      else await writer.endEntry(ev.size, ev.digest);
    }
    return await writer.finish();
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
}

/** A file entry with its content's description, as a manifest gives it. */
interface Promoted {
  readonly meta: EntryMeta;
  readonly records: readonly ChunkRecord[];
  readonly size: number;
  readonly digest: Uint8Array;
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
export async function excludedEntries(
  reader: ManifestReader, excludes: (path: string, isDir: boolean) => boolean, signal?: AbortSignal, reopen?: () => Promise<ManifestReader>,
): Promise<CarriedEntry[]> {
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
  // A carried further name of a file that is not carried (the push sends that path anew)
  // must keep the content it has: it becomes a file with that content, found by reading
  // the manifest once more (`reopen`), and further carried names of it link to it.
  const carried = new Set(out.filter((e) => e.meta.type === 'file').map((e) => e.meta.path));
  const wanted = new Set(out.filter((e) => e.meta.type === 'hardlink' && !carried.has(e.meta.linkTarget ?? '')).map((e) => e.meta.linkTarget ?? ''));
  if (wanted.size === 0) return out;
  const found = new Map<string, Promoted>();
  if (reopen) {
    let file: { meta: EntryMeta; records: ChunkRecord[] } | undefined;
    for await (const ev of (await reopen()).events()) {
      throwIfAborted(signal);
      if (ev.kind === 'entry') file = ev.meta.type === 'file' && wanted.has(ev.meta.path) ? { meta: ev.meta, records: [] } : undefined;
      else if (!file) continue;
      else if (ev.kind === 'chunks') for (const r of ev.records) file.records.push({ length: r.length, digest: Uint8Array.from(r.digest) });
      else {
        found.set(file.meta.path, { meta: file.meta, records: file.records, size: ev.size, digest: Uint8Array.from(ev.digest) });
        file = undefined;
      }
    }
  }
  const moved = new Map<string, string>();
  const result: CarriedEntry[] = [];
  for (const e of out) {
    const target = e.meta.linkTarget ?? '';
    if (e.meta.type !== 'hardlink' || !wanted.has(target)) result.push(e);
    else if (moved.has(target)) result.push({ ...e, meta: { ...e.meta, linkTarget: moved.get(target)! } });
    else {
      const f = found.get(target);
      // Not found (no reopen): the name is not kept; the server's copy drops it, as the push's `deleted` lists.
      if (!f) continue;
      moved.set(target, e.meta.path);
      result.push({ meta: { ...f.meta, path: e.meta.path }, records: f.records, size: f.size, digest: f.digest });
    }
  }
  return result;
}
