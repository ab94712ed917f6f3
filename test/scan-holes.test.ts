import { strict as assert } from 'node:assert';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { isSharedZeros, MAX_ZERO_CHUNK_BYTES, zeroBytes } from '../src/chunker/zero.js';
import { createChunker } from '../src/chunker/index.js';
import { digestOf } from '../src/hash/digest.js';
import { setZeroCvCacheDir } from '../src/hash/zero-cvs.js';
import { ScanPool } from '../src/scan/pool.js';
import { chunkDigest, scanFile, SEGMENT_BYTES } from '../src/scan/scanner.js';
import { sysIsNative } from '../src/io/sys.js';
import { cutAll } from './helpers/chunks.js';
import { pseudoRandom } from './helpers/gen.js';
import { withNative } from './helpers/native.js';

const MiB = 1024 * 1024;
const SEG = SEGMENT_BYTES;

// Every hole hashed here, not found in the user's cache.
setZeroCvCacheDir(null);

/**
 * 6 segments: 1 MiB of data at 0 and at 5 segments + 4 KiB, holes between. Segments 1-3
 * are all hole with their lookahead (a max chunk into the next); 4's lookahead reaches the
 * data of 5. Returns the logical content.
 */
async function sparseFile(path: string): Promise<Buffer> {
  const whole = Buffer.alloc(6 * SEG);
  const data = pseudoRandom(2 * MiB, 31);
  whole.set(data.subarray(0, MiB), 0);
  whole.set(data.subarray(MiB), 5 * SEG + 4096);
  const fh = await open(path, 'w');
  try {
    await fh.write(whole, 0, MiB, 0);
    await fh.write(whole, 5 * SEG + 4096, MiB, 5 * SEG + 4096);
    await fh.truncate(6 * SEG);
  } finally {
    await fh.close();
  }
  return whole;
}

/** Counts the segment tasks `pool` is given, and the most running at once. */
function watchTasks(pool: ScanPool): { tasks: number; mostRunning: number } {
  const watched = { tasks: 0, mostRunning: 0 };
  let running = 0;
  const run = pool.run.bind(pool);
  pool.run = async (...args: Parameters<ScanPool['run']>) => {
    watched.tasks++;
    watched.mostRunning = Math.max(watched.mostRunning, ++running);
    try {
      return await run(...args);
    } finally {
      running--;
    }
  };
  return watched;
}

describe('segments that are all hole are scanned without a worker task', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-scan-holes-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const native of [true, false]) {
    it(`the chunks and digest are one sequential pass's, with a task for each segment holding data only (${native ? 'addon' : 'TypeScript twins: holes read'})`, async () => {
      const file = join(dir, `sparse-${native}.img`);
      const whole = await sparseFile(file);
      await withNative(native, async () => {
        const pool = new ScanPool({ threads: 2, inlineBytes: 0 });
        const watched = watchTasks(pool);
        try {
          const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3' });
          const lengths: number[] = [];
          const digests: string[] = [];
          let offset = 0;
          for await (const batch of scan.batches()) {
            for (let i = 0; i < batch.count; i++) {
              const len = batch.lengths[i]!;
              assert.ok(Buffer.from(batch.data.subarray(offset - batch.offset, offset - batch.offset + len)).equals(whole.subarray(offset, offset + len)), `bytes at ${offset}`);
              lengths.push(len);
              digests.push(Buffer.from(chunkDigest(batch, i)).toString('hex'));
              offset += len;
            }
            batch.release();
          }
          const expected = cutAll(createChunker(DEFAULT_CHUNKER, { implementation: 'typescript' }), whole);
          assert.deepEqual(lengths, expected);
          let at = 0;
          assert.deepEqual(digests, expected.map((len) => digestOf('blake3', whole.subarray(at, (at += len))).toString('hex')));
          assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf('blake3', whole).toString('hex'));
          // The twins have no SEEK_DATA: they read the holes (allowed), a task per segment.
          assert.equal(scan.result.dataBytes, native ? 2 * MiB : 6 * SEG);
          assert.equal(watched.tasks, native ? 3 : 6, 'segments 0, 4 and 5');
        } finally {
          await pool.close();
        }
      });
    });
  }

  it('the shared zeros a hole segment stands on are never taken back for a worker to read into', async () => {
    const pool = new ScanPool({ threads: 2, inlineBytes: 0 });
    try {
      pool.recycle(zeroBytes(MAX_ZERO_CHUNK_BYTES).buffer as ArrayBuffer);
      assert.ok(!isSharedZeros(pool.acquire(MiB)), 'acquire gave the shared zeros');
      // A sparse scan gives its batches back, then a dense one reads into recycled buffers.
      const sparse = join(dir, 'again.img');
      await sparseFile(sparse);
      const dense = join(dir, 'dense.img');
      await writeFile(dense, pseudoRandom(3 * SEG, 32));
      for (const file of [sparse, dense]) {
        const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3' });
        for await (const batch of scan.batches()) batch.release();
      }
      assert.ok(zeroBytes(MAX_ZERO_CHUNK_BYTES).every((b) => b === 0), 'the shared zeros are still zeros');
    } finally {
      await pool.close();
    }
  });

  it('data segments with more all-hole segments between them than the workers take at once are still scanned side by side', async (t) => {
    if (!sysIsNative()) return t.diagnostic('the native addon is not built: no SEEK_DATA, every segment is a task');
    // Segments of 1 MiB; 8 extents of 256 KiB, 16 segments apart, each inside one segment
    // (512 KiB into it: no neighbour's lookahead reaches it), so 8 worker tasks and 120
    // hole segments. Counted together in one window of threads + 1 segments, one task ran
    // at a time.
    const SEGMENT = MiB;
    const file = join(dir, 'far-apart.img');
    const whole = Buffer.alloc(8 * 16 * SEGMENT);
    const fh = await open(file, 'w');
    try {
      for (let e = 0; e < 8; e++) {
        const at = e * 16 * SEGMENT + SEGMENT / 2;
        const data = pseudoRandom(256 * 1024, 40 + e);
        whole.set(data, at);
        await fh.write(data, 0, data.length, at);
      }
      await fh.truncate(whole.length);
    } finally {
      await fh.close();
    }
    const pool = new ScanPool({ threads: 2, inlineBytes: 0 });
    const watched = watchTasks(pool);
    try {
      const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3', segmentBytes: SEGMENT });
      for await (const batch of scan.batches()) batch.release();
      assert.equal(Buffer.from(scan.result.digest).toString('hex'), digestOf('blake3', whole).toString('hex'));
      assert.equal(watched.tasks, 8, 'a task per extent');
      assert.ok(watched.mostRunning >= 2, `at most ${watched.mostRunning} segment task(s) at once`);
    } finally {
      await pool.close();
    }
  });
});
