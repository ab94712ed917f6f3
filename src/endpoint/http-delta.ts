/**
 * Delta uploads, the push side (docs/PROTOCOL.md "Delta uploads", protocol/delta.ts): a
 * chunk that replaces an old chunk at its place in the target's previous version goes as
 * the blocks that differ from it, when that saves bytes. A decorator of the HttpStore a
 * push writes to: the store itself only stores chunks.
 */
import { isZeroChunk, zeroBytes } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import { Slots } from '../core/window.js';
import { ChunkCorruptError, ProtocolError, XferError } from '../core/errors.js';
import { DIGEST_BYTES, digestToHex, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { digestOf } from '../hash/digest.js';
import type { BaseChunk, BaseIndex } from '../manifest/bases.js';
import { baseBlockSums, DELTA_BLOCK_BYTES, encodeDelta, SUMS_REQUEST_RECORD_BYTES, sumsBytes, type Shifts } from '../protocol/delta.js';
import type { HttpStore } from '../store/http/store.js';
import type { ChunkStore, GetOptions, OpOptions, PutOptions } from '../store/store.js';

/** Chunks smaller than this are always sent whole (a delta's sums and header would not pay). */
const MIN_DELTA_CHUNK_BYTES = 8 * 1024;
/** A delta record must be at most this fraction of its chunk's bytes, or the chunk goes whole. */
const DELTA_WORTH_RATIO = 0.75;
/** Delta candidates per sums request, at most. */
const DELTA_BATCH_CHUNKS = 256;

/** A chunk to send as a delta against `base`, compared at two alignments (protocol/delta.ts). */
interface DeltaCandidate {
  readonly id: ChunkId;
  /** Our own copy: put() has returned. */
  readonly data: Buffer;
  readonly base: BaseChunk;
  readonly shifts: Shifts;
}

/**
 * A ChunkStore that sends chunks through `store`, those with a base (useBases, and a
 * PutOptions.placement) as deltas. Its contract is the store's: put() queues (a delta
 * candidate is pending until its batch is answered: has() sees it, get() waits for it),
 * flush() resolves once every delta and every whole chunk was accepted by the server. If
 * the server refuses a sums or delta request (a base gone, say), those chunks go whole;
 * only a transport or protocol failure fails the upload, and the next put() or flush()
 * rejects with it.
 */
export class DeltaUploads implements ChunkStore {
  private bases: BaseIndex | undefined;
  private deltas: DeltaCandidate[] = [];
  private deltaBytes = 0;
  private putTimer: NodeJS.Immediate | undefined;
  /** Candidates queued or in flight, by key. */
  private readonly pending = new Map<string, Promise<void> | undefined>();
  private readonly runs = new Set<Promise<void>>();
  /** Bounds the delta batches in flight, as the store bounds its uploads (uploadsInFlight): put() waits for room. */
  private readonly runSlots = new Slots(() => this.store.uploadsInFlight);
  private failure: { error: unknown } | undefined;
  private deltaChunks = 0;
  private deltaSavedBytes = 0;

  constructor(readonly store: HttpStore) {}

  /**
   * Bases for delta uploads: the chunks of the target's previous version (BaseIndex). Only
   * used if the server speaks delta uploads with the same block size.
   */
  useBases(bases: BaseIndex | undefined): void {
    this.bases = this.store.info.deltaBlockBytes === DELTA_BLOCK_BYTES ? bases : undefined;
  }

  /** Chunks sent as deltas so far, and the chunk bytes that did not travel thanks to them. */
  deltaStats(): { chunks: number; savedBytes: number } {
    return { chunks: this.deltaChunks, savedBytes: this.deltaSavedBytes };
  }

  async has(ids: readonly ChunkId[], options: OpOptions = {}): Promise<boolean[]> {
    const present = await this.store.has(ids, options);
    return this.pending.size === 0 ? present : present.map((p, i) => p || this.pending.has(keyOf(ids[i]!)));
  }

  async get(id: ChunkId, options: GetOptions = {}): Promise<Buffer> {
    if (this.pending.has(keyOf(id))) {
      this.sendDeltas(options.signal);
      await this.pending.get(keyOf(id));
    }
    return this.store.get(id, options);
  }

  async put(id: ChunkId, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    this.throwFailure();
    const base = this.baseFor(id, data.length, options.placement);
    if (!base) return this.store.put(id, data, options);
    if (!options.trusted && !digestOf(id.algorithm, data).equals(id.digest)) {
      throw new ChunkCorruptError(digestToHex(id.digest), 'its bytes hash to another digest');
    }
    const key = keyOf(id);
    if (this.pending.has(key)) return false;
    this.pending.set(key, undefined);
    // A copy: the caller's bytes may be a view of a scan buffer it reuses. Not Buffer.from
    // (a zero-filled Uint8Array then a copy: 71 ms for 200 deltas of a push, profiled).
    const copy = Buffer.allocUnsafe(data.length);
    copy.set(data);
    this.deltas.push({ id: { algorithm: id.algorithm, digest: Buffer.from(id.digest) }, data: copy, ...base });
    this.deltaBytes += data.length;
    if (this.deltas.length >= DELTA_BATCH_CHUNKS || this.deltaBytes >= this.store.batchBytes) this.sendDeltas(options.signal);
    else this.putTimer ??= setImmediate(() => this.sendDeltas(options.signal));
    await this.runSlots.untilRoom();
    this.throwFailure();
    return true;
  }

  async flush(options: OpOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    this.sendDeltas(options.signal);
    while (this.runs.size) await Promise.all([...this.runs]);
    this.throwFailure();
    await this.store.flush(options);
  }

  async close(): Promise<void> {
    if (!this.store.client.aborted) await this.flush().catch(() => {});
    if (this.putTimer) clearImmediate(this.putTimer);
    await this.store.close();
  }

  /** Whether a put of `id` at `placement` would go as a delta against a chunk of the previous version. */
  replaces(id: ChunkId, length: number, placement: PutOptions['placement']): boolean {
    return this.baseFor(id, length, placement) !== undefined;
  }

  private throwFailure(): void {
    if (this.failure) throw this.failure.error;
  }

  private baseFor(id: ChunkId, length: number, placement: PutOptions['placement']): { base: BaseChunk; shifts: Shifts } | undefined {
    if (!this.bases || !placement || id.algorithm !== this.bases.algorithm || length < MIN_DELTA_CHUNK_BYTES) return undefined;
    const base = this.bases.find(placement.path, placement.offset);
    if (!base || Buffer.compare(base.digest, id.digest) === 0) return undefined;
    // Same file offset, and the chunks' ends aligned (protocol/delta.ts).
    const shifts = [placement.offset - base.start, base.length - length] as const;
    return Math.abs(shifts[0]) > this.store.info.maxChunkBytes ? undefined : { base, shifts };
  }

  private sendDeltas(signal: AbortSignal | undefined): void {
    if (this.putTimer) clearImmediate(this.putTimer);
    this.putTimer = undefined;
    const list = this.deltas;
    if (list.length === 0) return;
    this.deltas = [];
    this.deltaBytes = 0;
    const run = this.runDeltas(list, signal).then(
      () => undefined,
      (error: unknown) => {
        this.failure ??= { error };
      },
    );
    for (const c of list) this.pending.set(keyOf(c.id), run);
    this.runs.add(run);
    this.runSlots.admit();
    void run.finally(() => {
      this.runs.delete(run);
      this.runSlots.release();
      for (const c of list) this.pending.delete(keyOf(c.id));
    });
  }

  /**
   * Asks for the bases' block sums, sends the chunks that are worth it as delta records and
   * the rest whole (through the store, whose flush the caller awaits).
   */
  private async runDeltas(list: DeltaCandidate[], signal: AbortSignal | undefined): Promise<void> {
    const client = this.store.client;
    const byAlgorithm = new Map<DigestAlgorithm, DeltaCandidate[]>();
    for (const c of list) {
      const group = byAlgorithm.get(c.id.algorithm);
      if (group) group.push(c);
      else byAlgorithm.set(c.id.algorithm, [c]);
    }
    const whole: DeltaCandidate[] = [];
    for (const [algorithm, all] of byAlgorithm) {
      // A zero chunk is in no store (chunker/zero.ts), but both sides know its bytes: the
      // sums of a zero base are made here (the server takes it as zeros, routes/chunks.ts),
      // so an edit inside an image's empty space goes as its changed blocks, unasked.
      const zeroBased = new Set(all.filter((c) => isZeroChunk(algorithm, c.base.length, c.base.digest)));
      const asked = all.length - zeroBased.size;
      const cands = [...all.filter((c) => !zeroBased.has(c)), ...zeroBased];
      const ask = Buffer.alloc(asked * SUMS_REQUEST_RECORD_BYTES);
      cands.slice(0, asked).forEach((c, i) => {
        const o = i * SUMS_REQUEST_RECORD_BYTES;
        ask.set(c.base.digest, o);
        ask.writeInt32LE(c.shifts[0], o + DIGEST_BYTES);
        ask.writeInt32LE(c.shifts[1], o + DIGEST_BYTES + 4);
        ask.writeUInt32LE(c.data.length, o + DIGEST_BYTES + 8);
      });
      let sums: Buffer;
      try {
        const answered = asked > 0 ? await client.blockSums(algorithm, ask, signal) : Buffer.alloc(0);
        const local = cands.slice(asked).map((c) => Buffer.concat([Buffer.from([1]), baseBlockSums(algorithm, zeroBytes(c.base.length), c.shifts, c.data.length)]));
        sums = local.length > 0 ? Buffer.concat([answered, ...local]) : answered;
      } catch (err) {
        if (!refused(err)) throw err;
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
        await client.uploadDeltas(algorithm, Buffer.concat(records), signal);
        this.deltaChunks += sent.length;
        this.deltaSavedBytes += saved;
      } catch (err) {
        if (!refused(err)) throw err;
        whole.push(...sent); // those already stored are reported present, not stored twice
      }
    }
    for (const c of whole) await this.store.put(c.id, c.data, { trusted: true, signal });
  }
}

/** The server said no to a sums or delta request (an XferError it described): the chunks then go whole. */
function refused(err: unknown): boolean {
  return err instanceof XferError && err.code !== 'XFER_PROTOCOL' && err.code !== 'XFER_ABORTED';
}

function keyOf(id: ChunkId): string {
  return id.algorithm + Buffer.from(id.digest.buffer, id.digest.byteOffset, id.digest.byteLength).toString('latin1');
}
