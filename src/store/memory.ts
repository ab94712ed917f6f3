import { throwIfAborted } from '../core/abort.js';
import { ChunkCorruptError, ChunkMissingError, NotFoundError } from '../core/errors.js';
import { digestFromHex, digestToHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { digestEquals, digestOf } from '../hash/digest.js';
import {
  checkChunkId,
  compareManifestNames,
  quoteName,
  validateManifestName,
  validateManifestPrefix,
} from './names.js';
import { emptyGcReport } from './gc.js';
import type { ChunkStore, GarbageCollecting, GcOptions, GcReport, ManifestInfo, ManifestStore, OpOptions, PutOptions, ReferencedChunks } from './store.js';

/** How the memory store names itself in error messages. */
const WHERE = 'the memory store';

interface StoredManifest {
  readonly bytes: Buffer;
  readonly mtimeMs: number;
}

/**
 * A ChunkStore and ManifestStore held in process memory, for tests and for embedding.
 * Same contracts as every other store (test/store-conformance.ts): puts are verified
 * unless trusted, gets are verified, and stored bytes are private copies, so a caller
 * reusing its buffers cannot change what is stored. Nothing survives the process, so
 * flush has nothing to do.
 *
 * Garbage collection (the scheme: gc.ts) works per chunk, as if each were a pack of its
 * own: an unreferenced chunk is marked (absent for has(); a put stores it again, which
 * unmarks it), and deleted by a gc at least graceMs later unless a manifest refers to it
 * by then (recovered).
 */
export class MemoryStore implements ChunkStore, ManifestStore, GarbageCollecting {
  private readonly chunks = new Map<string, Buffer>();
  /** Chunks a gc marked for deletion, and when. */
  private readonly marked = new Map<string, number>();
  private readonly manifests = new Map<string, StoredManifest>();
  /** Chunks set aside (found corrupt), their bytes as they were, by key; for inspection. */
  readonly setAsideChunks = new Map<string, Buffer>();

  async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    throwIfAborted(options?.signal);
    return ids.map((id) => {
      const key = keyOf(id);
      return this.chunks.has(key) && !this.marked.has(key);
    });
  }

  async get(id: ChunkId, options?: OpOptions): Promise<Buffer> {
    throwIfAborted(options?.signal);
    const data = this.chunks.get(keyOf(id));
    if (data === undefined && this.setAsideChunks.has(keyOf(id))) {
      throw new ChunkCorruptError(digestToHex(id.digest), `its copy in ${WHERE} was found damaged and set aside`);
    }
    if (data === undefined) throw new ChunkMissingError(digestToHex(id.digest), WHERE);
    if (!digestEquals(digestOf(id.algorithm, data), id.digest)) {
      await this.setAside(id);
      throw new ChunkCorruptError(digestToHex(id.digest), `the bytes held by ${WHERE} do not match it (set aside)`);
    }
    return Buffer.from(data);
  }

  async put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    throwIfAborted(options?.signal);
    const key = keyOf(id);
    if (this.chunks.has(key) && !this.marked.has(key)) return false;
    if (options?.trusted !== true && !digestEquals(digestOf(id.algorithm, data), id.digest)) {
      throw new ChunkCorruptError(digestToHex(id.digest), 'the bytes to store do not hash to it');
    }
    // No await since the has() check above: concurrent puts of one id cannot both get here.
    this.chunks.set(key, Buffer.from(data));
    this.marked.delete(key); // stored again: whatever a gc marked is back
    return true;
  }

  /** ChunkStore.setAside: the bytes move to setAsideChunks; has answers false, put stores anew. */
  async setAside(id: ChunkId, options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    const key = keyOf(id);
    const data = this.chunks.get(key);
    if (data === undefined) return;
    this.chunks.delete(key);
    this.setAsideChunks.set(key, data);
    this.marked.delete(key); // a gc's mark is moot: the chunk is no longer here
  }

  /** One gc run over the chunks (see the class comment). */
  async collectGarbage(referenced: ReferencedChunks, options: GcOptions): Promise<GcReport> {
    throwIfAborted(options.signal);
    const now = options.nowMs ?? Date.now();
    const dryRun = options.dryRun === true;
    const report = emptyGcReport(dryRun, referenced.size);
    let storeBytes = 0;
    for (const [key, data] of [...this.chunks]) {
      const [algorithm, hex] = key.split(':') as [DigestAlgorithm, string];
      const used = referenced.has(algorithm, digestFromHex(hex));
      const markedAt = this.marked.get(key);
      let remove = false;
      if (used) {
        if (markedAt !== undefined) {
          report.recoveredPacks++;
          if (!dryRun) this.marked.delete(key);
        }
      } else if (markedAt === undefined) {
        report.markedPacks++;
        report.markedBytes += data.length;
        if (!dryRun) this.marked.set(key, now);
        remove = options.graceMs === 0;
      } else remove = markedAt + options.graceMs <= now;
      if (remove) {
        report.deletedChunks++;
        report.freedBytes += data.length;
        if (!dryRun) {
          this.chunks.delete(key);
          this.marked.delete(key);
        }
      } else {
        storeBytes += data.length;
        if (!used) {
          const due = (markedAt ?? now) + options.graceMs;
          report.waitingPacks++;
          report.waitingBytes += data.length;
          report.nextDeletableAtMs = report.nextDeletableAtMs === 0 ? due : Math.min(report.nextDeletableAtMs, due);
        }
      }
    }
    report.storeBytes = storeBytes;
    return report;
  }

  async flush(options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
  }

  async close(): Promise<void> {}

  /** Yields every stored chunk (of `algorithm`, or of all), in no particular order. */
  async *listChunks(algorithm?: DigestAlgorithm, options?: OpOptions): AsyncGenerator<ChunkId> {
    for (const key of [...this.chunks.keys()]) {
      throwIfAborted(options?.signal);
      if (this.marked.has(key)) continue;
      const [chunkAlgorithm, hex] = key.split(':') as [DigestAlgorithm, string];
      if (algorithm === undefined || algorithm === chunkAlgorithm) {
        yield { algorithm: chunkAlgorithm, digest: digestFromHex(hex) };
      }
    }
  }

  /**
   * Test hook: damages a stored chunk in place (flips the first byte's bits, or gives an
   * empty chunk one byte) so that get reports it as corrupt. Throws ChunkMissingError if
   * the chunk is not stored.
   */
  corruptChunk(id: ChunkId): void {
    const key = keyOf(id);
    const data = this.chunks.get(key);
    if (data === undefined) throw new ChunkMissingError(digestToHex(id.digest), WHERE);
    if (data.length === 0) {
      this.chunks.set(key, Buffer.from([0]));
    } else {
      data[0] = data[0]! ^ 0xff;
    }
  }

  async putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    throwIfAborted(options?.signal);
    const pieces: Buffer[] = [];
    for await (const piece of source) {
      throwIfAborted(options?.signal);
      pieces.push(Buffer.from(piece));
    }
    // Replaced in one step after the whole source was read: readers see old or new.
    this.manifests.set(name, { bytes: Buffer.concat(pieces), mtimeMs: Date.now() });
  }

  async getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    validateManifestName(name);
    throwIfAborted(options?.signal);
    const manifest = this.manifests.get(name);
    if (manifest === undefined) throw new NotFoundError(`no manifest named ${quoteName(name)} in ${WHERE}`);
    return streamOf(Buffer.from(manifest.bytes), options?.signal);
  }

  async listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    validateManifestPrefix(prefix);
    throwIfAborted(options?.signal);
    const infos: ManifestInfo[] = [];
    for (const [name, manifest] of this.manifests) {
      if (name.startsWith(prefix)) infos.push({ name, bytes: manifest.bytes.length, mtimeMs: manifest.mtimeMs });
    }
    return infos.sort((a, b) => compareManifestNames(a.name, b.name));
  }

  async deleteManifest(name: string, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    throwIfAborted(options?.signal);
    if (!this.manifests.delete(name)) throw new NotFoundError(`no manifest named ${quoteName(name)} in ${WHERE}`);
  }
}

/** The map key of a chunk; rejects ids no store could hold. */
function keyOf(id: ChunkId): string {
  return `${id.algorithm}:${checkChunkId(id)}`;
}

async function* streamOf(bytes: Buffer, signal: AbortSignal | undefined): AsyncIterable<Uint8Array> {
  throwIfAborted(signal);
  yield bytes;
}
