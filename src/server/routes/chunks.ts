/**
 * The chunk endpoints (docs/PROTOCOL.md): chunks/missing, chunks (upload), chunks/fetch,
 * chunks/sums and chunks/delta. Bodies are read within their limits (body.ts) and decoded
 * by protocol/records.ts and protocol/delta.ts; every chunk stored is re-hashed (uploads here,
 * in groups off the main thread; deltas by the store).
 */
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { isZeroChunk, zeroBytes } from '../../chunker/zero.js';
import { ByteQueue } from '../../core/bytes.js';
import { ChunkCorruptError, InvalidArgumentError, isXferError, TooLargeError } from '../../core/errors.js';
import { DIGEST_BYTES, digestToHex, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { MiB } from '../../core/sizes.js';
import { digestEquals, digestsOfAsync } from '../../hash/digest.js';
import { applyDelta, baseBlockSums, DELTA_HEADER_BYTES, deltaHeader, deltaLiteralBytes, deltaMapBytes, SUMS_REQUEST_RECORD_BYTES, sumsBytes } from '../../protocol/delta.js';
import { chunkRecordHead, decodeDigests, encodeMissingBitmap, peekChunkRecord, takeChunkRecord } from '../../protocol/records.js';
import { windowViews } from '../../io/direct.js';
import { largeBuffer, recycleLargeBuffer } from '../../io/sys.js';
import { drained, sendJson } from '../answer.js';
import { consumeBody, readBody } from '../body.js';
import { hasChunkSizes, type RouteContext } from '../context.js';
import { FETCH_READ_AHEAD, FETCH_READ_AHEAD_BYTES, MAX_BATCH_BYTES, MAX_CHUNK_BYTES, MAX_QUERY_DIGESTS, MAX_SUMS_ANSWER_BYTES } from '../limits.js';

/**
 * Chunk records hashed in one task, at most (a single larger chunk goes alone): the
 * scratch an upload holds besides what HTTP/2 flow control lets it buffer (16 MiB).
 */
export const UPLOAD_HASH_GROUP_BYTES = 1 * MiB;

/** The chunk endpoints over `rc`'s store; uploads hand chunks on to the stages waiting for them. */
export function chunkRoutes(rc: RouteContext) {
  const { ctx, stages, log, sendTimeoutMs } = rc;
  return { missing, upload, fetchChunks, blockSums, uploadDeltas };

  async function missing(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    const ids = decodeDigests(await readBody(req, MAX_QUERY_DIGESTS * DIGEST_BYTES), algorithm, MAX_QUERY_DIGESTS);
    const present = await ctx.store.has(ids, { signal: ctx.signal });
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(encodeMissingBitmap(present));
  }

  /**
   * Reads a batch of records (`what`: for messages) as its frames arrive, at most
   * MAX_BATCH_BYTES, and stores them as soon as they are complete: `next` takes records
   * off the queue and resolves, for each in order, whether it stored a new chunk, or
   * returns undefined while the next record is incomplete. Answers `{ stored, present }`.
   */
  async function receiveRecords(
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    what: string,
    next: (queue: ByteQueue) => Promise<readonly boolean[]> | undefined,
  ): Promise<void> {
    let stored = 0;
    let present = 0;
    const queue = new ByteQueue();
    // The records complete in the queue, taken and stored in order (each `next` settles
    // before more are taken); a promise while one is pending, which holds the body (consumeBody).
    const drain = (): Promise<void> | undefined => {
      const records = next(queue);
      if (records === undefined) return undefined;
      return records.then((outcomes) => {
        for (const s of outcomes) {
          if (s) stored++;
          else present++;
        }
        return drain();
      });
    };
    await consumeBody(req, MAX_BATCH_BYTES, what, (pieces) => {
      for (const piece of pieces) queue.push(piece);
      return drain();
    });
    if (queue.length) throw new InvalidArgumentError(`${what} ends inside a record`);
    sendJson(res, 200, { stored, present });
  }

  /**
   * Chunk records, re-hashed in groups off the main thread, then stored in order. Each
   * drain takes the records complete in the queue, up to UPLOAD_HASH_GROUP_BYTES (at least
   * one), and hashes them in one task on libuv's thread pool (digestsOfAsync): the server's
   * main thread only moves bytes, and one task per chunk would cost it as much as the
   * hashing. Every chunk is compared with its digest before it is stored or handed to a
   * stage; the first that does not match is ChunkCorruptError naming it, after the records
   * before it are stored and before any after it. put() then need not hash again
   * (`trusted`: these very bytes were just hashed here).
   *
   * Records spanning HTTP/2 frames are assembled in one scratch buffer per request, reused
   * group after group (put() copies the bytes, into a pack block, before it resolves),
   * instead of a fresh allocation per chunk (measured: ~2 GiB of garbage per 2 GiB pushed,
   * about 1.5 s of GC on the server). A record inside one frame is a view of it.
   */
  async function upload(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    let scratch = Buffer.allocUnsafeSlow(0);
    const fail = (message: string) => new InvalidArgumentError(message);
    await receiveRecords(req, res, 'chunk batch', (queue) => {
      const group: { digest: Buffer; data: Buffer; forStage: boolean }[] = [];
      let bytes = 0;
      let used = 0; // of scratch
      for (;;) {
        let head;
        try {
          head = peekChunkRecord(queue, MAX_CHUNK_BYTES, false, fail);
        } catch (err) {
          // A malformed record: those before it are stored first, as if it had come later.
          if (group.length > 0) break;
          throw err;
        }
        if (!head) break;
        const len = head.length!;
        if (group.length > 0 && bytes + len > UPLOAD_HASH_GROUP_BYTES) break;
        // A chunk a stage waits for is assembled in a buffer of its own that the stage then
        // keeps: one copy of it instead of two (scratch, then the stage's).
        const forStage = len > 0 && stages.active && stages.waitsFor(algorithm, head.digest);
        let into: Buffer | undefined;
        if (forStage) into = stages.buffer(len);
        else if (len > 0) {
          if (scratch.length - used < len) {
            // Only the group's first record gets here with bytes in use: none are yet.
            if (used === 0) scratch = largeBuffer(Math.max(len, UPLOAD_HASH_GROUP_BYTES));
            else break;
          }
          into = scratch.subarray(used);
        }
        const data = takeChunkRecord(queue, head, into);
        if (!forStage && data.buffer === scratch.buffer) used += (len + 7) & ~7;
        group.push({ digest: head.digest, data, forStage });
        bytes += len;
      }
      if (group.length === 0) return undefined;
      return storeGroup(algorithm, group);
    });
    // Every group stored (put() copied the bytes): the next request's scratch is this one.
    recycleLargeBuffer(scratch);
  }

  /** Hashes a group of received chunk records at once, then stores them in order (see upload). */
  async function storeGroup(algorithm: DigestAlgorithm, group: readonly { digest: Buffer; data: Buffer; forStage: boolean }[]): Promise<boolean[]> {
    const digests = await digestsOfAsync(algorithm, group.map((r) => r.data));
    const outcomes: boolean[] = [];
    for (let i = 0; i < group.length; i++) {
      const { digest, data, forStage } = group[i]!;
      if (!digestEquals(digests[i]!, digest)) throw new ChunkCorruptError(digestToHex(digest), 'the bytes to store do not hash to it');
      // Not stored yet (put resolves false for a chunk already present: not read again).
      outcomes.push(await handOn(algorithm, digest, data, forStage, ctx.store.put({ algorithm, digest }, data, { signal: ctx.signal, trusted: true })));
    }
    return outcomes;
  }

  /**
   * Passes a chunk a put() just stored to the stages waiting for it (`owned`: `data` is
   * not reused after, so they may keep it; a buffer of stages.buffer() is released here
   * once handed on). Only a chunk this put stored was re-hashed: one already present is
   * not (put returns false without reading it), and stages waiting for it find it in the
   * store.
   */
  async function handOn(algorithm: DigestAlgorithm, digest: Uint8Array, data: Buffer, owned: boolean, put: Promise<boolean>): Promise<boolean> {
    try {
      let stored = await put;
      // Uploaded though present: clients send what chunks/missing said is absent, so this is
      // a concurrent push, or a client putting back a chunk it received damaged from here
      // (pull --fallback; fetches are served unverified). The stored copy is read verified,
      // which sets a damaged one aside (ChunkStore.setAside), and then replaced by this one,
      // durably before the answer: no commit may follow to flush it (a pull heals, not a push).
      if (!stored && (await damagedHere({ algorithm, digest }))) {
        stored = await ctx.store.put({ algorithm, digest }, data, { signal: ctx.signal });
        await ctx.store.flush({ signal: ctx.signal });
      }
      if (stored && stages.active) stages.arrived(algorithm, digest, data, owned);
      return stored;
    } finally {
      if (owned) stages.release(data);
    }
  }

  /** Whether the stored copy of `id` is damaged (and now set aside) or gone. */
  async function damagedHere(id: ChunkId): Promise<boolean> {
    try {
      await ctx.store.get(id, { signal: ctx.signal });
      return false;
    } catch (err) {
      if (isXferError(err, 'XFER_CHUNK_CORRUPT') || isXferError(err, 'XFER_CHUNK_MISSING')) return true;
      throw err;
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
        base = zeroBase(algorithm, digest, length + shifts[1]) ?? (await ctx.store.get({ algorithm, digest }, { signal: ctx.signal }));
      } catch (err) {
        // A damaged base is no base: answered as missing (the client sends the chunk whole),
        // since the answer has started and a status can no longer say so.
        if (isXferError(err, 'XFER_CHUNK_CORRUPT')) log.warn({ code: err.code, error: err.message }, 'a delta base in the store is damaged');
        else if (!isXferError(err, 'XFER_CHUNK_MISSING')) throw err;
      }
      // Streamed record by record: at most one record's sums are held at a time.
      const ok = res.write(base ? Buffer.concat([Buffer.from([1]), baseBlockSums(algorithm, base, shifts, length)]) : Buffer.from([0]));
      if (base) windowViews.release(base); // summed: a held file's read-ahead window may be read into again
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
        const baseDigest = header.subarray(DIGEST_BYTES, 2 * DIGEST_BYTES);
        const base = zeroBase(algorithm, baseDigest, length + shifts[1]) ?? (await ctx.store.get({ algorithm, digest: baseDigest }, { signal: ctx.signal }));
        const data = applyDelta(base, shifts, length, map, literals); // a new buffer
        windowViews.release(base); // a held file's chunk: its read-ahead window may be read into again
        // put() re-hashes (not trusted): a wrong rebuild is ChunkCorruptError naming the digest.
        return [await handOn(algorithm, digest, data, true, ctx.store.put({ algorithm, digest }, data, { signal: ctx.signal }))];
      })();
    });
  }

  /**
   * Streams the chunks asked for, reading ahead of the writer at most FETCH_READ_AHEAD
   * chunks and FETCH_READ_AHEAD_BYTES, so a client that reads slowly, or not at all, holds
   * a bounded part of the server's memory. Sizes come before reading from a store that can
   * tell them (ChunkSizes: the local store's index); for another store a chunk counts from
   * the moment its bytes arrive.
   */
  async function fetchChunks(req: Http2ServerRequest, res: Http2ServerResponse, algorithm: DigestAlgorithm): Promise<void> {
    const ids = decodeDigests(await readBody(req, MAX_QUERY_DIGESTS * DIGEST_BYTES), algorithm, MAX_QUERY_DIGESTS);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const sized = hasChunkSizes(ctx.store) ? ctx.store : undefined;
    const reads: (Promise<Buffer | undefined> | undefined)[] = [];
    const lengths: number[] = [];
    let started = 0;
    let written = 0;
    let aheadBytes = 0;
    /** Sizes of the chunks from `from` on, FETCH_READ_AHEAD at a time (one wait, not one per chunk). */
    const lookUp = async (from: number) => {
      const locations = await Promise.all(ids.slice(from, from + FETCH_READ_AHEAD).map((id) => sized?.chunkLocation(id)));
      locations.forEach((l, k) => (lengths[from + k] = l?.length ?? 0));
    };
    const fill = async () => {
      while (started < ids.length && started - written < FETCH_READ_AHEAD) {
        const i = started;
        if (lengths[i] === undefined) await lookUp(i);
        const length = lengths[i]!;
        if (i > written && aheadBytes + length > FETCH_READ_AHEAD_BYTES) return;
        started++;
        aheadBytes += length;
        // Unverified: the client re-hashes every chunk it receives (the bytes cross a trust
        // boundary there), so a second hash here would only double the CPU per byte served.
        const read = ctx.store.get(ids[i]!, { signal: ctx.signal, unverified: true }).then((data) => {
          if (!sized) {
            lengths[i] = data.length; // counted once known (see above)
            aheadBytes += data.length;
          }
          return data;
        }, (err) => {
          // A chunk set aside as damaged (ChunkStore.setAside) is answered absent, as a missing one.
          if (isXferError(err, 'XFER_CHUNK_MISSING') || isXferError(err, 'XFER_CHUNK_CORRUPT')) return undefined;
          throw err;
        });
        read.catch(() => {});
        reads[i] = read;
      }
    };
    // One fill at a time; the writer does not wait for it unless its next chunk is not started.
    let filling: Promise<void> | undefined;
    const readAhead = () => (filling ??= fill().finally(() => (filling = undefined)));
    while (written < ids.length) {
      const i = written;
      while (!reads[i]) await readAhead(); // the chunk next to write is always started (i === written)
      const data = await reads[i]!;
      reads[i] = undefined;
      aheadBytes -= lengths[i]!;
      written++;
      readAhead().catch(() => {}); // a failure shows again where the writer waits for it
      const head = chunkRecordHead(ids[i]!.digest, data?.length);
      // Two writes, not a concatenation: a copy of every chunk served cost ~0.4 s of CPU
      // and 2 GiB of garbage per 2 GiB pulled. The stream frames both the same way.
      let ok = res.write(head);
      // A held file's chunk is a view of a read-ahead window: given back once written out
      // (the write's callback: the stream is done with the bytes), so the window is read
      // into again instead of a fresh buffer. Not called back if the stream is destroyed
      // first: the window is then collected with the view.
      if (data) ok = res.write(data, () => windowViews.release(data));
      if (!ok) await drained(res, sendTimeoutMs);
    }
    res.end();
  }
}

/**
 * A delta's base that is a zero chunk: zeros of its length (shifts[1] is the base's length
 * less the chunk's, protocol/delta.ts), which no store holds (chunker/zero.ts) and both
 * sides know. Undefined for any other base.
 */
function zeroBase(algorithm: DigestAlgorithm, digest: Uint8Array, baseLength: number): Buffer | undefined {
  return isZeroChunk(algorithm, baseLength, digest) ? zeroBytes(baseLength) : undefined;
}
