import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { digestKey } from '../core/ids.js';
import { digestOf } from '../hash/digest.js';
import type { ScanPool } from '../scan/pool.js';
import { chunkDigest, FileScan } from '../scan/scanner.js';
import { throwIfAborted } from '../core/abort.js';

/** Where a chunk's bytes can be found in a local file. */
interface SeedLocation {
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

/** Seed indexes hold at most this many chunks; beyond it, seeding is partial, never wrong. */
export const MAX_SEED_CHUNKS = 1 << 22;

/**
 * Chunks of local files (the previous version at the destination, --seed files) indexed by
 * digest, chunked with the manifest's own parameters, so a pull copies them instead of
 * fetching (as casync/desync seeds do). A seed may change after indexing: every read is
 * re-hashed, and a mismatch just means fetching the chunk instead.
 */
export class SeedIndex {
  private readonly map = new Map<string, SeedLocation>();
  private readonly handles = new Map<string, Promise<FileHandle>>();

  constructor(private readonly chunker: ChunkerSpec, private readonly algorithm: DigestAlgorithm) {}

  get size(): number {
    return this.map.size;
  }

  /** Indexes a file if it is a regular file; silently ignores anything else (or a vanished file). */
  async add(path: string, pool: ScanPool, signal?: AbortSignal): Promise<void> {
    let st;
    try {
      st = await stat(path);
    } catch {
      return;
    }
    if (!st.isFile() || st.size === 0) return;
    const scan = new FileScan(path, st.size, st.mtimeMs, pool, { chunker: this.chunker, digestAlgorithm: this.algorithm, signal });
    try {
      for await (const b of scan.batches()) {
        throwIfAborted(signal);
        let o = b.offset;
        for (let i = 0; i < b.count; i++) {
          const len = b.lengths[i]!;
          const key = digestKey(chunkDigest(b, i));
          if (this.map.size < MAX_SEED_CHUNKS && !this.map.has(key)) this.map.set(key, { path, offset: o, length: len });
          o += len;
        }
        b.release(); // only offsets are kept; the segment buffer goes back to the pool
      }
    } catch (err) {
      // A seed that changes or fails to read while indexed is simply a worse seed.
      if ((err as { code?: string }).code === 'XFER_ABORTED') throw err;
    }
  }

  has(digest: Uint8Array): boolean {
    return this.map.has(digestKey(digest));
  }

  /** The chunk's bytes from a seed, verified; undefined if absent or no longer matching. */
  async read(digest: Uint8Array): Promise<Buffer | undefined> {
    const loc = this.map.get(digestKey(digest));
    if (!loc) return undefined;
    try {
      let h = this.handles.get(loc.path);
      if (!h) {
        h = open(loc.path, 'r');
        this.handles.set(loc.path, h);
      }
      const fh = await h;
      const buf = Buffer.allocUnsafe(loc.length);
      const { bytesRead } = await fh.read(buf, 0, loc.length, loc.offset);
      if (bytesRead !== loc.length) return undefined;
      if (!digestOf(this.algorithm, buf).equals(digest)) return undefined;
      return buf;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    for (const h of this.handles.values()) await (await h.catch(() => undefined))?.close().catch(() => {});
    this.handles.clear();
  }
}
