/**
 * The quick check's bookkeeping, shared by destinations (PushDestination.knownFile): the
 * target's previous version, read once at begin(), and which of its chunks the store
 * still has, asked once, on the first candidate.
 */
import { isZeroChunk } from '../chunker/zero.js';
import { isXferError } from '../core/errors.js';
import { chunkerSpecEquals, digestKey, type ChunkId } from '../core/ids.js';
import { BaseIndex } from '../manifest/bases.js';
import { openManifest } from '../manifest/reader.js';
import type { EntryMeta, ManifestHeader, ManifestKind } from '../manifest/types.js';
import type { ChunkStore, ManifestStore, OpOptions } from '../store/store.js';
import type { BeginOptions, KnownFile } from './destination.js';

/**
 * Which chunks of the previous version the store lacks, asked by naming that version (a
 * server has its manifest: docs/PROTOCOL.md, chunks/missing-of) rather than by listing its
 * digests; undefined when the store cannot answer so.
 */
export type MissingOf = (options: OpOptions) => Promise<readonly Uint8Array[] | undefined>;

export class KnownFiles {
  private missing: Promise<Set<string>> | undefined;
  private stored: Promise<((id: ChunkId) => boolean) | undefined> | undefined;

  private constructor(
    private readonly previous: BaseIndex,
    private readonly chunks: ChunkStore,
    private readonly missingOf?: MissingOf,
  ) {}

  /**
   * Known files come as the previous version cut and hashed them: usable only by a push
   * that cuts and hashes the same way (undefined otherwise, or without a previous version).
   */
  static for(previous: BaseIndex | undefined, chunks: ChunkStore, push: BeginOptions, missingOf?: MissingOf): KnownFiles | undefined {
    if (!previous || previous.algorithm !== (push.digestAlgorithm ?? 'blake3') || !push.chunker || !chunkerSpecEquals(previous.chunker, push.chunker)) return undefined;
    return new KnownFiles(previous, chunks, missingOf);
  }

  /** The previous version's file entry `path`, whatever its size and mtime. */
  previousFile(path: string): { readonly size: number; readonly digest: Uint8Array } | undefined {
    return this.previous.file(path);
  }

  /**
   * Asks the store now which of the previous version's chunks it lacks (the one query
   * find() waits for), instead of on the first candidate: over a long link its answer is
   * then on its way while the push starts (pool, stage, walk). A failure is find()'s.
   */
  ask(options: OpOptions = {}): void {
    this.missing ??= this.missingChunks(options);
    this.missing.catch(() => {}); // find() awaits it and sees the failure
  }

  /** The previous version's file `meta.path` if it had meta's size and mtime and all its chunks are stored. */
  async find(meta: EntryMeta, options: OpOptions = {}): Promise<KnownFile | undefined> {
    const f = meta.type === 'file' ? this.previous.file(meta.path) : undefined;
    if (!f || f.size !== meta.size || f.mtimeMs !== meta.mtimeMs || f.mtimeExtraNs !== (meta.mtimeExtraNs ?? 0)) return undefined;
    this.missing ??= this.missingChunks(options);
    const missing = await this.missing;
    // Zero chunks are in no store (chunker/zero.ts): never missing.
    const algorithm = this.previous.algorithm;
    return f.records.some((r) => !isZeroChunk(algorithm, r.length, r.digest) && missing.has(digestKey(r.digest))) ? undefined : f;
  }

  /**
   * The chunks of the previous version that the store did not say it lacks, in the answer
   * to the query of ask() (asked now if it was not): a push need not ask about them again.
   * Over a long link that is a round trip per query saved, and a re-sync after small edits
   * then asks only about its changed chunks. As current as any `has` answer: the commit
   * checks that every chunk is there (a repair round sends what is not, asking the store
   * itself). Undefined if the query failed (the push then asks about every chunk).
   */
  storedChunks(options: OpOptions = {}): Promise<((id: ChunkId) => boolean) | undefined> {
    this.missing ??= this.missingChunks(options);
    this.stored ??= this.missing.then(
      (missing) => {
        const algorithm = this.previous.algorithm;
        const present = new Set<string>();
        for (const d of this.previous.distinctDigests()) {
          const k = digestKey(d);
          if (!missing.has(k)) present.add(k);
        }
        return (id: ChunkId) => id.algorithm === algorithm && present.has(digestKey(id.digest));
      },
      () => undefined,
    );
    return this.stored;
  }

  /**
   * The previous version's chunks the store lacks (a damaged store may lack some): asked by
   * the manifest where the destination can (missingOf), else one `has` query for them all.
   */
  private async missingChunks(options: OpOptions): Promise<Set<string>> {
    const named = await this.missingOf?.(options);
    if (named) return new Set(named.map(digestKey));
    const digests = this.previous.distinctDigests();
    const algorithm = this.previous.algorithm;
    const present = await this.chunks.has(digests.map((digest) => ({ algorithm, digest })), options);
    return new Set(digests.filter((_, i) => !present[i]).map(digestKey));
  }
}

/**
 * The version committed under `name`, if it is a `kind`, as a BaseIndex (the bases of
 * delta uploads and the quick check's source). Best effort: undefined if there is none,
 * it is another kind, or it cannot be read. `header` is given the header of the version read.
 */
export async function previousVersion(
  manifests: Pick<ManifestStore, 'getManifest'>, name: string, kind: ManifestKind, options: OpOptions & { readonly header?: (header: ManifestHeader) => void } = {},
): Promise<BaseIndex | undefined> {
  try {
    const reader = await openManifest(await manifests.getManifest(name, options), { signal: options.signal });
    if (reader.header.kind !== kind) {
      await reader.close();
      return undefined;
    }
    options.header?.(reader.header);
    return await BaseIndex.load(reader, { signal: options.signal });
  } catch (err) {
    if (isXferError(err, 'XFER_ABORTED')) throw err;
    return undefined;
  }
}
