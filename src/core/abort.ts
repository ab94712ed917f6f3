import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError } from './errors.js';

/** Throws AbortedError if `signal` is aborted. Call before starting any unit of work. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError(abortMessage(signal));
}

/** The AbortedError for `signal`, saying why it fired (e.g. "aborted: interrupted"), if it has. */
export function abortedError(signal: AbortSignal | undefined): AbortedError {
  return signal?.aborted ? new AbortedError(abortMessage(signal)) : new AbortedError();
}

function abortMessage(signal: AbortSignal): string {
  const r = signal.reason as unknown;
  if (r instanceof Error && r.name !== 'AbortError') return `aborted: ${r.message}`;
  return 'operation aborted';
}

/** Waits `ms`; rejects with AbortedError as soon as `signal` fires. */
export async function sleepUnlessAborted(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch (err) {
    throwIfAborted(signal);
    throw err;
  }
}

/**
 * `promise`, or AbortedError (as throwIfAborted's) as soon as `signal` fires, whichever
 * comes first; the listener is removed once either happens. The work behind `promise` is
 * not stopped: the caller stops waiting for it. xfer's one abort race: use it rather than
 * a Promise.race of one's own.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortedError(signal));
    if (signal.aborted) {
      promise.catch(() => {}); // nobody waits for it now
      return onAbort();
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
