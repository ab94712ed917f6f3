import { sleepUnlessAborted, throwIfAborted } from './abort.js';
import { InvalidArgumentError } from './errors.js';

/** Bytes a limiter lets through at once after a pause: a quarter of a second at its rate. */
const BURST_SECONDS = 0.25;
/** The slowest rate a limiter accepts (1 KiB/s): below, waits would be minutes per chunk. */
export const MIN_RATE_BYTES_PER_SECOND = 1024;

/** `bytesPerSecond` if it is a rate a RateLimiter takes; InvalidArgumentError otherwise. */
export function checkRate(bytesPerSecond: number): number {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < MIN_RATE_BYTES_PER_SECOND) {
    throw new InvalidArgumentError(`a rate limit must be at least ${MIN_RATE_BYTES_PER_SECOND} bytes per second, got ${bytesPerSecond}`);
  }
  return bytesPerSecond;
}

/**
 * A token bucket: on average `bytesPerSecond`, with bursts of at most a quarter second's
 * worth after a pause. take() never refuses: a taker that finds the bucket short runs it
 * into debt and waits until the debt is paid, so concurrent takers queue in the order they
 * came (each later one inherits the debt of those before it).
 */
export class RateLimiter {
  private available: number;
  private updatedMs = performance.now();
  private readonly burstBytes: number;

  constructor(readonly bytesPerSecond: number) {
    checkRate(bytesPerSecond);
    this.burstBytes = Math.max(1, Math.floor(bytesPerSecond * BURST_SECONDS));
    this.available = this.burstBytes;
  }

  /** Waits until `bytes` may go; rejects with AbortedError if `signal` fires meanwhile. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    throwIfAborted(signal); // an aborted taker leaves no debt for the others
    const now = performance.now();
    this.available = Math.min(this.burstBytes, this.available + ((now - this.updatedMs) / 1000) * this.bytesPerSecond);
    this.updatedMs = now;
    this.available -= bytes;
    if (this.available >= 0) return;
    await sleepUnlessAborted((-this.available / this.bytesPerSecond) * 1000, signal);
  }
}

/** `data` as pieces of at most `pieceBytes`, each let through by `limiter` before it is yielded. */
export async function* paced(data: Uint8Array, limiter: RateLimiter, pieceBytes: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for (let o = 0; o < data.length; o += pieceBytes) {
    const piece = data.subarray(o, Math.min(data.length, o + pieceBytes));
    await limiter.take(piece.length, signal);
    yield piece;
  }
}
