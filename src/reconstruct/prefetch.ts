/**
 * Read-ahead of a pull's chunks. A tree is rebuilt a few files at a time (reconstruct.ts,
 * FILES_IN_FLIGHT), so without it a tree of small files asked its store for a few files'
 * chunks per round trip: on a long link, most of a pull of thousands of small files was
 * spent waiting (a 32 MiB tree of 1,100 files: 137 fetch requests one after the other,
 * 26 s through a 173 ms link). ReadAhead reads the pulled manifest (its own reader of the
 * local copy) ahead of the rebuild and asks the store for the chunks it lists, in manifest
 * order, up to READ_AHEAD_BYTES and READ_AHEAD_CHUNKS ahead of what the rebuild has taken:
 * a store that gathers gets into batched requests (HttpStore) then fetches them in a few
 * large ones. For a first copy only (api.ts): there every chunk is fetched anyway, so the
 * read-ahead fetches nothing the pull would not.
 */
import { isZeroChunk } from '../chunker/zero.js';
import { digestKey, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import type { ManifestReader } from '../manifest/reader.js';
import type { ChunkStore, GetOptions, OpOptions, PutOptions } from '../store/store.js';

/** Bytes of chunks fetched or being fetched and not yet taken by the rebuild, at most. */
export const READ_AHEAD_BYTES = 32 * MiB;
/** Chunks fetched or being fetched and not yet taken, at most. */
export const READ_AHEAD_CHUNKS = 8192;
/** Digests remembered as asked for (a repeat is not asked again); cleared when full. */
const ASKED_ENTRIES = 1 << 17;

/**
 * A ChunkStore that answers get() from the read-ahead when it holds the chunk, else from
 * `store`; everything else goes to `store`. A chunk is handed out once (a repeat the
 * rebuild asks for again comes from the store, or from its own cache of recent chunks).
 * What the store's get promises holds: the chunks come from it, verified by it, and a
 * failed read-ahead fetch fails the get that takes it with the store's error. Closing it
 * stops the read-ahead; the store stays open (its opener's).
 */
export class ReadAheadChunks implements ChunkStore {
  private readonly ahead = new Map<string, { readonly data: Promise<Buffer>; readonly bytes: number }>();
  private aheadBytes = 0;
  private readonly asked = new Set<string>();
  private wake: (() => void) | undefined;
  private stopped = false;
  private readonly running: Promise<void>;

  /** Starts reading `reader` (a second reader of the pulled manifest, which it closes) ahead. */
  constructor(
    private readonly store: ChunkStore,
    reader: ManifestReader,
    private readonly signal?: AbortSignal,
  ) {
    // A failure of the read-ahead itself (the manifest copy) only ends it: the rebuild
    // reads the same manifest and reports what is wrong with it.
    this.running = this.run(reader).catch(() => {});
  }

  private async run(reader: ManifestReader): Promise<void> {
    const algorithm = reader.header.digestAlgorithm;
    for await (const ev of reader.events()) {
      if (this.stopped) break;
      if (ev.kind !== 'chunks') continue;
      for (const r of ev.records) {
        // Zero chunks are never fetched (chunker/zero.ts).
        if (isZeroChunk(algorithm, r.length, r.digest)) continue;
        const key = digestKey(r.digest);
        if (this.asked.has(key)) continue;
        while (!this.stopped && this.ahead.size > 0 && (this.aheadBytes + r.length > READ_AHEAD_BYTES || this.ahead.size >= READ_AHEAD_CHUNKS)) {
          await new Promise<void>((resolve) => (this.wake = resolve));
        }
        if (this.stopped) break;
        if (this.asked.size >= ASKED_ENTRIES) this.asked.clear();
        this.asked.add(key);
        this.fetch(algorithm, key, r.digest, r.length);
      }
    }
    await reader.close().catch(() => {});
  }

  private fetch(algorithm: DigestAlgorithm, key: string, digest: Uint8Array, bytes: number): void {
    const data = this.store.get({ algorithm, digest }, { signal: this.signal });
    data.catch(() => {}); // the get that takes it sees the error; one never taken is dropped
    this.ahead.set(key, { data, bytes });
    this.aheadBytes += bytes;
  }

  get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    const key = digestKey(id.digest);
    const hit = this.ahead.get(key);
    if (!hit) return this.store.get(id, options);
    this.ahead.delete(key);
    this.aheadBytes -= hit.bytes;
    this.wakeUp();
    return hit.data;
  }

  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    return this.store.has(ids, options);
  }

  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    return this.store.put(id, data, options);
  }

  flush(options?: OpOptions): Promise<void> {
    return this.store.flush(options);
  }

  /** Stops the read-ahead and drops what it holds; the store stays open. */
  async close(): Promise<void> {
    this.stopped = true;
    this.wakeUp();
    await this.running;
    this.ahead.clear();
    this.aheadBytes = 0;
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
