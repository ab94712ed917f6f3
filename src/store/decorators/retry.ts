import { throwIfAborted } from '../../core/abort.js';
import { isXferError } from '../../core/errors.js';
import type { ChunkId } from '../../core/ids.js';
import { retrying, type RetryPlan } from '../../core/retry.js';
import type { ChunkStore, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions } from '../store.js';

type Store = ChunkStore & ManifestStore;

/**
 * A store whose operations are tried again when they fail for a passing reason: the retry
 * decorator (restic's retry.New), composed around a store by the location registry
 * (endpoint/registry.ts) with the store's own sorting of its errors (RetryPlan.isPermanent).
 *
 * Contracts:
 * - An error the plan calls permanent, and an abort, are thrown at once; a passing one is
 *   tried again up to the plan's retries, waiting as core/retry.ts says (an abort during a
 *   wait ends it), then thrown as the last attempt's.
 * - Retried: has, get, put and flush (idempotent by the ChunkStore contract), getManifest
 *   (the opening; a break while its stream is read is the reader's), listManifests, and
 *   deleteManifest: a retry that finds the manifest gone counts as done, as the attempt
 *   that failed may have deleted it and lost only its answer.
 * - Not retried: putManifest, whose source is a stream read once (a store that buffers it,
 *   as S3Store does, retries inside), and close.
 * - Each operation checks its signal before any work.
 *
 * A store that retries inside its transport (HttpStore, S3Store) is not wrapped in this as
 * well: the registry hands it the same RetryPlan instead, so retries never multiply.
 */
export class RetryingStore implements ChunkStore, ManifestStore {
  private retries = 0;

  constructor(
    readonly inner: Store,
    private readonly plan: RetryPlan,
  ) {}

  /** Operations tried again so far. */
  get retriesMade(): number {
    return this.retries;
  }

  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    return this.retrying(() => this.inner.has(ids, options), options);
  }

  get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    return this.retrying(() => this.inner.get(id, options), options);
  }

  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    return this.retrying(() => this.inner.put(id, data, options), options);
  }

  flush(options?: OpOptions): Promise<void> {
    return this.retrying(() => this.inner.flush(options), options);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    return this.inner.putManifest(name, source, options);
  }

  getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    return this.retrying(() => this.inner.getManifest(name, options), options);
  }

  listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    return this.retrying(() => this.inner.listManifests(prefix, options), options);
  }

  deleteManifest(name: string, options?: OpOptions): Promise<void> {
    return this.retrying(async (attempt) => {
      try {
        await this.inner.deleteManifest(name, options);
      } catch (err) {
        if (attempt > 0 && isXferError(err, 'XFER_NOT_FOUND')) return;
        throw err;
      }
    }, options);
  }

  private retrying<T>(op: (attempt: number) => Promise<T>, options: OpOptions | undefined): Promise<T> {
    const signal = options?.signal;
    throwIfAborted(signal);
    return retrying(op, {
      policy: this.plan.retry,
      transient: (error) => !this.plan.isPermanent(error),
      signal,
      onRetry: (event) => {
        this.retries++;
        this.plan.onRetry?.(event);
      },
    });
  }
}
