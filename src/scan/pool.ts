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

  async run(task: SegmentTask, signal?: AbortSignal): Promise<SegmentResult> {
    let reply: WorkerReply;
    try {
      reply = (await this.piscina.run(task, { signal })) as WorkerReply;
    } catch (err) {
      if (signal?.aborted || (err as Error)?.name === 'AbortError') throw new AbortedError();
      throw err;
    }
    if (!reply.ok) throw new XferError(reply.code as ErrorCode, reply.message);
    return reply.result;
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}
