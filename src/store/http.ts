import { isZeroChunk } from '../chunker/zero.js';
import { Client, H2CClient, type Dispatcher } from 'undici';
import { abortedError, throwIfAborted } from '../core/abort.js';
import {
  ChunkCorruptError, ChunkMissingError, InvalidArgumentError, ProtocolError, XferError, type ErrorCode,
} from '../core/errors.js';
import { ByteQueue, SlabAllocator } from '../core/bytes.js';
import { checkRate, paced, RateLimiter } from '../core/rate.js';
import { DEFAULT_RETRY_POLICY, retrying, type RetryEvent, type RetryPolicy } from '../core/retry.js';
import { DIGEST_BYTES, digestToHex, type ChunkerSpec, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { digestOf } from '../hash/digest.js';
import type { BaseChunk, BaseIndex } from '../manifest/bases.js';
import type { EntryMeta } from '../manifest/types.js';
import { DELTA_BLOCK_BYTES, encodeDelta, SUMS_REQUEST_RECORD_BYTES, sumsBytes, type Shifts } from './delta.js';
import { END_MARKER } from '../manifest/format.js';
import { describeNetFailure } from './net-errors.js';
import { chunkerQuery, STAGE_END_BYTES, STAGE_RECORD_BYTES } from './stage-format.js';
import type { ChunkStore, ManifestInfo, ManifestStore, OpOptions, PutOptions } from './store.js';

export interface HttpStoreOptions {
  /** Bearer token for a server started with --token. */
  readonly token?: string;
  /** PEM CA certificate(s) to trust (self-signed servers). */
  readonly ca?: string | Buffer;
  /** Accept any certificate (testing only). */
  readonly insecure?: boolean;
  readonly signal?: AbortSignal;
  /**
   * How requests that fail for a passing reason (the connection broke, the server stopped
   * or restarted) are tried again: DEFAULT_RETRY_POLICY unless given. The first contact
   * (connect) is never retried: a server that is not there at the start is most likely
   * the wrong address.
   */
  readonly retry?: RetryPolicy;
  /** Told before each retry waits (the library never prints; the CLI may). */
  readonly onRetry?: (event: RetryEvent) => void;
  /**
   * Chunk data per second, at most, in each direction (uploads and fetches apart), like
   * rsync's and rclone's --bwlimit; unlimited if not given. Queries, manifests and HTTP/2
   * framing are not counted: they are a few bytes per chunk.
   */
  readonly bwlimitBytesPerSecond?: number;
  /**
   * How long a request waits for the server's answer, and for each next piece of it,
   * before the connection counts as broken (and the request is retried): like rclone's
   * --timeout. ANSWER_TIMEOUT_MS unless given. The manifest commit waits for its answer
   * without limit: it comes once the server has rebuilt and verified the target, which
   * takes as long as the data.
   */
  readonly answerTimeoutMs?: number;
}

/** The default of HttpStoreOptions.answerTimeoutMs: undici's own, 5 minutes. */
export const ANSWER_TIMEOUT_MS = 300_000;

/** Bytes of chunk data per upload request (many requests run in parallel on one connection). */
export const UPLOAD_BATCH_BYTES = 4 * MiB;
/** Chunks smaller than this are always sent whole (a delta's sums and header would not pay). */
const MIN_DELTA_CHUNK_BYTES = 8 * 1024;
/** A delta record must be at most this fraction of its chunk's bytes, or the chunk goes whole. */
const DELTA_WORTH_RATIO = 0.75;
/** Delta candidates per sums request, at most. */
const DELTA_BATCH_CHUNKS = 256;
/** Slabs received chunks are carved from (see SlabAllocator). */
const FETCH_SLAB_BYTES = 4 * MiB;
/**
 * Chunks per fetch request, at most, and fetch requests in flight. Measured pulling 2 GiB
 * over loopback (medians of 2-3): 4 x 64 chunks 7.4 s, 8 x 64 8.7 s, 16 x 32 10.0 s,
 * 2 x 256 6.7 s, 1 x 256 6.5 s. Fewer, longer responses keep the server reading each
 * pack in order; two in flight hide the round trip between batches on real networks.
 */
export const FETCH_BATCH_CHUNKS = 256;
export const MAX_FETCHES_IN_FLIGHT = 2;
/** Upload requests in flight at once. */
export const MAX_UPLOADS_IN_FLIGHT = 6;
export const STREAM_WINDOW_BYTES = 16 * MiB;
export const CONNECTION_WINDOW_BYTES = 256 * MiB;
/** Pieces a rate-limited upload body is sent in, each waiting for the limiter. */
const PACED_PIECE_BYTES = 64 * 1024;
/**
 * Under a rate limit the flow-control windows shrink to about what arrives in
 * LIMITED_WINDOW_SECONDS, so that the server does not send far ahead of the limit into
 * the client's memory; never below these.
 */
const LIMITED_WINDOW_SECONDS = 0.5;
const MIN_LIMITED_STREAM_WINDOW_BYTES = 256 * 1024;
const MIN_LIMITED_CONNECTION_WINDOW_BYTES = 1 * MiB;

interface ServerInfo {
  protocol: number;
  maxBatchBytes: number;
  maxQueryDigests: number;
  maxChunkBytes: number;
  /** Servers that take delta uploads say their block size (store/delta.ts). */
  deltaBlockBytes?: number;
  /** Servers that rebuild a pushed file while its chunks arrive (POST /v1/stage/<path>). */
  stage?: boolean;
  /** Servers that take stages of trees too (kind=tree). */
  stageTrees?: boolean;
}

/** How a stage or a manifest commit is to treat what the server already has. */
export interface CommitOptions {
  /**
   * A push with --checksum: the server re-hashes its materialized copy instead of keeping
   * (or linking) files by their size and mtime (`checksum=1`, docs/PROTOCOL.md).
   */
  readonly checksum?: boolean;
  /** A push with --in-place: a large file target may be rewritten where it is (`in-place=1` on the commit, docs/PROTOCOL.md). */
  readonly inPlace?: boolean;
}

/** A request body being filled with upload records. */
interface UploadBatch {
  body: Buffer;
  used: number;
}

/**
 * Upload bodies kept for reuse. Allocating a fresh 4 MiB body per request cost the client
 * about 1.1 s of GC and allocation per 2 GiB pushed (measured: 6.17 s -> 5.03 s for a 2 GiB
 * push to a server that discards chunks).
 */
const FREE_UPLOAD_BODIES = MAX_UPLOADS_IN_FLIGHT + 1;

/** A chunk to send as a delta against `base`, compared at two alignments (store/delta.ts). */
interface DeltaCandidate {
  readonly id: ChunkId;
  /** Our own copy: put() has returned. */
  readonly data: Buffer;
  readonly base: BaseChunk;
  readonly shifts: Shifts;
}

interface PendingGet {
  id: ChunkId;
  resolve: (data: Buffer) => void;
  reject: (err: unknown) => void;
}

/**
 * A ChunkStore and ManifestStore on an `xfer serve` server over HTTP/2 (docs/PROTOCOL.md),
 * with undici (`Client` with allowH2 for https, `H2CClient` for http).
 *
 * Single put() and get() calls are coalesced into batched requests (one request body
 * carries many chunks), sent on concurrent streams of one connection. put() resolves once
 * the chunk is queued; flush() resolves once every queued chunk was accepted by the server
 * (which re-hashes every chunk).
 * get() verifies every chunk it receives against its digest: the server is not trusted.
 */
export class HttpStore implements ChunkStore, ManifestStore {
  private readonly headers: Record<string, string>;
  private readonly batches = new Map<DigestAlgorithm, UploadBatch>();
  private putTimer: NodeJS.Immediate | undefined;
  private readonly uploads = new Set<Promise<void>>();
  private uploadFailure: { error: unknown } | undefined;
  private readonly gets: PendingGet[] = [];
  private fetchesInFlight = 0;
  private readonly fetched = new SlabAllocator(FETCH_SLAB_BYTES);
  private bases: BaseIndex | undefined;
  /** Chunks waiting to go as deltas, and their bytes. */
  private deltas: DeltaCandidate[] = [];
  private deltaBytes = 0;
  private deltaChunks = 0;
  private deltaSavedBytes = 0;
  /** Bodies of finished uploads, `batchBytes` each, for the next batches. */
  private readonly freeBodies: Buffer[] = [];
  private getTimer: NodeJS.Immediate | undefined;

  /** Bytes of records per upload request: UPLOAD_BATCH_BYTES, within the server's limit. */
  private readonly batchBytes: number;

  private retries = 0;

  /** Rate limits of chunk data, uploads and fetches apart (HttpStoreOptions.bwlimitBytesPerSecond). */
  private readonly upLimit: RateLimiter | undefined;
  private readonly downLimit: RateLimiter | undefined;

  /** The connection of stages (see openStage), made on first use. */
  private stageClient: Dispatcher | undefined;

  /** Stops listening to the store's signal (HttpStoreOptions.signal). */
  private readonly unlisten: () => void;

  private constructor(
    readonly base: URL,
    private readonly client: Dispatcher,
    readonly info: ServerInfo,
    token: string | undefined,
    private readonly connectAgain: () => Dispatcher,
    private readonly retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    private readonly onRetry?: (event: RetryEvent) => void,
    bwlimitBytesPerSecond?: number,
    private readonly answerTimeoutMs = ANSWER_TIMEOUT_MS,
    private readonly signal?: AbortSignal,
  ) {
    this.headers = token ? { authorization: `Bearer ${token}` } : {};
    if (bwlimitBytesPerSecond !== undefined) {
      this.upLimit = new RateLimiter(bwlimitBytesPerSecond);
      this.downLimit = new RateLimiter(bwlimitBytesPerSecond);
    }
    this.batchBytes = Math.max(1, Math.min(UPLOAD_BATCH_BYTES, info.maxBatchBytes - info.maxChunkBytes - 4 - DIGEST_BYTES));
    // An abort of the store's signal tears its connections down at once, before undici
    // resets its streams one by one (it listens later, per request): nothing is sent after
    // an abort, so the connections have nothing left to finish. Resetting streams whose
    // request bodies were being piped in (paced uploads under --bwlimit, as Readables then)
    // sent Node's HTTP/2 session (v20.20) into an endless native loop
    // (Http2Session::SendPendingData, gigabytes per second) that no signal handler could
    // interrupt; streamed bodies are now async iterables as well (see sendBatch).
    const onAbort = () => this.destroyConnections();
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    this.unlisten = () => signal?.removeEventListener('abort', onAbort);
  }

  static async connect(url: string | URL, options: HttpStoreOptions = {}): Promise<HttpStore> {
    const base = new URL(url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new InvalidArgumentError(`${url}: expected an http:// or https:// URL`);
    if (options.bwlimitBytesPerSecond !== undefined) checkRate(options.bwlimitBytesPerSecond);
    const client = makeClient(base, options);
    const headers: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
    let info: ServerInfo;
    try {
      info = (await json(await call(client, base, { method: 'GET', path: '/v1/info', headers, signal: options.signal }))) as ServerInfo;
    } catch (err) {
      await client.close().catch(() => {});
      throw transportError(err, base, options.signal);
    }
    if (info.protocol !== 1) {
      await client.close().catch(() => {});
      throw new ProtocolError(`${base.origin} speaks xfer protocol ${info.protocol}; this client speaks 1`);
    }
    return new HttpStore(base, client, info, options.token, () => makeClient(base, options), options.retry, options.onRetry, options.bwlimitBytesPerSecond, options.answerTimeoutMs, options.signal);
  }

  /**
   * One request and the reading of its answer by `read`, tried again (see
   * HttpStoreOptions.retry) while either fails for a passing reason, if its body can be
   * sent again: none, bytes, or a function that opens it anew for each attempt.
   */
  private request<T>(
    opts: Omit<CallOptions, 'body'> & { body?: CallOptions['body'] | (() => CallOptions['body']) },
    read: (res: Dispatcher.ResponseData) => Promise<T>,
  ): Promise<T> {
    const { body } = opts;
    const once = () => this.exchange({ ...opts, body: typeof body === 'function' ? body() : body }, read);
    if (body !== undefined && typeof body !== 'function' && !(body instanceof Uint8Array)) return once();
    return this.retrying(once, opts.signal);
  }

  /** One request and the reading of its answer, once; any failure is an XferError (a break a TransientError). */
  private async exchange<T>(opts: CallOptions, read: (res: Dispatcher.ResponseData) => Promise<T>): Promise<T> {
    const signal = opts.signal ?? this.signal;
    throwIfAborted(signal);
    const res = await call(this.client, this.base, {
      headersTimeout: this.answerTimeoutMs,
      bodyTimeout: this.answerTimeoutMs,
      ...opts,
      signal,
      headers: { ...this.headers, ...opts.headers },
    });
    try {
      return await read(res);
    } catch (err) {
      throw transportError(err, this.base, signal);
    }
  }

  /** Requests tried again so far: each one followed a broken connection or a stopping server. */
  get retriesMade(): number {
    return this.retries;
  }

  /**
   * Runs `op` under this store's retry policy; see core/retry.ts. An abort, of `signal` or
   * of the store's own, is never retried.
   */
  private retrying<T>(op: (attempt: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const onRetry = (event: RetryEvent) => {
      this.retries++;
      this.onRetry?.(event);
    };
    return retrying(op, { policy: this.retry, transient: isTransient, signal: signal ?? this.signal, onRetry, exhausted: gaveUp });
  }

  async has(ids: readonly ChunkId[], options: OpOptions = {}): Promise<boolean[]> {
    throwIfAborted(options.signal);
    const out = new Array<boolean>(ids.length);
    const byAlgorithm = new Map<DigestAlgorithm, number[]>();
    ids.forEach((id, i) => {
      const list = byAlgorithm.get(id.algorithm) ?? [];
      list.push(i);
      byAlgorithm.set(id.algorithm, list);
    });
    const jobs: Promise<void>[] = [];
    for (const [algorithm, idx] of byAlgorithm) {
      for (let s = 0; s < idx.length; s += this.info.maxQueryDigests) {
        const part = idx.slice(s, s + this.info.maxQueryDigests);
        const body = Buffer.allocUnsafe(part.length * DIGEST_BYTES);
        part.forEach((i, k) => body.set(ids[i]!.digest, k * DIGEST_BYTES));
        jobs.push(
          (async () => {
            const bitmap = await this.request({ method: 'POST', path: `/v1/chunks/missing?algorithm=${algorithm}`, body, signal: options.signal }, bytesOf);
            if (bitmap.length !== Math.ceil(part.length / 8)) throw new ProtocolError('malformed chunks/missing answer');
            part.forEach((i, k) => (out[i] = (bitmap[k >> 3]! & (1 << (k & 7))) === 0));
          })(),
        );
      }
    }
    await Promise.all(jobs);
    return out;
  }

  /**
   * Queues the chunk for a batched upload and resolves once it is queued (true: it will be
   * sent), waiting first while MAX_UPLOADS_IN_FLIGHT uploads are running (back-pressure).
   * An upload that fails makes the next put() and flush() reject with its error, so a push
   * never commits a manifest over chunks that did not arrive. With base chunks known
   * (useBases) and a placement given, a chunk that replaces an old one goes as a delta
   * against it when that saves bytes (see store/delta.ts).
   */
  async put(id: ChunkId, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    this.throwUploadFailure();
    if (data.length > this.info.maxChunkBytes) throw new InvalidArgumentError(`chunk of ${data.length} bytes is larger than the server accepts`);
    const base = this.baseFor(id, data.length, options.placement);
    if (base) this.queueDelta({ id: { algorithm: id.algorithm, digest: Buffer.from(id.digest) }, data: Buffer.from(data), ...base }, options.signal);
    else this.queueWhole(id, data, options.signal);
    while (this.uploads.size >= MAX_UPLOADS_IN_FLIGHT) await Promise.race(this.uploads);
    this.throwUploadFailure();
    return true;
  }

  /**
   * Bases for delta uploads: the chunks of the target's previous version (BaseIndex). Only
   * used if the server speaks delta uploads with the same block size.
   */
  useBases(bases: BaseIndex | undefined): void {
    this.bases = this.info.deltaBlockBytes === DELTA_BLOCK_BYTES ? bases : undefined;
  }

  /** Chunks sent as deltas so far, and the chunk bytes that did not travel thanks to them. */
  deltaStats(): { chunks: number; savedBytes: number } {
    return { chunks: this.deltaChunks, savedBytes: this.deltaSavedBytes };
  }

  private baseFor(id: ChunkId, length: number, placement: PutOptions['placement']): { base: BaseChunk; shifts: Shifts } | undefined {
    if (!this.bases || !placement || id.algorithm !== this.bases.algorithm || length < MIN_DELTA_CHUNK_BYTES) return undefined;
    const base = this.bases.find(placement.path, placement.offset);
    if (!base || Buffer.compare(base.digest, id.digest) === 0) return undefined;
    // A zero chunk is in no store (chunker/zero.ts): the server could not read it as a base.
    if (isZeroChunk(id.algorithm, base.length, base.digest)) return undefined;
    // Same file offset, and the chunks' ends aligned (store/delta.ts).
    const shifts = [placement.offset - base.start, base.length - length] as const;
    return Math.abs(shifts[0]) > this.info.maxChunkBytes ? undefined : { base, shifts };
  }

  /** Copies the record into the current upload batch (the one copy an upload needs). */
  private queueWhole(id: ChunkId, data: Uint8Array, signal: AbortSignal | undefined): void {
    const need = 4 + DIGEST_BYTES + data.length;
    let batch = this.batches.get(id.algorithm);
    if (batch && batch.used + need > batch.body.length) {
      this.sendBatch(id.algorithm, signal);
      batch = undefined;
    }
    if (!batch) {
      const reused = need <= this.batchBytes ? this.freeBodies.pop() : undefined;
      batch = { body: reused ?? Buffer.allocUnsafe(Math.max(this.batchBytes, need)), used: 0 };
      this.batches.set(id.algorithm, batch);
    }
    batch.body.writeUInt32LE(data.length, batch.used);
    batch.body.set(id.digest, batch.used + 4);
    batch.body.set(data, batch.used + 4 + DIGEST_BYTES);
    batch.used += need;
    if (batch.used >= this.batchBytes) this.sendBatch(id.algorithm, signal);
    else this.putTimer ??= setImmediate(() => this.sendAll(signal));
  }

  private queueDelta(c: DeltaCandidate, signal: AbortSignal | undefined): void {
    this.deltas.push(c);
    this.deltaBytes += c.data.length;
    if (this.deltas.length >= DELTA_BATCH_CHUNKS || this.deltaBytes >= this.batchBytes) this.sendDeltas(signal);
    else this.putTimer ??= setImmediate(() => this.sendAll(signal));
  }

  private sendDeltas(signal: AbortSignal | undefined): void {
    const list = this.deltas;
    if (list.length === 0) return;
    this.deltas = [];
    this.deltaBytes = 0;
    const run = this.runDeltas(list, signal).catch((error) => {
      this.uploadFailure ??= { error };
    });
    this.uploads.add(run);
    void run.finally(() => this.uploads.delete(run));
  }

  /**
   * Asks for the bases' block sums, sends the chunks that are worth it as delta records and
   * the rest whole. If the server refuses a delta request (a base gone, say), its chunks
   * are sent whole; only a transport failure fails the upload.
   */
  private async runDeltas(list: DeltaCandidate[], signal: AbortSignal | undefined): Promise<void> {
    const byAlgorithm = new Map<DigestAlgorithm, DeltaCandidate[]>();
    for (const c of list) {
      const group = byAlgorithm.get(c.id.algorithm);
      if (group) group.push(c);
      else byAlgorithm.set(c.id.algorithm, [c]);
    }
    const whole: DeltaCandidate[] = [];
    for (const [algorithm, cands] of byAlgorithm) {
      const ask = Buffer.alloc(cands.length * SUMS_REQUEST_RECORD_BYTES);
      cands.forEach((c, i) => {
        const o = i * SUMS_REQUEST_RECORD_BYTES;
        ask.set(c.base.digest, o);
        ask.writeInt32LE(c.shifts[0], o + DIGEST_BYTES);
        ask.writeInt32LE(c.shifts[1], o + DIGEST_BYTES + 4);
        ask.writeUInt32LE(c.data.length, o + DIGEST_BYTES + 8);
      });
      let sums: Buffer;
      try {
        sums = await this.request({ method: 'POST', path: `/v1/chunks/sums?algorithm=${algorithm}`, body: ask, signal }, bytesOf);
      } catch (err) {
        if (!(err instanceof XferError) || err.code === 'XFER_PROTOCOL' || err.code === 'XFER_ABORTED') throw err;
        whole.push(...cands);
        continue;
      }
      const records: Buffer[] = [];
      const sent: DeltaCandidate[] = [];
      let saved = 0;
      let at = 0;
      for (const c of cands) {
        const found = sums[at];
        at += 1;
        if (found !== 1) {
          if (found !== 0) throw new ProtocolError('malformed chunks/sums answer');
          whole.push(c);
          continue;
        }
        const n = sumsBytes(c.data.length);
        if (at + n > sums.length) throw new ProtocolError('chunks/sums answer ended early');
        const { record } = encodeDelta(algorithm, c.id.digest, c.base.digest, c.shifts, c.data, sums.subarray(at, at + n));
        at += n;
        if (record.length > c.data.length * DELTA_WORTH_RATIO) whole.push(c);
        else {
          records.push(record);
          sent.push(c);
          saved += c.data.length - record.length;
        }
      }
      if (at !== sums.length) throw new ProtocolError('chunks/sums answer is longer than asked');
      if (records.length === 0) continue;
      try {
        await this.request({ method: 'POST', path: `/v1/chunks/delta?algorithm=${algorithm}`, body: Buffer.concat(records), signal }, drain);
        this.deltaChunks += sent.length;
        this.deltaSavedBytes += saved;
      } catch (err) {
        if (!(err instanceof XferError) || err.code === 'XFER_PROTOCOL' || err.code === 'XFER_ABORTED') throw err;
        whole.push(...sent); // those already stored are reported present, not stored twice
      }
    }
    for (const c of whole) this.queueWhole(c.id, c.data, signal);
    this.sendAll(signal);
  }

  /** The records of an upload body whose chunks the server does not hold (a new body). */
  private async stillMissing(algorithm: DigestAlgorithm, body: Buffer, signal: AbortSignal | undefined): Promise<Buffer> {
    const records: Buffer[] = [];
    for (let o = 0; o < body.length; o += 4 + DIGEST_BYTES + body.readUInt32LE(o)) records.push(body.subarray(o, o + 4 + DIGEST_BYTES + body.readUInt32LE(o)));
    const present = await this.has(records.map((r) => ({ algorithm, digest: r.subarray(4, 4 + DIGEST_BYTES) })), { signal });
    return Buffer.concat(records.filter((_, i) => !present[i]));
  }

  private throwUploadFailure(): void {
    if (this.uploadFailure) throw this.uploadFailure.error;
  }

  private sendAll(signal?: AbortSignal): void {
    if (this.putTimer) clearImmediate(this.putTimer);
    this.putTimer = undefined;
    this.sendDeltas(signal);
    for (const algorithm of [...this.batches.keys()]) this.sendBatch(algorithm, signal);
  }

  private sendBatch(algorithm: DigestAlgorithm, signal?: AbortSignal): void {
    const batch = this.batches.get(algorithm);
    this.batches.delete(algorithm);
    if (!batch || batch.used === 0) return;
    const body = batch.body.subarray(0, batch.used);
    const upload = (async () => {
      try {
        // Tried again after a break, a batch first asks which of its chunks the server
        // stored before the break: those are not sent twice.
        await this.retrying(async (attempt) => {
          const rest = attempt === 0 ? body : await this.stillMissing(algorithm, body, signal);
          if (rest.length === 0) return;
          const limit = this.upLimit;
          // Paced, the body is an async iterable, which undici writes piece by piece, waiting
          // for each to drain; as a Readable it was piped into the HTTP/2 stream, and a reset
          // of such a stream mid-body (an abort, a timeout) could spin Node's session (see the
          // constructor).
          const upload = limit ? (paced(rest, limit, PACED_PIECE_BYTES, signal) as unknown as CallOptions['body']) : rest;
          await this.exchange({ method: 'POST', path: `/v1/chunks?algorithm=${algorithm}`, body: upload, signal }, drain);
        }, signal);
        // A 2xx answer comes after the server read the whole body: the buffer is free.
        if (batch.body.length === this.batchBytes && this.freeBodies.length < FREE_UPLOAD_BODIES) this.freeBodies.push(batch.body);
      } catch (error) {
        this.uploadFailure ??= { error };
      }
    })();
    this.uploads.add(upload);
    void upload.finally(() => this.uploads.delete(upload));
  }

  /**
   * Queues a chunk fetch. Fetches go out in batched requests, at most MAX_FETCHES_IN_FLIGHT
   * at a time: while they run, new gets accumulate, so a steady stream of single gets still
   * travels in requests of up to FETCH_BATCH_CHUNKS chunks instead of one request each.
   */
  get(id: ChunkId, options: OpOptions = {}): Promise<Buffer> {
    throwIfAborted(options.signal);
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
    while (this.fetchesInFlight < MAX_FETCHES_IN_FLIGHT && this.gets.length > 0) {
      const batch = this.gets.splice(0, FETCH_BATCH_CHUNKS);
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
            for (const g of list) g.reject(err);
          })
          .finally(() => {
            this.fetchesInFlight--;
            this.pumpGets(signal);
          });
      }
    }
  }

  /**
   * Fetches a batch, verifying and resolving each chunk as it completes. A break in the
   * middle of the answer asks again for the chunks not yet received.
   */
  private async fetchBatch(algorithm: DigestAlgorithm, list: PendingGet[], signal?: AbortSignal): Promise<void> {
    const cursor = { next: 0 };
    await this.retrying(() => this.fetchFrom(algorithm, list, cursor, signal), signal);
  }

  /** Fetches list[cursor.next...], advancing the cursor past every record it settles. */
  private async fetchFrom(algorithm: DigestAlgorithm, list: PendingGet[], cursor: { next: number }, signal?: AbortSignal): Promise<void> {
    const first = cursor.next;
    const body = Buffer.allocUnsafe((list.length - first) * DIGEST_BYTES);
    for (let i = first; i < list.length; i++) body.set(list[i]!.id.digest, (i - first) * DIGEST_BYTES);
    const path = `/v1/chunks/fetch?algorithm=${algorithm}`;
    await this.exchange({ method: 'POST', path, body, signal }, async (res) => {
      const queue = new ByteQueue();
      for await (const piece of res.body) {
        // Under a rate limit, reading slower holds the server back through flow control.
        if (this.downLimit) await this.downLimit.take((piece as Buffer).length, signal);
        queue.push(piece as Buffer);
        while (cursor.next < list.length && queue.length >= 4 + DIGEST_BYTES) {
          const len = queue.readUInt32LE(0);
          const g = list[cursor.next]!;
          if (!queue.peek(4 + DIGEST_BYTES).subarray(4).equals(g.id.digest)) throw new ProtocolError('chunks/fetch answered out of order');
          if (len === 0xffffffff) {
            queue.take(4 + DIGEST_BYTES);
            cursor.next++;
            g.reject(new ChunkMissingError(digestToHex(g.id.digest), this.base.origin));
            continue;
          }
          if (len > this.info.maxChunkBytes) throw new ProtocolError(`chunks/fetch record of ${len} bytes`);
          if (queue.length < 4 + DIGEST_BYTES + len) break;
          queue.take(4 + DIGEST_BYTES);
          const data = queue.take(len, this.fetched.alloc(len));
          cursor.next++;
          if (digestOf(algorithm, data).equals(g.id.digest)) g.resolve(data);
          else g.reject(new ChunkCorruptError(digestToHex(g.id.digest), `received from ${this.base.origin} with other content`));
        }
      }
    });
    if (cursor.next !== list.length) throw new ProtocolError('chunks/fetch answer ended early');
  }

  /** Sends what is queued and waits for every upload; rejects with the first upload failure. */
  async flush(options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    this.sendAll(options.signal);
    while (this.uploads.size) await Promise.all([...this.uploads]);
    this.throwUploadFailure();
  }

  async putManifest(name: string, source: AsyncIterable<Uint8Array>, options: OpOptions = {}): Promise<void> {
    await this.commitManifest(name, source, options);
  }

  /**
   * Opens a stage (docs/PROTOCOL.md): the server rebuilds `name` from what is streamed
   * through the returned handle while the chunks are uploaded, and swaps it in at the
   * manifest commit. For a file (`meta`), the stream is its chunk list (StageList.add,
   * end); for a tree, the body of its manifest as it is written (StageList.addBytes,
   * endBody). `done` settles with the stage's answer, after the commit. The stage only
   * saves the server work: callers ignore its failures.
   */
  openStage(name: string, algorithm: DigestAlgorithm, what: EntryMeta | { readonly tree: ChunkerSpec }, signal?: AbortSignal, options: CommitOptions = {}): StageUpload {
    const query = ('tree' in what ? `algorithm=${algorithm}&kind=tree&${chunkerQuery(what.tree)}` : `algorithm=${algorithm}&mode=${what.mode}&mtimeMs=${what.mtimeMs}&size=${what.size}`) + (options.checksum ? '&checksum=1' : '');
    const list = new StageList(signal);
    // A connection of its own: undici sends nothing else on a connection while a streamed
    // request body is open, and the uploads this list describes must go meanwhile.
    this.stageClient ??= this.connectAgain();
    const done = call(this.stageClient, this.base, {
      headers: this.headers,
      method: 'POST',
      path: `/v1/stage/${encodePath(name)}?${query}`,
      body: list.body() as unknown as CallOptions['body'], // an async iterable: see sendBatch
      signal: list.signal,
      // The answer comes after the commit, however long the push takes.
      headersTimeout: 0,
      bodyTimeout: 0,
    }).then(async (res) => {
      await res.body.dump();
    });
    done.catch(() => list.stop()); // refused (an older server) or reset: stop queueing
    return { list, done };
  }

  /**
   * Uploads a manifest: the server checks it, rebuilds the target and answers with what it
   * committed. Given as a function that opens it, it is sent again after a break: the same
   * manifest committed twice is harmless, should the first attempt have been committed
   * and only its answer lost. A stream is sent once.
   */
  async commitManifest(
    name: string, source: AsyncIterable<Uint8Array> | (() => AsyncIterable<Uint8Array>), options: OpOptions & CommitOptions = {},
  ): Promise<{ kind: string; totalBytes: number; digest: string }> {
    const body = typeof source === 'function' ? () => source() as CallOptions['body'] : (source as CallOptions['body']);
    // No limit on the wait for the answer: see HttpStoreOptions.answerTimeoutMs.
    const query = [options.checksum ? 'checksum=1' : '', options.inPlace ? 'in-place=1' : ''].filter((q) => q !== '').join('&');
    const put = { method: 'PUT', path: `/v1/manifests/${encodePath(name)}${query ? `?${query}` : ''}`, body, signal: options.signal, headersTimeout: 0 } as const;
    return (await this.request(put, json)) as { kind: string; totalBytes: number; digest: string };
  }

  async getManifest(name: string, options: OpOptions = {}): Promise<AsyncIterable<Uint8Array>> {
    // The manifest streams to the caller, past the retries: a break while it is read is
    // still an XferError.
    const body = await this.request({ method: 'GET', path: `/v1/manifests/${encodePath(name)}`, signal: options.signal }, async (res) => res.body);
    return mapErrors(body, this.base, options.signal);
  }

  async listManifests(prefix: string, options: OpOptions = {}): Promise<ManifestInfo[]> {
    const r = await this.list(prefix, options);
    return r.map((e) => ({ name: e.path, bytes: e.bytes, mtimeMs: e.mtimeMs }));
  }

  /** The server's listing with kinds and digests (for `xfer ls`); a manifest it cannot read is kind `damaged`, with its `error`. */
  async list(prefix: string, options: OpOptions = {}): Promise<{ path: string; kind: string; bytes: number; mtimeMs: number; digest: string; error?: string }[]> {
    return ((await this.request({ method: 'GET', path: `/v1/list?prefix=${encodeURIComponent(prefix)}`, signal: options.signal }, json)) as { entries: { path: string; kind: string; bytes: number; mtimeMs: number; digest: string; error?: string }[] }).entries;
  }

  async stat(name: string, options: OpOptions = {}): Promise<'file' | 'tree' | 'dir' | 'none'> {
    return ((await this.request({ method: 'GET', path: `/v1/stat/${encodePath(name)}`, signal: options.signal }, json)) as { type: 'file' | 'tree' | 'dir' | 'none' }).type;
  }

  async deleteManifest(): Promise<void> {
    throw new InvalidArgumentError('deleting remote manifests is not supported');
  }

  /** Sends what is queued (unless the store's signal was aborted) and closes the connections. */
  async close(): Promise<void> {
    this.unlisten();
    if (this.signal?.aborted) {
      this.destroyConnections();
      return;
    }
    await this.flush().catch(() => {});
    await this.client.close().catch(() => {});
    await this.stageClient?.destroy().catch(() => {});
  }

  /** Drops the connections and whatever they carry; requests on them fail (see onAbort in the constructor). */
  private destroyConnections(): void {
    if (this.putTimer) clearImmediate(this.putTimer);
    this.putTimer = undefined;
    this.batches.clear();
    this.deltas = [];
    this.deltaBytes = 0;
    void this.client.destroy().catch(() => {});
    void this.stageClient?.destroy().catch(() => {});
  }
}

function makeClient(base: URL, options: HttpStoreOptions): Dispatcher {
  const limit = options.bwlimitBytesPerSecond;
  const windows = {
    initialWindowSize: limit ? clamp(limit * LIMITED_WINDOW_SECONDS, MIN_LIMITED_STREAM_WINDOW_BYTES, STREAM_WINDOW_BYTES) : STREAM_WINDOW_BYTES,
    connectionWindowSize: limit ? clamp(limit * LIMITED_WINDOW_SECONDS, MIN_LIMITED_CONNECTION_WINDOW_BYTES, CONNECTION_WINDOW_BYTES) : CONNECTION_WINDOW_BYTES,
    maxConcurrentStreams: 128,
  };
  return base.protocol === 'https:'
    ? new Client(base.origin, { allowH2: true, ...windows, connect: { ca: options.ca, rejectUnauthorized: !options.insecure, ALPNProtocols: ['h2'] } })
    : new H2CClient(base.origin, { ...windows, pipelining: 100 } as ConstructorParameters<typeof H2CClient>[1]);
}

function clamp(n: number, min: number, max: number): number {
  return Math.floor(Math.min(max, Math.max(min, n)));
}

function encodePath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

export interface StageUpload {
  readonly list: StageList;
  /** The stage's answer; rejects if the server refused or discarded it. */
  readonly done: Promise<void>;
}

/**
 * A stage's request body. A file's: chunk records (u32 length BE + digest) as the scan
 * produces them, then the end record (u32 0 + u64 size BE + whole-file digest). A tree's:
 * its manifest's body bytes as they are written, then the end marker.
 */
export class StageList {
  private readonly queue: Buffer[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private stopped = false;
  private readonly controller = new AbortController();

  constructor(signal?: AbortSignal) {
    if (signal) {
      if (signal.aborted) this.stop();
      else signal.addEventListener('abort', () => this.stop(), { once: true });
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  add(records: readonly { readonly length: number; readonly digest: Uint8Array }[]): void {
    if (this.stopped || this.ended || records.length === 0) return;
    const out = Buffer.allocUnsafe(records.length * STAGE_RECORD_BYTES);
    records.forEach((r, i) => {
      out.writeUInt32BE(r.length, i * STAGE_RECORD_BYTES);
      out.set(r.digest, i * STAGE_RECORD_BYTES + 4);
    });
    this.push(out);
  }

  /** A tree's manifest body bytes (copied: the caller may reuse its buffer). */
  addBytes(bytes: Uint8Array): void {
    if (this.stopped || this.ended || bytes.length === 0) return;
    this.push(Buffer.from(bytes));
  }

  /** Ends a tree's body with the end marker, as the manifest ends it. */
  endBody(): void {
    if (this.stopped || this.ended) return;
    this.push(Buffer.from([END_MARKER]));
    this.ended = true;
    this.wake?.();
  }

  end(size: number, digest: Uint8Array): void {
    if (this.stopped || this.ended) return;
    const out = Buffer.alloc(STAGE_END_BYTES);
    out.writeBigUInt64BE(BigInt(size), 4);
    out.set(digest, 12);
    this.push(out);
    this.ended = true;
    this.wake?.();
  }

  /** Abandons the stage: the request is reset, and the server discards what it staged. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.queue.length = 0;
    this.controller.abort();
    this.wake?.();
  }

  async *body(): AsyncGenerator<Buffer> {
    for (;;) {
      while (this.queue.length) yield this.queue.shift()!;
      if (this.stopped) return;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  private push(piece: Buffer): void {
    this.queue.push(piece);
    this.wake?.();
  }
}

interface CallOptions {
  method: Dispatcher.HttpMethod; path: string; body?: Dispatcher.DispatchOptions['body']; signal?: AbortSignal; headers?: Record<string, string>;
  headersTimeout?: number; bodyTimeout?: number;
}

/**
 * A failure another attempt may not meet: the connection broke, or the server was
 * stopping or could not answer for now (502, 503, 504). Same code as any protocol error.
 */
class TransientError extends ProtocolError {}

function isTransient(err: unknown): boolean {
  return err instanceof TransientError;
}

/** The error of a request whose retries are spent: the last failure, saying so. */
function gaveUp(err: unknown, retries: number): unknown {
  if (!(err instanceof XferError)) return err;
  return new ProtocolError(`${err.message} (gave up after ${retries} ${retries === 1 ? 'retry' : 'retries'})`, { cause: err });
}

/** One request; a non-2xx answer becomes the XferError the server described. */
async function call(client: Dispatcher, base: URL, opts: CallOptions): Promise<Dispatcher.ResponseData> {
  let res: Dispatcher.ResponseData;
  try {
    res = await client.request({
      method: opts.method, path: opts.path, body: opts.body, headers: opts.headers, signal: opts.signal, headersTimeout: opts.headersTimeout, bodyTimeout: opts.bodyTimeout,
    });
  } catch (err) {
    throw transportError(err, base, opts.signal);
  }
  if (res.statusCode >= 200 && res.statusCode < 300) return res;
  let body: { code?: string; message?: string } = {};
  try {
    body = (await res.body.json()) as typeof body;
  } catch {
    /* not JSON: described by status below */
  }
  if (typeof body.code === 'string' && typeof body.message === 'string') {
    // The server stopping aborts what it was doing: for this client, a passing failure.
    if (body.code === 'XFER_ABORTED') throw new TransientError(`${base.origin} stopped while answering ${opts.method} ${opts.path.split('?')[0]}`);
    // At a limit (503 XFER_BUSY, with Retry-After): for now.
    if (res.statusCode === 503) throw new TransientError(`${base.origin}: ${body.message}`);
    throw new XferError(body.code as ErrorCode, `${base.origin}: ${body.message}`);
  }
  const what = `${base.origin} answered ${opts.method} ${opts.path.split('?')[0]} with status ${res.statusCode}`;
  if (res.statusCode === 502 || res.statusCode === 503 || res.statusCode === 504) throw new TransientError(what);
  throw new ProtocolError(what);
}

/** A JSON answer; one that does not parse is a ProtocolError (a break while reading it is left to the caller). */
async function json(res: Dispatcher.ResponseData): Promise<unknown> {
  const text = await res.body.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(`malformed JSON answer: ${(err as Error).message}`);
  }
}

async function bytesOf(res: Dispatcher.ResponseData): Promise<Buffer> {
  return Buffer.from(await res.body.arrayBuffer());
}

async function drain(res: Dispatcher.ResponseData): Promise<void> {
  await res.body.dump();
}

/** A response body whose failures are XferErrors (see transportError). */
async function* mapErrors(body: AsyncIterable<Uint8Array>, base: URL, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    yield* body;
  } catch (err) {
    throw transportError(err, base, signal);
  }
}

/**
 * A failed request as an XferError: a broken or failed connection in words (net-errors.ts),
 * a TransientError unless trying again cannot help (an untrusted certificate).
 */
function transportError(err: unknown, base: URL, signal?: AbortSignal): XferError {
  if (err instanceof XferError) return err;
  if (signal?.aborted || (err as Error)?.name === 'AbortError') return abortedError(signal);
  const f = describeNetFailure(err, base);
  const message = f.reaching ? `cannot reach ${base.origin}: ${f.text}` : `the connection to ${base.origin} broke: ${f.text}`;
  return f.permanent ? new ProtocolError(message, { cause: err }) : new TransientError(message, { cause: err });
}
