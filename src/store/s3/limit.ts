import { throwIfAborted, untilAborted } from '../../core/abort.js';

/**
 * At most `max` jobs at once (S3 requests of one store). A waiter that is aborted stops
 * waiting; every release wakes all waiters, which race for the slot again, so an aborted
 * waiter cannot swallow a wake-up meant for another.
 */
export class Slots {
  private used = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async run<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    while (this.used >= this.max) {
      await untilAborted(new Promise<void>((resolve) => this.waiters.push(resolve)), signal);
    }
    throwIfAborted(signal);
    this.used++;
    try {
      return await job();
    } finally {
      this.used--;
      const woken = this.waiters;
      this.waiters = [];
      for (const wake of woken) wake();
    }
  }
}
