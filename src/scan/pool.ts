import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { abortedError, throwIfAborted } from '../core/abort.js';
import { XferError, type ErrorCode } from '../core/errors.js';
import { isSharedZeros } from '../chunker/zero.js';
import type { FileSegmentTask, SegmentResult, SegmentTask } from './segment.js';
import { scanOne, type FilesTask, type WorkerReply } from './worker.js';

/** Recycled segment buffers kept per worker thread (plus two), for reuse by later segments. */
const FREE_BUFFERS_PER_THREAD = 2;

/**
 * Young generation of each worker's V8 heap, in MiB. A worker allocates little and keeps
 * nothing between tasks, but V8 grows a young generation whenever enough bytes have
 * survived scavenges since it last grew, a count that only accumulates: over a long scan
 * every worker creeps up to V8's default maximum. Measured on a 160 GiB stream with two
 * workers: RSS rose by about 70 MiB over the first ~100 GiB. With this cap it stays flat,
 * for about the same CPU time.
 */
const WORKER_YOUNG_GENERATION_MB = 6;

/**
 * Bytes a pool scans on its caller's thread before it starts its worker threads (see
 * ScanPoolOptions.inlineBytes). Booting a thread costs about 180 ms of CPU here (Node's
 * bootstrap, piscina, our modules): a push of a 100 KB file spent 0.55 CPU-s, most of it
 * booting two threads it then used for 1 ms, and waited 180 ms for them. 8 MiB takes the
 * caller about 10 ms to chunk and hash with the addon (about 80 ms with the TypeScript
 * twin), less than one thread's boot either way.
 */
export const INLINE_SCAN_BYTES = 8 * 1024 * 1024;

/** Whole files up to this size are scanned in groups (see runGrouped). */
export const SMALL_FILE_BYTES = 1024 * 1024;
/** Files and bytes in one group, at most. */
const GROUP_FILES = 64;
const GROUP_BYTES = 8 * 1024 * 1024;
/**
 * While a group is out, the next goes only once it has this many files or bytes (or when
 * the pool runs dry). Sent as soon as a thread was free, groups of a tree of small files
 * held two files on average: the workers finish a group faster than the main thread finds
 * files, and each message costs the main thread more than the files' scan costs a worker.
 */
const GROUP_MIN_FILES = 8;
const GROUP_MIN_BYTES = 1024 * 1024;

interface GroupedTask {
  readonly task: FileSegmentTask;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (r: SegmentResult) => void;
  readonly reject: (err: unknown) => void;
}

export interface ScanPoolOptions {
  /** Worker threads; default: the machine's available parallelism. */
  readonly threads?: number;
  /**
   * Start the threads with the first task rather than now. For a caller that often scans
   * nothing: a pull whose files all pass the quick check (booting two threads cost a no-op
   * pull of a 7,643-file tree about 0.6 s of CPU, on the cores the pull needed). A caller
   * that will scan (a push) starts them now, so they boot while it walks its source.
   */
  readonly startOnFirstTask?: boolean;
  /**
   * Bytes scanned on the caller's thread, synchronously, before the threads are started
   * (INLINE_SCAN_BYTES unless given; 0: none). Tasks run inline while they fit in what is
   * left of it and no thread has started; the first that does not starts the threads, and
   * it and every later task go to them. A caller that knows it will scan more (a push of a
   * large file) says so with expect(), so that the threads boot while it does other work.
   */
  readonly inlineBytes?: number;
}

/**
 * The worker threads that read, chunk and hash file and stream segments. One pool serves every
 * concurrent scan of a process; close() it when done (idle workers keep no work alive,
 * but a pool that is never closed keeps its threads until exit).
 */
export class ScanPool {
  readonly threads: number;
  /** Started by the constructor, or by the first task (ScanPoolOptions.startOnFirstTask). */
  private workers: Piscina | undefined;
  private closed = false;
  private readonly free: ArrayBuffer[] = [];
  private running = 0;
  /** Small files waiting to go in the next group, their bytes, and groups being scanned. */
  private readonly waiting: GroupedTask[] = [];
  private waitingBytes = 0;
  private groupsOut = 0;

  /** What is left of ScanPoolOptions.inlineBytes. */
  private inlineLeft: number;

  constructor(options: ScanPoolOptions = {}) {
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new XferError('XFER_INVALID_ARGUMENT', 'threads must be a positive integer');
    this.threads = threads;
    const inline = options.inlineBytes ?? INLINE_SCAN_BYTES;
    if (!Number.isSafeInteger(inline) || inline < 0) throw new XferError('XFER_INVALID_ARGUMENT', 'inlineBytes must be a non-negative integer');
    this.inlineLeft = inline;
    if (!options.startOnFirstTask && inline === 0) void this.piscina;
  }

  /** Whether the worker threads have been started. */
  get started(): boolean {
    return this.workers !== undefined;
  }

  /**
   * The caller will scan about `bytes` (a file's size): if that is more than the pool may
   * scan inline, the threads start now, to boot while the caller prepares (connects, reads
   * the previous manifest) instead of when the first segment comes.
   */
  expect(bytes: number): void {
    if (!this.closed && !this.workers && bytes > this.inlineLeft) void this.piscina;
  }

  /**
   * Whether `bytes` of a task are scanned on the caller's thread: while no thread has
   * started and they fit in what is left of the inline budget (taken from it). The first
   * task that does not fit starts the threads.
   */
  private inline(bytes: number): boolean {
    if (this.workers || this.closed || bytes > this.inlineLeft) return false;
    this.inlineLeft -= bytes;
    return true;
  }

  /** The worker threads, started on first use; throws once the pool is closed. */
  private get piscina(): Piscina {
    if (this.closed) throw new XferError('XFER_INTERNAL', 'the scan pool is closed');
    if (this.workers) return this.workers;
    this.workers = new Piscina({
      // A CommonJS entry that imports worker.js: see worker-entry.cts for why.
      filename: new URL('./worker-entry.cjs', import.meta.url).href,
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: 5_000,
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    });
    // Every failure that matters reaches the task it belongs to (run() rejects). Piscina
    // also emits 'error' for events tied to no task, notably the result of a task that was
    // aborted while running arriving after its worker was told to stop; unheard, that would
    // crash the process. There is nothing to do about them.
    this.workers.on('error', () => {});
    return this.workers;
  }

  /** File segment tasks that found no recycled buffer to read into (their worker made one). */
  fileTasksUnbuffered = 0;

  /**
   * Runs a segment task. A bytes task's buffer is transferred to the worker (detached
   * here; it comes back as the result's data). For a file task, if the pool holds a
   * recycled buffer of at least `bufferBytes`, it travels with the task so the worker reads
   * into it instead of allocating.
   */
  async run(task: SegmentTask, signal?: AbortSignal, bufferBytes = 0): Promise<SegmentResult> {
    const inline = this.inline(task.kind === 'file' ? task.end - task.start : task.length);
    if (!inline && task.kind === 'file' && task.wholeFile && task.fileSize <= SMALL_FILE_BYTES) return this.runGrouped(task, signal);
    const buffer = task.kind === 'file' ? this.takeBuffer(bufferBytes) : undefined;
    if (task.kind === 'file' && !buffer) this.fileTasksUnbuffered++;
    if (inline) {
      throwIfAborted(signal);
      return resultOf(scanOne(task.kind === 'file' && buffer ? { ...task, buffer } : task)); // failing as a worker's task does
    }
    let reply: WorkerReply;
    const transferList = task.kind === 'bytes' ? [task.bytes] : buffer ? [buffer] : undefined;
    this.running++;
    try {
      reply = (await this.piscina.run(buffer ? { ...task, buffer } : task, { signal, transferList })) as WorkerReply;
    } catch (err) {
      if (signal?.aborted || (err as Error)?.name === 'AbortError') throw abortedError(signal);
      throw err;
    } finally {
      this.running--;
    }
    return resultOf(reply);
  }

  /** Tasks started by run() that have not settled yet (queued or running), over all scans. */
  get tasksInFlight(): number {
    return this.running + this.waiting.length;
  }

  /**
   * Small whole files travel to the workers in groups, one message for many files: a
   * message per file cost more than scanning the file (a tree of 15,287 files: main-thread
   * messaging and GC dominated, the workers idle 90% of the time). Adaptive, like a
   * Nagle: a group goes at once when none is out, so an idle pool adds no latency; while
   * one is out, files wait until they make a group of GROUP_MIN_FILES or GROUP_MIN_BYTES
   * (or the pool is idle again) and fewer than `threads` groups are out.
   */
  private runGrouped(task: FileSegmentTask, signal: AbortSignal | undefined): Promise<SegmentResult> {
    if (signal?.aborted) return Promise.reject(abortedError(signal));
    if (this.closed) return Promise.reject(new XferError('XFER_INTERNAL', 'the scan pool is closed'));
    return new Promise<SegmentResult>((resolve, reject) => {
      this.waiting.push({ task, signal, resolve, reject });
      this.waitingBytes += task.fileSize;
      this.sendGroups();
    });
  }

  private sendGroups(): void {
    for (;;) {
      const full = this.waiting.length >= GROUP_FILES || this.waitingBytes >= GROUP_BYTES;
      const enough = this.waiting.length >= GROUP_MIN_FILES || this.waitingBytes >= GROUP_MIN_BYTES;
      if (this.waiting.length === 0 || !(this.groupsOut === 0 || full || (enough && this.groupsOut < this.threads))) break;
      let bytes = 0;
      let n = 0;
      while (n < this.waiting.length && n < GROUP_FILES && (n === 0 || bytes + this.waiting[n]!.task.fileSize <= GROUP_BYTES)) bytes += this.waiting[n++]!.task.fileSize;
      const group = this.waiting.splice(0, n);
      this.waitingBytes -= bytes;
      this.groupsOut++;
      this.running += group.length;
      void this.piscina
        .run({ kind: 'files', tasks: group.map((g) => g.task) } satisfies FilesTask)
        .then(
          (replies: WorkerReply[]) =>
            group.forEach((g, i) => {
              const r = replies[i]!;
              if (g.signal?.aborted) g.reject(abortedError(g.signal));
              else if (r.ok) g.resolve(r.result);
              else g.reject(new XferError(r.code as ErrorCode, r.message));
            }),
          (err: unknown) => group.forEach((g) => g.reject(g.signal?.aborted ? abortedError(g.signal) : err)),
        )
        .finally(() => {
          this.groupsOut--;
          this.running -= group.length;
          this.sendGroups();
        });
    }
  }

  /**
   * Gives a segment buffer back for reuse. The caller guarantees nothing will read or write
   * any view of it again: it is transferred to a worker (and detached here) on next use.
   */
  recycle(buffer: ArrayBuffer): void {
    // The shared zeros stand for a hole segment's bytes (FileScan): read by others, never filled.
    if (buffer.byteLength === 0 || isSharedZeros(buffer)) return;
    if (this.free.length < this.threads * FREE_BUFFERS_PER_THREAD + 2) {
      this.free.push(buffer);
      return;
    }
    // Full: keep the larger buffers (small ones, from files' last segments, fit fewer requests).
    let smallest = 0;
    for (let i = 1; i < this.free.length; i++) if (this.free[i]!.byteLength < this.free[smallest]!.byteLength) smallest = i;
    if (this.free[smallest]!.byteLength < buffer.byteLength) this.free[smallest] = buffer;
  }

  /** A buffer of at least `bytes` for the caller to fill: a recycled one if any fits, else a new one. */
  acquire(bytes: number): ArrayBuffer {
    return this.takeBuffer(bytes) ?? new ArrayBuffer(bytes);
  }

  private takeBuffer(bytes: number): ArrayBuffer | undefined {
    if (bytes <= 0) return undefined;
    const i = this.free.findIndex((b) => b.byteLength >= bytes);
    return i < 0 ? undefined : this.free.splice(i, 1)[0];
  }

  async close(): Promise<void> {
    this.free.length = 0;
    this.closed = true;
    await this.workers?.destroy();
  }
}

function resultOf(reply: WorkerReply): SegmentResult {
  if (!reply.ok) throw new XferError(reply.code as ErrorCode, reply.message);
  return reply.result;
}
