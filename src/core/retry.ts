import { sleepUnlessAborted } from './abort.js';
import { InvalidArgumentError } from './errors.js';

/**
 * How an operation that failed for a passing reason (a dropped connection, a server
 * restarting) is tried again: up to `retries` more times, waiting firstDelayMs, then twice
 * as long each time up to maxDelayMs, each wait spread by ±20% so that many operations
 * failing together do not come back together.
 */
export interface RetryPolicy {
  /** Attempts after the first; 0 tries once. */
  readonly retries: number;
  readonly firstDelayMs: number;
  readonly maxDelayMs: number;
}

/** Retries after the first attempt, by default: about 8 s of waiting in all, long enough for a server restart. */
export const DEFAULT_RETRIES = 5;
export const RETRY_FIRST_DELAY_MS = 250;
export const RETRY_MAX_DELAY_MS = 8_000;
const RETRY_JITTER = 0.2;

export const DEFAULT_RETRY_POLICY: RetryPolicy = { retries: DEFAULT_RETRIES, firstDelayMs: RETRY_FIRST_DELAY_MS, maxDelayMs: RETRY_MAX_DELAY_MS };

/** The default policy with `retries` (a user's --retries) in place of DEFAULT_RETRIES when given. */
export function retryPolicy(retries: number | undefined): RetryPolicy {
  return retries === undefined ? DEFAULT_RETRY_POLICY : { ...DEFAULT_RETRY_POLICY, retries };
}

/**
 * How one store's failed operations are tried again, as the location registry composes it
 * (endpoint/registry.ts), once per opened store: the policy (a user's --retries), the
 * store's own sorting of its errors (restic's IsPermanentError: each store exports its
 * classifier), and who is told of each retry. The registry either wraps the store in the
 * retry decorator (store/decorators/retry.ts) or, where retries must happen inside the
 * store's transport (a request resumed mid-body), hands this plan to the transport; never
 * both, so that retries do not multiply. Its fields have the names of the stores' options,
 * so that it can be spread into them.
 */
export interface RetryPlan {
  readonly retry: RetryPolicy;
  /** True for an error that another attempt cannot mend: never retried. */
  readonly isPermanent: (error: unknown) => boolean;
  readonly onRetry?: (event: RetryEvent) => void;
}

/** What a retry is told before it waits. */
export interface RetryEvent {
  /** 1 for the first retry. */
  readonly retry: number;
  readonly delayMs: number;
  readonly error: unknown;
}

/** The wait before retry number `retry` (1-based), jitter aside. */
export function retryDelayMs(policy: RetryPolicy, retry: number): number {
  return Math.min(policy.maxDelayMs, policy.firstDelayMs * 2 ** (retry - 1));
}

/**
 * Runs `op` (given the attempt number, 0 first) until it succeeds, fails with an error
 * `transient` rejects, or the policy's retries are spent; then rejects with the last
 * error, passed through `exhausted` when there were retries. An abort of `signal` during a
 * wait rejects with AbortedError at once.
 */
export async function retrying<T>(
  op: (attempt: number) => Promise<T>,
  options: {
    readonly policy: RetryPolicy;
    readonly transient: (error: unknown) => boolean;
    readonly signal?: AbortSignal;
    readonly onRetry?: (event: RetryEvent) => void;
    /** The error to report once retries are spent (e.g. one saying how many were made). */
    readonly exhausted?: (error: unknown, retries: number) => unknown;
  },
): Promise<T> {
  const { policy, signal } = options;
  // NaN or Infinity would retry without end (`attempt >= NaN` is never true).
  if (!Number.isSafeInteger(policy.retries) || policy.retries < 0) throw new InvalidArgumentError(`retries must be a non-negative integer, got ${policy.retries}`);
  for (let attempt = 0; ; attempt++) {
    try {
      return await op(attempt);
    } catch (error) {
      if (signal?.aborted || !options.transient(error)) throw error;
      if (attempt >= policy.retries) throw attempt > 0 && options.exhausted ? options.exhausted(error, attempt) : error;
      const delayMs = Math.round(retryDelayMs(policy, attempt + 1) * (1 - RETRY_JITTER + 2 * RETRY_JITTER * Math.random()));
      options.onRetry?.({ retry: attempt + 1, delayMs, error });
      await sleepUnlessAborted(delayMs, signal);
    }
  }
}
