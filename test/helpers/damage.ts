import { open } from 'node:fs/promises';
import type { ChunkId } from '../../src/core/ids.js';
import { LocalStore } from '../../src/store/local.js';

/**
 * Flips one bit of a stored chunk where a local store keeps it (its pack), `at` bytes into
 * the chunk, as disk damage would. Throws if the store does not have the chunk.
 */
export async function damageStoredChunk(storeDir: string, id: ChunkId, at = 1): Promise<void> {
  const store = await LocalStore.open(storeDir, { create: false });
  const loc = await store.chunkLocation(id);
  await store.close();
  if (!loc) throw new Error(`${storeDir} does not hold the chunk to damage`);
  const fh = await open(loc.file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, loc.offset + at);
    one[0] ^= 0x10;
    await fh.write(one, 0, 1, loc.offset + at);
  } finally {
    await fh.close();
  }
}

/** The chunks a local store holds, in no particular order. */
export async function storedChunks(storeDir: string): Promise<ChunkId[]> {
  const store = await LocalStore.open(storeDir, { create: false });
  const ids: ChunkId[] = [];
  for await (const id of store.listChunks()) ids.push(id);
  await store.close();
  return ids;
}
