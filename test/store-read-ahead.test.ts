import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ChunkId } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import { LocalStore } from '../src/store/local.js';

const CHUNKS = 16;
const CHUNK_BYTES = 64 * 1024;

describe('a local store reads a committed pack ahead for readers that go through it in order', () => {
  it('after two chunks read in order, the following ones come from one read made then, not one read each', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      const data = Array.from({ length: CHUNKS }, () => randomBytes(CHUNK_BYTES));
      const ids: ChunkId[] = data.map((d) => ({ algorithm: 'blake3', digest: digestOf('blake3', d) }));
      const writer = await LocalStore.open(dir, { create: true });
      for (let i = 0; i < CHUNKS; i++) await writer.put(ids[i]!, data[i]!);
      await writer.close();

      // Opened again: the pack is committed (no writer of this store appends to it).
      const store = await LocalStore.open(dir, { create: false });
      try {
        assert.deepEqual(await store.get(ids[0]!), data[0]);
        assert.deepEqual(await store.get(ids[1]!), data[1]);
        // Damage a later chunk on disk: a reader that reads chunk by chunk would see it.
        const later = 10;
        const where = (await store.chunkLocation(ids[later]!))!;
        const fh = await open(where.file, 'r+');
        await fh.write(Buffer.alloc(where.length), 0, where.length, where.offset);
        await fh.close();
        for (let i = 2; i < CHUNKS; i++) assert.deepEqual(await store.get(ids[i]!), data[i], `chunk ${i}, from the window read ahead`);
      } finally {
        await store.close();
      }
      // The damage is real: a store that has read nothing ahead finds it.
      const fresh = await LocalStore.open(dir, { create: false });
      try {
        await assert.rejects(fresh.get(ids[10]!), { code: 'XFER_CHUNK_CORRUPT' });
      } finally {
        await fresh.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
