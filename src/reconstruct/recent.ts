/**
 * Chunks a reconstruction already fetched, so a chunk that occurs again (zero blocks and
 * repeated blocks of disk images, identical files in a tree) is fetched once, not once per
 * occurrence. Two parts: fetches in flight by digest (a second occurrence waits for the
 * first), and the most recently fetched chunks, least recently used evicted beyond
 * RECENT_CHUNK_CACHE_BYTES. Data here has been verified by whoever fetched it.
 */
import { digestKey } from '../core/ids.js';
import { MiB } from '../core/sizes.js';

/** Memory for recently fetched chunks: repeats in disk images are mostly near or frequent. */
export const RECENT_CHUNK_CACHE_BYTES = 32 * MiB;

export class RecentChunks {
  private readonly inFlight = new Map<string, Promise<Buffer>>();
  private readonly recent = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly capacityBytes = RECENT_CHUNK_CACHE_BYTES) {}

  /**
   * The chunk's bytes from an earlier or ongoing fetch, or from `fetch()` (then remembered).
   * `fetched` tells whether this call did the fetching (for byte counts).
   */
  async get(digest: Uint8Array, fetch: () => Promise<Buffer>): Promise<{ data: Buffer; fetched: boolean }> {
    const key = digestKey(digest);
    const hit = this.recent.get(key);
    if (hit) {
      // Re-inserted, most recently used last, as a copy of its own: a chunk that keeps
      // recurring may stay for long, and the buffer it came in may be a view of a slab
      // (SlabAllocator) that it would keep alive.
      const own = hit.byteLength === hit.buffer.byteLength ? hit : Buffer.from(hit);
      this.recent.delete(key);
      this.recent.set(key, own);
      return { data: own, fetched: false };
    }
    const pending = this.inFlight.get(key);
    if (pending) return { data: await pending, fetched: false };
    const p = fetch();
    this.inFlight.set(key, p);
    try {
      const data = await p;
      this.remember(key, data);
      return { data, fetched: true };
    } finally {
      this.inFlight.delete(key);
    }
  }

  private remember(key: string, data: Buffer): void {
    if (data.length > this.capacityBytes) return;
    this.recent.set(key, data);
    this.bytes += data.length;
    for (const [k, v] of this.recent) {
      if (this.bytes <= this.capacityBytes) break;
      this.recent.delete(k);
      this.bytes -= v.length;
    }
  }
}
