/**
 * Dry runs (rsync -n) and the listings of -v: what a push or pull would send and delete,
 * found without writing anything at the destination. A dry push is a real push (transfer/
 * push.ts: the same walk, quick check, scan and `has` queries) into a DryRunDestination,
 * which asks the real destination which chunks it has and writes nothing.
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { isZeroChunk } from '../chunker/zero.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { ChunkId } from '../core/ids.js';
import { digestKey } from '../core/ids.js';
import type { BaseIndex } from '../manifest/bases.js';
import type { ManifestReader } from '../manifest/reader.js';
import type { EntryMeta, ManifestHeader, ManifestKind } from '../manifest/types.js';
import { sameFile } from '../reconstruct/staging.js';
import { countEntry, type EntryCounts } from './push.js';
import { walkTree } from '../scan/walk.js';
import type { ChunkStore, OpOptions } from '../store/store.js';
import type { BeginOptions, FileSink, KnownFile, PushDestination, PushSession } from './destination.js';
import { KnownFiles } from './known.js';

/** What a dry push needs of the real destination; nothing of it writes. */
export interface DryRunTarget {
  readonly description: string;
  /** Which chunks the destination has; undefined if it has no store yet (it has none). */
  readonly has?: (ids: readonly ChunkId[], options?: OpOptions) => Promise<boolean[]>;
  /** The target's current version (the quick check's source), if any. */
  readonly previous?: BaseIndex;
  /** Where entry `path` of the current version is on disk (a local target): the quick check also checks that copy. */
  readonly currentCopy?: (path: string) => string;
  /** The entries a commit of a tree with entries `paths` (path -> is a directory) would remove. */
  readonly wouldDelete: (paths: ReadonlyMap<string, boolean>, options?: OpOptions) => Promise<readonly string[]>;
}

/**
 * A PushDestination that stores nothing: `has` is the real destination's answer, a `put`
 * only counts (so the push's bytesSent is the bytes of the chunks the destination lacks),
 * and commit writes nothing and resolves with what a real commit would delete.
 */
export class DryRunDestination implements PushDestination {
  readonly description: string;
  readonly chunks: ChunkStore;
  private known: KnownFiles | undefined;

  constructor(private readonly t: DryRunTarget) {
    this.description = t.description;
    const has = t.has;
    this.chunks = {
      has: (ids, o) => (has ? has(ids, o) : Promise.resolve(ids.map(() => false))),
      get: () => Promise.reject(new InvalidArgumentError('a dry run reads no chunk')),
      put: () => Promise.resolve(true),
      flush: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
  }

  async begin(kind: ManifestKind, options: BeginOptions = {}): Promise<PushSession> {
    this.known = kind === 'tree' || kind === 'file' ? KnownFiles.for(this.t.previous, this.chunks, options) : undefined;
    const paths = new Map<string, boolean>();
    const t = this.t;
    return {
      async entry(meta: EntryMeta): Promise<FileSink | undefined> {
        paths.set(meta.path, meta.type === 'dir');
        return undefined;
      },
      async commit(_manifestPath: string, _header: ManifestHeader, o: OpOptions = {}) {
        return { deleted: kind === 'tree' ? await t.wouldDelete(paths, o) : [] };
      },
      async abort() {},
    };
  }

  async knownFile(meta: EntryMeta, options: OpOptions = {}): Promise<KnownFile | undefined> {
    const f = await this.known?.find(meta, options);
    if (!f || !this.t.currentCopy) return f;
    return (await sameFile(this.t.currentCopy(meta.path), { size: f.size, mtimeMs: meta.mtimeMs, mtimeExtraNs: meta.mtimeExtraNs })) ? f : undefined;
  }

  previousFile(path: string): { readonly size: number; readonly digest: Uint8Array } | undefined {
    return this.known?.previousFile(path);
  }

  async close(): Promise<void> {}
}

/**
 * The entries of the tree at `target` on disk that a commit of a tree with entries `paths`
 * (path -> is a directory) removes with --delete, as Staging's commit finds them: an entry
 * the new tree lacks, with everything below it (a directory after its contents); an entry
 * the new tree has as another type is replaced, not listed. Entries `excludes` matches are
 * protected (rsync's default with --exclude): not listed, not entered.
 */
export async function extrasOnDisk(
  target: string, paths: ReadonlyMap<string, boolean>, excludes?: (path: string, isDir: boolean) => boolean, options: OpOptions = {},
): Promise<string[]> {
  const out: string[] = [];
  /** Directories listed as removed, deepest last, whose own line waits for their contents. */
  const open: string[] = [];
  /** A directory replaced by another type: nothing below it is listed. */
  let skipBelow: string | undefined;
  if (!(await lstat(target).then((s) => s.isDirectory(), () => false))) return out;
  for await (const e of walkTree(target, { signal: options.signal, excludes })) {
    throwIfAborted(options.signal);
    const p = e.meta.path;
    while (open.length > 0 && !p.startsWith(`${open[open.length - 1]}/`)) out.push(open.pop()!);
    if (skipBelow !== undefined && p.startsWith(`${skipBelow}/`)) continue;
    skipBelow = undefined;
    if (open.length > 0) {
      if (e.meta.type === 'dir') open.push(p);
      else out.push(p);
      continue;
    }
    const isDir = e.meta.type === 'dir';
    const kept = paths.get(p);
    if (kept === undefined) {
      if (isDir) open.push(p);
      else out.push(p);
    } else if (isDir && !kept) skipBelow = p;
  }
  while (open.length > 0) out.push(open.pop()!);
  return out;
}

/** The paths of a tree manifest's entries (path -> is a directory), none for a file's; reads it through and closes it. */
export async function entryPaths(reader: ManifestReader, signal?: AbortSignal): Promise<Map<string, boolean>> {
  const out = new Map<string, boolean>();
  if (reader.header.kind !== 'tree') {
    await reader.close();
    return out;
  }
  for await (const ev of reader.events()) {
    throwIfAborted(signal);
    if (ev.kind === 'entry') out.set(ev.meta.path, ev.meta.type === 'dir');
  }
  return out;
}

/** What a pull would do at its destination (see planPull). */
export interface PullPlan {
  readonly entries: EntryCounts;
  /** Files the destination lacks or has otherwise (size, mtime or mode), with their sizes. */
  readonly files: { readonly path: string; readonly size: number }[];
  readonly bytesTotal: number;
  readonly bytesTransferred: number;
  /** Bytes of the distinct chunks of those files that the files kept do not hold. */
  readonly chunkBytes: number;
  /** With --delete: the entries it would remove (see extrasOnDisk). */
  readonly deleted: readonly string[];
}

/**
 * What pulling manifest `reader` to `target` sends and deletes, found by the quick check
 * reconstruct makes (a file at the destination with the manifest's size, mtime and mode is
 * kept) and without writing anything. Reads the manifest through and closes it.
 */
export async function planPull(
  reader: ManifestReader, target: string, options: OpOptions & { readonly delete?: boolean; readonly excludes?: (path: string, isDir: boolean) => boolean } = {},
): Promise<PullPlan> {
  const entries = { files: 0, dirs: 0, symlinks: 0, devices: 0, specials: 0 };
  const files: { path: string; size: number }[] = [];
  const paths = new Map<string, boolean>();
  const keptChunks = new Set<string>();
  const needed = new Map<string, number>();
  let bytesTotal = 0;
  let bytesTransferred = 0;
  let meta: EntryMeta | undefined;
  let records: { key: string; length: number }[] = [];
  for await (const ev of reader.events()) {
    throwIfAborted(options.signal);
    if (ev.kind === 'entry') {
      meta = ev.meta;
      paths.set(meta.path, meta.type === 'dir');
      countEntry(entries, meta.type);
      if (meta.type === 'file') records = [];
    } else if (ev.kind === 'chunks') {
      // Zero chunks are synthesised, not fetched (chunker/zero.ts).
      for (const r of ev.records) if (!isZeroChunk(reader.header.digestAlgorithm, r.length, r.digest)) records.push({ key: digestKey(r.digest), length: r.length });
    } else if (meta) {
      const at = meta.path === '' ? target : join(target, ...meta.path.split('/'));
      const sending = !(await sameFile(at, { size: ev.size, mtimeMs: meta.mtimeMs, mtimeExtraNs: meta.mtimeExtraNs, mode: meta.mode }));
      bytesTotal += ev.size;
      if (sending) {
        files.push({ path: meta.path, size: ev.size });
        bytesTransferred += ev.size;
        for (const r of records) needed.set(r.key, r.length);
      } else for (const r of records) keptChunks.add(r.key);
      records = [];
    }
  }
  let chunkBytes = 0;
  for (const [key, length] of needed) if (!keptChunks.has(key)) chunkBytes += length;
  const deleted = options.delete && reader.header.kind === 'tree' ? await extrasOnDisk(target, paths, options.excludes, options) : [];
  return { entries, files, bytesTotal, bytesTransferred, chunkBytes, deleted };
}
