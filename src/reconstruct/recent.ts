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

/**
 * The owner of lent buffers (a pool that carves them again once released, such as the
 * server's arrivals: server/arrivals.ts). A lent buffer is used only between hold() and
 * release(); buffers the lender did not lend are ignored by both.
 */
export interface Lender {
  /** Counts one more holder of `data` if it is lent; whether it is. */
  hold(data: Uint8Array): boolean;
  /** One holder of `data` is done with it (nothing if `data` is not lent). */
  release(data: Uint8Array): void;
}

/**
 * One Lender over several whose buffers are disjoint (the server's arrival slabs and the
 * read-ahead windows of held files): each ignores the buffers it did not lend.
 */
export function lenders(...all: readonly Lender[]): Lender {
  return {
    hold: (data) => all.some((l) => l.hold(data)),
    release: (data) => {
      for (const l of all) l.release(data);
    },
  };
}

/**
 * Contract on memory: what the remembered chunks keep alive is at most the capacity,
 * counted as the buffers they are views of (each once, however many chunks share it), not
 * as the chunks' own lengths. A chunk read from a local store is a view of a 4 MiB
 * read-ahead window; counted by its length, 32 MiB of 64 KiB chunks could hold hundreds
 * of windows (a server's rebuild of a disk image held them until evicted).
 */
export class RecentChunks {
  private readonly inFlight = new Map<string, Promise<Buffer>>();
  private readonly recent = new Map<string, Buffer>();
  /** Remembered chunks per buffer they are views of: a buffer counts once in `bytes`. */
  private readonly users = new Map<ArrayBufferLike, number>();
  /** Bytes of the buffers the remembered chunks keep alive. */
  private bytes = 0;

  constructor(
    private readonly capacityBytes = RECENT_CHUNK_CACHE_BYTES,
    /**
     * Lends the buffers fetch() may return: a remembered chunk holds its buffer until
     * forgotten, so its slab is not carved again while it is here.
     */
    private readonly lender?: Lender,
  ) {}

  /** Bytes of memory the remembered chunks keep alive (their buffers, each once). */
  get heldBytes(): number {
    const buffers = new Set<ArrayBufferLike>();
    for (const data of this.recent.values()) buffers.add(data.buffer);
    let n = 0;
    for (const b of buffers) n += b.byteLength;
    return n;
  }

  /**
   * The chunk's bytes from an earlier or ongoing fetch, or from `fetch()` (then remembered).
   * `fetched` tells whether this call did the fetching (for byte counts). With a lender,
   * the caller holds the bytes returned once (fetch()'s buffer is taken as held once, by
   * the fetching call) and releases them when done with them.
   */
  async get(digest: Uint8Array, fetch: () => Promise<Buffer>): Promise<{ data: Buffer; fetched: boolean }> {
    const key = digestKey(digest);
    const hit = this.recent.get(key);
    if (hit) {
      // Re-inserted, most recently used last, as a copy of its own: a chunk that keeps
      // recurring may stay for long, and the buffer it came in may be a view of a slab
      // (SlabAllocator) that it would keep alive.
      const own = hit.byteLength === hit.buffer.byteLength ? hit : Buffer.from(hit);
      if (own === hit) this.lender?.hold(own); // the caller's (forget releases this cache's)
      this.forget(key, hit);
      this.remember(key, own);
      return { data: own, fetched: false };
    }
    const pending = this.inFlight.get(key);
    if (pending) {
      const data = await pending;
      // Held for this caller before anything else can run (the fetching call still holds it).
      this.lender?.hold(data);
      return { data, fetched: false };
    }
    const p = fetch();
    this.inFlight.set(key, p);
    try {
      const data = await p;
      // Remembered as a view (its buffer costs its whole length, once: see the class), unless
      // that buffer alone is over the capacity: then as a copy of its own. A local store's
      // read-ahead windows, a server's arrival slabs and a client's fetch slabs (4 MiB each)
      // stay views: a copy here is a copy of every byte fetched. (Copied once their buffer
      // was over a quarter of the capacity, a server's rebuild, with its 8 MiB, copied every
      // chunk: 275 ms of its main thread per 512 MiB pushed, and as much garbage.)
      const large = data.buffer.byteLength > this.capacityBytes && data.byteLength < data.buffer.byteLength;
      this.remember(key, large ? Buffer.from(data) : data);
      return { data, fetched: true };
    } finally {
      this.inFlight.delete(key);
    }
  }

  private remember(key: string, data: Buffer): void {
    const users = this.users.get(data.buffer) ?? 0;
    const cost = users === 0 ? data.buffer.byteLength : 0;
    if (cost > this.capacityBytes) return;
    this.lender?.hold(data);
    this.recent.set(key, data);
    this.users.set(data.buffer, users + 1);
    this.bytes += cost;
    // Iterated only when over (a Map walked from its start passes over its deleted
    // entries: once per chunk, that was measurable on a server's main thread).
    if (this.bytes <= this.capacityBytes) return;
    for (const [k, v] of this.recent) {
      if (this.bytes <= this.capacityBytes) break;
      this.forget(k, v);
    }
  }

  /** Forgets every chunk (releasing what it holds of a lender's). */
  clear(): void {
    for (const [k, v] of this.recent) this.forget(k, v);
  }

  private forget(key: string, data: Buffer): void {
    this.recent.delete(key);
    this.lender?.release(data);
    const users = this.users.get(data.buffer)! - 1;
    if (users > 0) this.users.set(data.buffer, users);
    else {
      this.users.delete(data.buffer);
      this.bytes -= data.buffer.byteLength;
    }
  }
}
