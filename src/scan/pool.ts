import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { AbortedError, XferError, type ErrorCode } from '../core/errors.js';
import type { SegmentResult, SegmentTask } from './segment.js';
import type { WorkerReply } from './worker.js';

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

export interface ScanPoolOptions {
  /** Worker threads; default: the machine's available parallelism. */
  readonly threads?: number;
}

/**
 * The worker threads that read, chunk and hash file and stream segments. One pool serves every
 * concurrent scan of a process; close() it when done (idle workers keep no work alive,
 * but a pool that is never closed keeps its threads until exit).
 */
export class ScanPool {
  readonly threads: number;
  private readonly piscina: Piscina;
  private readonly free: ArrayBuffer[] = [];
  private running = 0;

  constructor(options: ScanPoolOptions = {}) {
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new XferError('XFER_INVALID_ARGUMENT', 'threads must be a positive integer');
    this.threads = threads;
    this.piscina = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: 5_000,
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    });
    // Every failure that matters reaches the task it belongs to (run() rejects). Piscina
    // also emits 'error' for events tied to no task, notably the result of a task that was
    // aborted while running arriving after its worker was told to stop; unheard, that would
    // crash the process. There is nothing to do about them.
    this.piscina.on('error', () => {});
  }

  /**
   * Runs a segment task. A bytes task's buffer is transferred to the worker (detached
   * here; it comes back as the result's data). For a file task, if the pool holds a
   * recycled buffer of at least `bufferBytes`, it travels with the task so the worker reads
   * into it instead of allocating.
   */
  async run(task: SegmentTask, signal?: AbortSignal, bufferBytes = 0): Promise<SegmentResult> {
    let reply: WorkerReply;
    const buffer = task.kind === 'file' ? this.takeBuffer(bufferBytes) : undefined;
    const transferList = task.kind === 'bytes' ? [task.bytes] : buffer ? [buffer] : undefined;
    this.running++;
    try {
      reply = (await this.piscina.run(buffer ? { ...task, buffer } : task, { signal, transferList })) as WorkerReply;
    } catch (err) {
      if (signal?.aborted || (err as Error)?.name === 'AbortError') throw new AbortedError();
      throw err;
    } finally {
      this.running--;
    }
    if (!reply.ok) throw new XferError(reply.code as ErrorCode, reply.message);
    return reply.result;
  }

  /** Tasks started by run() that have not settled yet (queued or running), over all scans. */
  get tasksInFlight(): number {
    return this.running;
  }

  /**
   * Gives a segment buffer back for reuse. The caller guarantees nothing will read or write
   * any view of it again: it is transferred to a worker (and detached here) on next use.
   */
  recycle(buffer: ArrayBuffer): void {
    if (buffer.byteLength === 0) return;
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
    await this.piscina.destroy();
  }
}
