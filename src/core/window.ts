/**
 * xfer's one bounded-concurrency primitive (mapBounded below is built on it).
 */
import { throwIfAborted } from './abort.js';
import { InvalidArgumentError } from './errors.js';

/**
 * Runs async jobs with at most `maxJobs` in flight and at most `maxBytes` of declared weight
 * in flight. run() resolves when the job has been STARTED (back-pressure for the producer);
 * the first failure is rethrown by the next run() or by drain(), and stops new jobs.
 * A job heavier than maxBytes still runs, alone.
 */
export class Window {
  private active = 0;
  private activeBytes = 0;
  private readonly waiters: (() => void)[] = [];
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  /** `maxJobs` must be a positive integer (0 would start nothing and wait for ever), `maxBytes` above 0. */
  constructor(private readonly maxJobs: number, private readonly maxBytes: number) {
    if (!Number.isSafeInteger(maxJobs) || maxJobs < 1) throw new InvalidArgumentError(`a window of jobs needs a positive integer of jobs, got ${maxJobs}`);
    if (!(maxBytes > 0)) throw new InvalidArgumentError(`a window of jobs needs a positive weight limit, got ${maxBytes}`);
  }

  async run(bytes: number, job: () => Promise<void>): Promise<void> {
    while (!this.failure && (this.active >= this.maxJobs || (this.active > 0 && this.activeBytes + bytes > this.maxBytes))) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure.error;
    this.active++;
    this.activeBytes += bytes;
    const p = job()
      .catch((error) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.active--;
        this.activeBytes -= bytes;
        this.running.delete(p);
        this.waiters.shift()?.();
      });
    this.running.add(p);
  }

  /** Waits for every started job; rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
    if (this.failure) throw this.failure.error;
  }
}

/**
 * Runs `fn` on every item with at most `limit` calls in flight and returns the results
 * in item order. Checks `signal` before each call; after the first failure no further
 * calls start, and the first error is thrown once the running ones have settled.
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal | undefined,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  const window = new Window(limit, Infinity);
  try {
    for (let i = 0; i < items.length; i++) {
      await window.run(0, async () => {
        throwIfAborted(signal);
        results[i] = await fn(items[i]!);
      });
    }
  } catch {
    // A job failed: run() refuses more; drain() below throws that first failure.
  }
  await window.drain();
  return results;
}
