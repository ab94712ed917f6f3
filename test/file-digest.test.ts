import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { alignedBuffer, directIoAvailable, openDirect } from '../src/io/direct.js';
import { sysIsNative } from '../src/io/sys.js';
import { DIGEST_THREAD_MIN_BYTES } from '../src/scan/digest-thread.js';
import { digestOfFile } from '../src/scan/file-digest.js';
import { pseudoRandom } from './helpers/gen.js';
import { withNative } from './helpers/native.js';
import { processIo } from './helpers/proc-io.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('a whole file hashed to check it (verify --read-data, an in-place pull, an unchanged target): holes not read, the digest b3sum\'s and sha256sum\'s', () => {
  let dir: string;
  let large: string;
  let small: string;
  /** Data extents of the large file: holes start and end mid-span, one reaches the end. */
  const LARGE_BYTES = DIGEST_THREAD_MIN_BYTES + 9 * MiB + 5;
  const EXTENTS = [[3 * MiB + 4096, MiB + 77], [20 * MiB + 12345, 3 * MiB], [LARGE_BYTES - 70000, 70000]] as const;
  const DATA_BYTES = EXTENTS.reduce((n, [, len]) => n + len, 0);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-file-digest-'));
    large = join(dir, 'large.img');
    small = join(dir, 'small.img');
    for (const [path, size, extents] of [[large, LARGE_BYTES, EXTENTS], [small, 5 * MiB + 3, [[MiB + 1, 1000]]]] as const) {
      const fh = await open(path, 'w');
      try {
        await fh.truncate(size);
        for (const [i, [at, n]] of extents.entries()) await fh.write(pseudoRandom(n, 300 + i), 0, n, at);
      } finally {
        await fh.close();
      }
    }
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const native of [true, false]) {
    for (const algorithm of ['blake3', 'sha256'] as const) {
      it(`${algorithm}, ${native ? 'with the addon' : 'TypeScript twins (XFER_NO_NATIVE=1)'}: the digest of the logical content, large and small`, async (t) => {
        if (native && !sysIsNative()) return t.diagnostic('native addon not built');
        const tool = algorithm === 'blake3' ? ['b3sum', '--no-names'] : ['sha256sum'];
        for (const [path, size] of [[large, LARGE_BYTES], [small, 5 * MiB + 3]] as const) {
          const expected = execFileSync(tool[0]!, [...tool.slice(1), path], { encoding: 'utf8' }).trim().split(' ')[0];
          const got = await withNative(native, () => digestOfFile(path, size, algorithm));
          assert.equal(got.toString('hex'), expected, `${path}`);
        }
      });
    }
  }

  it('the holes of a large sparse file are not read', async (t) => {
    if (!sysIsNative()) return t.diagnostic('native addon not built: SEEK_DATA unknown, all of the file is data');
    const before = processIo('rchar');
    await digestOfFile(large, LARGE_BYTES, 'blake3');
    const read = processIo('rchar') - before;
    // Reading the holes would be LARGE_BYTES (73 MiB); the extents and the blocks around them are 4 MiB.
    assert.ok(read < DATA_BYTES + 2 * MiB, `read ${read} bytes of a ${LARGE_BYTES}-byte file holding ${DATA_BYTES}`);
  });

  it('a large file in the page cache is read from it, not with O_DIRECT from the disk', async (t) => {
    if (!sysIsNative()) return t.diagnostic('native addon not built: no O_DIRECT, reads always go through the page cache');
    // Just written, so cached (an unchanged target checked right after a pull wrote it).
    const path = join(dir, 'cached.bin');
    const data = pseudoRandom(DIGEST_THREAD_MIN_BYTES + 3 * MiB, 77);
    await writeFile(path, data);
    const before = processIo('read_bytes');
    const got = await digestOfFile(path, data.length, 'blake3');
    const read = processIo('read_bytes') - before;
    assert.equal(got.toString('hex'), execFileSync('b3sum', ['--no-names', path], { encoding: 'utf8' }).trim());
    assert.ok(read < data.length / 4, `${read} bytes read from storage for a cached file of ${data.length}`);
  });

  it('a large file not in the page cache is read with O_DIRECT, straight into the hasher\'s spans, around its holes', async (t) => {
    if (!sysIsNative() || !directIoAvailable()) return t.diagnostic('native addon not built or O_DIRECT refused here: reads go through the page cache');
    // Written with O_DIRECT, so not cached: digestOfFile reads it direct. Its data sits in
    // aligned blocks with holes between them (a hole that ends mid-span, another at the end),
    // and its size is not a multiple of the alignment.
    const path = join(dir, 'cold.img');
    const size = DIGEST_THREAD_MIN_BYTES + 5 * MiB + 999;
    const fh = await open(path, 'w');
    await fh.truncate(size);
    await fh.close();
    const direct = (await openDirect(path, 'w'))!;
    try {
      for (const [at, n] of [[0, 3 * MiB], [5 * MiB + 64 * KiB, 9 * MiB], [40 * MiB, 4 * KiB], [size - (size % (4 * KiB)), 4 * KiB]] as const) {
        const buf = alignedBuffer(n);
        pseudoRandom(n, at).copy(buf);
        await direct.write(buf, 0, n, at);
      }
    } finally {
      await direct.close();
    }
    await truncate(path, size); // the last aligned write ran past it
    const before = processIo('read_bytes');
    const got = await digestOfFile(path, size, 'blake3');
    const read = processIo('read_bytes') - before;
    assert.equal(got.toString('hex'), execFileSync('b3sum', ['--no-names', path], { encoding: 'utf8' }).trim());
    assert.ok(read >= 12 * MiB, `${read} bytes read from storage: the data extents were not read direct`);
  });

  it('a file shorter than the size asked is hashed to its end: its missing tail is not taken for a hole', async () => {
    // Its last MiB would read as a hole (SEEK_DATA finds no more data): it is not taken for one.
    const got = await digestOfFile(small, 6 * MiB, 'blake3');
    const padded = Buffer.concat([readFileSync(small), Buffer.alloc(6 * MiB - (5 * MiB + 3))]);
    const paddedDigest = execFileSync('b3sum', ['--no-names'], { input: padded, encoding: 'utf8', maxBuffer: 1024 }).trim();
    assert.notEqual(got.toString('hex'), paddedDigest);
    assert.equal(got.toString('hex'), execFileSync('b3sum', ['--no-names', small], { encoding: 'utf8' }).trim(), 'the digest of what there is');
  });
});
