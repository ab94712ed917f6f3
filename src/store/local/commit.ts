/**
 * The local store's put/commit pipeline. A put is "pending" until a commit writes it to
 * disk, fdatasyncs the pack and appends its index record (../pack.ts); the store's has/get
 * see pending chunks at once. A commit starts in the background every COMMIT_BATCH_BYTES
 * (or COMMIT_BATCH_CHUNKS, or MAX_UNCOMMITTED_AGE_MS) put; flush commits the rest and
 * waits. A crash loses pending chunks only (unindexed pack bytes are ignored), so has()
 * can trust the index: a push never skips a chunk that is not really stored.
 */
import { untilAborted } from '../../core/abort.js';
import { IoError } from '../../core/errors.js';
import { digestKey, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { MiB } from '../../core/sizes.js';
import type { PackEntry } from '../pack.js';
import type { PackWriter } from './pack-file.js';
import type { PackIndex } from './pack-index.js';
import type { PackWriterPool } from './writer-pool.js';

/**
 * A commit starts in the background once this many bytes were put since the last one, so
 * that a crash or kill loses at most about this much (a resumed push sends it again).
 * With O_DIRECT the data is on disk already; a commit adds two fdatasyncs.
 */
export const COMMIT_BATCH_BYTES = 256 * MiB;
/** ...or this many chunks... */
export const COMMIT_BATCH_CHUNKS = 16_384;
/** ...or the oldest uncommitted put is this old. */
export const MAX_UNCOMMITTED_AGE_MS = 60 * 1000;

/** A put chunk not yet committed: in `writer`'s memory or on disk, not yet indexed. */
export interface PendingChunk {
  readonly writer: PackWriter;
  /** The writer's pack number, for reads of what is on disk already. */
  readonly pack: number;
  readonly offset: number;
  readonly length: number;
}

/** The key of pending chunks: algorithm and digest bytes. */
export function pendingKey(id: ChunkId): string {
  return `${id.algorithm}:${digestKey(id.digest)}`;
}

export class CommitPipeline {
  /** Pending chunks by pendingKey. */
  private readonly pending = new Map<string, PendingChunk>();
  /** Put since the last commit took its batch: what makes the next one due. */
  private batchBytes = 0;
  private batchChunks = 0;
  private batchStartedMs = 0;
  /** The last commit asked for; commits run one at a time, in order. */
  private lastCommit: Promise<void> = Promise.resolve();
  /** A commit asked for that has not taken its batch yet: later callers join it. */
  private queuedCommit: Promise<void> | undefined;
  /** The first error of a background commit, reported by the next flush. */
  private backgroundFailure: unknown;

  constructor(
    /** The store's directory, as errors name it. */
    private readonly dir: string,
    private readonly writers: PackWriterPool,
    private readonly packs: PackIndex,
  ) {}

  /** The pending chunk `id`, if it is one. */
  find(id: ChunkId): PendingChunk | undefined {
    return this.pending.get(pendingKey(id));
  }

  has(id: ChunkId): boolean {
    // Most asks come with nothing pending (a verify, a push's has() of a settled store): no key made.
    return this.pending.size > 0 && this.pending.has(pendingKey(id));
  }

  /** Whether anything is left to commit or to report. */
  get unsettled(): boolean {
    return this.pending.size > 0 || this.backgroundFailure !== undefined;
  }

  /** The pending chunks' ids (a copy: the caller may yield between them). */
  ids(algorithms: readonly DigestAlgorithm[]): { key: string; id: ChunkId }[] {
    const out: { key: string; id: ChunkId }[] = [];
    for (const [key] of [...this.pending]) {
      const alg = key.slice(0, key.indexOf(':')) as DigestAlgorithm;
      if (!algorithms.includes(alg)) continue;
      out.push({ key, id: { algorithm: alg, digest: Buffer.from(key.slice(alg.length + 1), 'latin1') } });
    }
    return out;
  }

  /**
   * Appends a chunk (checked by the caller: valid, not stored) to a writer with room and
   * makes it pending. False if another put of it got in first while this one waited.
   */
  async put(id: ChunkId, data: Uint8Array, signal: AbortSignal | undefined): Promise<boolean> {
    const key = pendingKey(id);
    // Each wait for a writer may let another put of the same chunk in first.
    const appended = await this.writers.withRoom(signal, () => !this.pending.has(key), (writer) => {
      const offset = writer.append(id.algorithm, id.digest, data);
      this.pending.set(key, { writer, pack: this.packs.packNumber(writer.name), offset, length: data.length });
      if (this.batchChunks === 0) this.batchStartedMs = Date.now();
      this.batchChunks += 1;
      this.batchBytes += data.length;
      if (this.queuedCommit === undefined && this.commitIsDue()) this.commitInBackground();
      return true;
    });
    return appended === true;
  }

  /**
   * Commits every pending chunk. An abort rejects at once; the commit itself runs to its
   * end, as other callers may be waiting for it too.
   */
  async flush(signal: AbortSignal | undefined): Promise<void> {
    await untilAborted(this.commit(), signal);
    // Whatever a background commit failed on was retried just now, except lost chunks;
    // either way the caller must not take every put for durable.
    const failure = this.backgroundFailure;
    if (failure !== undefined) {
      this.backgroundFailure = undefined;
      throw failure;
    }
  }

  /** Waits for the last commit to end (whatever its outcome), then closes the writers. */
  async close(): Promise<void> {
    await this.lastCommit.catch(() => {});
    await this.writers.closeAll();
  }

  private commitIsDue(): boolean {
    return (
      this.batchBytes >= COMMIT_BATCH_BYTES ||
      this.batchChunks >= COMMIT_BATCH_CHUNKS ||
      Date.now() - this.batchStartedMs >= MAX_UNCOMMITTED_AGE_MS
    );
  }

  private commitInBackground(): void {
    this.commit().catch((err: unknown) => {
      this.backgroundFailure ??= err;
    });
  }

  /** Resolves once every chunk pending now is committed (see commitPending). */
  private commit(): Promise<void> {
    if (this.queuedCommit !== undefined) return this.queuedCommit;
    const run = this.lastCommit
      .catch(() => undefined) // the previous caller got that error
      .then(() => {
        this.queuedCommit = undefined;
        return this.commitPending();
      });
    this.queuedCommit = run;
    this.lastCommit = run;
    return run;
  }

  /**
   * Commits the chunks of every writer that has any; a full writer, once committed, is
   * closed. A writer that fails is dropped with its pending chunks (has() then reports
   * them missing and they are put again); the error names what was lost.
   */
  private async commitPending(): Promise<void> {
    this.batchBytes = 0;
    this.batchChunks = 0;
    let failure: unknown;
    for (const w of this.writers.withChunks()) {
      if (w.uncommittedEntries === 0 && !this.writers.isCurrent(w)) {
        await this.writers.finish(w);
        continue;
      }
      if (w.uncommittedEntries === 0) continue;
      let entries: PackEntry[];
      try {
        entries = await w.commit();
      } catch (err) {
        const lost = this.dropWriter(w);
        failure ??= new IoError(`${lost} chunks were lost before ${this.dir} made them durable: ${(err as Error).message}`, { cause: err });
        continue;
      }
      const pack = this.packs.packNumber(w.name);
      for (const e of entries) {
        this.packs.add(e.algorithm, e.digest, pack, e.offset, e.length);
        const key = `${e.algorithm}:${digestKey(e.digest)}`;
        if (this.pending.get(key)?.writer === w) this.pending.delete(key);
      }
      if (!this.writers.isCurrent(w) && w.uncommittedEntries === 0) await this.writers.finish(w);
    }
    if (failure !== undefined) throw failure;
  }

  /** Forgets a failed writer and its pending chunks; returns how many were lost. */
  private dropWriter(w: PackWriter): number {
    let lost = 0;
    for (const [key, p] of this.pending) {
      if (p.writer !== w) continue;
      this.pending.delete(key);
      lost++;
    }
    this.writers.drop(w);
    return lost;
  }
}
