/**
 * Early rebuilds ("stages") of pushed files, while their chunks are still arriving.
 *
 * Without a stage, the server rebuilds a pushed file only once its manifest is committed:
 * after the whole upload, reading every new chunk back from the packs it was just written
 * to. A client pushing one file opens a stage first (POST /v1/stage/<path>) and streams the
 * file's chunk list in scan order while it uploads; the server rebuilds the file in a
 * staging copy as the list comes, taking each new chunk from the upload that brings it
 * (still in memory) and the others from the old target in place or the store.
 *
 * A stage never makes anything visible by itself. It ends verified against the whole-file
 * digest the client sent at the end of the list, then waits for the manifest commit of the
 * same name: a manifest with that digest, size and entry gets the staged file swapped in
 * (after the usual checks, flush and manifest store); anything else, a failed stage or a
 * stage that is not there falls back to the ordinary rebuild. A stage whose client goes
 * away (stream reset), or whose commit does not come within STAGE_HANDOVER_MS, is
 * discarded with its staging copy.
 */
import { setMaxListeners } from 'node:events';
import { DEFAULT_CHUNKER } from '../chunker/params.js';
import { untilAborted } from '../core/abort.js';
import { AbortedError, InvalidArgumentError, isXferError, TimeoutError } from '../core/errors.js';
import { chunkerSpecEquals, DIGEST_BYTES, digestKey, type ChunkerSpec, type ChunkId, type DigestAlgorithm } from '../core/ids.js';
import { FORMAT_VERSION } from '../manifest/format.js';
import { openManifestBody, type ManifestReader } from '../manifest/reader.js';
import type { ChunkRecord, EntryMeta, ManifestEvent, ManifestHeader } from '../manifest/types.js';
import { reconstruct, type PreviousFile, type PullResult } from '../reconstruct/reconstruct.js';
import { lenders, type Lender } from '../reconstruct/recent.js';
import { windowViews } from '../io/direct.js';
import { STAGE_END_BYTES, STAGE_RECORD_BYTES } from '../protocol/stage-format.js';
import type { ChunkStore, GetOptions, OpOptions, PutOptions } from '../store/store.js';
import { ArrivalSlabs } from './arrivals.js';
import { MAX_CHUNK_BYTES, SERVER_REBUILD_INFLIGHT_BYTES, SERVER_RECENT_CHUNK_BYTES, STAGE_IDLE_TIMEOUT_MS } from './limits.js';

/** How long a finished stage waits for its manifest commit before it is discarded. */
export const STAGE_HANDOVER_MS = 60_000;
/**
 * Records a stage holds back while its list repeats the committed one (see
 * deferWhileUnchanged): about 100 bytes each, the first 16 GiB of a file at the default
 * chunk size. Beyond, it builds.
 */
export const STAGE_HELD_RECORDS_MAX = 1 << 18;
/** Records handed to the rebuild per event. */
const STAGE_BATCH_RECORDS = 1024;

/** What the commit of a manifest hands a matching stage: run before the swap, given the staged copy's path. */
export type BeforeSwap = (staged?: string) => Promise<void>;

interface StageCommon {
  readonly name: string;
  readonly algorithm: DigestAlgorithm;
  /** Where the file or tree is materialized (`<root>/files/<name>`). */
  readonly target: string;
  /** The server's `<root>/files`: the target is reached without following symlinks (ReconstructOptions.confineTo). */
  readonly confineTo?: string;
  /** The digest of what is committed at the target now, if anything. */
  readonly targetDigest?: Uint8Array;
}

/**
 * A file's stage reads a chunk list (protocol/stage-format.ts); a tree's reads its manifest's
 * body as the client writes it, and links the committed files it repeats unchanged.
 */
export type StageSpec =
  | (StageCommon & { readonly kind: 'file'; readonly meta: EntryMeta })
  | (StageCommon & { readonly kind: 'tree'; readonly chunker: ChunkerSpec; readonly previousFiles?: ReadonlyMap<string, PreviousFile> });

/**
 * The stages in progress (one per name) and the chunks they wait for. Uploads report
 * every chunk they store through arrived(); a stage waiting for it gets it, held for it
 * (see server/arrivals.ts: the stage's rebuild releases it once written and hashed).
 */
export class StageHub {
  private readonly stages = new Map<string, Stage>();
  private readonly waiting = new Map<string, Set<(data: Buffer) => void>>();

  constructor(
    private readonly store: ChunkStore,
    /** See STAGE_HELD_RECORDS_MAX (tests make it small). */
    private readonly heldRecordsMax = STAGE_HELD_RECORDS_MAX,
    /** See STAGE_IDLE_TIMEOUT_MS; 0: none. */
    private readonly idleTimeoutMs = STAGE_IDLE_TIMEOUT_MS,
    /**
     * The buffers arrived chunks are kept in, reused once released: one allocation per
     * chunk cost GC time, and fresh slabs page faults.
     */
    readonly arrivals = new ArrivalSlabs(),
  ) {
    this.lender = lenders(arrivals, windowViews);
  }

  /** What lends the chunks a stage's rebuild gets: arrivals, and held files' read-ahead windows. */
  private readonly lender: Lender;

  /** Whether any stage waits for chunks (uploads skip the lookup otherwise). */
  get active(): boolean {
    return this.waiting.size > 0;
  }

  /** Whether a stage waits for this chunk now (an upload may then assemble it in buffer()). */
  waitsFor(algorithm: DigestAlgorithm, digest: Uint8Array): boolean {
    return this.waiting.has(waitKey(algorithm, digest));
  }

  /**
   * A buffer for a chunk that stages will keep (see arrived, `owned`), held once by the
   * caller, who releases it (release()) once done with it, after arrived().
   */
  buffer(bytes: number): Buffer {
    return this.arrivals.take(bytes);
  }

  /** The caller of buffer() is done with it. */
  release(data: Buffer): void {
    this.arrivals.release(data);
  }

  /**
   * A put() just stored this chunk (so it was re-hashed): hand it to the stages waiting for
   * it. Chunks that were already stored are not reported; waiters find those in the store.
   * The stages keep `data` if `owned` (the caller does not write into it again: a buffer
   * of buffer(), which each waiter now holds too), or else a copy.
   */
  arrived(algorithm: DigestAlgorithm, digest: Uint8Array, data: Buffer, owned: boolean): void {
    const key = waitKey(algorithm, digest);
    const waiters = this.waiting.get(key);
    if (!waiters) return;
    this.waiting.delete(key);
    let kept = data;
    if (!owned) {
      kept = this.arrivals.take(data.length);
      kept.set(data);
    }
    for (const w of waiters) {
      this.arrivals.hold(kept);
      w(kept);
    }
    if (!owned) this.arrivals.release(kept);
  }

  /**
   * Starts a stage for `spec` that reads its chunk list from `body`, which the caller
   * bounds (server/body.ts). A stage already running under the name (an earlier push of
   * the same target) is discarded.
   */
  begin(spec: StageSpec, body: AsyncIterable<Buffer>, signal: AbortSignal, previous?: ManifestReader): Stage {
    this.stages.get(spec.name)?.abort(new AbortedError('a newer push of the same target started'));
    const stage = new Stage(spec, signal, this.heldRecordsMax, () => {
      if (this.stages.get(spec.name) === stage) this.stages.delete(spec.name);
    }, this.idleTimeoutMs);
    this.stages.set(spec.name, stage);
    stage.run(body, new WaitingStore(this.store, this, stage.signal, () => stage.progress()), previous, this.lender);
    return stage;
  }

  /** Takes the stage of `name` out for its commit, if there is one. */
  take(name: string): Stage | undefined {
    const s = this.stages.get(name);
    this.stages.delete(name);
    return s;
  }

  /** Registers a waiter, which holds what it is given (see arrived); returns its cancel. Called by WaitingStore only. */
  wait(algorithm: DigestAlgorithm, digest: Uint8Array, deliver: (data: Buffer) => void): () => void {
    const key = waitKey(algorithm, digest);
    let set = this.waiting.get(key);
    if (!set) this.waiting.set(key, (set = new Set()));
    set.add(deliver);
    return () => {
      set!.delete(deliver);
      if (set!.size === 0 && this.waiting.get(key) === set) this.waiting.delete(key);
    };
  }
}

function waitKey(algorithm: DigestAlgorithm, digest: Uint8Array): string {
  return `${algorithm}${digestKey(digest)}`;
}

/** One early rebuild. */
export class Stage {
  private readonly controller = new AbortController();
  /** Size and digest the client announced at the end of the list, once it has. */
  private announced: { size: number; digest: Buffer } | undefined;
  private handoverTimer: NodeJS.Timeout | undefined;
  /** Fires after idleTimeoutMs without progress(); stopped for the handover and at the end. */
  private idleTimer: NodeJS.Timeout | undefined;
  private deliverSwap!: (run: BeforeSwap) => void;
  private listEnded!: () => void;
  /** Resolves once the whole chunk list has been read (the end record parsed). */
  private readonly listEnd = new Promise<void>((resolve) => (this.listEnded = resolve));
  private readonly swap = new Promise<BeforeSwap>((resolve) => (this.deliverSwap = resolve));
  /** The rebuild's outcome: settles after the swap, or with the reason it was discarded. */
  result!: Promise<PullResult>;

  constructor(
    readonly spec: StageSpec,
    serverSignal: AbortSignal,
    private readonly heldRecordsMax: number,
    private readonly done: () => void,
    private readonly idleTimeoutMs = STAGE_IDLE_TIMEOUT_MS,
  ) {
    // Every chunk the rebuild waits for listens for the abort (up to its fetch window).
    setMaxListeners(0, this.controller.signal);
    const onServerAbort = () => this.abort(new AbortedError('the server is stopping'));
    serverSignal.addEventListener('abort', onServerAbort, { once: true });
    this.controller.signal.addEventListener('abort', () => serverSignal.removeEventListener('abort', onServerAbort), { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  abort(reason: Error): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** The stage moved on (list bytes read, a chunk received or read): restarts its idle timer. */
  progress(): void {
    this.idleTimer?.refresh();
  }

  private stopIdleTimer(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  /** `lender`: what lends the chunks `store` returns (the hub's arrivals). */
  run(listBody: AsyncIterable<Buffer>, store: ChunkStore, previous?: ManifestReader, lender?: Lender): void {
    const signal = this.controller.signal;
    const spec = this.spec;
    if (this.idleTimeoutMs > 0) {
      const seconds = this.idleTimeoutMs / 1000;
      this.idleTimer = setTimeout(() => this.abort(new TimeoutError(`the stage made no progress for ${seconds} s (a chunk it waits for never came?)`)), this.idleTimeoutMs);
      this.idleTimer.unref();
    }
    const body = this.progressing(listBody);
    const header: ManifestHeader = {
      formatVersion: FORMAT_VERSION,
      kind: spec.kind,
      digestAlgorithm: spec.algorithm,
      // Used for seeds only, and a stage has none; a tree's body is parsed with its own.
      chunker: spec.kind === 'tree' ? spec.chunker : DEFAULT_CHUNKER,
      totalBytes: spec.kind === 'file' ? Math.max(0, spec.meta.size) : 0,
      entryCount: spec.kind === 'file' ? 1 : 0,
      chunkCount: 0,
      digest: Buffer.alloc(DIGEST_BYTES),
    };
    const reader: ManifestReader = {
      header,
      events: () => this.abortOnFailure(spec.kind === 'file' ? this.deferWhileUnchanged(this.events(body, spec.meta), previous) : this.treeEvents(body, header)),
      close: async () => {},
    };
    const rebuilt = reconstruct(reader, store, spec.target, {
      signal,
      confineTo: spec.confineTo,
      // The server's files: see ReconstructOptions.clearSetId; its copy mirrors the manifest.
      clearSetId: true,
      // A trust boundary: no security.* or trusted.* xattrs, no device nodes (reconstruct/attributes.ts).
      attributes: { untrusted: true },
      deleteExtra: true,
      reuseTarget: false,
      resumable: false,
      targetDigest: spec.targetDigest,
      previousFiles: spec.kind === 'tree' ? spec.previousFiles : undefined,
      assumeChanged: true,
      // Chunks from the store were verified when they arrived and those from uploads just
      // now; the whole-file digest checks what was read back (as in the ordinary rebuild).
      verifyStoreChunks: false,
      lender,
      recentChunkBytes: SERVER_RECENT_CHUNK_BYTES,
      inFlightBytes: SERVER_REBUILD_INFLIGHT_BYTES,
      beforeCommit: async (staged) => {
        this.stopIdleTimer(); // from here on, STAGE_HANDOVER_MS bounds the wait
        this.handoverTimer = setTimeout(() => this.abort(new AbortedError('no manifest commit came for the staged copy')), STAGE_HANDOVER_MS);
        const run = await untilAborted(this.swap, signal);
        clearTimeout(this.handoverTimer);
        await run(staged);
      },
    });
    // An abort surfaces inside the rebuild as a plain AbortedError; a stage aborted for a
    // reason of its own (a timeout, a malformed list) is answered with that reason.
    this.result = rebuilt.catch((err: unknown) => {
      const reason = signal.reason as unknown;
      if (isXferError(err, 'XFER_ABORTED') && isXferError(reason) && !isXferError(reason, 'XFER_ABORTED')) throw reason;
      throw err;
    });
    this.result.then(
      () => {
        this.stopIdleTimer();
        this.done();
      },
      () => {
        this.stopIdleTimer();
        clearTimeout(this.handoverTimer);
        this.done();
      },
    );
  }

  /**
   * Whether this stage builds exactly what a committed manifest describes. A file: the
   * header (kind, size, digest) and entry (mode, mtime) match what the stage was given. A
   * tree: the manifest's digest, which is the digest of its body, is the digest of the body
   * the stage read, so both list the same entries, chunks and attributes byte for byte.
   * Waits until the stage has read its whole list (the rebuild may lag behind the upload);
   * false if the stage fails first.
   */
  async matches(header: ManifestHeader, entry: EntryMeta | undefined): Promise<boolean> {
    const failed = this.result.then(() => false, () => false);
    if (!(await Promise.race([this.listEnd.then(() => true), failed]))) return false;
    const a = this.announced;
    const spec = this.spec;
    if (a === undefined || header.kind !== spec.kind || header.digestAlgorithm !== spec.algorithm || !a.digest.equals(header.digest)) return false;
    if (spec.kind === 'tree') return chunkerSpecEquals(header.chunker, spec.chunker);
    return header.totalBytes === a.size && entry !== undefined && entry.mode === spec.meta.mode && entry.mtimeMs === spec.meta.mtimeMs;
  }

  /** The commit's part: runs `beforeSwap` once the staged file is verified, then swaps it in. */
  commit(beforeSwap: BeforeSwap): Promise<PullResult> {
    this.deliverSwap(beforeSwap);
    return this.result;
  }

  /** The stage's body, each piece counted as progress. */
  private async *progressing(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer, void, undefined> {
    for await (const piece of body) {
      this.progress();
      yield piece;
    }
  }

  /**
   * The rebuild's events; a list that fails (malformed, cut short) aborts the stage, so
   * that the chunks it already waits for stop waiting and the stage is answered at once.
   */
  private async *abortOnFailure(events: AsyncGenerator<ManifestEvent>): AsyncGenerator<ManifestEvent, void, undefined> {
    try {
      yield* events;
    } catch (err) {
      this.abort(err instanceof Error ? err : new AbortedError(String(err)));
      throw err;
    }
  }

  /**
   * Holds the rebuild back while the list repeats the committed version's chunk list
   * (`previous`, a file manifest) record for record: a push of an unchanged file then
   * rebuilds nothing, and ends with UnchangedError; its commit keeps the target as it is
   * (the ordinary path checks it). At the first difference the held records go to the
   * rebuild, which finds them in place in the old target, and the rest follows as it comes.
   */
  private async *deferWhileUnchanged(events: AsyncGenerator<ManifestEvent>, previous: ManifestReader | undefined): AsyncGenerator<ManifestEvent, void, undefined> {
    if (!previous) return yield* events;
    const old = recordsOf(previous);
    const held: ManifestEvent[] = [];
    let heldRecords = 0;
    let same = true;
    try {
      for await (const ev of events) {
        if (same && ev.kind === 'chunks') {
          for (const r of ev.records) {
            const o = await old.next();
            if (o.done || o.value.length !== r.length || !Buffer.from(o.value.digest).equals(r.digest)) {
              same = false;
              break;
            }
          }
          // A long unchanged prefix (a big file appended to) is not held without bound.
          heldRecords += ev.records.length;
          if (heldRecords > this.heldRecordsMax) same = false;
        } else if (same && ev.kind === 'entryEnd') {
          if ((await old.next()).done) throw new UnchangedError();
          same = false;
        }
        if (same) held.push(ev);
        else {
          yield* held.splice(0);
          yield ev;
        }
      }
    } finally {
      await old.return(undefined);
    }
  }

  /**
   * A tree's manifest body, parsed and validated as a manifest's (openManifestBody), into
   * rebuild events; its digest, once the end marker is read, is what matches() compares.
   */
  private async *treeEvents(body: AsyncIterable<Buffer>, header: ManifestHeader): AsyncGenerator<ManifestEvent, void, undefined> {
    const onEnd = (digest: Buffer) => {
      this.announced = { size: 0, digest };
      this.listEnded();
    };
    const reader = await openManifestBody(body, header, onEnd, { signal: this.controller.signal });
    yield* reader.events();
  }

  /** Parses the chunk list (see STAGE_RECORD_BYTES, STAGE_END_BYTES) into rebuild events. */
  private async *events(body: AsyncIterable<Buffer>, meta: EntryMeta): AsyncGenerator<ManifestEvent, void, undefined> {
    yield { kind: 'entry', meta };
    let pending: Buffer = Buffer.alloc(0);
    let records: ChunkRecord[] = [];
    let total = 0;
    let ended = false;
    for await (const piece of body) {
      if (ended) throw new InvalidArgumentError('stage list has bytes after its end record');
      pending = pending.length ? Buffer.concat([pending, piece]) : piece;
      let at = 0;
      while (!ended && pending.length - at >= 4) {
        const length = pending.readUInt32BE(at);
        if (length === 0) {
          if (pending.length - at < STAGE_END_BYTES) break;
          const size = Number(pending.readBigUInt64BE(at + 4));
          if (size !== total) throw new InvalidArgumentError(`stage list ends with size ${size}, its chunks sum to ${total}`);
          this.announced = { size, digest: Buffer.from(pending.subarray(at + 12, at + STAGE_END_BYTES)) };
          this.listEnded();
          at += STAGE_END_BYTES;
          ended = true;
          break;
        }
        if (pending.length - at < STAGE_RECORD_BYTES) break;
        if (length > MAX_CHUNK_BYTES) throw new InvalidArgumentError(`stage list has a chunk of ${length} bytes (limit ${MAX_CHUNK_BYTES})`);
        records.push({ length, digest: Buffer.from(pending.subarray(at + 4, at + STAGE_RECORD_BYTES)) });
        total += length;
        at += STAGE_RECORD_BYTES;
        if (records.length === STAGE_BATCH_RECORDS) {
          yield { kind: 'chunks', records };
          records = [];
        }
      }
      if (ended && at < pending.length) throw new InvalidArgumentError('stage list has bytes after its end record');
      pending = pending.subarray(at);
      if (records.length) {
        yield { kind: 'chunks', records };
        records = [];
      }
    }
    if (!ended) throw new InvalidArgumentError('stage list ended without its end record');
    yield { kind: 'entryEnd', size: this.announced!.size, digest: this.announced!.digest };
  }
}

/** A stage's list is the committed version's: nothing to rebuild (see deferWhileUnchanged). */
export class UnchangedError extends AbortedError {
  constructor() {
    super('the staged file is the committed version');
  }
}

async function* recordsOf(reader: ManifestReader): AsyncGenerator<ChunkRecord, void, undefined> {
  for await (const ev of reader.events()) if (ev.kind === 'chunks') yield* ev.records;
}

/**
 * The store as a stage sees it: get() of a chunk that is not stored yet waits for the
 * upload that brings it (registered before the store is asked, so an upload landing in
 * between is not missed). Everything else goes to the store.
 */
class WaitingStore implements ChunkStore {
  /**
   * Rejections of the gets waiting for an upload, all failed by one abort listener: a
   * listener per get costs O(waiting) per add on an EventTarget (measured: 0.16 s of the
   * server's main thread per 2 GiB pushed).
   */
  private readonly waiting = new Set<(reason: unknown) => void>();

  constructor(
    private readonly store: ChunkStore,
    private readonly hub: StageHub,
    private readonly signal: AbortSignal,
    /** Called when a get() returns: the stage moved on. */
    private readonly onProgress: () => void = () => {},
  ) {
    signal.addEventListener('abort', () => {
      for (const reject of this.waiting) reject(signal.reason ?? new AbortedError());
    }, { once: true });
  }

  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    return this.store.has(ids, options);
  }

  /** The chunk, held once for the caller if it is an arrival (see StageHub.arrived). */
  async get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    let cancel: () => void = () => {};
    let fail: (reason: unknown) => void = () => {};
    /** An arrival delivered here, held for this get: released if it is not what get returns. */
    let delivered: Buffer | undefined;
    let data: Buffer | undefined;
    const arrival = new Promise<Buffer>((resolve, reject) => {
      cancel = this.hub.wait(id.algorithm, id.digest, (d) => {
        delivered = d;
        resolve(d);
      });
      fail = reject;
      if (this.signal.aborted) reject(this.signal.reason ?? new AbortedError());
      else this.waiting.add(reject);
    });
    // An abort rejects `arrival` at once, possibly while the store read below is still
    // running and nothing awaits it yet: handled here, or the process would exit.
    arrival.catch(() => {});
    try {
      data = (await this.store.has([id], options))[0] ? await this.store.get(id, options) : await arrival;
      this.onProgress();
      return data;
    } finally {
      cancel();
      this.waiting.delete(fail);
      // Also delivered while the store was read (it was stored in between), or aborted.
      if (delivered && delivered !== data) this.hub.release(delivered);
    }
  }

  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    return this.store.put(id, data, options);
  }

  flush(options?: OpOptions): Promise<void> {
    return this.store.flush(options);
  }

  /** The store is the server's; closing a stage's view of it closes nothing. */
  async close(): Promise<void> {}
}
