import { strict as assert } from 'node:assert';
import { mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createChunker } from '../src/chunker/index.js';
import type { ChunkerSpec } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import { ScanPool } from '../src/scan/pool.js';
import { chunkDigest, FileScan, scanFile, StreamScan, type ChunkBatch } from '../src/scan/scanner.js';
import { generate, pseudoRandom } from './helpers/gen.js';
import { cutAll } from './helpers/chunks.js';

const SMALL: ChunkerSpec = { algorithm: 'fastcdc2020', minBytes: 1024, avgBytes: 4096, maxBytes: 16384 };

interface Flat {
  offsets: number[];
  lengths: number[];
  digests: string[];
}

async function collect(batches: AsyncIterable<ChunkBatch>, whole: Buffer): Promise<Flat> {
  const f: Flat = { offsets: [], lengths: [], digests: [] };
  let expectOffset = 0;
  for await (const b of batches) {
    assert.equal(b.offset, expectOffset, 'batches are contiguous');
    let o = b.offset;
    for (let i = 0; i < b.count; i++) {
      const len = b.lengths[i]!;
      const bytes = b.data.subarray(o - b.offset, o - b.offset + len);
      assert.ok(Buffer.from(bytes).equals(whole.subarray(o, o + len)), `batch data matches the file at ${o}`);
      f.offsets.push(o);
      f.lengths.push(len);
      f.digests.push(Buffer.from(chunkDigest(b, i)).toString('hex'));
      o += len;
    }
    expectOffset = o;
  }
  return f;
}

function sequential(spec: ChunkerSpec, data: Buffer): Flat {
  const lengths = cutAll(createChunker(spec, { implementation: 'typescript' }), data);
  const f: Flat = { offsets: [], lengths, digests: [] };
  let o = 0;
  for (const l of lengths) {
    f.offsets.push(o);
    f.digests.push(digestOf('blake3', data.subarray(o, o + l)).toString('hex'));
    o += l;
  }
  return f;
}

describe('parallel segment scanning gives exactly the boundaries of one sequential pass', () => {
  let dir: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-scan-'));
    pool = new ScanPool({ threads: 2, inlineBytes: 0 }); // every segment to the workers: what these tests are about
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  const zeroRuns = () => {
    // long zero runs (cut at max from every start: chains never meet inside them) between random data
    const parts: Buffer[] = [];
    for (let i = 0; i < 6; i++) parts.push(pseudoRandom(50_000 + i * 7777, i + 1), Buffer.alloc(200_000 + i * 12_345));
    return Buffer.concat(parts);
  };
  const cases: [string, () => Buffer][] = [
    ['random data', () => pseudoRandom(3_000_000, 7)],
    ['text', () => generate('text', 3, 1_500_000)],
    ['long zero runs', zeroRuns],
    ['all zeros', () => Buffer.alloc(1_000_003)],
    ['repeated blocks', () => generate('repeat', 5, 900_000)],
  ];
  for (const [name, make] of cases) {
    for (const impl of ['native', 'typescript'] as const) {
      it(`${name} (${impl}), segments of 64 KiB`, async () => {
        const data = make();
        const path = join(dir, `${name.replace(/ /g, '-')}.bin`);
        await writeFile(path, data);
        const expected = sequential(SMALL, data);
        const scan = await scanFile(path, pool, { chunker: SMALL, digestAlgorithm: 'blake3', implementation: impl === 'native' ? 'auto' : 'typescript', segmentBytes: 64 * 1024 });
        const got = await collect(scan.batches(), data);
        assert.deepEqual(got.lengths, expected.lengths);
        assert.deepEqual(got.digests, expected.digests);
        assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf('blake3', data).toString('hex'));
        assert.equal(scan.result.size, data.length);
        assert.equal(scan.result.chunkCount, expected.lengths.length);
      });
    }
  }

  it('segment buffers released by the consumer are reused by later segments', async () => {
    // 40 segments through a pool of its own. A buffer a worker had to make is the size the
    // scan asks for (with the alignment slack of scan/segment.ts): one of only the bytes
    // read fit no later request, and every segment took a fresh buffer.
    const data = pseudoRandom(40 * 64 * 1024, 11);
    const path = join(dir, 'reuse.bin');
    await writeFile(path, data);
    const own = new ScanPool({ threads: 2, inlineBytes: 0 });
    try {
      const scan = await scanFile(path, own, { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: 64 * 1024 });
      for await (const batch of scan.batches()) batch.release();
      // The first few, dispatched before any came back, make their own.
      assert.ok(own.fileTasksUnbuffered <= 6, `${own.fileTasksUnbuffered} of 40 segments found no buffer to reuse`);
    } finally {
      await own.close();
    }
  });

  it('segment edges at every offset inside a would-be chunk', async () => {
    const data = pseudoRandom(400_000, 99);
    const expected = sequential(SMALL, data);
    const path = join(dir, 'edges.bin');
    await writeFile(path, data);
    // Segment sizes that put edges at many positions relative to the true chunk starts.
    for (let seg = 65536; seg < 65536 + 20_000; seg += 1999) {
      const scan = await scanFile(path, pool, { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: seg });
      const got = await collect(scan.batches(), data);
      assert.deepEqual(got.lengths, expected.lengths, `segment size ${seg}`);
    }
  });

  it('sizes around segment boundaries, with sha256', async () => {
    const seg = 65536;
    for (const size of [1, 1023, 1024, 1025, 16384, seg - 1, seg, seg + 1, 2 * seg, 2 * seg + 1, 3 * seg - 1]) {
      const data = pseudoRandom(size, size);
      const path = join(dir, `size-${size}.bin`);
      await writeFile(path, data);
      const scan = await scanFile(path, pool, { chunker: SMALL, digestAlgorithm: 'sha256', segmentBytes: seg });
      const got = await collect(scan.batches(), data);
      const lengths = cutAll(createChunker(SMALL), data);
      assert.deepEqual(got.lengths, lengths, `size ${size}`);
      assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf('sha256', data).toString('hex'));
    }
  });

  it('many small files scanned at once (grouped into shared worker tasks) each get their own chunks', async () => {
    const files = Array.from({ length: 150 }, (_, i) => pseudoRandom(100 + i * 997, 500 + i));
    const paths = files.map((_, i) => join(dir, `small-${i}.bin`));
    await Promise.all(files.map((f, i) => writeFile(paths[i]!, f)));
    const scans = await Promise.all(paths.map((p) => scanFile(p, pool, { chunker: SMALL, digestAlgorithm: 'blake3' })));
    const results = await Promise.all(scans.map((s, i) => collect(s.batches(), files[i]!)));
    results.forEach((got, i) => {
      const expected = sequential(SMALL, files[i]!);
      assert.deepEqual(got.lengths, expected.lengths, `file ${i}`);
      assert.deepEqual(got.digests, expected.digests, `file ${i}`);
      assert.ok(Buffer.from(scans[i]!.result.digest).equals(digestOf('blake3', files[i]!)));
    });
  });

  it('a file that changed after its scan began is refused, small (checked in the worker) or large', async () => {
    for (const [name, size] of [['small', 5000], ['large', 400_000]] as const) {
      const path = join(dir, `changing-${name}.bin`);
      const data = pseudoRandom(size, 9);
      await writeFile(path, data);
      const before = await stat(path);
      // Same size, new mtime, between the stat that began the scan and the reads: what an
      // editor saving in place leaves.
      await utimes(path, new Date(), new Date(before.mtimeMs + 5000));
      const scan = new FileScan(path, before.size, before.mtimeMs, pool, { chunker: SMALL, digestAlgorithm: 'blake3', segmentBytes: 64 * 1024 });
      await assert.rejects(collect(scan.batches(), data), (err: Error) => {
        assert.equal((err as { code?: string }).code, 'XFER_SOURCE_CHANGED', `${name}: ${err.message}`);
        assert.match(err.message, /changed while it was being read/);
        return true;
      });
    }
  });

  it('an empty file has no chunks and the digest of nothing', async () => {
    const path = join(dir, 'empty.bin');
    await writeFile(path, '');
    const scan = await scanFile(path, pool, { chunker: SMALL, digestAlgorithm: 'blake3' });
    const got = await collect(scan.batches(), Buffer.alloc(0));
    assert.equal(got.lengths.length, 0);
    assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf('blake3', Buffer.alloc(0)).toString('hex'));
  });

  it('a non-seekable stream gives the same chunks as the file', async () => {
    const data = zeroRuns();
    const expected = sequential(SMALL, data);
    // deliver in odd-sized pieces
    const pieces: Buffer[] = [];
    for (let o = 0; o < data.length; o += 77_777) pieces.push(data.subarray(o, o + 77_777));
    const scan = new StreamScan(Readable.from(pieces), { chunker: SMALL, digestAlgorithm: 'blake3' });
    const got = await collect(scan.batches(), data);
    assert.deepEqual(got.lengths, expected.lengths);
    assert.deepEqual(got.digests, expected.digests);
    assert.equal(scan.result.size, data.length);
    assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf('blake3', data).toString('hex'));
  });

  it('fixed-size chunking splits at exact multiples', async () => {
    const data = pseudoRandom(100_000, 3);
    const path = join(dir, 'fixed.bin');
    await writeFile(path, data);
    const spec: ChunkerSpec = { algorithm: 'fixed', sizeBytes: 4096 };
    const scan = await scanFile(path, pool, { chunker: spec, digestAlgorithm: 'blake3', segmentBytes: 16384 });
    const got = await collect(scan.batches(), data);
    assert.equal(got.lengths.length, Math.ceil(100_000 / 4096));
    assert.ok(got.lengths.slice(0, -1).every((l) => l === 4096));
    assert.equal(got.lengths.at(-1), 100_000 % 4096);
  });
});
