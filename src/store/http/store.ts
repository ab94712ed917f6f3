import { throwIfAborted } from '../../core/abort.js';
import { ChunkCorruptError, ChunkMissingError, InvalidArgumentError } from '../../core/errors.js';
import { digestToHex, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { MiB } from '../../core/sizes.js';
import { Slots } from '../../core/window.js';
import { digestOf } from '../../hash/digest.js';
import { chunkRecordBytes, writeChunkRecord } from '../../protocol/records.js';
import type { ListEntry, ServerInfo } from '../../protocol/routes.js';
import { validateManifestName, validateManifestPrefix } from '../names.js';
import type { ChunkStore, GcOptions, GcRun, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions, RemotelyCollecting } from '../store.js';
import { MAX_CONNECTIONS, XferClient, type ClientOptions } from './client.js';

export type HttpStoreOptions = ClientOptions;

/** Bytes of chunk data per upload request (many requests run in parallel on one connection). */
export const UPLOAD_BATCH_BYTES = 4 * MiB;
/**
 * Chunks per fetch request, at most, and fetch requests in flight. Measured pulling 2 GiB
 * over loopback (medians of 2-3): 4 x 64 chunks 7.4 s, 8 x 64 8.7 s, 16 x 32 10.0 s,
 * 2 x 256 6.7 s, 1 x 256 6.5 s. Fewer, longer responses keep the server reading each
 * pack in order; two in flight hide the round trip between batches on real networks.
 */
export const FETCH_BATCH_CHUNKS = 256;
/** Fetch requests in flight per connection (XferClient.connectionCount). */
export const MAX_FETCHES_IN_FLIGHT = 2;
/** Upload requests in flight at once on one connection; each further connection adds one. */
export const MAX_UPLOADS_IN_FLIGHT = 6;
/**
 * Upload bodies kept for reuse. Allocating a fresh 4 MiB body per request cost the client
 * about 1.1 s of GC and allocation per 2 GiB pushed (measured: 6.17 s -> 5.03 s for a 2 GiB
 * push to a server that discards chunks).
 */
const FREE_UPLOAD_BODIES = MAX_UPLOADS_IN_FLIGHT + MAX_CONNECTIONS;
/**
 * Ids this store uploaded and the server took, remembered so that a later put of one
 * answers false without a round trip, until has() hears from the server that it lacks one
 * (it crashed before making it durable). At this many the memory is dropped whole (about
 * 15 MiB at most); a put of a forgotten id answers true again and its upload finds it
 * present on the server, which stores it once.
 */
export const REMEMBERED_PUT_IDS = 1 << 17;

/** A request body being filled with upload records, and the ids it carries. */
interface UploadBatch {
  body: Buffer;
  used: number;
  readonly keys: string[];
  /** Settles (never rejects) once the server answered it; set when it is sent. */
  sent?: Promise<void>;
}

interface PendingGet {
  id: ChunkId;
  resolve: (data: Buffer) => void;
  reject: (err: unknown) => void;
}

/**
 * A ChunkStore and ManifestStore on an `xfer serve` server (docs/PROTOCOL.md), through an
 * XferClient (client.ts), which owns the transport and the retries.
 *
 * Buffered writes. put() verifies the bytes (unless `trusted`), copies them into an upload
 * batch and resolves once they are queued, not once the server has them: batches go out
 * when full or on the next turn of the event loop, uploadsInFlight at a time (a put
 * waits while that many are running: back-pressure). What put() returns is decided when it
 * queues: true if this store had neither a pending upload of the id nor seen the server
 * take it (REMEMBERED_PUT_IDS, until has() finds it missing), false otherwise; so of concurrent puts of one id exactly
 * one answers true. (An id another client stored meanwhile answers true; the server then
 * finds it present and stores it once.)
 * Pending puts are visible at once: has() answers true for them and get() waits for their
 * upload. An upload that fails makes the next put() and flush() reject with its error.
 * flush() sends every queued chunk and resolves once the server has answered every upload
 * (it re-hashes each chunk and stores it); the server makes chunks durable before it
 * commits a manifest that refers to them (its commit, not a ManifestStore put, does that).
 *
 * Reads. get() calls are gathered into batched fetches (FETCH_BATCH_CHUNKS per request at
 * most, MAX_FETCHES_IN_FLIGHT per connection at a time), and every chunk received is verified against its
 * digest: the server is not trusted (GetOptions.unverified is ignored).
 *
 * Manifests are stored as given (`PUT ?raw=1`): putManifest stores, it does not commit a
 * push (see XferClient.commitManifest for that).
 */
export class HttpStore implements ChunkStore, ManifestStore, RemotelyCollecting {
  private readonly batches = new Map<DigestAlgorithm, UploadBatch>();
  private putTimer: NodeJS.Immediate | undefined;
  private readonly uploads = new Set<Promise<void>>();
  /** Bounds the uploads in flight (uploadsInFlight, which grows with the connections): put() waits for room. */
  private readonly uploadSlots = new Slots(() => this.uploadsInFlight);
  private uploadFailure: { error: unknown } | undefined;
  /** Ids queued or in flight, by key (keyOf), with the batch that carries them. */
  private readonly pending = new Map<string, UploadBatch>();
  /** Ids the server took from this store (REMEMBERED_PUT_IDS). */
  private readonly stored = new Set<string>();
  private readonly gets: PendingGet[] = [];
  private fetchesInFlight = 0;
  private getTimer: NodeJS.Immediate | undefined;
  /** Bodies of finished uploads, `batchBytes` each, for the next batches. */
  private readonly freeBodies: Buffer[] = [];
  /** Bytes of records per upload request: UPLOAD_BATCH_BYTES, within the server's limit. */
  readonly batchBytes: number;

  /** The server collects its own store's garbage (`POST /v1/gc`): its manifests, its scheme. */
  collectAllGarbage(options: GcOptions): Promise<GcRun> {
    return this.client.gc(options);
  }

  constructor(readonly client: XferClient) {
    const info = client.info;
    this.batchBytes = Math.max(1, Math.min(UPLOAD_BATCH_BYTES, info.maxBatchBytes - chunkRecordBytes(info.maxChunkBytes)));
  }

  static async connect(url: string | URL, options: HttpStoreOptions = {}): Promise<HttpStore> {
    return new HttpStore(await XferClient.connect(url, options));
  }

  get base(): URL {
    return this.client.base;
  }

  get info(): ServerInfo {
    return this.client.info;
  }

  /** Requests tried again so far: each one followed a broken connection or a stopping server. */
  get retriesMade(): number {
    return this.client.retriesMade;
  }

  async has(ids: readonly ChunkId[], options: OpOptions = {}): Promise<boolean[]> {
    throwIfAborted(options.signal);
    const out = new Array<boolean>(ids.length);
    const byAlgorithm = new Map<DigestAlgorithm, number[]>();
    ids.forEach((id, i) => {
      if (this.pending.size > 0 && this.pending.has(keyOf(id))) {
        out[i] = true;
        return;
      }
      const list = byAlgorithm.get(id.algorithm) ?? [];
      list.push(i);
      byAlgorithm.set(id.algorithm, list);
    });
    const jobs: Promise<void>[] = [];
    const max = this.info.maxQueryDigests;
    for (const [algorithm, idx] of byAlgorithm) {
      for (let s = 0; s < idx.length; s += max) {
        const part = idx.slice(s, s + max);
        jobs.push(
          (async () => {
            const present = await this.client.missing(algorithm, part.map((i) => ids[i]!), options.signal);
            part.forEach((i, k) => {
              out[i] = present[k]!;
              // The server's word wins: one that lost chunks it took (a crash before it made
              // them durable) gets them again from the next put.
              if (!out[i] && this.stored.size > 0) this.stored.delete(keyOf(ids[i]!));
            });
          })(),
        );
      }
    }
    await Promise.all(jobs);
    return out;
  }

  /** See the class comment: queues the chunk and answers whether this call queued it. */
  async put(id: ChunkId, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    this.throwUploadFailure();
    if (data.length > this.info.maxChunkBytes) throw new InvalidArgumentError(`chunk of ${data.length} bytes is larger than the server accepts`);
    if (!options.trusted && !digestOf(id.algorithm, data).equals(id.digest)) {
      throw new ChunkCorruptError(digestToHex(id.digest), 'its bytes hash to another digest');
    }
    const key = keyOf(id);
    if (this.pending.has(key) || this.stored.has(key)) return false;
    this.queue(id, key, data, options.signal);
    await this.uploadSlots.untilRoom();
    this.throwUploadFailure();
    return true;
  }

  /** Copies the record into the current upload batch (the one copy an upload needs). */
  private queue(id: ChunkId, key: string, data: Uint8Array, signal: AbortSignal | undefined): void {
    const need = chunkRecordBytes(data.length);
    let batch = this.batches.get(id.algorithm);
    if (batch && batch.used + need > batch.body.length) {
      this.sendBatch(id.algorithm, signal);
      batch = undefined;
    }
    if (!batch) {
      const reused = need <= this.batchBytes ? this.freeBodies.pop() : undefined;
      batch = { body: reused ?? Buffer.allocUnsafe(Math.max(this.batchBytes, need)), used: 0, keys: [] };
      this.batches.set(id.algorithm, batch);
    }
    batch.used += writeChunkRecord(batch.body, batch.used, id.digest, data);
    batch.keys.push(key);
    this.pending.set(key, batch);
    if (batch.used >= this.batchBytes) this.sendBatch(id.algorithm, signal);
    else this.putTimer ??= setImmediate(() => this.sendAll(signal));
  }

  /** Upload requests in flight at most: enough for every connection to carry some. */
  get uploadsInFlight(): number {
    return MAX_UPLOADS_IN_FLIGHT + this.client.connectionCount - 1;
  }

  private throwUploadFailure(): void {
    if (this.uploadFailure) throw this.uploadFailure.error;
  }

  private sendAll(signal?: AbortSignal): void {
    if (this.putTimer) clearImmediate(this.putTimer);
    this.putTimer = undefined;
    for (const algorithm of [...this.batches.keys()]) this.sendBatch(algorithm, signal);
  }

  private sendBatch(algorithm: DigestAlgorithm, signal?: AbortSignal): void {
    const batch = this.batches.get(algorithm);
    this.batches.delete(algorithm);
    if (!batch || batch.used === 0) return;
    const upload = this.client.upload(algorithm, batch.body.subarray(0, batch.used), signal).then(
      () => {
        for (const key of batch.keys) {
          this.pending.delete(key);
          this.remember(key);
        }
        // A 2xx answer comes after the server read the whole body: the buffer is free.
        if (batch.body.length === this.batchBytes && this.freeBodies.length < FREE_UPLOAD_BODIES) this.freeBodies.push(batch.body);
      },
      (error: unknown) => {
        for (const key of batch.keys) this.pending.delete(key);
        this.uploadFailure ??= { error };
      },
    );
    batch.sent = upload;
    this.uploads.add(upload);
    this.uploadSlots.admit();
    void upload.finally(() => {
      this.uploads.delete(upload);
      this.uploadSlots.release();
    });
  }

  private remember(key: string): void {
    if (this.stored.size >= REMEMBERED_PUT_IDS) this.stored.clear();
    this.stored.add(key);
  }

  /**
   * Queues a chunk fetch (after the upload of a pending put of it). Fetches go out in
   * batched requests, at most MAX_FETCHES_IN_FLIGHT at a time: while they run, new gets
   * accumulate, so a steady stream of single gets still travels in requests of up to
   * FETCH_BATCH_CHUNKS chunks instead of one request each.
   */
  async get(id: ChunkId, options: GetOptions = {}): Promise<Buffer> {
    throwIfAborted(options.signal);
    const batch = this.pending.size > 0 ? this.pending.get(keyOf(id)) : undefined;
    if (batch) {
      if (!batch.sent) this.sendAll(options.signal);
      await batch.sent;
      throwIfAborted(options.signal);
    }
    return new Promise<Buffer>((resolve, reject) => {
      this.gets.push({ id, resolve, reject });
      // gather what this turn of the event loop asks for before sending
      this.getTimer ??= setImmediate(() => {
        this.getTimer = undefined;
        this.pumpGets(options.signal);
      });
    });
  }

  private pumpGets(signal?: AbortSignal): void {
    const connections = this.client.connectionCount;
    const slots = MAX_FETCHES_IN_FLIGHT * connections;
    while (this.fetchesInFlight < slots && this.gets.length > 0) {
      // Over several connections, what waits is shared among the free slots, so that each
      // connection carries some of it (one connection keeps whole FETCH_BATCH_CHUNKS batches).
      const share = connections > 1 ? Math.ceil(this.gets.length / (slots - this.fetchesInFlight)) : FETCH_BATCH_CHUNKS;
      const batch = this.gets.splice(0, Math.min(FETCH_BATCH_CHUNKS, share));
      const byAlgorithm = new Map<DigestAlgorithm, PendingGet[]>();
      for (const g of batch) {
        const list = byAlgorithm.get(g.id.algorithm);
        if (list) list.push(g);
        else byAlgorithm.set(g.id.algorithm, [g]);
      }
      for (const [algorithm, list] of byAlgorithm) {
        this.fetchesInFlight++;
        void this.fetchBatch(algorithm, list, signal)
          .catch((err) => {
            for (const g of list) g.reject(err); // those settled already stay so
          })
          .finally(() => {
            this.fetchesInFlight--;
            this.pumpGets(signal);
          });
      }
    }
  }

  /** Fetches a batch, verifying and settling each chunk as it arrives. */
  private async fetchBatch(algorithm: DigestAlgorithm, list: PendingGet[], signal?: AbortSignal): Promise<void> {
    const origin = this.base.origin;
    await this.client.fetch(algorithm, list.map((g) => g.id.digest), (i, data) => {
      const g = list[i]!;
      if (!data) g.reject(new ChunkMissingError(digestToHex(g.id.digest), origin));
      else if (digestOf(algorithm, data).equals(g.id.digest)) g.resolve(data);
      else g.reject(new ChunkCorruptError(digestToHex(g.id.digest), `received from ${origin} with other content`));
    }, signal);
  }

  /** Sends what is queued and waits for every upload; rejects with the first upload failure. */
  async flush(options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    this.sendAll(options.signal);
    while (this.uploads.size) await Promise.all([...this.uploads]);
    this.throwUploadFailure();
  }

  async putManifest(name: string, source: AsyncIterable<Uint8Array>, options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    await this.client.putManifest(validateManifestName(name), source, options.signal);
  }

  async getManifest(name: string, options: OpOptions = {}): Promise<AsyncIterable<Uint8Array>> {
    throwIfAborted(options.signal);
    return this.client.getManifest(validateManifestName(name), options.signal);
  }

  async listManifests(prefix: string, options: OpOptions = {}): Promise<ManifestInfo[]> {
    throwIfAborted(options.signal);
    // An older server does not say the manifests' own sizes: their contents' stand in.
    return (await this.list(validateManifestPrefix(prefix), options)).map((e) => ({ name: e.path, bytes: e.manifestBytes ?? e.bytes, mtimeMs: e.mtimeMs }));
  }

  async deleteManifest(name: string, options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    await this.client.deleteManifest(validateManifestName(name), options.signal);
  }

  /** The server's listing with kinds and digests (for `xfer ls`); a manifest it cannot read is kind `damaged`, with its `error`. */
  list(prefix: string, options: OpOptions = {}): Promise<ListEntry[]> {
    return this.client.list(prefix, options.signal);
  }

  stat(name: string, options: OpOptions = {}): Promise<'file' | 'tree' | 'dir' | 'none'> {
    return this.client.stat(name, options.signal);
  }

  /** Sends what is queued (unless the client's signal was aborted) and closes the connections. */
  async close(): Promise<void> {
    if (this.client.aborted) {
      this.dropQueued();
      return this.client.close();
    }
    await this.flush().catch(() => {});
    await this.client.close();
  }

  private dropQueued(): void {
    if (this.putTimer) clearImmediate(this.putTimer);
    this.putTimer = undefined;
    this.batches.clear();
  }
}

/** A map key for a chunk id. */
function keyOf(id: ChunkId): string {
  return id.algorithm + Buffer.from(id.digest.buffer, id.digest.byteOffset, id.digest.byteLength).toString('latin1');
}
