import type { ChunkId } from '../../core/ids.js';
import { Slots } from '../../core/window.js';
import type { ChunkStore, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions } from '../store.js';

type Store = ChunkStore & ManifestStore;

/**
 * A store that runs at most `maxInFlight` of its operations at once; the others wait, in
 * no promised order, and an aborted waiter stops waiting (AbortedError). restic's
 * sema.NewBackend, composed by the location registry (endpoint/registry.ts) inside the
 * retry decorator, so that an operation waiting to be tried again holds no slot.
 *
 * getManifest holds its slot until the manifest is opened, not while its stream is read;
 * close waits for no slot.
 */
export class LimitedStore implements ChunkStore, ManifestStore {
  private readonly slots: Slots;

  constructor(
    readonly inner: Store,
    readonly maxInFlight: number,
  ) {
    this.slots = new Slots(maxInFlight);
  }

  /** Operations running now. */
  get inFlight(): number {
    return this.slots.inFlight;
  }

  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    return this.slots.run(() => this.inner.has(ids, options), options?.signal);
  }

  get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    return this.slots.run(() => this.inner.get(id, options), options?.signal);
  }

  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    return this.slots.run(() => this.inner.put(id, data, options), options?.signal);
  }

  flush(options?: OpOptions): Promise<void> {
    return this.slots.run(() => this.inner.flush(options), options?.signal);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    return this.slots.run(() => this.inner.putManifest(name, source, options), options?.signal);
  }

  getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    return this.slots.run(() => this.inner.getManifest(name, options), options?.signal);
  }

  listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    return this.slots.run(() => this.inner.listManifests(prefix, options), options?.signal);
  }

  deleteManifest(name: string, options?: OpOptions): Promise<void> {
    return this.slots.run(() => this.inner.deleteManifest(name, options), options?.signal);
  }
}
