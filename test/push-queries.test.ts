import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ChunkId } from '../src/core/ids.js';
import { MemoryStore } from '../src/store/memory.js';
import type { OpOptions } from '../src/store/store.js';
import type { PushDestination } from '../src/transfer/destination.js';
import { MAX_HAS_QUERIES_IN_FLIGHT, push, QUEUED_BATCH_BYTES } from '../src/transfer/push.js';
import { writeRandomFile } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

/** Round trip of a `has` query: a remote destination's, during which later files queue up. */
const QUERY_LATENCY_MS = 20;

/** A destination that keeps chunks in memory and records every `has` query; each waits for `answer` (a round trip by default). */
function countingDestination(answer = () => new Promise<void>((r) => setTimeout(r, QUERY_LATENCY_MS))): { destination: PushDestination; store: MemoryStore; queries: number[] } {
  const store = new MemoryStore();
  const queries: number[] = [];
  const chunks = Object.create(store) as MemoryStore;
  chunks.has = async (ids: readonly ChunkId[], options?: OpOptions) => {
    queries.push(ids.length);
    await answer();
    return store.has(ids, options);
  };
  const destination: PushDestination = {
    chunks,
    description: 'memory',
    begin: async () => ({ entry: async () => undefined, commit: async () => {}, abort: async () => {} }),
    close: async () => {},
  };
  return { destination, store, queries };
}

describe('push asks the destination which chunks it lacks in few, large queries', () => {
  let dir: string;
  const FILES = 400;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-queries-'));
    await mkdir(join(dir, 'tree'));
    for (let i = 0; i < FILES; i++) await writeFile(join(dir, 'tree', `f${i}.bin`), pseudoRandom(2000 + i, i));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a tree of 400 small files costs a handful of queries, not one per file, and every chunk arrives', async () => {
    const { destination, store, queries } = countingDestination();
    const r = await push(join(dir, 'tree'), destination);
    assert.equal(r.chunksTotal, FILES);
    assert.equal(r.chunksSent, FILES);
    assert.ok(queries.length <= FILES / 10, `${queries.length} queries for ${FILES} files`);
    assert.equal(queries.reduce((a, b) => a + b, 0), FILES, 'each distinct chunk is asked about once');
  });

  it('a second push of the same tree sends nothing', async () => {
    const { destination, queries } = countingDestination();
    await push(join(dir, 'tree'), destination);
    const again = await push(join(dir, 'tree'), destination);
    assert.equal(again.chunksSent, 0);
    assert.ok(queries.length <= (2 * FILES) / 10);
  });
});

describe('push scans ahead of the answers to its queries by a bounded amount', () => {
  let dir: string;
  const SIZE = 48 * 1024 * 1024;
  /** How long the answers are held back: ample time to scan SIZE were the scan not held. */
  const HOLD_MS = 1000;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-queries-'));
    await writeRandomFile(join(dir, 'big.bin'), SIZE, 7);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('while no query is answered, fewer than QUEUED_BATCH_BYTES are scanned; once answers come, every chunk arrives', async () => {
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r));
    let asked!: () => void;
    const firstAsked = new Promise<void>((r) => (asked = r));
    const { destination } = countingDestination(() => {
      asked();
      return answered;
    });
    let scanned = 0;
    const pushed = push(join(dir, 'big.bin'), destination, { onProgress: (p) => (scanned = Math.max(scanned, p.bytesScanned)) });
    pushed.catch(() => {}); // awaited below
    await firstAsked;
    for (const until = Date.now() + HOLD_MS; Date.now() < until && scanned < QUEUED_BATCH_BYTES; ) await new Promise((r) => setTimeout(r, 20));
    const scannedUnanswered = scanned;
    answer();
    const r = await pushed;
    assert.ok(scannedUnanswered < QUEUED_BATCH_BYTES, `${scannedUnanswered} bytes scanned with no answer (bound ${QUEUED_BATCH_BYTES})`);
    assert.ok(scannedUnanswered > 0, 'the first batch was scanned');
    assert.equal(scanned, SIZE);
    assert.ok(r.chunksTotal > 0);
    assert.equal(r.chunksSent, r.chunksTotal);
  });
});

describe('push has a bounded number of queries in flight', () => {
  let dir: string;
  const FILES = 12;
  /** Small chunks: a file of 512 KiB has over PIPELINED_QUERY_IDS of them, so each starts another query. */
  const SMALL_CHUNKS = { algorithm: 'fastcdc2020', minBytes: 64, avgBytes: 256, maxBytes: 1024 } as const;
  /** How long the queries may take to reach the bound, and then how long no answer is given. */
  const REACH_MS = 5000;
  const HOLD_MS = 500;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-queries-'));
    await mkdir(join(dir, 'tree'));
    for (let i = 0; i < FILES; i++) await writeFile(join(dir, 'tree', `f${i}.bin`), pseudoRandom(512 * 1024, 100 + i));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('while none is answered, at most MAX_HAS_QUERIES_IN_FLIGHT are asked; the rest follow the answers', async () => {
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r));
    let open = 0;
    let most = 0;
    const { destination, queries } = countingDestination(async () => {
      most = Math.max(most, ++open);
      await answered;
      open--;
    });
    const pushed = push(join(dir, 'tree'), destination, { chunker: SMALL_CHUNKS });
    pushed.catch(() => {}); // awaited below
    // Until the bound is reached (a loaded machine scans slowly), then a while for any more.
    for (const until = Date.now() + REACH_MS; Date.now() < until && most < MAX_HAS_QUERIES_IN_FLIGHT; ) await new Promise((r) => setTimeout(r, 20));
    for (const until = Date.now() + HOLD_MS; Date.now() < until && most <= MAX_HAS_QUERIES_IN_FLIGHT; ) await new Promise((r) => setTimeout(r, 20));
    const mostUnanswered = most;
    answer();
    const r = await pushed;
    assert.equal(mostUnanswered, MAX_HAS_QUERIES_IN_FLIGHT, `${mostUnanswered} queries asked with none answered`);
    assert.ok(queries.length > MAX_HAS_QUERIES_IN_FLIGHT, `${queries.length} queries in all`);
    assert.equal(r.chunksSent, r.chunksTotal);
  });
});
