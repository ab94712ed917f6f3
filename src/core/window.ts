/**
 * xfer's one bounded-concurrency primitive, Slots, and the two shapes built on it: Window
 * (a producer starting jobs and moving on) and mapBounded (a list mapped). Every bound on
 * work in flight in xfer is one of these three: no hand-written wait loops beside them.
 */
import { throwIfAborted, untilAborted } from './abort.js';
import { InvalidArgumentError } from './errors.js';

/**
 * At most `maxJobs` holders at once, and at most `maxBytes` of declared weight between
 * them (a holder heavier than maxBytes still gets in, alone). A waiter that is aborted
 * stops waiting; every release wakes all waiters, which race for the room again, so an
 * aborted waiter cannot swallow a wake-up meant for another.
 */
export class Slots {
  private active = 0;
  private activeBytes = 0;
  private waiters: (() => void)[] = [];

  /**
   * `maxJobs` must be a positive integer (0 would let nothing in and wait for ever), or a
   * function giving the limit now (one that moves: uploads in flight per connection open,
   * store/http/store.ts), read at every check and taken as at least 1; `maxBytes` above 0.
   * A limit that grows wakes no waiter by itself: they wait for the next release.
   */
  constructor(private readonly maxJobs: number | (() => number), private readonly maxBytes = Infinity) {
    if (typeof maxJobs === 'number' && (!Number.isSafeInteger(maxJobs) || maxJobs < 1)) throw new InvalidArgumentError(`a limit of jobs in flight needs a positive integer of jobs, got ${maxJobs}`);
    if (!(maxBytes > 0)) throw new InvalidArgumentError(`a limit of jobs in flight needs a positive weight limit, got ${maxBytes}`);
  }

  /** Holders now. */
  get inFlight(): number {
    return this.active;
  }

  /** Takes room for a holder of weight `bytes` if there is some now, without waiting. */
  tryAcquire(bytes = 0): boolean {
    if (!this.hasRoom(bytes)) return false;
    this.active++;
    this.activeBytes += bytes;
    return true;
  }

  /** Waits for room for a holder of weight `bytes` and takes it; AbortedError if `signal` fires first. */
  async acquire(bytes = 0, signal?: AbortSignal): Promise<void> {
    while (!this.hasRoom(bytes)) await this.nextRelease(signal);
    throwIfAborted(signal);
    this.active++;
    this.activeBytes += bytes;
  }

  /**
   * Counts a holder of weight `bytes` at once, room or not: work that is under way before
   * anyone waits for it (a producer's queued batch), whose weight later holders and
   * untilRoom() wait behind. Given back with release(bytes).
   */
  admit(bytes = 0): void {
    this.active++;
    this.activeBytes += bytes;
  }

  /** Waits until a holder of weight `bytes` would get in, without taking room; AbortedError if `signal` fires first. */
  async untilRoom(bytes = 0, signal?: AbortSignal): Promise<void> {
    while (!this.hasRoom(bytes)) await this.nextRelease(signal);
    throwIfAborted(signal);
  }

  /** Gives back what acquire(bytes) took. */
  release(bytes = 0): void {
    this.active--;
    this.activeBytes -= bytes;
    const woken = this.waiters;
    this.waiters = [];
    for (const wake of woken) wake();
  }

  /** Runs `job` holding a slot of weight `bytes`; resolves with its result once it ends. */
  async run<T>(job: () => Promise<T>, signal?: AbortSignal, bytes = 0): Promise<T> {
    await this.acquire(bytes, signal);
    try {
      return await job();
    } finally {
      this.release(bytes);
    }
  }

  /** Resolves at the next release(); AbortedError if `signal` fires first. */
  private nextRelease(signal: AbortSignal | undefined): Promise<void> {
    return untilAborted(new Promise<void>((resolve) => this.waiters.push(resolve)), signal);
  }

  /** Whether a holder of weight `bytes` would get in now. */
  hasRoom(bytes = 0): boolean {
    const maxJobs = typeof this.maxJobs === 'number' ? this.maxJobs : Math.max(1, this.maxJobs());
    return this.active < maxJobs && (this.active === 0 || this.activeBytes + bytes <= this.maxBytes);
  }
}

/**
 * Runs async jobs with at most `maxJobs` in flight and at most `maxBytes` of declared weight
 * in flight (Slots). run() resolves when the job has been STARTED (back-pressure for the
 * producer); the first failure is rethrown by the next run() or by drain(), and stops new
 * jobs. A job heavier than maxBytes still runs, alone.
 */
export class Window {
  private readonly slots: Slots;
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  /** `maxJobs` must be a positive integer (0 would start nothing and wait for ever), `maxBytes` above 0. */
  constructor(maxJobs: number, maxBytes: number) {
    this.slots = new Slots(maxJobs, maxBytes);
  }

  async run(bytes: number, job: () => Promise<void>): Promise<void> {
    if (this.failure) throw this.failure.error;
    // Without a wait when there is room: a job starts in the same turn as before Slots.
    if (!this.slots.tryAcquire(bytes)) await this.slots.acquire(bytes);
    // A job that failed while this one waited released its slot: no more jobs start.
    const failure = this.failure as { error: unknown } | undefined;
    if (failure) {
      this.slots.release(bytes);
      throw failure.error;
    }
    const p = job()
      .catch((error) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.running.delete(p);
        this.slots.release(bytes);
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
