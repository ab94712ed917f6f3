import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createChunker } from '../src/chunker/index.js';
import type { ChunkerSpec, DigestAlgorithm } from '../src/core/ids.js';
import { MiB } from '../src/core/sizes.js';
import { digestOf } from '../src/hash/digest.js';
import { INLINE_SCAN_BYTES, ScanPool } from '../src/scan/pool.js';
import { chunkDigest, scanFile, StreamScan, type ChunkBatch, type StreamSource } from '../src/scan/scanner.js';
import { cutAll } from './helpers/chunks.js';
import { generate, pseudoRandom } from './helpers/gen.js';

/** Small chunks and 64 KiB segments: many segments (and stitches) from small inputs. */
const SMALL: ChunkerSpec = { algorithm: 'fastcdc2020', minBytes: 1024, avgBytes: 4096, maxBytes: 16384 };
const SEG = 64 * 1024;
const MAX = 16384;

interface Flat {
  lengths: number[];
  digests: string[];
}

/** Flattens batches, checking they are contiguous and that each batch's data is the input's bytes. */
async function collect(batches: AsyncIterable<ChunkBatch>, whole: Uint8Array, release = true): Promise<Flat> {
  const f: Flat = { lengths: [], digests: [] };
  let expectOffset = 0;
  for await (const b of batches) {
    assert.equal(b.offset, expectOffset, 'batches are contiguous');
    let o = b.offset;
    for (let i = 0; i < b.count; i++) o += b.lengths[i]!;
    assert.equal(b.data.length, o - b.offset, 'batch data spans its chunks');
    assert.ok(Buffer.from(b.data).equals(whole.subarray(b.offset, o)), `batch data matches the input at ${b.offset}`);
    for (let i = 0; i < b.count; i++) {
      f.lengths.push(b.lengths[i]!);
      f.digests.push(Buffer.from(chunkDigest(b, i)).toString('hex'));
    }
    expectOffset = o;
    if (release) b.release();
  }
  assert.equal(expectOffset, whole.length, 'batches cover the input');
  return f;
}

/** The reference: one sequential pass of the TypeScript chunker over the whole input in memory. */
function sequential(spec: ChunkerSpec, data: Uint8Array, algorithm: DigestAlgorithm): Flat {
  const lengths = cutAll(createChunker(spec, { implementation: 'typescript' }), data);
  const digests: string[] = [];
  let o = 0;
  for (const l of lengths) {
    digests.push(digestOf(algorithm, data.subarray(o, o + l)).toString('hex'));
    o += l;
  }
  return { lengths, digests };
}

function* pieces(data: Uint8Array, pieceBytes: number): Generator<Uint8Array> {
  for (let o = 0; o < data.length; o += pieceBytes) yield data.slice(o, o + pieceBytes);
}

async function* asyncPieces(data: Uint8Array, pieceBytes: number): AsyncGenerator<Uint8Array> {
  for (const p of pieces(data, pieceBytes)) {
    await Promise.resolve();
    yield p;
  }
}

const zeroRuns = () => {
  // long zero runs (cut at max from every start: chains never meet inside them) between random data
  const parts: Buffer[] = [];
  for (let i = 0; i < 6; i++) parts.push(pseudoRandom(50_000 + i * 7777, i + 1), Buffer.alloc(200_000 + i * 12_345));
  return Buffer.concat(parts);
};

describe('stream scanning gives exactly the chunks of a sequential pass and of a file scan', () => {
  let dir: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-scan-stream-'));
    pool = new ScanPool({ threads: 2, inlineBytes: 0 }); // every segment to the workers: what these tests are about
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Stream scan (with and without the pool) == sequential == FileScan, chunks and whole digest. */
  async function checkAll(name: string, data: Buffer, source: () => StreamSource, o: { algorithm?: DigestAlgorithm; impl?: 'auto' | 'typescript'; spec?: ChunkerSpec; segmentBytes?: number } = {}) {
    const algorithm = o.algorithm ?? 'blake3';
    const spec = o.spec ?? SMALL;
    const segmentBytes = o.segmentBytes ?? SEG;
    const opts = { chunker: spec, digestAlgorithm: algorithm, implementation: o.impl ?? 'auto', segmentBytes } as const;
    const expected = sequential(spec, data, algorithm);
    const whole = digestOf(algorithm, data).toString('hex');

    const path = join(dir, `${name.replace(/\W+/g, '-')}.bin`);
    await writeFile(path, data);
    const file = await scanFile(path, pool, opts);
    const fromFile = await collect(file.batches(), data);
    assert.deepEqual(fromFile.lengths, expected.lengths, `${name}: file scan lengths`);

    // A pool of its own that scans within its inline budget (ScanPool.inlineBytes): on this thread.
    const inline = new ScanPool({ threads: 2 });
    for (const mode of ['parallel', 'inline', 'sequential'] as const) {
      const label = `${name}, ${mode} stream`;
      const scan = new StreamScan(source(), { ...opts, pool: mode === 'parallel' ? pool : mode === 'inline' ? inline : undefined });
      const got = await collect(scan.batches(), data);
      if (mode === 'inline') {
        // Well within the budget (a stream's segments overlap by up to a chunk): no thread.
        if (data.length <= INLINE_SCAN_BYTES / 2) assert.ok(!inline.started, `${label}: no thread started`);
        await inline.close();
      }
      assert.deepEqual(got.lengths, expected.lengths, `${label}: lengths`);
      assert.deepEqual(got.digests, expected.digests, `${label}: digests`);
      assert.deepEqual(got.digests, fromFile.digests, `${label}: same as the file scan`);
      assert.equal(scan.result.size, data.length, `${label}: size`);
      assert.equal(scan.result.chunkCount, expected.lengths.length, `${label}: chunk count`);
      assert.equal(Buffer.from(scan.result.digest).toString('hex'), whole, `${label}: whole-content digest`);
    }
    assert.equal(pool.tasksInFlight, 0, 'no task left running');
  }

  const cases: [string, () => Buffer][] = [
    ['random data', () => pseudoRandom(3_000_000, 7)],
    ['text', () => generate('text', 3, 1_500_000)],
    ['long zero runs', zeroRuns],
    ['all zeros', () => Buffer.alloc(1_000_003)],
    ['repeated blocks', () => generate('repeat', 5, 900_000)],
  ];
  for (const [name, make] of cases) {
    for (const impl of ['auto', 'typescript'] as const) {
      it(`${name} (${impl === 'auto' ? 'native' : impl}), pieces of 77,777 bytes`, async () => {
        const data = make();
        await checkAll(`${name}-${impl}`, data, () => pieces(data, 77_777), { impl });
      });
    }
  }

  it('zero runs around the max chunk size (the zero-run shortcut is exact), both chunkers', async () => {
    const parts: Buffer[] = [];
    const runs = [MAX - 1, MAX, MAX + 1, 2 * MAX - 1, 2 * MAX + 3, 5 * MAX + 777, 3];
    runs.forEach((n, i) => parts.push(pseudoRandom(3000 + i * 1111, 50 + i), Buffer.alloc(n)));
    parts.push(Buffer.alloc(3 * MAX)); // ends in zeros: the last chunks are short, cut at eof
    const data = Buffer.concat(parts);
    for (const impl of ['auto', 'typescript'] as const) {
      await checkAll(`zero-runs-${impl}`, data, () => pieces(data, 5000), { impl });
      await checkAll(`zero-runs-sha256-${impl}`, data, () => pieces(data, 5000), { impl, algorithm: 'sha256' });
    }
    const fixed: ChunkerSpec = { algorithm: 'fixed', sizeBytes: 4096 };
    await checkAll('zero-runs-fixed', data, () => pieces(data, 5000), { spec: fixed, segmentBytes: 16384 });
    // A chunk starts at offset 0: zero runs shorter than a whole window must not take the shortcut.
    for (const n of [MAX / 2 + 1, MAX - 1, MAX, MAX + 1]) {
      const head = Buffer.concat([Buffer.alloc(n), pseudoRandom(50_000, n)]);
      await checkAll(`leading-zeros-${n}`, head, () => pieces(head, 4096));
    }
  });

  it('sizes around segment and lookahead boundaries, blake3 and sha256', async () => {
    const sizes = [1, 1023, 1024, 1025, MAX, SEG - 1, SEG, SEG + 1, SEG + MAX - 1, SEG + MAX, SEG + MAX + 1, 2 * SEG, 2 * SEG + MAX, 3 * SEG - 1, 3 * SEG + MAX + 1];
    for (const algorithm of ['blake3', 'sha256'] as const) {
      for (const size of sizes) {
        const data = pseudoRandom(size, size);
        await checkAll(`size-${size}-${algorithm}`, data, () => pieces(data, 4096), { algorithm });
      }
    }
  });

  it('pieces of 1 byte, 7 bytes and 3 MiB, from sync, async and Readable sources', async () => {
    const small = Buffer.concat([pseudoRandom(150_000, 11), Buffer.alloc(70_000), generate('text', 2, 60_000)]);
    await checkAll('one-byte-pieces', small, () => pieces(small, 1));
    await checkAll('seven-byte-pieces', small, () => asyncPieces(small, 7));
    const big = Buffer.concat([pseudoRandom(9 * MiB, 12), Buffer.alloc(3 * MiB + 5), pseudoRandom(2 * MiB + 77, 13)]);
    await checkAll('3-MiB-pieces-default-segments', big, () => Readable.from([...pieces(big, 3 * MiB)]), { segmentBytes: undefined });
    await checkAll('3-MiB-pieces-small-segments', big, () => asyncPieces(big, 3 * MiB));
  });

  it('default chunker and segment size, the shape a real stream has', async () => {
    const data = Buffer.concat([pseudoRandom(20 * MiB + 12345, 21), Buffer.alloc(9 * MiB), generate('text', 4, 2 * MiB)]);
    const spec: ChunkerSpec = { algorithm: 'fastcdc2020', minBytes: 16384, avgBytes: 65536, maxBytes: 262144 };
    await checkAll('default-shape', data, () => pieces(data, MiB), { spec, segmentBytes: undefined });
  });

  it('fixed-size chunking', async () => {
    const data = pseudoRandom(300_001, 3);
    await checkAll('fixed', data, () => pieces(data, 10_000), { spec: { algorithm: 'fixed', sizeBytes: 4096 }, segmentBytes: 16384 });
  });

  it('an empty stream has no chunks and the digest of nothing', async () => {
    for (const withPool of [true, false]) {
      for (const algorithm of ['blake3', 'sha256'] as const) {
        const scan: StreamScan = new StreamScan(pieces(Buffer.alloc(0), 1), { chunker: SMALL, digestAlgorithm: algorithm, pool: withPool ? pool : undefined });
        const got = await collect(scan.batches(), Buffer.alloc(0));
        assert.equal(got.lengths.length, 0);
        assert.equal(scan.result.size, 0);
        assert.equal(scan.result.chunkCount, 0);
        assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf(algorithm, Buffer.alloc(0)).toString('hex'));
      }
    }
  });

  it('uses the workers, keeps at most threads + 1 segments in flight and recycles released buffers', async () => {
    const data = pseudoRandom(4 * MiB, 31);
    let running = 0;
    let maxRunning = 0;
    let tasks = 0;
    // Transfers give an ArrayBuffer a new identity on every trip, so count fresh allocations
    // by watching the pool's free list instead.
    const free = (pool as unknown as { free: ArrayBuffer[] }).free;
    let fresh = 0;
    const spy = Object.create(pool) as ScanPool;
    spy.run = async (task, signal, bytes) => {
      tasks++;
      maxRunning = Math.max(maxRunning, ++running);
      try {
        return await pool.run(task, signal, bytes);
      } finally {
        running--;
      }
    };
    spy.acquire = (bytes) => {
      const before = free.length;
      const b = pool.acquire(bytes);
      if (free.length === before) fresh++;
      return b;
    };
    const scan = new StreamScan(pieces(data, 100_000), { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: SEG, pool: spy });
    const got = await collect(scan.batches(), data);
    assert.deepEqual(got.lengths, sequential(SMALL, data, 'blake3').lengths);
    const segments = Math.ceil(data.length / SEG);
    assert.equal(tasks, segments, 'one worker task per segment');
    assert.ok(maxRunning <= pool.threads + 1, `at most threads + 1 segments in flight (saw ${maxRunning})`);
    assert.ok(fresh <= pool.threads + 3, `buffers are reused: ${fresh} allocated for ${segments} segments`);
  });

  it('a batch the consumer keeps (never releases) stays intact while the scan goes on', async () => {
    const data = pseudoRandom(1_000_000, 41);
    const scan = new StreamScan(pieces(data, 65_536), { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: SEG, pool });
    const kept: ChunkBatch[] = [];
    for await (const b of scan.batches()) kept.push(b);
    for (const b of kept) assert.ok(Buffer.from(b.data).equals(data.subarray(b.offset, b.offset + b.data.length)), `kept batch at ${b.offset}`);
  });
});

describe('stream scanning stops cleanly', () => {
  let pool: ScanPool;
  before(() => {
    pool = new ScanPool({ threads: 2, inlineBytes: 0 }); // every segment to the workers: what these tests are about
  });
  after(async () => {
    await pool.close();
  });

  /** An endless source that records whether it was closed. */
  function endless(state: { pulled: number; closed: boolean }): Generator<Uint8Array> {
    return (function* () {
      try {
        for (let i = 0; ; i++) {
          state.pulled++;
          yield pseudoRandom(MiB, i + 1);
        }
      } finally {
        state.closed = true;
      }
    })();
  }

  it('an AbortSignal stops the scan with AbortedError, closes the source and leaves no task running', async () => {
    const controller = new AbortController();
    const state = { pulled: 0, closed: false };
    const scan = new StreamScan(endless(state), { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: SEG, pool, signal: controller.signal });
    let batches = 0;
    await assert.rejects(
      (async () => {
        for await (const b of scan.batches()) {
          b.release();
          if (++batches === 5) controller.abort();
        }
      })(),
      (err: Error & { code?: string }) => err.code === 'XFER_ABORTED',
    );
    assert.equal(batches, 5);
    assert.ok(state.closed, 'the source was closed');
    assert.equal(pool.tasksInFlight, 0);
    assert.throws(() => scan.result, /before the scan completed/);
  });

  it('an abort while waiting for a slow async source ends the wait', async () => {
    const controller = new AbortController();
    let closed = false;
    const stalled: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({
        next: () => new Promise<IteratorResult<Uint8Array>>(() => {}), // never delivers
        return: async () => {
          closed = true;
          return { done: true, value: undefined };
        },
      }),
    };
    const scan = new StreamScan(stalled, { chunker: SMALL, digestAlgorithm: 'blake3', pool, signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(
      (async () => {
        for await (const _ of scan.batches()) void _;
      })(),
      (err: Error & { code?: string }) => err.code === 'XFER_ABORTED',
    );
    assert.ok(closed, 'the source was closed');
  });

  it('an error from the source propagates as is, with no task left running', async () => {
    const boom = new Error('source failed');
    function* failing(): Generator<Uint8Array> {
      for (let i = 0; i < 7; i++) yield pseudoRandom(100_000, i + 1); // segments are dispatched meanwhile
      throw boom;
    }
    const scan = new StreamScan(failing(), { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: SEG, pool });
    let inFlightSeen = 0;
    await assert.rejects(
      (async () => {
        for await (const b of scan.batches()) {
          inFlightSeen = Math.max(inFlightSeen, pool.tasksInFlight);
          b.release();
        }
      })(),
      (err) => err === boom,
    );
    assert.ok(inFlightSeen > 0, 'segments were in the workers when the source failed');
    assert.equal(pool.tasksInFlight, 0, 'no task left running after the error');
  });

  it('a consumer that stops early closes the source and leaves no task running', async () => {
    const state = { pulled: 0, closed: false };
    const scan = new StreamScan(endless(state), { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: SEG, pool });
    let n = 0;
    for await (const b of scan.batches()) {
      b.release();
      if (++n === 3) break;
    }
    assert.ok(state.closed, 'the source was closed');
    assert.ok(state.pulled < 10, `read ahead is bounded (${state.pulled} MiB pulled)`);
    assert.equal(pool.tasksInFlight, 0);
  });
});
