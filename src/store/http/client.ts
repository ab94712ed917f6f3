/**
 * The client of the xfer protocol (docs/PROTOCOL.md): one method per endpoint, over
 * undici (`Client` with allowH2 for https, `H2CClient` for http). It owns the transport:
 * connections, TLS, the token, timeouts, the bandwidth limit, and the retry of requests
 * that failed for a passing reason. It keeps no state about chunks: batching, and what a
 * ChunkStore promises, are HttpStore's (store.ts); deltas and stages are the push's
 * (endpoint/http*.ts).
 *
 * Errors: every method rejects with an XferError. A non-2xx answer is the error the server
 * described (its stable code, the server's name in the message). A failure of the
 * connection is a TransientError (isTransient) unless trying again cannot help (an
 * untrusted certificate). Anything else, a bug of ours included, is passed on as it is and
 * never retried as "the connection broke".
 */
import { Client, H2CClient, type Dispatcher } from 'undici';
import { abortedError, throwIfAborted } from '../../core/abort.js';
import { InvalidArgumentError, ProtocolError, XferError } from '../../core/errors.js';
import { ByteQueue, SlabAllocator } from '../../core/bytes.js';
import { largeBuffer } from '../../io/sys.js';
import { checkIntegerInRange } from '../../core/options.js';
import { checkRate, paced, RateLimiter } from '../../core/rate.js';
import { DEFAULT_RETRY_POLICY, retrying, type RetryEvent, type RetryPolicy } from '../../core/retry.js';
import { DIGEST_BYTES, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { MiB } from '../../core/sizes.js';
import { readErrorAnswer, type ErrorAnswer } from '../../protocol/errors.js';
import { decodeMissingBitmap, encodeDigests, peekChunkRecord, splitChunkRecords, takeChunkRecord } from '../../protocol/records.js';
import { MAX_VERIFY_LINE_BYTES, paths, pathOnly, PROTOCOL_VERSION, type ListEntry, type RemoveAnswer, type ServerInfo, type VerifyAnswerLine } from '../../protocol/routes.js';
import type { VerifyProgress, VerifyReport } from '../../transfer/verify.js';
import { describeNetFailure, isNetworkFailure, isPermanentHttpError, isStreamReset, streamResetCode, TransientError } from '../net-errors.js';
import { Connections, MAX_CONNECTIONS } from './connections.js';
import type { GcOptions, GcRun } from '../store.js';

export interface ClientOptions {
  /** Bearer token for a server started with --token. */
  readonly token?: string;
  /** PEM CA certificate(s) to trust (self-signed servers). */
  readonly ca?: string | Buffer;
  /** Accept any certificate (testing only). */
  readonly insecure?: boolean;
  /** Aborting it tears the connections down and fails every request at once. */
  readonly signal?: AbortSignal;
  /**
   * How requests that fail for a passing reason (isTransient: the connection broke, the
   * server stopped or restarted) are tried again: DEFAULT_RETRY_POLICY unless given. The
   * first contact (connect) is never retried: a server that is not there at the start is
   * most likely the wrong address.
   */
  readonly retry?: RetryPolicy;
  /**
   * Which failures are never retried: isPermanentHttpError (net-errors.ts) unless given.
   * The retries stay here, in the transport, because they resume what a break cut short
   * (an upload sends only the chunks the server still lacks, a fetch asks only for those
   * not yet received); their policy, classifier and listener come from the location
   * registry's composition (a RetryPlan, endpoint/registry.ts) when opened through it.
   */
  readonly isPermanent?: (error: unknown) => boolean;
  /** Told before each retry waits (the library never prints; the CLI may). */
  readonly onRetry?: (event: RetryEvent) => void;
  /**
   * Chunk data per second, at most, in each direction (uploads and fetches apart), like
   * rsync's and rclone's --bwlimit; unlimited if not given: one total over all the client's
   * connections. Queries, manifests and HTTP/2 framing are not counted: they are a few
   * bytes per chunk.
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
  /**
   * Connections to the server that requests spread over (connections.ts), 1 to
   * MAX_CONNECTIONS; if not given, automatic: one, and more while the measured round trip
   * and rate say one connection's window is what holds the transfer back. A stage (see
   * stage) has a connection of its own besides.
   */
  readonly connections?: number;
}

/** The default of ClientOptions.answerTimeoutMs: undici's own, 5 minutes. */
export const ANSWER_TIMEOUT_MS = 300_000;
export const STREAM_WINDOW_BYTES = 16 * MiB;
export const CONNECTION_WINDOW_BYTES = 256 * MiB;
/** Streams undici opens at once on one connection (the server allows 128). */
const MAX_STREAMS_PER_CONNECTION = 128;
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
/** Slabs received chunks are carved from (see SlabAllocator). */
const FETCH_SLAB_BYTES = 4 * MiB;
/**
 * What a fetch is expected to bring per chunk asked for (the default average chunk), for
 * the spread of requests over connections: sizes are not known before the answer.
 */
const FETCH_CHUNK_ESTIMATE_BYTES = 64 * 1024;
/** A request with at most this much body times a round trip by its answer (Connections.roundTrip). */
const ROUND_TRIP_PROBE_BYTES = 64 * 1024;

export { MAX_CONNECTIONS };

/** What a manifest commit answers. */
export interface CommitAnswer {
  readonly kind: string;
  readonly totalBytes: number;
  readonly digest: string;
}

/** A request body: bytes (sent again on a retry), or a stream (sent once). */
type Body = Dispatcher.DispatchOptions['body'];

interface CallOptions {
  method: Dispatcher.HttpMethod;
  path: string;
  body?: Body;
  signal?: AbortSignal;
  headers?: Record<string, string>;
  headersTimeout?: number;
  bodyTimeout?: number;
  /** Bytes the request moves, sent and expected back: its weight in the spread over connections. */
  weight?: number;
}

export { TransientError };

/** Whether another attempt may succeed (isPermanentHttpError, the other way round). */
export function isTransient(err: unknown): boolean {
  return !isPermanentHttpError(err);
}

export class XferClient {
  private readonly headers: Record<string, string>;
  private retries = 0;
  /** Rate limits of chunk data, uploads and fetches apart (ClientOptions.bwlimitBytesPerSecond). */
  private readonly upLimit: RateLimiter | undefined;
  private readonly downLimit: RateLimiter | undefined;
  private readonly fetched = new SlabAllocator(FETCH_SLAB_BYTES, largeBuffer);
  /** The connection of stages (see stage), made on first use. */
  private stageConnection: Dispatcher | undefined;
  private readonly retryPolicy: RetryPolicy;
  private readonly isPermanent: (error: unknown) => boolean;
  private readonly answerTimeoutMs: number;
  private readonly signal: AbortSignal | undefined;
  /** Stops listening to the client's signal (ClientOptions.signal). */
  private readonly unlisten: () => void;
  /** The connections requests spread over (connections.ts). */
  private readonly connections: Connections;

  private constructor(
    readonly base: URL,
    connections: Connections,
    readonly info: ServerInfo,
    private readonly options: ClientOptions,
  ) {
    this.connections = connections;
    this.headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
    if (options.bwlimitBytesPerSecond !== undefined) {
      this.upLimit = new RateLimiter(options.bwlimitBytesPerSecond);
      this.downLimit = new RateLimiter(options.bwlimitBytesPerSecond);
    }
    this.retryPolicy = options.retry ?? DEFAULT_RETRY_POLICY;
    this.isPermanent = options.isPermanent ?? isPermanentHttpError;
    this.answerTimeoutMs = options.answerTimeoutMs ?? ANSWER_TIMEOUT_MS;
    this.signal = options.signal;
    // An abort of the client's signal tears its connections down at once, before undici
    // resets its streams one by one (it listens later, per request): nothing is sent after
    // an abort, so the connections have nothing left to finish. Resetting streams whose
    // request bodies were being piped in (paced uploads under --bwlimit, as Readables then)
    // sent Node's HTTP/2 session (v20.20) into an endless native loop
    // (Http2Session::SendPendingData, gigabytes per second) that no signal handler could
    // interrupt; streamed bodies are now async iterables as well (see upload).
    const onAbort = () => this.destroy();
    const signal = this.signal;
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    this.unlisten = () => signal?.removeEventListener('abort', onAbort);
  }

  /** Connects and asks `GET /v1/info`; a server that is not there, or speaks another protocol, fails at once. */
  static async connect(url: string | URL, options: ClientOptions = {}): Promise<XferClient> {
    const base = new URL(url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new InvalidArgumentError(`${url}: expected an http:// or https:// URL`);
    if (options.bwlimitBytesPerSecond !== undefined) checkRate(options.bwlimitBytesPerSecond);
    // Not given: automatic (connections.ts).
    checkIntegerInRange(options, 'connections', 1, MAX_CONNECTIONS);
    const connections = new Connections(() => makeConnection(base, options), { count: options.connections, limitBytesPerSecond: options.bwlimitBytesPerSecond });
    const headers: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
    let info: ServerInfo;
    try {
      info = (await json(await call(connections.pick().dispatcher, base, { method: 'GET', path: paths.info(), headers, signal: options.signal }))) as ServerInfo;
    } catch (err) {
      await connections.close();
      throw transportError(err, base, options.signal);
    }
    if (info.protocol !== PROTOCOL_VERSION) {
      await connections.close();
      throw new ProtocolError(`${base.origin} speaks xfer protocol ${info.protocol}; this client speaks ${PROTOCOL_VERSION}`);
    }
    return new XferClient(base, connections, info, options);
  }

  /** Requests tried again so far: each one followed a broken connection or a stopping server. */
  get retriesMade(): number {
    return this.retries;
  }

  /** Connections requests spread over now (the stage's apart). */
  get connectionCount(): number {
    return this.connections.count;
  }

  /** Connections replaced so far because they broke or stopped answering. */
  get connectionsReplaced(): number {
    return this.connections.replacements;
  }

  /** Whether the client's own signal was aborted (its connections are gone). */
  get aborted(): boolean {
    return this.signal?.aborted === true;
  }

  /** `POST /v1/chunks/missing`: which of `ids` (one algorithm, at most info.maxQueryDigests) the server stores. */
  async missing(algorithm: DigestAlgorithm, ids: readonly ChunkId[], signal?: AbortSignal): Promise<boolean[]> {
    const bitmap = await this.request({ method: 'POST', path: paths.missing(algorithm), body: encodeDigests(ids), signal }, bytesOf);
    const present = decodeMissingBitmap(bitmap, ids.length);
    if (!present) throw new ProtocolError('malformed chunks/missing answer');
    return present;
  }

  /**
   * `POST /v1/chunks/missing-of/<name>` with `If-Match` naming tree tag `tag`: the digests of
   * the chunks of that tree the server lacks. Undefined if the server cannot answer by the
   * tree (an older server, another manifest committed there now, too many missing): the
   * caller asks by digest.
   */
  async missingOf(name: string, tag: string, signal?: AbortSignal): Promise<Uint8Array[] | undefined> {
    if (this.info.missingOf !== true) return undefined;
    try {
      const body = await this.request({ method: 'POST', path: paths.missingOf(name), headers: { 'if-match': `"${tag}"` }, signal }, bytesOf);
      if (body.length % DIGEST_BYTES !== 0) throw new ProtocolError('malformed chunks/missing-of answer');
      return Array.from({ length: body.length / DIGEST_BYTES }, (_, i) => body.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES));
    } catch (err) {
      if (err instanceof XferError && (err.code === 'XFER_NOT_FOUND' || err.code === 'XFER_TOO_LARGE')) return undefined;
      throw err;
    }
  }

  /**
   * `POST /v1/chunks`: a body of whole chunk records (protocol/records.ts). Tried again
   * after a break, it first asks which of its chunks the server stored before the break:
   * those are not sent twice. Resolves once the server has read and stored all of it (the
   * body may be reused then).
   */
  async upload(algorithm: DigestAlgorithm, body: Buffer, signal?: AbortSignal): Promise<void> {
    await this.retrying(async (attempt) => {
      const rest = attempt === 0 ? body : await this.stillMissing(algorithm, body, signal);
      if (rest.length === 0) return;
      const limit = this.upLimit;
      // Paced, the body is an async iterable, which undici writes piece by piece, waiting
      // for each to drain; as a Readable it was piped into the HTTP/2 stream, and a reset
      // of such a stream mid-body (an abort, a timeout) could spin Node's session (see the
      // constructor).
      const sent = limit ? (paced(rest, limit, PACED_PIECE_BYTES, signal) as unknown as Body) : rest;
      await this.exchange({ method: 'POST', path: paths.upload(algorithm), body: sent, signal, weight: rest.length }, drain);
      this.connections.delivered(rest.length);
    }, signal);
  }

  /** The records of an upload body whose chunks the server does not hold (a new body). */
  private async stillMissing(algorithm: DigestAlgorithm, body: Buffer, signal: AbortSignal | undefined): Promise<Buffer> {
    const records = splitChunkRecords(body);
    const present: boolean[] = [];
    for (let s = 0; s < records.length; s += this.info.maxQueryDigests) {
      const part = records.slice(s, s + this.info.maxQueryDigests);
      present.push(...(await this.missing(algorithm, part.map((r) => ({ algorithm, digest: r.digest })), signal)));
    }
    return Buffer.concat(records.filter((_, i) => !present[i]).map((r) => r.record));
  }

  /**
   * `POST /v1/chunks/fetch`: the chunks of `digests`, handed to `onRecord` in order as each
   * arrives (undefined: the server does not have it), not verified: the caller checks them.
   * The data is carved from a slab (SlabAllocator). A break in the middle of the answer asks
   * again for the chunks not yet received.
   */
  async fetch(algorithm: DigestAlgorithm, digests: readonly Uint8Array[], onRecord: (index: number, data: Buffer | undefined) => void, signal?: AbortSignal): Promise<void> {
    let next = 0;
    await this.retrying(async () => {
      const first = next;
      const ids = digests.slice(first).map((digest) => ({ algorithm, digest }));
      const weight = ids.length * FETCH_CHUNK_ESTIMATE_BYTES;
      await this.exchange({ method: 'POST', path: paths.fetch(algorithm), body: encodeDigests(ids), signal, weight }, async (res) => {
        const queue = new ByteQueue();
        const malformed = (message: string) => new ProtocolError(`chunks/fetch answer: ${message}`);
        for await (const piece of res.body) {
          // Under a rate limit, reading slower holds the server back through flow control.
          if (this.downLimit) await this.downLimit.take((piece as Buffer).length, signal);
          this.connections.delivered((piece as Buffer).length);
          queue.push(piece as Buffer);
          for (let head = peekChunkRecord(queue, this.info.maxChunkBytes, true, malformed); head; head = peekChunkRecord(queue, this.info.maxChunkBytes, true, malformed)) {
            if (next === digests.length) throw malformed('more records than digests asked for');
            if (!head.digest.equals(digests[next]!)) throw new ProtocolError('chunks/fetch answered out of order');
            const data = takeChunkRecord(queue, head, head.length ? this.fetched.alloc(head.length) : undefined);
            onRecord(next++, head.length === undefined ? undefined : data);
          }
        }
        if (queue.length) throw malformed('ends inside a record');
      });
    }, signal);
    if (next !== digests.length) throw new ProtocolError('chunks/fetch answer ended early');
  }

  /** `POST /v1/chunks/sums` (protocol/delta.ts): the answer, unparsed. */
  blockSums(algorithm: DigestAlgorithm, body: Buffer, signal?: AbortSignal): Promise<Buffer> {
    return this.request({ method: 'POST', path: paths.sums(algorithm), body, signal }, bytesOf);
  }

  /** `POST /v1/chunks/delta` (protocol/delta.ts): delta records, stored once it resolves. */
  async uploadDeltas(algorithm: DigestAlgorithm, body: Buffer, signal?: AbortSignal): Promise<void> {
    await this.request({ method: 'POST', path: paths.delta(algorithm), body, signal }, drain);
  }

  /**
   * `POST /v1/stage/<name>?<query>` (protocol/stage-format.ts): streams `body` and settles
   * with the stage's answer, which comes after the commit however long the push takes
   * (no timeout). On a connection of its own: undici sends nothing else on a connection
   * while a streamed request body is open, and the uploads the stage describes must go
   * meanwhile. Not retried: a lost stage only costs the server the ordinary rebuild.
   */
  async stage(name: string, query: string, body: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<void> {
    this.stageConnection ??= makeConnection(this.base, this.options);
    const res = await call(this.stageConnection, this.base, {
      headers: this.headers,
      method: 'POST',
      path: paths.stage(name, query),
      body: body as unknown as Body, // an async iterable: see upload
      signal,
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    await res.body.dump();
  }

  /**
   * `PUT /v1/manifests/<name>`: the commit point of a push. The server checks the manifest,
   * rebuilds the target and answers with what it committed. Given as a function that opens
   * it, the manifest is sent again after a break: the same manifest committed twice is
   * harmless, should the first attempt have been committed and only its answer lost. A
   * stream is sent once. `staged`: the source is the manifest's header and trailer only, its
   * body being the one this push's tree stage sent (`?staged=1`; 404 if the server has none).
   */
  async commitManifest(name: string, source: AsyncIterable<Uint8Array> | (() => AsyncIterable<Uint8Array>), options: { readonly checksum?: boolean; readonly inPlace?: boolean; readonly staged?: boolean; readonly signal?: AbortSignal } = {}): Promise<CommitAnswer> {
    const body = typeof source === 'function' ? () => source() as Body : (source as Body);
    // No limit on the wait for the answer: see ClientOptions.answerTimeoutMs.
    const put = { method: 'PUT', path: paths.manifest(name, { checksum: options.checksum, inPlace: options.inPlace, staged: options.staged }), body, signal: options.signal, headersTimeout: 0 } as const;
    return (await this.request(put, json)) as CommitAnswer;
  }

  /**
   * `PUT /v1/manifests/<name>?raw=1`: stores the bytes as they are (a ManifestStore's put),
   * atomically, without committing anything. Sent once (a stream).
   */
  async putManifest(name: string, source: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<void> {
    if (this.info.manifestStore !== true) throw new ProtocolError(`${this.base.origin} does not store manifests as given (an older server)`);
    await this.request({ method: 'PUT', path: paths.manifest(name, { raw: true }), body: source as Body, signal }, drain);
  }

  /** `GET /v1/manifests/<name>`: the manifest, streamed; a break while it is read is an XferError too. */
  async getManifest(name: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const body = await this.request({ method: 'GET', path: paths.manifest(name), signal }, async (res) => res.body);
    return mapErrors(body, this.base, signal ?? this.signal);
  }

  /**
   * `GET /v1/manifests/<name>` with `If-None-Match` naming tree tag `tag`
   * (docs/PROTOCOL.md): undefined when the server's manifest is still that one (304), else
   * its manifest, as getManifest.
   */
  async getManifestUnlessTag(name: string, tag: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array> | undefined> {
    const quoted = `"${tag}"`;
    const body = await this.request({ method: 'GET', path: paths.manifest(name), headers: { 'if-none-match': quoted }, signal }, async (res) => {
      if (res.statusCode !== 304) return res.body;
      await res.body.dump();
      if (res.headers.etag !== quoted) throw new ProtocolError(`${this.base.origin} answered 304 for ${name} without its tag`);
      return undefined;
    });
    return body && mapErrors(body, this.base, signal ?? this.signal);
  }

  /** `DELETE /v1/manifests/<name>`. */
  async deleteManifest(name: string, signal?: AbortSignal): Promise<void> {
    if (this.info.manifestStore !== true) throw new ProtocolError(`${this.base.origin} does not delete manifests (an older server)`);
    await this.request({ method: 'DELETE', path: paths.manifest(name), signal }, drain);
  }

  /** `DELETE /v1/targets/<name>[?recursive=1]`: the target (or folder), its versions and the server's copy (xfer rm). */
  async removeTarget(name: string, recursive: boolean, signal?: AbortSignal): Promise<RemoveAnswer> {
    return (await this.request({ method: 'DELETE', path: paths.target(name, recursive), signal }, json)) as RemoveAnswer;
  }

  /** `GET /v1/list`: the manifests under `prefix` with kinds and digests; a damaged one is kind `damaged`, with its `error`. */
  async list(prefix: string, signal?: AbortSignal): Promise<ListEntry[]> {
    return ((await this.request({ method: 'GET', path: paths.list(prefix), signal }, json)) as { entries: ListEntry[] }).entries;
  }

  /** `POST /v1/gc`: the server collects its store's garbage; the answer is its report. */
  async gc(options: GcOptions): Promise<GcRun> {
    const path = paths.gc({ dryRun: options.dryRun === true, maxUnusedPercent: options.maxUnusedPercent, graceMs: options.graceMs });
    return (await this.request({ method: 'POST', path, signal: options.signal }, json)) as GcRun;
  }

  /** `GET /v1/stat/<name>`. */
  async stat(name: string, signal?: AbortSignal): Promise<'file' | 'tree' | 'dir' | 'none'> {
    return ((await this.request({ method: 'GET', path: paths.stat(name), signal }, json)) as { type: 'file' | 'tree' | 'dir' | 'none' }).type;
  }

  /**
   * `POST /v1/verify`: the server verifies the targets under `path` itself (its store and
   * its rebuilt files) and streams progress lines, told to `onProgress`, then its report.
   * Sent once, never retried: a verify is long, and a busy server (503, one verify at a
   * time) is told to the caller rather than waited out.
   */
  async verify(
    path: string,
    options: { readonly readData?: boolean; readonly subset?: string; readonly chunksOnly?: boolean; readonly signal?: AbortSignal; readonly onProgress?: (progress: VerifyProgress) => void } = {},
  ): Promise<VerifyReport> {
    if (this.info.verify !== true) throw new ProtocolError(`${this.base.origin} does not verify itself (an older server)`);
    const request = { method: 'POST', path: paths.verify(path, options), signal: options.signal } as const;
    return this.exchange(request, async (res) => {
      for await (const text of ndjsonLines(res.body, MAX_VERIFY_LINE_BYTES)) {
        let line: VerifyAnswerLine;
        try {
          line = JSON.parse(text) as VerifyAnswerLine;
        } catch (err) {
          throw new ProtocolError(`${this.base.origin}: malformed verify answer line: ${(err as Error).message}`);
        }
        if ('report' in line && typeof line.report === 'object' && line.report !== null && Array.isArray(line.report.damaged)) return line.report;
        const failed = 'error' in line ? readErrorAnswer(line.error) : undefined;
        if (failed) throw new XferError(failed.code, `${this.base.origin}: ${failed.message}`);
        if ('progress' in line) options.onProgress?.(line.progress);
      }
      throw new ProtocolError(`${this.base.origin} ended its verify answer without a report`);
    });
  }

  /** Closes the connections once their requests are done (at once if the client's signal was aborted). */
  async close(): Promise<void> {
    this.unlisten();
    if (this.aborted) return this.destroy();
    await this.connections.close();
    await this.stageConnection?.destroy().catch(() => {});
  }

  /** Drops the connections and whatever they carry; requests on them fail. */
  destroy(): void {
    this.connections.destroy();
    void this.stageConnection?.destroy().catch(() => {});
  }

  /**
   * One request and the reading of its answer by `read`, tried again while either fails
   * transiently (ClientOptions.isPermanent), if its body can be sent again: none, bytes, or a function
   * that opens it anew for each attempt.
   */
  private request<T>(opts: Omit<CallOptions, 'body'> & { body?: Body | (() => Body) }, read: (res: Dispatcher.ResponseData) => Promise<T>): Promise<T> {
    const { body } = opts;
    const once = () => this.exchange({ ...opts, body: typeof body === 'function' ? body() : body }, read);
    if (body !== undefined && typeof body !== 'function' && !(body instanceof Uint8Array)) return once();
    return this.retrying(once, opts.signal);
  }

  /**
   * One request and the reading of its answer, once, on the connection with the fewest
   * bytes outstanding; see the top for what it rejects with. A failure of the connection
   * itself (it broke, or an answer did not come in time) replaces it (Connections.replace).
   */
  private async exchange<T>(opts: CallOptions, read: (res: Dispatcher.ResponseData) => Promise<T>): Promise<T> {
    const signal = opts.signal ?? this.signal;
    throwIfAborted(signal);
    throwIfAborted(this.signal);
    const lane = this.connections.pick();
    let dispatcher = lane.dispatcher;
    const bodyBytes = opts.body instanceof Uint8Array ? opts.body.length : undefined;
    const weight = opts.weight ?? bodyBytes ?? 0;
    // A small request on an idle connection, answered at once (not a commit): a round trip.
    const small = opts.body === undefined || (bodyBytes !== undefined && bodyBytes <= ROUND_TRIP_PROBE_BYTES);
    const probe = small && lane.outstandingBytes === 0 && opts.headersTimeout !== 0;
    this.connections.begin(lane, weight);
    // Bodies of bytes (uploads above all) wait for room among those the connection holds
    // unanswered (MAX_QUEUED_BODY_BYTES); streamed bodies are written as they drain.
    const queued = bodyBytes ?? 0;
    try {
      if (queued > 0) {
        await lane.bodies.acquire(queued, signal);
        dispatcher = lane.dispatcher; // replaced meanwhile, if its connection broke
      }
      const started = performance.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await call(dispatcher, this.base, {
          headersTimeout: this.answerTimeoutMs,
          bodyTimeout: this.answerTimeoutMs,
          ...opts,
          signal,
          headers: { ...this.headers, ...opts.headers },
        });
      } finally {
        if (queued > 0) lane.bodies.release(queued);
      }
      if (probe) this.connections.roundTrip(performance.now() - started);
      try {
        return await read(res);
      } catch (err) {
        throw transportError(err, this.base, signal);
      }
    } catch (err) {
      if (brokeConnection(err)) this.connections.replace(lane, dispatcher);
      throw err;
    } finally {
      this.connections.end(lane, weight);
    }
  }

  /** Runs `op` under the retry policy (core/retry.ts); an abort, of `signal` or of the client's own, is never retried. */
  private retrying<T>(op: (attempt: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const onRetry = (event: RetryEvent) => {
      this.retries++;
      this.options.onRetry?.(event);
    };
    return retrying(op, { policy: this.retryPolicy, transient: (err) => !this.isPermanent(err) && !this.aborted, signal: signal ?? this.signal, onRetry, exhausted: gaveUp });
  }
}

/**
 * Whether a request failed because its connection did (it broke, or an answer did not
 * come within the timeout), not because of what the server answered: a TransientError made
 * of a network failure (transportError), as opposed to one made of a 503. A stream reset
 * (RST_STREAM: the server refused or dropped that one request) is the request's failure,
 * not the connection's: it is tried again on the same connection, and the requests in
 * flight beside it go on. Replacing the connection for it failed them all, and uploads
 * among them sent their bodies again.
 */
function brokeConnection(err: unknown): boolean {
  return err instanceof TransientError && isNetworkFailure(err.cause) && !isStreamReset(err.cause);
}

/** A connection to the server: HTTP/2 over TLS (ALPN h2) for https, h2c for http. */
function makeConnection(base: URL, options: ClientOptions): Dispatcher {
  const limit = options.bwlimitBytesPerSecond;
  const windows = {
    initialWindowSize: limit ? clamp(limit * LIMITED_WINDOW_SECONDS, MIN_LIMITED_STREAM_WINDOW_BYTES, STREAM_WINDOW_BYTES) : STREAM_WINDOW_BYTES,
    connectionWindowSize: limit ? clamp(limit * LIMITED_WINDOW_SECONDS, MIN_LIMITED_CONNECTION_WINDOW_BYTES, CONNECTION_WINDOW_BYTES) : CONNECTION_WINDOW_BYTES,
    maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
  };
  return base.protocol === 'https:'
    ? new Client(base.origin, { allowH2: true, ...windows, pipelining: MAX_STREAMS_PER_CONNECTION, connect: { ca: options.ca, rejectUnauthorized: !options.insecure, ALPNProtocols: ['h2'] } })
    : new H2CClient(base.origin, { ...windows, pipelining: MAX_STREAMS_PER_CONNECTION } as ConstructorParameters<typeof H2CClient>[1]);
}

function clamp(n: number, min: number, max: number): number {
  return Math.floor(Math.min(max, Math.max(min, n)));
}

/** The error of a request whose retries are spent: the last failure, saying so. */
function gaveUp(err: unknown, retries: number): unknown {
  if (!(err instanceof XferError)) return err;
  return new ProtocolError(`${err.message} (gave up after ${retries} ${retries === 1 ? 'retry' : 'retries'})`, { cause: err });
}

/** One request; a non-2xx answer becomes the XferError the server described. */
async function call(connection: Dispatcher, base: URL, opts: CallOptions): Promise<Dispatcher.ResponseData> {
  let res: Dispatcher.ResponseData;
  try {
    res = await connection.request({
      method: opts.method, path: opts.path, body: opts.body, headers: opts.headers, signal: opts.signal, headersTimeout: opts.headersTimeout, bodyTimeout: opts.bodyTimeout,
      // Every request of the protocol may be sent again (the retries here do), so none has
      // to wait for the others: undici holds a request it takes for non-idempotent (any
      // POST, PUT or DELETE by default) until nothing else runs on its connection, which
      // made the uploads and fetches of a transfer go one at a time, each a round trip
      // apart (a 64 MiB push at 173 ms: 36% of the link). A streamed body still waits
      // (undici's own rule), which is why a stage has a connection of its own.
      idempotent: true,
    });
  } catch (err) {
    throw transportError(err, base, opts.signal);
  }
  if (res.statusCode >= 200 && res.statusCode < 300) return res;
  // Not Modified, to a request that asked whether it was (getManifestUnlessTag).
  if (res.statusCode === 304 && opts.headers?.['if-none-match'] !== undefined) return res;
  let body: ErrorAnswer | undefined;
  try {
    body = readErrorAnswer(await res.body.json());
  } catch {
    /* not JSON: described by status below */
  }
  if (body) {
    // The server stopping aborts what it was doing: for this client, a passing failure.
    if (body.code === 'XFER_ABORTED') throw new TransientError(`${base.origin} stopped while answering ${opts.method} ${pathOnly(opts.path)}`);
    // At a limit (503 XFER_BUSY, with Retry-After): for now.
    if (res.statusCode === 503) throw new TransientError(`${base.origin}: ${body.message}`);
    throw new XferError(body.code, `${base.origin}: ${body.message}`);
  }
  const what = `${base.origin} answered ${opts.method} ${pathOnly(opts.path)} with status ${res.statusCode}`;
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
 * A failed request as an error: an abort as AbortedError; a failure of the connection
 * (isNetworkFailure) in words (net-errors.ts), a TransientError unless trying again
 * cannot help (an untrusted certificate); any other error as it is: not a broken
 * connection, and not to be retried as one.
 */
function transportError(err: unknown, base: URL, signal?: AbortSignal): unknown {
  if (err instanceof XferError) return err;
  if (signal?.aborted || (err as Error)?.name === 'AbortError') return abortedError(signal);
  if (!isNetworkFailure(err)) return err;
  if (isStreamReset(err)) return new TransientError(`${base.origin} reset the request (${streamResetCode(err) ?? 'HTTP/2 stream error'})`, { cause: err });
  const f = describeNetFailure(err, base);
  const message = f.reaching ? `cannot reach ${base.origin}: ${f.text}` : `the connection to ${base.origin} broke: ${f.text}`;
  return f.permanent ? new ProtocolError(message, { cause: err }) : new TransientError(message, { cause: err });
}

/** The lines of an NDJSON body; a line longer than `maxBytes` is a ProtocolError. */
async function* ndjsonLines(body: AsyncIterable<Uint8Array>, maxBytes: number): AsyncGenerator<string> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const piece of body) {
    let buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    let nl: number;
    while ((nl = buf.indexOf(10)) >= 0) {
      pending.push(buf.subarray(0, nl));
      const text = Buffer.concat(pending).toString('utf8');
      pending = [];
      pendingBytes = 0;
      if (text !== '') yield text;
      buf = buf.subarray(nl + 1);
    }
    pendingBytes += buf.length;
    if (pendingBytes > maxBytes) throw new ProtocolError(`an answer line is longer than ${maxBytes} bytes`);
    if (buf.length > 0) pending.push(Buffer.from(buf));
  }
  if (pendingBytes > 0) yield Buffer.concat(pending).toString('utf8');
}
