import { strict as assert } from 'node:assert';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isZeroBytesView, zeroBytes } from '../src/chunker/zero.js';
import { DIRECT_BLOCK_BYTES, DirectBlockWriter, directIoAvailable, openDirect } from '../src/io/direct.js';
import { largeBufferStats } from '../src/io/sys.js';
import { pseudoRandom } from './helpers/gen.js';

const KiB = 1024;

describe('known zeros (views of zeroBytes) are written without being copied or compared', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-known-zeros-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('only views of the shared zeros count as known zeros', () => {
    assert.ok(isZeroBytesView(zeroBytes(4 * KiB)));
    assert.ok(isZeroBytesView(zeroBytes(64 * KiB).subarray(100)));
    assert.ok(!isZeroBytesView(Buffer.alloc(4 * KiB)), 'zeros of another buffer are looked at as usual');
    assert.ok(!isZeroBytesView(zeroBytes(0)), 'nothing');
  });

  it('the direct writer: a block of known zeros stays a hole, known zeros beside data read back as zeros from a reused buffer', async (t) => {
    if (!directIoAvailable()) {
      t.diagnostic('direct I/O unavailable');
      return;
    }
    // Block 0: data (its buffer is then reused for block 1); block 1: data, then known
    // zeros, then data; block 2: known zeros only.
    const size = 3 * DIRECT_BLOCK_BYTES;
    const first = pseudoRandom(DIRECT_BLOCK_BYTES, 11);
    const head = pseudoRandom(100 * KiB + 5, 12);
    const tail = pseudoRandom(8 * KiB, 13);
    const p = join(dir, 'mixed.bin');
    await writeFile(p, '');
    const w = new DirectBlockWriter((await openDirect(p, 'w'))!, size, 0);
    await w.write(first, 0);
    const zerosAt = DIRECT_BLOCK_BYTES + head.length;
    const zerosLength = DIRECT_BLOCK_BYTES - head.length - tail.length;
    await w.write(head, DIRECT_BLOCK_BYTES);
    await w.write(zeroBytes(zerosLength), zerosAt);
    await w.write(tail, 2 * DIRECT_BLOCK_BYTES - tail.length);
    await w.write(zeroBytes(DIRECT_BLOCK_BYTES), 2 * DIRECT_BLOCK_BYTES);
    await w.finish();
    const h = await open(p, 'r+');
    await h.truncate(size);
    await h.close();
    const expected = Buffer.concat([first, head, Buffer.alloc(zerosLength), tail, Buffer.alloc(DIRECT_BLOCK_BYTES)]);
    assert.ok((await readFile(p)).equals(expected), 'the content, zeros where known zeros were written');
    // Block 0, and of block 1 its data's 4 KiB pieces: block 2 and the zeros between are holes.
    const allocated = (await stat(p)).blocks * 512;
    assert.ok(allocated <= DIRECT_BLOCK_BYTES + head.length + tail.length + 8 * KiB, `allocated ${allocated}`);
  });

  it('the direct writer takes no buffer for blocks written with known zeros only, however many wait at once', async (t) => {
    if (!directIoAvailable() || !largeBufferStats()) {
      t.diagnostic('direct I/O or the addon unavailable');
      return;
    }
    // 64 blocks of zeros, each missing its last 4 KiB (data that comes last, as a sparse
    // image's data comes after the runs of zeros rebuilt ahead of it).
    const blocks = 64;
    const size = blocks * DIRECT_BLOCK_BYTES;
    const p = join(dir, 'waiting.bin');
    await writeFile(p, '');
    const w = new DirectBlockWriter((await openDirect(p, 'w'))!, size, 0);
    const before = largeBufferStats()!;
    for (let b = 0; b < blocks; b++) await w.write(zeroBytes(DIRECT_BLOCK_BYTES - 4 * KiB), b * DIRECT_BLOCK_BYTES);
    const waiting = largeBufferStats()!;
    assert.equal(waiting.liveBytes - before.liveBytes, 0, `${(waiting.liveBytes - before.liveBytes) / DIRECT_BLOCK_BYTES} blocks' buffers held for zeros`);
    const data = pseudoRandom(4 * KiB, 14);
    for (let b = 0; b < blocks; b++) await w.write(data, (b + 1) * DIRECT_BLOCK_BYTES - 4 * KiB);
    await w.finish();
    const content = await readFile(p);
    for (let b = 0; b < blocks; b++) {
      const end = (b + 1) * DIRECT_BLOCK_BYTES;
      assert.ok(content.subarray(end - 4 * KiB, end).equals(data) && content.subarray(end - 8 * KiB, end - 4 * KiB).every((x) => x === 0), `block ${b}`);
    }
  });
});
