import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RecentChunks } from '../src/reconstruct/recent.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('a chunk that occurs several times is fetched once', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-repeats-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('pull receives each distinct chunk once, zero chunks never: zero runs and a block repeated 4 times', async () => {
    const block = pseudoRandom(3 * MiB, 21);
    const data = Buffer.concat([Buffer.alloc(8 * MiB), block, pseudoRandom(2 * MiB, 22), block, Buffer.alloc(4 * MiB), block, block]);
    const src = join(dir, 'image.bin');
    await writeFile(src, data);
    const chunked = JSON.parse((await runCli(['chunk', src, '--json'])).stdout) as { distinctBytes: number; size: number };
    assert.ok(chunked.distinctBytes < chunked.size / 2, 'the input really repeats');
    assert.equal((await runCli(['push', src, join(dir, 'store') + '/'])).code, 0);
    const r = await runCli(['pull', join(dir, 'store', 'image.bin'), join(dir, 'out.bin'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { bytesTotal: number; bytesReceived: number; bytesReused: number };
    // The zero runs are cut into 256 KiB zero chunks (the default maximum), which no pull
    // receives: they are synthesised (chunker/zero.ts). Every other distinct chunk comes once.
    assert.equal(j.bytesReceived, chunked.distinctBytes - 256 * 1024);
    assert.equal(j.bytesReceived + j.bytesReused, j.bytesTotal);
    assert.ok((await readFile(join(dir, 'out.bin'))).equals(data));
  });

  it('RecentChunks joins a fetch in flight, serves repeats from memory and evicts the least recently used', async () => {
    const cache = new RecentChunks(10);
    let fetches = 0;
    const fetch = (n: number) => async () => {
      fetches++;
      await new Promise((r) => setTimeout(r, 5));
      return Buffer.alloc(n, fetches);
    };
    const d = (b: number) => new Uint8Array([b]);
    const [a1, a2] = await Promise.all([cache.get(d(1), fetch(4)), cache.get(d(1), fetch(4))]);
    assert.equal(fetches, 1);
    assert.deepEqual([a1.fetched, a2.fetched], [true, false]);
    assert.equal(a1.data, a2.data);
    await cache.get(d(2), fetch(4)); // 8 bytes held
    await cache.get(d(1), fetch(4)); // a hit: 1 becomes the most recent
    assert.equal(fetches, 2);
    await cache.get(d(3), fetch(4)); // 12 > 10: evicts 2, the least recently used
    assert.equal((await cache.get(d(1), fetch(4))).fetched, false);
    assert.equal((await cache.get(d(2), fetch(4))).fetched, true);
    await assert.rejects(cache.get(d(9), async () => { throw new Error('boom'); }), /boom/);
    assert.equal((await cache.get(d(9), fetch(1))).fetched, true, 'a failed fetch is not remembered');
  });

  it('RecentChunks keeps at most its capacity alive, counting the buffers its chunks are views of', async () => {
    const capacity = 32 * MiB;
    const cache = new RecentChunks(capacity);
    // As a local store returns them: 64 KiB chunks that are views of 4 MiB read-ahead
    // windows, sixteen chunks from each window, 64 windows (256 MiB of windows in all).
    let n = 0;
    for (let w = 0; w < 64; w++) {
      const window = Buffer.alloc(4 * MiB, w);
      for (let i = 0; i < 16; i++) {
        const chunk = window.subarray(i * 64 * KiB, (i + 1) * 64 * KiB);
        await cache.get(new Uint8Array([w, i]), async () => chunk);
        n++;
        assert.ok(cache.heldBytes <= capacity, `after ${n} chunks: ${cache.heldBytes} bytes held`);
      }
    }
    // The most recent windows' chunks are still served from memory.
    assert.equal((await cache.get(new Uint8Array([63, 15]), async () => Buffer.alloc(64 * KiB))).fetched, false);
    // A chunk of a local store's read-ahead window (4 MiB and an alignment block) is kept as
    // a view, not copied: a copy per chunk fetched is a copy of every byte a restore writes.
    const fresh = new RecentChunks(capacity);
    const window = Buffer.alloc(4 * MiB + 4 * KiB);
    await fresh.get(new Uint8Array([100]), async () => window.subarray(0, 64 * KiB));
    assert.equal(fresh.heldBytes, window.buffer.byteLength, 'the chunk is a view of its window');
    // So is one in a server's smaller cache (8 MiB, server/limits.ts), as are its arrival
    // slabs' chunks (4 MiB slabs).
    const server = new RecentChunks(8 * MiB);
    await server.get(new Uint8Array([101]), async () => window.subarray(64 * KiB, 128 * KiB));
    assert.equal(server.heldBytes, window.buffer.byteLength, 'the chunk is a view of its window in a server\'s cache');
    // A view of a buffer larger than the capacity is remembered as a copy.
    const huge = Buffer.alloc(48 * MiB);
    await cache.get(new Uint8Array([200]), async () => huge.subarray(0, 64 * KiB));
    assert.ok(cache.heldBytes <= capacity, `${cache.heldBytes} bytes held`);
    assert.equal((await cache.get(new Uint8Array([200]), async () => Buffer.alloc(1))).fetched, false);
  });
});
