import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { hostname } from 'node:os';
import { OWNER_HOST } from '../io/owner.js';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { validateChunkerSpec } from '../chunker/params.js';
import { ByteQueue } from '../core/bytes.js';
import { AbortedError, HTTP_STATUS, InvalidArgumentError, isXferError, ManifestIncompleteError, NotFoundError, TimeoutError, TooLargeError, UnauthorizedError, XferError } from '../core/errors.js';
import { DIGEST_BYTES, digestToHex, parseDigestAlgorithm, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { openManifest, openManifestFile, type ManifestReader } from '../manifest/reader.js';
import type { EntryMeta, ManifestHeader } from '../manifest/types.js';
import { applyAttributes, attributePolicy } from '../reconstruct/attributes.js';
import { filesOf, reconstruct, SET_ID_BITS, type PreviousFile } from '../reconstruct/reconstruct.js';
import type { ChunkStore, ManifestStore } from '../store/store.js';
import { applyDelta, baseBlockSums, DELTA_BLOCK_BYTES, DELTA_HEADER_BYTES, deltaHeader, deltaLiteralBytes, deltaMapBytes, SUMS_REQUEST_RECORD_BYTES, sumsBytes } from '../protocol/delta.js';
import { validateManifestPrefix } from '../store/names.js';
import { chunkerOfQuery } from '../protocol/stage-format.js';
import { decodeDigests, encodeMissingBitmap, chunkRecordHead, peekChunkRecord, takeChunkRecord } from '../protocol/records.js';
import { flagParam, intParam as intParamOf, PARAMS, type ServerInfo } from '../protocol/routes.js';
import { limitedBody, readBody } from './body.js';
import { BODY_TIMEOUT_MS, FETCH_READ_AHEAD, MAX_BATCH_BYTES, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, MAX_QUERY_DIGESTS, MAX_SMALL_BODY_BYTES, MAX_SUMS_ANSWER_BYTES } from './limits.js';
import { silentLogger, type ServerLogger } from './log.js';
import { materializedPath, remotePathToName } from './paths.js';
import { escapeRegExp } from '../core/regexp.js';
import { StageHub, UnchangedError, type Stage } from './stage.js';

export const PROTOCOL_VERSION = 1;
const PREFIX = '/v1/';
/** Digests checked per `has` call while validating an uploaded manifest. */
const MANIFEST_CHECK_BATCH = 4096;
/** Missing digests named in a 409 answer, at most. */
const MISSING_NAMED_MAX = 5;

/** What the server serves from: any store (local today, S3 next), through its interfaces only. */
export type ServerStore = ChunkStore & ManifestStore;

export interface HandlerContext {
  readonly store: ServerStore;
  /** `<root>/files`: where pushed files and trees are materialized. */
  readonly filesDir: string;
  readonly tmpDir: string;
  readonly token?: string;
  readonly signal: AbortSignal;
  /** Counted here (see ServerStats). */
  readonly stats?: { commits: number; commitsStaged: number };
  /** See STAGE_IDLE_TIMEOUT_MS. */
  readonly stageTimeoutMs?: number;
  /** An answer the client takes nothing of for this long is reset (BODY_TIMEOUT_MS). 0: none. */
  readonly sendTimeoutMs?: number;
  readonly log?: ServerLogger;
}

/**
 * The request handler of `xfer serve` (docs/PROTOCOL.md). Every failure becomes a JSON
 * `{ code, message }` with the status from HTTP_STATUS; nothing is printed.
 */
export function createHandler(ctx: HandlerContext): (req: Http2ServerRequest, res: Http2ServerResponse) => void {
  const tokenDigest = ctx.token === undefined ? undefined : sha256(ctx.token);
  const commits = new Map<string, Promise<unknown>>();
  const stages = new StageHub(ctx.store, undefined, ctx.stageTimeoutMs);
  /** Stages opened with checksum=1: the only ones a commit with checksum=1 swaps in. */
  const checksumStages = new WeakSet<Stage>();
  const log = ctx.log ?? silentLogger;
  const sendTimeoutMs = ctx.sendTimeoutMs ?? BODY_TIMEOUT_MS;

  // Messages name paths under the server's root: clients are not told where that is.
  const root = dirname(ctx.filesDir);
  const hidePaths = (message: string) => message.split(join(root, 'store')).join("the server's store").split(root).join("the server's root");

  return (req, res) => {
    handle(req, res).catch((err) => sendErrorAnswer(res, err, {}, hidePaths));
  };

  async function handle(req: Http2ServerRequest, res: Http2ServerResponse): Promise<void> {
    if (tokenDigest) {
      const auth = req.headers.authorization ?? '';
      // The scheme is case-insensitive (RFC 7235 section 2.1); the token is not.
      const given = /^bearer /i.test(auth) ? auth.slice(7) : '';
      if (!timingSafeEqual(sha256(given), tokenDigest)) throw new UnauthorizedError();
    }
    // The raw path, never URL-normalized: `new URL` would resolve `%2e%2e` and `..` before
    // remotePathToName could refuse them.
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    const url = new URL(`http://x/?${q < 0 ? '' : req.url.slice(q + 1)}`);
    if (!path.startsWith(PREFIX)) throw new NotFoundError(`no such endpoint: ${path}`);
    const rest = path.slice(PREFIX.length);
    const method = req.method;
    if (method === 'GET' && rest === 'info') {
      return sendJson(res, 200, {
        protocol: PROTOCOL_VERSION,
        maxBatchBytes: MAX_BATCH_BYTES,
        maxQueryDigests: MAX_QUERY_DIGESTS,
        maxChunkBytes: MAX_CHUNK_BYTES,
        maxSumsAnswerBytes: MAX_SUMS_ANSWER_BYTES,
        deltaBlockBytes: DELTA_BLOCK_BYTES,
        stage: true,
        stageTrees: true,
        manifestStore: true,
      } satisfies ServerInfo);
    }
    if (method === 'POST' && rest === 'chunks/missing') return missing(req, res, algorithmOf(url));
    if (method === 'POST' && rest === 'chunks') return upload(req, res, algorithmOf(url));
    if (method === 'POST' && rest === 'chunks/fetch') return fetchChunks(req, res, algorithmOf(url));
    if (method === 'POST' && rest === 'chunks/sums') return blockSums(req, res, algorithmOf(url));
    if (method === 'POST' && rest === 'chunks/delta') return uploadDeltas(req, res, algorithmOf(url));
    if (method === 'POST' && rest.startsWith('stage/')) return stageFile(req, res, remotePathToName(rest.slice('stage/'.length)), url, checksumParam(url));
    if (rest.startsWith('manifests/')) {
      const name = remotePathToName(rest.slice('manifests/'.length));
      if (method === 'GET') return getManifest(res, name);
      if (method === 'PUT' && flagParam(url.searchParams, PARAMS.raw)) return storeManifest(req, res, name);
      if (method === 'PUT') return putManifest(req, res, name, checksumParam(url));
      if (method === 'DELETE') return deleteManifest(res, name);
    }
    if (method === 'GET' && rest.startsWith('stat/')) return stat(res, remotePathToName(rest.slice('stat/'.length)));
    if (method === 'GET' && rest === 'list') return list(res, url.searchParams.get('prefix') ?? '');
    throw new NotFoundError(`no such endpoint: ${method} ${path}`);
  }

  async function missing(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    const ids = decodeDigests(await readBody(req, MAX_QUERY_DIGESTS * DIGEST_BYTES), algorithm, MAX_QUERY_DIGESTS);
    const present = await ctx.store.has(ids, { signal: ctx.signal });
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(encodeMissingBitmap(present));
  }

  /**
   * Reads a batch of records (`what`: for messages) as its frames arrive, at most
   * MAX_BATCH_BYTES, and stores each as soon as it is complete: `next` takes one record off
   * the queue and resolves whether it stored a new chunk, or returns undefined while the
   * record is incomplete. Answers `{ stored, present }`.
   */
  async function receiveRecords(
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    what: string,
    next: (queue: ByteQueue) => Promise<boolean> | undefined,
  ): Promise<void> {
    let stored = 0;
    let present = 0;
    const queue = new ByteQueue();
    for await (const piece of limitedBody(req, MAX_BATCH_BYTES, what)) {
      queue.push(piece);
      for (let record = next(queue); record !== undefined; record = next(queue)) {
        if (await record) stored++;
        else present++;
      }
    }
    if (queue.length) throw new InvalidArgumentError(`${what} ends inside a record`);
    sendJson(res, 200, { stored, present });
  }

  /**
   * Chunk records, stored one at a time: put() copies the bytes (into a pack block) before
   * it resolves, so a record spanning HTTP/2 frames is assembled in one scratch buffer per
   * request instead of a fresh allocation per chunk (measured: ~2 GiB of garbage per 2 GiB
   * pushed, about 1.5 s of GC on the server).
   */
  async function upload(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    let scratch = Buffer.allocUnsafeSlow(0);
    await receiveRecords(req, res, 'chunk batch', (queue) => {
      const head = peekChunkRecord(queue, MAX_CHUNK_BYTES, false, (message) => new InvalidArgumentError(message));
      if (!head) return undefined;
      const len = head.length!;
      const digest = head.digest;
      // A chunk a stage waits for is assembled in a buffer of its own that the stage then
      // keeps: one copy of it instead of two (scratch, then the stage's).
      const forStage = len > 0 && stages.active && stages.waitsFor(algorithm, digest);
      if (!forStage && scratch.length < len) scratch = Buffer.allocUnsafeSlow(Math.max(len, 2 * scratch.length));
      const data = takeChunkRecord(queue, head, forStage ? stages.buffer(len) : scratch);
      // put() re-hashes the bytes (not trusted): a mismatch is ChunkCorruptError naming the digest.
      return handOn(algorithm, digest, data, forStage, ctx.store.put({ algorithm, digest }, data, { signal: ctx.signal }));
    });
  }

  /**
   * Passes a chunk a put() just stored to the stages waiting for it (`owned`: `data` is
   * not reused after, so they may keep it). Only a chunk this put stored was re-hashed:
   * one already present is not (put returns false without reading it), and stages waiting
   * for it find it in the store.
   */
  async function handOn(algorithm: DigestAlgorithm, digest: Uint8Array, data: Buffer, owned: boolean, put: Promise<boolean>): Promise<boolean> {
    const stored = await put;
    if (stored && stages.active) stages.arrived(algorithm, digest, data, owned);
    return stored;
  }

  /**
   * POST /v1/stage/<path>: what a push of a file (its chunk list) or a tree (its manifest's
   * body) streams while its chunks are uploaded; the target is rebuilt as it comes
   * (server/stage.ts). Answers once the manifest commit of the same path has swapped the
   * staged copy in, or with why the stage was discarded (the commit then rebuilds the
   * ordinary way). With `checksum` (checksumParam) a tree's stage links no file of the
   * committed tree by its size and mtime. A file's stage trusts no metadata either way: it
   * compares its list with the committed one by digests, and what it builds is verified
   * whole; an unchanged list leaves the target to the commit, which re-hashes it.
   */
  async function stageFile(req: Http2ServerRequest, res: Http2ServerResponse, name: string, url: URL, checksum: boolean): Promise<void> {
    const algorithm = algorithmOf(url);
    const target = await materializedPath(ctx.filesDir, name, ctx.store, ctx.signal);
    const kind = url.searchParams.get('kind') ?? 'file';
    let stage: Stage;
    if (kind === 'tree') {
      const chunker = chunkerOfQuery(url.searchParams);
      if (!chunker) throw new InvalidArgumentError('a tree stage needs chunker=fastcdc2020&min=&avg=&max= or chunker=fixed&size=');
      validateChunkerSpec(chunker);
      const committed = checksum ? undefined : await committedVersion(name);
      stage = stages.begin({ kind, name, algorithm, target, confineTo: ctx.filesDir, chunker, targetDigest: committed?.digest, previousFiles: committed?.files }, req as AsyncIterable<Buffer>, ctx.signal);
    } else if (kind === 'file') {
      const meta: EntryMeta = {
        type: 'file',
        path: '',
        mode: intParam(url, 'mode', 0o7777),
        mtimeMs: intParam(url, 'mtimeMs', Number.MAX_SAFE_INTEGER),
        size: intParam(url, 'size', Number.MAX_SAFE_INTEGER),
      };
      stage = stages.begin({ kind, name, algorithm, meta, target, confineTo: ctx.filesDir }, req as AsyncIterable<Buffer>, ctx.signal, await committedFile(name));
    } else throw new InvalidArgumentError(`unknown stage kind "${kind}" (file or tree)`);
    if (checksum) checksumStages.add(stage);
    let settled = false;
    res.once('close', () => {
      if (!settled) stage.abort(new AbortedError('the client closed the stage'));
    });
    try {
      const r = await stage.result.catch((err) => {
        if (err instanceof UnchangedError) return undefined;
        throw err;
      });
      sendJson(res, 200, r ? { digest: r.digest } : { unchanged: true });
    } finally {
      settled = true;
    }
  }

  /** Block sums of base chunks, for delta uploads (protocol/delta.ts). A missing or damaged base is answered [0]. */
  async function blockSums(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    const body = await readBody(req, MAX_QUERY_DIGESTS * SUMS_REQUEST_RECORD_BYTES);
    if (body.length === 0 || body.length % SUMS_REQUEST_RECORD_BYTES !== 0) {
      throw new InvalidArgumentError(`body must be a non-empty list of ${SUMS_REQUEST_RECORD_BYTES}-byte records`);
    }
    // The answer is bounded before any work: its size (and the hashing behind it) grows with
    // the lengths asked for, not with the request's size. `answerBytes` is its size if every
    // base is found (a missing one takes 1 byte).
    let answerBytes = 0;
    for (let o = 0; o < body.length; o += SUMS_REQUEST_RECORD_BYTES) {
      const length = body.readUInt32LE(o + DIGEST_BYTES + 8);
      if (length === 0 || length > MAX_CHUNK_BYTES) throw new InvalidArgumentError(`block sums asked for a chunk of ${length} bytes`);
      answerBytes += 1 + sumsBytes(length);
    }
    if (answerBytes > MAX_SUMS_ANSWER_BYTES) {
      throw new TooLargeError(`block sums request would be answered with ${answerBytes} bytes, over the limit of ${MAX_SUMS_ANSWER_BYTES}: ask for fewer chunks at once`);
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    for (let o = 0; o < body.length; o += SUMS_REQUEST_RECORD_BYTES) {
      const digest = body.subarray(o, o + DIGEST_BYTES);
      const shifts = [body.readInt32LE(o + DIGEST_BYTES), body.readInt32LE(o + DIGEST_BYTES + 4)] as const;
      const length = body.readUInt32LE(o + DIGEST_BYTES + 8);
      let base: Buffer | undefined;
      try {
        base = await ctx.store.get({ algorithm, digest }, { signal: ctx.signal });
      } catch (err) {
        // A damaged base is no base: answered as missing (the client sends the chunk whole),
        // since the answer has started and a status can no longer say so.
        if (isXferError(err, 'XFER_CHUNK_CORRUPT')) log.warn({ code: err.code, error: err.message }, 'a delta base in the store is damaged');
        else if (!isXferError(err, 'XFER_CHUNK_MISSING')) throw err;
      }
      // Streamed record by record: at most one record's sums are held at a time.
      const ok = res.write(base ? Buffer.concat([Buffer.from([1]), baseBlockSums(algorithm, base, shifts, length)]) : Buffer.from([0]));
      if (!ok) await drained(res, sendTimeoutMs);
    }
    res.end();
  }

  /**
   * Delta records (protocol/delta.ts): each chunk is rebuilt from its base (read verified from
   * the store) and its literal blocks, then stored like an upload, re-hashed: a chunk that
   * does not come out as its digest is 422 XFER_CHUNK_CORRUPT, a missing base 404
   * XFER_CHUNK_MISSING. Records before a failing one stay stored.
   */
  async function uploadDeltas(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    await receiveRecords(req, res, 'delta batch', (queue) => {
      if (queue.length < DELTA_HEADER_BYTES) return undefined;
      const { shifts, length } = deltaHeader(queue.peek(DELTA_HEADER_BYTES));
      if (length === 0 || length > MAX_CHUNK_BYTES) throw new InvalidArgumentError(`delta record of a ${length}-byte chunk`);
      const mapBytes = deltaMapBytes(length);
      if (queue.length < DELTA_HEADER_BYTES + mapBytes) return undefined;
      const literalBytes = deltaLiteralBytes(length, queue.peek(DELTA_HEADER_BYTES + mapBytes).subarray(DELTA_HEADER_BYTES));
      if (queue.length < DELTA_HEADER_BYTES + mapBytes + literalBytes) return undefined;
      const header = Buffer.from(queue.take(DELTA_HEADER_BYTES));
      const map = Buffer.from(queue.take(mapBytes));
      const literals = literalBytes > 0 ? Buffer.from(queue.take(literalBytes)) : Buffer.alloc(0);
      return (async () => {
        const digest = header.subarray(0, DIGEST_BYTES);
        const base = await ctx.store.get({ algorithm, digest: header.subarray(DIGEST_BYTES, 2 * DIGEST_BYTES) }, { signal: ctx.signal });
        const data = applyDelta(base, shifts, length, map, literals);
        // put() re-hashes (not trusted): a wrong rebuild is ChunkCorruptError naming the digest.
        return handOn(algorithm, digest, data, true, ctx.store.put({ algorithm, digest }, data, { signal: ctx.signal }));
      })();
    });
  }

  async function fetchChunks(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    const ids = decodeDigests(await readBody(req, MAX_QUERY_DIGESTS * DIGEST_BYTES), algorithm, MAX_QUERY_DIGESTS);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const reads: Promise<Buffer | undefined>[] = [];
    const start = (i: number) => {
      if (i < ids.length) {
        // Unverified: the client re-hashes every chunk it receives (the bytes cross a trust
        // boundary there), so a second hash here would only double the CPU per byte served.
        reads[i] = ctx.store.get(ids[i]!, { signal: ctx.signal, unverified: true }).catch((err) => {
          if (isXferError(err, 'XFER_CHUNK_MISSING')) return undefined;
          throw err;
        });
        reads[i]!.catch(() => {});
      }
    };
    for (let i = 0; i < FETCH_READ_AHEAD; i++) start(i);
    for (let i = 0; i < ids.length; i++) {
      const data = await reads[i]!;
      reads[i] = undefined as unknown as Promise<Buffer | undefined>;
      start(i + FETCH_READ_AHEAD);
      const head = chunkRecordHead(ids[i]!.digest, data?.length);
      // Two writes, not a concatenation: a copy of every chunk served cost ~0.4 s of CPU
      // and 2 GiB of garbage per 2 GiB pulled. The stream frames both the same way.
      let ok = res.write(head);
      if (data) ok = res.write(data);
      if (!ok) await drained(res, sendTimeoutMs);
    }
    res.end();
  }

  /**
   * PUT /v1/manifests/<path>?raw=1: the bytes stored as the manifest of `name`, as they are
   * (a ManifestStore's put): atomically, within MAX_MANIFEST_BYTES, not validated, nothing
   * committed or materialized. Waits for a commit of the same name in progress.
   */
  async function storeManifest(req: Http2ServerRequest, res: Http2ServerResponse, name: string): Promise<void> {
    await commits.get(name)?.catch(() => {});
    await ctx.store.putManifest(name, limitedBody(req, MAX_MANIFEST_BYTES, 'manifest'), { signal: ctx.signal });
    sendJson(res, 200, {});
  }

  /**
   * DELETE /v1/manifests/<path>: the manifest of `name` goes (404 if there is none); what
   * a commit materialized under files/ stays. Waits for a commit of the same name in progress.
   */
  async function deleteManifest(res: Http2ServerResponse, name: string): Promise<void> {
    await commits.get(name)?.catch(() => {});
    await ctx.store.deleteManifest(name, { signal: ctx.signal });
    sendJson(res, 200, {});
  }

  async function getManifest(res: Http2ServerResponse, name: string): Promise<void> {
    const body = await ctx.store.getManifest(name, { signal: ctx.signal });
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    for await (const piece of body) {
      if (!res.write(piece)) await drained(res, sendTimeoutMs);
    }
    res.end();
  }

  /**
   * The commit point of a push: validate the manifest, refuse it if any chunk is missing,
   * rebuild and verify the target in a staging copy, store the manifest, swap the target in.
   * Commits to the same name are serialized. With `checksum` (checksumParam) the target's
   * files are read and re-hashed instead of being kept or linked by their size and mtime,
   * and rewritten where they differ: a copy damaged on disk behind its metadata is repaired.
   */
  async function putManifest(req: Http2ServerRequest, res: Http2ServerResponse, name: string, checksum: boolean): Promise<void> {
    const target = await materializedPath(ctx.filesDir, name, ctx.store, ctx.signal);
    const body = limitedBody(req, MAX_MANIFEST_BYTES, 'manifest');
    const tmp = await mkdtemp(join(ctx.tmpDir, 'manifest-'));
    try {
      const file = join(tmp, 'manifest');
      await pipeline(body, createWriteStream(file));
      await checkChunksPresent(await openManifestFile(file, { signal: ctx.signal }));
      const previous = commits.get(name) ?? Promise.resolve();
      let staged = false;
      const run = previous.catch(() => {}).then(async () => {
        // The chunks' publish (making them durable) overlaps the rebuild, which reads
        // pending chunks just as well; the manifest is stored, and the target swapped in,
        // only once both are done.
        const flushed = ctx.store.flush({ signal: ctx.signal });
        // Awaited later (beforeCommit, or the finally below), perhaps only after a stage's
        // list ends: a failure meanwhile must not count as unhandled, which exits the process.
        flushed.catch(() => {});
        const beforeCommit = async () => {
          await flushed;
          await ctx.store.putManifest(name, createReadStream(file), { signal: ctx.signal });
        };
        // A stage that built this very file while the chunks arrived: swap it in. Any
        // failure of the stage leaves the target as it was, and the rebuild below runs.
        const stage = stages.take(name);
        // A tree's stage opened without checksum=1 may have linked files by their metadata.
        if (stage && checksum && stage.spec.kind === 'tree' && !checksumStages.has(stage)) stage.abort(new AbortedError('the commit reads every file (checksum=1), the stage did not'));
        else if (stage) {
          const { header, entry } = await firstEntry(file);
          if (await stage.matches(header, entry)) {
            try {
              const r = await stage.commit(beforeCommit);
              // The stage knew the file's mode and mtime only: the rest of the entry's
              // attributes (owner, xattrs, ns time) as for any copy of the server's.
              if (entry && header.kind === 'file') {
                await applyAttributes(target, { ...entry, mode: entry.mode & ~SET_ID_BITS }, attributePolicy({ untrusted: true }), name, { existing: true });
              }
              if (ctx.stats) ctx.stats.commitsStaged++;
              staged = true;
              return r;
            } catch (err) {
              if (ctx.signal.aborted) throw err;
            }
          } else stage.abort(new AbortedError('the committed manifest is not the staged file'));
        }
        // Without what is committed, reconstruct trusts no size or mtime: a file target is
        // read through and kept only if it hashes to the manifest's digest, a tree's files
        // are rebuilt, each chunk taken from the old file in place only if it hashes right.
        const committed = checksum ? undefined : await committedVersion(name);
        const rebuild = async (verifyStoreChunks: boolean) =>
          reconstruct(await openManifestFile(file, { signal: ctx.signal }), ctx.store, target, {
            signal: ctx.signal,
            confineTo: ctx.filesDir,
            clearSetId: true,
            attributes: { untrusted: true },
            // The server's copy of a pushed tree is its own materialization of the committed
            // manifest: what the new version lacks goes (it was the previous version's).
            deleteExtra: true,
            reuseTarget: false,
            resumable: false,
            targetDigest: committed?.digest,
            previousFiles: committed?.files,
            verifyStoreChunks,
            beforeCommit,
          });
        try {
          // The store is this server's own and every chunk in it was verified when it
          // arrived: the rebuilt files' digests (always checked) prove the chunks read back.
          // Measured: a 2 GiB commit 3.6-4.1 s -> 3.1-3.2 s. If a digest fails, a stored
          // chunk is damaged: the second, verifying run names it (ChunkCorruptError).
          try {
            return await rebuild(false);
          } catch (err) {
            if (!isXferError(err, 'XFER_VERIFY_FAILED')) throw err;
            return await rebuild(true);
          }
        } finally {
          await flushed.catch(() => {});
        }
      });
      commits.set(name, run);
      try {
        const r = await run;
        if (ctx.stats) ctx.stats.commits++;
        log.info({ path: name, kind: r.kind, bytes: r.bytesTotal, digest: r.digest, staged }, 'commit');
        sendJson(res, 200, { kind: r.kind, totalBytes: r.bytesTotal, digest: r.digest });
      } finally {
        if (commits.get(name) === run) commits.delete(name);
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** The manifest committed under `name`, opened to read through; undefined if there is none. */
  async function openCommitted(name: string): Promise<ManifestReader | undefined> {
    try {
      return await openManifest(await ctx.store.getManifest(name, { signal: ctx.signal }), { signal: ctx.signal });
    } catch (err) {
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      return undefined;
    }
  }

  /** The manifest committed under `name` if it is a file's, to read through; else undefined. */
  async function committedFile(name: string): Promise<ManifestReader | undefined> {
    const reader = await openCommitted(name);
    if (reader?.header.kind === 'file') return reader;
    await reader?.close();
    return undefined;
  }

  /**
   * What is committed under `name`, read once: its digest (what the rebuild may assume the
   * target holds) and its files by entry path ('' for a file manifest's; left out for a
   * tree of more than MAX_PREVIOUS_FILES entries, see filesOf), which reconstruct keeps or links instead
   * of rebuilding when unchanged. Undefined if nothing is committed, or what is cannot be read.
   */
  async function committedVersion(name: string): Promise<{ digest: Uint8Array; files?: Map<string, PreviousFile> } | undefined> {
    const reader = await openCommitted(name);
    if (!reader) return undefined;
    const digest = reader.header.digest;
    try {
      return { digest, files: await filesOf(reader, ctx.signal) };
    } catch (err) {
      // A damaged committed manifest tells nothing about the target: assume nothing.
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      return undefined;
    }
  }

  /** A stored-to-be manifest's header and its first entry (a file manifest's only one). */
  async function firstEntry(file: string): Promise<{ header: ManifestHeader; entry: EntryMeta | undefined }> {
    const reader = await openManifestFile(file, { signal: ctx.signal });
    for await (const ev of reader.events()) {
      if (ev.kind === 'entry') return { header: reader.header, entry: ev.meta };
    }
    return { header: reader.header, entry: undefined };
  }

  /** The header of the manifest stored under `name` (NotFoundError if none), read without its body. */
  async function storedHeader(name: string): Promise<ManifestHeader> {
    const reader = await openManifest(await ctx.store.getManifest(name, { signal: ctx.signal }), { signal: ctx.signal });
    await reader.close();
    return reader.header;
  }

  async function checkChunksPresent(reader: ManifestReader): Promise<void> {
    const algorithm = reader.header.digestAlgorithm;
    let batch: ChunkId[] = [];
    const missingHex: string[] = [];
    let missingCount = 0;
    const check = async () => {
      const present = await ctx.store.has(batch, { signal: ctx.signal });
      present.forEach((p, i) => {
        if (p) return;
        missingCount++;
        if (missingHex.length < MISSING_NAMED_MAX) missingHex.push(digestToHex(batch[i]!.digest));
      });
      batch = [];
    };
    for await (const ev of reader.events()) {
      if (ev.kind !== 'chunks') continue;
      for (const r of ev.records) {
        batch.push({ algorithm, digest: r.digest });
        if (batch.length === MANIFEST_CHECK_BATCH) await check();
      }
    }
    if (batch.length) await check();
    if (missingCount > 0) {
      throw new ManifestIncompleteError(
        `manifest refers to ${missingCount} chunks the server does not have (${missingHex.join(', ')}${missingCount > missingHex.length ? ', ...' : ''})`,
      );
    }
  }

  async function stat(res: Http2ServerResponse, name: string): Promise<void> {
    try {
      return sendJson(res, 200, { type: (await storedHeader(name)).kind });
    } catch (err) {
      if (!isXferError(err, 'XFER_NOT_FOUND')) throw err;
    }
    const under = await ctx.store.listManifests(`${name}/`, { signal: ctx.signal });
    sendJson(res, 200, { type: under.length > 0 ? 'dir' : 'none' });
  }

  async function list(res: Http2ServerResponse, prefixRaw: string): Promise<void> {
    const prefix = validateManifestPrefix(prefixRaw);
    const entries = [];
    for (const m of await ctx.store.listManifests(prefix, { signal: ctx.signal })) {
      let h: ManifestHeader;
      try {
        h = await storedHeader(m.name);
      } catch (err) {
        // One unreadable manifest does not hide the others: it is listed as damaged, saying why.
        if (!isXferError(err) || err.code === 'XFER_ABORTED') throw err;
        log.warn({ path: m.name, code: err.code, error: err.message }, 'a stored manifest is damaged');
        entries.push({ path: m.name, kind: 'damaged', bytes: 0, manifestBytes: m.bytes, mtimeMs: m.mtimeMs, digest: '', error: scrubIdentity(hidePaths(err.message)) });
        continue;
      }
      entries.push({ path: m.name, kind: h.kind, bytes: h.totalBytes, manifestBytes: m.bytes, mtimeMs: m.mtimeMs, digest: digestToHex(h.digest) });
    }
    sendJson(res, 200, { entries });
  }
}

/**
 * `checksum=1` on a stage or a manifest commit (a push with --checksum): decide by content
 * only. The server then trusts no size or mtime of its own materialized copy (the quick
 * check) and re-hashes what it would otherwise keep. Absent or `0`: the quick check.
 */
function checksumParam(url: URL): boolean {
  return flagParam(url.searchParams, PARAMS.checksum);
}

/** A required integer query parameter in [0, max]. */
function intParam(url: URL, key: string, max: number): number {
  return intParamOf(url.searchParams, key, max);
}

function algorithmOf(url: URL): DigestAlgorithm {
  return parseDigestAlgorithm(url.searchParams.get('algorithm') ?? '');
}

/**
 * Resolves when the response can take more. Rejects when its stream closes (the client went
 * away) or when the client takes nothing for `timeoutMs` (it stopped reading: its stream is
 * reset, so it holds no read-ahead and no stream for ever).
 */
function drained(res: Http2ServerResponse, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = timeoutMs > 0 ? setTimeout(() => {
      settle();
      reject(new TimeoutError(`the client took none of the answer for ${timeoutMs / 1000} s`));
      res.stream?.close(0x8); // CANCEL
    }, timeoutMs) : undefined;
    const settle = () => {
      clearTimeout(timer);
      res.off('drain', onDrain);
      res.off('close', onClose);
    };
    const onDrain = () => {
      settle();
      resolve();
    };
    const onClose = () => {
      settle();
      reject(new AbortedError('the client went away'));
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function sendJson(res: Http2ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Staging names and store temp names hold `<host>~<pid>` (reconstruct/staging.ts,
 * store/local/temp.ts); temp names written before that held `<pid>-<hex>`. The host name is
 * matched only before `~`: a short one ("vm") may be part of any word.
 */
const IDENTITY_PATTERN = new RegExp(
  `(?:${[...new Set([hostname(), OWNER_HOST])].map(escapeRegExp).join('|')})~\\d+|~${process.pid}\\b|\\b${process.pid}-(?=[0-9a-f]{12})`,
  'g',
);

/**
 * A message without the server's host name or process id, which name its staging and temp
 * files: clients are not told which machine or process serves them.
 */
export function scrubIdentity(message: string): string {
  return message.replace(IDENTITY_PATTERN, (m) => (m.endsWith('-') ? '<pid>-' : m.startsWith('~') ? '~<pid>' : '<host>~<pid>'));
}

/** The error each failed request was answered with (for the request log). */
const failures = new WeakMap<Http2ServerResponse, XferError>();

export function failureOf(res: Http2ServerResponse): XferError | undefined {
  return failures.get(res);
}

/**
 * The one place a server-side error becomes a response: `{ code, message }` with the status
 * from HTTP_STATUS, or a reset if the answer had started. Never throws.
 */
export function sendErrorAnswer(res: Http2ServerResponse, err: unknown, headers: Record<string, string> = {}, hidePaths: (message: string) => string = (m) => m): void {
  const e = isXferError(err) ? err : new XferError('XFER_INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`);
  if (!failures.has(res)) failures.set(res, e);
  try {
    if (res.headersSent || res.stream?.destroyed || res.stream?.closed) {
      res.stream?.close?.(0x2); // INTERNAL_ERROR: the client sees a reset, never a truncated success
      return;
    }
    const text = JSON.stringify({ code: e.code, message: scrubIdentity(hidePaths(e.message)) });
    res.writeHead(HTTP_STATUS[e.code] ?? 500, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  } catch {
    // The stream went away meanwhile: nobody is left to answer.
  }
}
