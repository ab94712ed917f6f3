import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { AbortedError, InvalidArgumentError } from '../src/core/errors.js';
import { paced, RateLimiter } from '../src/core/rate.js';

const KiB = 1024;

describe('RateLimiter', () => {
  it('lets a quarter second of its rate through at once, then holds takers to the rate', async () => {
    const limiter = new RateLimiter(100 * KiB);
    const started = performance.now();
    await limiter.take(25 * KiB); // the burst
    assert.ok(performance.now() - started < 50, 'the burst goes at once');
    await limiter.take(50 * KiB);
    const waited = performance.now() - started;
    assert.ok(waited >= 480, `50 KiB at 100 KiB/s after the burst waited ${waited.toFixed(0)} ms`);
  });

  it('queues concurrent takers: together they take as long as their sum needs', async () => {
    const limiter = new RateLimiter(200 * KiB);
    await limiter.take(50 * KiB); // spend the burst
    const started = performance.now();
    await Promise.all([limiter.take(40 * KiB), limiter.take(40 * KiB), limiter.take(40 * KiB)]);
    const waited = performance.now() - started;
    assert.ok(waited >= 580, `120 KiB at 200 KiB/s waited ${waited.toFixed(0)} ms`);
  });

  it('paced() cuts data into pieces that each wait their turn, and loses nothing', async () => {
    const data = Buffer.alloc(300 * KiB, 7);
    const started = performance.now();
    const pieces: Uint8Array[] = [];
    for await (const p of paced(data, new RateLimiter(400 * KiB), 64 * KiB)) pieces.push(p);
    assert.deepEqual(pieces.map((p) => p.length), [64, 64, 64, 64, 44].map((k) => k * KiB));
    assert.ok(Buffer.concat(pieces).equals(data));
    assert.ok(performance.now() - started >= 480, '300 KiB at 400 KiB/s, 100 KiB of burst');
  });

  it('an abort while waiting rejects with AbortedError; a rate below 1 KiB/s is refused', async () => {
    const limiter = new RateLimiter(1024);
    const controller = new AbortController();
    const waiting = limiter.take(1024 * 1024, controller.signal);
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(waiting, AbortedError);
    assert.throws(() => new RateLimiter(1000), InvalidArgumentError);
    assert.throws(() => new RateLimiter(Number.NaN), InvalidArgumentError);
  });
});
