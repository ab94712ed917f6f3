/**
 * `pull --fallback <location>`: a chunk the source store lacks or holds damaged is fetched
 * from the fallback stores instead, tried in order, each verified by the fallback's own get
 * (every store's get re-hashes what it returns). The chunk is then put back into the
 * source store (verified again there: not trusted), which heals it: a local or S3 store
 * set the damaged copy aside when its get found it (ChunkStore.setAside), and a server
 * does on the upload of a chunk it counted as present (server/routes/chunks.ts). A source
 * that refuses the put (read-only, unreachable) does not fail the pull: the bytes are
 * good; the failure is counted.
 */
import { isXferError } from '../core/errors.js';
import type { ChunkId } from '../core/ids.js';
import type { ChunkStore, GetOptions, OpOptions, PutOptions } from '../store/store.js';

export interface FallbackFigures {
  /** Chunks the source could not give and a fallback did. */
  readonly chunksFromFallback: number;
  /** Of those, chunks put back into the source store. */
  readonly chunksHealed: number;
  /** Of those, chunks the source store would not take back (the first reason in `healError`). */
  readonly healFailures: number;
  readonly healError?: string;
}

/** Missing or damaged: what a fallback can make up for. */
function replaceable(err: unknown): boolean {
  return isXferError(err, 'XFER_CHUNK_MISSING') || isXferError(err, 'XFER_CHUNK_CORRUPT');
}

/**
 * A ChunkStore reading from `source`, and from `fallbacks` (in order) what `source` cannot
 * give. Writes go to `source`. Closing it closes neither: they stay their opener's.
 */
export class FallbackChunks implements ChunkStore {
  private fromFallback = 0;
  private healed = 0;
  private failures = 0;
  private healError: string | undefined;
  /** Heals in flight: flush waits for them. */
  private readonly heals = new Set<Promise<void>>();

  constructor(
    readonly source: ChunkStore,
    readonly fallbacks: readonly ChunkStore[],
  ) {}

  figures(): FallbackFigures {
    return { chunksFromFallback: this.fromFallback, chunksHealed: this.healed, healFailures: this.failures, ...(this.healError ? { healError: this.healError } : {}) };
  }

  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    return this.source.has(ids, options);
  }

  async get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    try {
      return await this.source.get(id, options);
    } catch (err) {
      if (!replaceable(err)) throw err;
      for (const fallback of this.fallbacks) {
        let data: Buffer;
        try {
          // Verified: the bytes come from elsewhere, whatever the caller asked of the source.
          data = await fallback.get(id, { signal: options?.signal });
        } catch (fallbackErr) {
          if (replaceable(fallbackErr)) continue;
          throw fallbackErr;
        }
        this.fromFallback++;
        this.heal(id, data, options?.signal);
        return data;
      }
      throw err;
    }
  }

  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    return this.source.put(id, data, options);
  }

  /** Waits for the heals under way, then flushes the source. */
  async flush(options?: OpOptions): Promise<void> {
    while (this.heals.size > 0) await Promise.all([...this.heals]);
    await this.source.flush(options);
  }

  /** Waits for the heals under way and makes them durable; closes nothing (see the class). */
  async close(): Promise<void> {
    if (this.healed + this.heals.size === 0) return;
    await this.flush().catch((err: unknown) => this.noteFailure(err));
  }

  private heal(id: ChunkId, data: Buffer, signal: AbortSignal | undefined): void {
    // Not trusted: the source re-hashes what it stores.
    const run = this.source.put(id, data, { signal }).then(
      (stored) => {
        if (stored) this.healed++;
      },
      (err: unknown) => this.noteFailure(err),
    );
    this.heals.add(run);
    void run.finally(() => this.heals.delete(run));
  }

  private noteFailure(err: unknown): void {
    this.failures++;
    this.healError ??= err instanceof Error ? err.message : String(err);
  }
}
