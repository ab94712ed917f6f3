import { it } from 'node:test';
import { strict as assert } from 'node:assert';
import { digestToHex, type ChunkId, type DigestAlgorithm } from '../src/core/ids.js';
import { MemoryStore } from '../src/store/memory.js';
import { makeChunk, rejectsWith, runStoreConformance } from './store-conformance.js';

runStoreConformance('MemoryStore', async () => ({ store: new MemoryStore(), cleanup: async () => undefined }));

it('MemoryStore: a corrupted chunk is reported by get as ChunkCorruptError naming the digest', async () => {
  const store = new MemoryStore();
  for (const size of [1000, 0]) {
    const { id, data } = makeChunk('blake3', size, 1);
    await store.put(id, data);
    store.corruptChunk(id);
    assert.deepEqual(await store.has([id]), [true]);
    await rejectsWith(store.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
  }
});

it('MemoryStore: lists its chunks, by algorithm', async () => {
  const store = new MemoryStore();
  const chunks = [makeChunk('blake3', 10, 1), makeChunk('sha256', 10, 2), makeChunk('blake3', 10, 3)];
  for (const c of chunks) await store.put(c.id, c.data);
  const list = async (algorithm?: DigestAlgorithm): Promise<string[]> => {
    const keys: string[] = [];
    for await (const id of store.listChunks(algorithm)) keys.push(`${id.algorithm}:${digestToHex(id.digest)}`);
    return keys.sort();
  };
  const key = (c: { id: ChunkId }): string => `${c.id.algorithm}:${digestToHex(c.id.digest)}`;
  assert.deepEqual(await list(), chunks.map(key).sort());
  assert.deepEqual(await list('sha256'), [key(chunks[1]!)]);
});
