import { strict as assert } from 'node:assert';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isZeroBytesView, zeroBytes } from '../src/chunker/zero.js';
import { DIRECT_BLOCK_BYTES, DirectBlockWriter, directIoAvailable, openDirect } from '../src/io/direct.js';
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
});
