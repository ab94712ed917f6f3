import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { AbortedError } from '../src/core/errors.js';
import { retryDelayMs, retrying, type RetryEvent, type RetryPolicy } from '../src/core/retry.js';

class Passing extends Error {}
class Lasting extends Error {}

const FAST: RetryPolicy = { retries: 4, firstDelayMs: 5, maxDelayMs: 20 };
const transient = (e: unknown) => e instanceof Passing;

/** An operation failing `failures` times with `error`, then answering its attempt number. */
function failing(failures: number, error: () => Error): { op: (attempt: number) => Promise<number>; calls: () => number } {
  let calls = 0;
  return {
    op: async (attempt) => {
      calls++;
      if (attempt < failures) throw error();
      return attempt;
    },
    calls: () => calls,
  };
}

describe('retrying', () => {
  it('tries again after passing failures, waiting longer each time up to the maximum', async () => {
    const events: RetryEvent[] = [];
    const f = failing(3, () => new Passing('reset'));
    assert.equal(await retrying(f.op, { policy: FAST, transient, onRetry: (e) => events.push(e) }), 3);
    assert.equal(f.calls(), 4);
    assert.deepEqual(events.map((e) => e.retry), [1, 2, 3]);
    assert.ok(events.every((e) => e.error instanceof Passing));
    assert.deepEqual([1, 2, 3, 4].map((r) => retryDelayMs(FAST, r)), [5, 10, 20, 20]);
    events.forEach((e) => {
      const nominal = retryDelayMs(FAST, e.retry);
      assert.ok(e.delayMs >= nominal * 0.8 - 1 && e.delayMs <= nominal * 1.2 + 1, `retry ${e.retry} waited ${e.delayMs} ms`);
    });
  });

  it('does not retry a lasting failure', async () => {
    const f = failing(1, () => new Lasting('404'));
    await assert.rejects(retrying(f.op, { policy: FAST, transient }), Lasting);
    assert.equal(f.calls(), 1);
  });

  it('gives up after the retries, with the error `exhausted` makes of the last failure', async () => {
    const f = failing(10, () => new Passing('reset'));
    await assert.rejects(
      retrying(f.op, { policy: FAST, transient, exhausted: (e, n) => new Lasting(`${(e as Error).message} after ${n}`) }),
      (e: Error) => e instanceof Lasting && e.message === 'reset after 4',
    );
    assert.equal(f.calls(), 5);
  });

  it('tries once with no retries, and reports the failure itself', async () => {
    const f = failing(1, () => new Passing('reset'));
    await assert.rejects(retrying(f.op, { policy: { ...FAST, retries: 0 }, transient, exhausted: () => new Lasting('wrapped') }), Passing);
    assert.equal(f.calls(), 1);
  });

  it('an abort while waiting rejects at once with AbortedError', async () => {
    const controller = new AbortController();
    const f = failing(10, () => new Passing('reset'));
    const started = performance.now();
    const run = retrying(f.op, { policy: { retries: 3, firstDelayMs: 60_000, maxDelayMs: 60_000 }, transient, signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(run, AbortedError);
    assert.ok(performance.now() - started < 5_000);
    assert.equal(f.calls(), 1);
  });
});
