import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { zeroBytes } from '../src/chunker/zero.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import type { DigestAlgorithm } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import { DIGEST_THREAD_MIN_BYTES, DigestThread } from '../src/scan/digest-thread.js';
import { ScanPool } from '../src/scan/pool.js';
import { scanFile, SEGMENT_BYTES } from '../src/scan/scanner.js';
import { pseudoRandom } from './helpers/gen.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A file over the threshold, several segments: holes, data at odd offsets, zeros written as data. */
const FILE_BYTES = DIGEST_THREAD_MIN_BYTES + 3 * SEGMENT_BYTES + 5_000;
const DATA = [
  { at: 0, bytes: 300 * KiB + 7, seed: 1 }, // data at the start, ending inside a block
  { at: 9 * MiB + 4 * KiB, bytes: 2 * MiB, seed: 2 }, // across a segment boundary
  { at: 40 * MiB + 1, bytes: 3 * MiB, seed: 0 }, // zeros written as data (allocated, read)
  { at: FILE_BYTES - 200 * KiB, bytes: 200 * KiB, seed: 3 }, // data up to the end
];

async function writeFixture(path: string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(FILE_BYTES);
    for (const d of DATA) await fh.write(d.seed === 0 ? Buffer.alloc(d.bytes) : pseudoRandom(d.bytes, d.seed), 0, d.bytes, d.at);
  } finally {
    await fh.close();
  }
}

/** b3sum / sha256sum of the file: its logical content, holes read as zeros. */
async function digestOfFile(path: string, algorithm: DigestAlgorithm): Promise<string> {
  const b3 = new Blake3Hasher();
  const sha = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(8 * MiB);
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      if (algorithm === 'blake3') b3.update(buf.subarray(0, bytesRead));
      else sha.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return algorithm === 'blake3' ? b3.digest('hex') : sha.digest('hex');
}

/** Threads of this process (the scan pool's workers, digest threads, libuv's). */
function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

describe('the whole-file digest of a large file is computed on a thread of its own', () => {
  let dir: string;
  let file: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-digest-thread-'));
    file = join(dir, 'image.img');
    await writeFixture(file);
    pool = new ScanPool();
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const algorithm of ['blake3', 'sha256'] as const) {
    it(`a scan's digest is that of the logical content, holes and zero runs hashed as zeros (${algorithm})`, async () => {
      const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: algorithm });
      for await (const b of scan.batches()) b.release();
      assert.equal(Buffer.from(scan.result.digest).toString('hex'), await digestOfFile(file, algorithm));
    });
  }

  it('update() takes views of zeroBytes() as zeros and other bytes as they are, in order', async () => {
    const data = pseudoRandom(100_000, 7);
    const pieces = [data.subarray(0, 10), zeroBytes(256 * KiB), zeroBytes(4 * KiB), data.subarray(10), Buffer.alloc(5), zeroBytes(16 * MiB - 3), zeroBytes(3 * MiB)];
    const t = new DigestThread('blake3');
    try {
      for (const p of pieces) t.update(p);
      await t.ready();
      assert.equal((await t.digest()).toString('hex'), digestOf('blake3', Buffer.concat(pieces)).toString('hex'));
    } finally {
      await t.close();
    }
  });

  it('the caller keeps its bytes: what update() is given is copied, never taken away', async () => {
    const data = pseudoRandom(64 * KiB, 8);
    const view = Buffer.from(data.buffer, data.byteOffset, 32 * KiB); // a Buffer view, as chunks are
    const t = new DigestThread('blake3');
    try {
      t.update(view);
      assert.equal(view.length, 32 * KiB);
      assert.equal(data.buffer.byteLength > 0, true, 'not detached');
      assert.equal((await t.digest()).toString('hex'), digestOf('blake3', data.subarray(0, 32 * KiB)).toString('hex'));
    } finally {
      await t.close();
    }
  });

  // BLAKE3 with the addon merges the workers' segment CVs (blake3-tree.test.ts): no thread.
  it('a scan abandoned after its first batch ends its digest thread (SHA-256)', async () => {
    const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'sha256' });
    const before = threadCount();
    for await (const b of scan.batches()) {
      assert.equal(threadCount(), before + 1, 'the digest thread runs');
      b.release();
      break;
    }
    // terminate() resolves once the thread has stopped.
    assert.equal(threadCount(), before);
  });
});
