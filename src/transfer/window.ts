/**
 * Runs async jobs with at most `maxJobs` in flight and at most `maxBytes` of declared weight
 * in flight. run() resolves when the job has been STARTED (back-pressure for the producer);
 * the first failure is rethrown by the next run() or by drain(), and stops new jobs.
 */
export class Window {
  private active = 0;
  private activeBytes = 0;
  private readonly waiters: (() => void)[] = [];
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly maxJobs: number, private readonly maxBytes: number) {}

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
