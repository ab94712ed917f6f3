import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { AbortedError, XferError, type ErrorCode } from '../core/errors.js';
import type { SegmentResult, SegmentTask } from './segment.js';
import type { WorkerReply } from './worker.js';

export interface ScanPoolOptions {
  /** Worker threads; default: the machine's available parallelism. */
  readonly threads?: number;
}

/**
 * The worker threads that read, chunk and hash file segments. One pool serves every
 * concurrent scan of a process; close() it when done (idle workers keep no work alive,
 * but a pool that is never closed keeps its threads until exit).
 */
export class ScanPool {
  readonly threads: number;
  private readonly piscina: Piscina;
  private readonly free: ArrayBuffer[] = [];

  constructor(options: ScanPoolOptions = {}) {
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new XferError('XFER_INVALID_ARGUMENT', 'threads must be a positive integer');
    this.threads = threads;
    this.piscina = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: 5_000,
    });
  }

  /**
   * Runs a segment task. If the pool holds a recycled buffer of at least `bufferBytes`, it
   * travels with the task (transferred) so the worker reads into it instead of allocating.
   */
  async run(task: SegmentTask, signal?: AbortSignal, bufferBytes = 0): Promise<SegmentResult> {
    let reply: WorkerReply;
    const buffer = this.takeBuffer(bufferBytes);
    try {
      reply = (await this.piscina.run(buffer ? { ...task, buffer } : task, { signal, transferList: buffer ? [buffer] : undefined })) as WorkerReply;
    } catch (err) {
      if (signal?.aborted || (err as Error)?.name === 'AbortError') throw new AbortedError();
      throw err;
    }
    if (!reply.ok) throw new XferError(reply.code as ErrorCode, reply.message);
    return reply.result;
  }

  /**
   * Gives a segment buffer back for reuse. The caller guarantees nothing will read or write
   * any view of it again: it is transferred to a worker (and detached here) on next use.
   */
  recycle(buffer: ArrayBuffer): void {
    if (this.free.length < this.threads * 2 + 2 && buffer.byteLength > 0) this.free.push(buffer);
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
