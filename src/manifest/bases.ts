/**
 * BaseIndex: where each chunk of a target's previous version lies, by entry path and
 * offset, read from its manifest. A push over the network uses it to pick, for a chunk
 * the server lacks, the old chunk at the same place (its "base"): when only part of the
 * chunk changed, only that part needs to travel (delta uploads, docs/PROTOCOL.md).
 */
import { throwIfAborted } from '../core/abort.js';
import { DIGEST_BYTES, digestKey, type ChunkerSpec, type DigestAlgorithm } from '../core/ids.js';
import type { ManifestReader } from './reader.js';
import type { ChunkRecord } from './types.js';

/**
 * Chunks a BaseIndex holds at most (44 bytes each: 2^20 chunks is 44 MiB, a 64 GiB file at
 * the default chunk size). A larger previous version gets no base index: pushes still
 * work, sending changed chunks whole.
 */
export const MAX_BASE_CHUNKS = 1 << 20;

/** An old chunk: its digest and where it was in its file. */
export interface BaseChunk {
  readonly digest: Uint8Array;
  readonly start: number;
  readonly length: number;
}

interface EntryChunks {
  starts: Float64Array;
  lengths: Uint32Array;
  digests: Uint8Array;
  count: number;
  /** The entry's facts, for the quick check (see file()). */
  mtimeMs: number;
  /** Nanoseconds past mtimeMs (version 2; 0 when not recorded). */
  mtimeExtraNs: number;
  size: number;
  digest?: Uint8Array;
}

/** A file of the previous version, whole: what a push may reuse without reading it. */
export interface BaseFile {
  readonly size: number;
  readonly mtimeMs: number;
  readonly mtimeExtraNs: number;
  readonly digest: Uint8Array;
  readonly records: readonly ChunkRecord[];
}

export class BaseIndex {
  private constructor(
    readonly algorithm: DigestAlgorithm,
    /** The chunker the previous version was cut with. */
    readonly chunker: ChunkerSpec,
    private readonly entries: Map<string, EntryChunks>,
  ) {}

  /** Reads `reader` to its end; undefined if it has more than `maxChunks` chunks. */
  static async load(reader: ManifestReader, options: { signal?: AbortSignal; maxChunks?: number } = {}): Promise<BaseIndex | undefined> {
    const max = options.maxChunks ?? MAX_BASE_CHUNKS;
    if (reader.header.chunkCount > max) {
      await reader.close();
      return undefined;
    }
    const entries = new Map<string, EntryChunks>();
    let current: EntryChunks | undefined;
    let offset = 0;
    for await (const ev of reader.events()) {
      throwIfAborted(options.signal);
      if (ev.kind === 'entry') {
        current = undefined;
        offset = 0;
        if (ev.meta.type === 'file') {
          current = { starts: new Float64Array(16), lengths: new Uint32Array(16), digests: new Uint8Array(16 * DIGEST_BYTES), count: 0, mtimeMs: ev.meta.mtimeMs, mtimeExtraNs: ev.meta.mtimeExtraNs ?? 0, size: 0 };
          entries.set(ev.meta.path, current);
        }
      } else if (ev.kind === 'chunks' && current) {
        for (const r of ev.records) {
          const e: EntryChunks = current;
          if (e.count === e.starts.length) grow(e);
          e.starts[e.count] = offset;
          e.lengths[e.count] = r.length;
          e.digests.set(r.digest, e.count * DIGEST_BYTES);
          e.count++;
          offset += r.length;
        }
      } else if (ev.kind === 'entryEnd' && current) {
        current.size = ev.size;
        current.digest = ev.digest;
      }
    }
    return new BaseIndex(reader.header.digestAlgorithm, reader.header.chunker, entries);
  }

  /** Every chunk digest of the previous version, once each. */
  distinctDigests(): Uint8Array[] {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    for (const e of this.entries.values()) {
      for (let i = 0; i < e.count; i++) {
        const d = e.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
        const k = digestKey(d);
        if (seen.has(k)) continue;
        seen.add(k);
        out.push(d);
      }
    }
    return out;
  }

  /** File entry `path` of the previous version, with its chunk list, if it had one. */
  file(path: string): BaseFile | undefined {
    const e = this.entries.get(path);
    if (!e?.digest) return undefined;
    const records: ChunkRecord[] = new Array(e.count);
    for (let i = 0; i < e.count; i++) records[i] = { length: e.lengths[i]!, digest: e.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES) };
    return { size: e.size, mtimeMs: e.mtimeMs, mtimeExtraNs: e.mtimeExtraNs, digest: e.digest, records };
  }

  /** The old chunk of entry `path` that held byte `offset`, if any. */
  find(path: string, offset: number): BaseChunk | undefined {
    const e = this.entries.get(path);
    if (!e || e.count === 0) return undefined;
    // The last chunk starting at or before offset.
    let lo = 0;
    let hi = e.count - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (e.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    const start = e.starts[lo]!;
    const length = e.lengths[lo]!;
    if (offset < start || offset >= start + length) return undefined;
    return { digest: e.digests.subarray(lo * DIGEST_BYTES, (lo + 1) * DIGEST_BYTES), start, length };
  }
}

function grow(e: EntryChunks): void {
  const n = e.starts.length * 2;
  const starts = new Float64Array(n);
  starts.set(e.starts);
  const lengths = new Uint32Array(n);
  lengths.set(e.lengths);
  const digests = new Uint8Array(n * DIGEST_BYTES);
  digests.set(e.digests);
  e.starts = starts;
  e.lengths = lengths;
  e.digests = digests;
}
