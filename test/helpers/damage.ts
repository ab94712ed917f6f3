import { open, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ChunkId } from '../../src/core/ids.js';
import { setTimesNs } from '../../src/io/sys.js';
import { HELD_DIR, heldChunkPlaces, HeldStore } from '../../src/server/held.js';
import { silentLogger } from '../../src/server/log.js';
import type { ChunkStore, ManifestStore } from '../../src/store/store.js';
import { LocalStore } from '../../src/store/local.js';

/** The chunks a server's rebuilt files hold (server/held.ts), when `storeDir` is a server root's `store`. */
async function heldPlaces(storeDir: string, store: LocalStore): Promise<Awaited<ReturnType<typeof heldChunkPlaces>>> {
  return basename(storeDir) === 'store' ? heldChunkPlaces(dirname(storeDir), store) : [];
}

function sameId(a: ChunkId, b: ChunkId): boolean {
  return a.algorithm === b.algorithm && Buffer.compare(a.digest, b.digest) === 0;
}

/**
 * Flips one bit of a stored chunk where the store keeps it, `at` bytes into the chunk, as
 * disk damage would: in its pack, or, for a chunk a server's rebuilt file holds (one copy
 * on disk, server/held.ts), in that file, its mtime put back to the nanosecond (damage the
 * file's identity does not show). Throws if the store does not have the chunk.
 */
export async function damageStoredChunk(storeDir: string, id: ChunkId, at = 1): Promise<void> {
  const store = await LocalStore.open(storeDir, { create: false });
  let loc: { file: string; offset: number } | undefined;
  let held = false;
  try {
    loc = await store.chunkLocation(id);
    if (!loc) {
      loc = (await heldPlaces(storeDir, store)).find((p) => sameId(p.id, id));
      held = loc !== undefined;
    }
  } finally {
    await store.close();
  }
  if (!loc) throw new Error(`${storeDir} does not hold the chunk to damage`);
  await flipByte(loc.file, loc.offset + at, held);
}

/**
 * Flips one bit of the byte at `offset` of `file`; with `keepTimes`, its atime and mtime are
 * set back (silent damage: a held file's identity still matches its record).
 */
export async function flipByte(file: string, offset: number, keepTimes: boolean): Promise<void> {
  const times = keepTimes ? await stat(file, { bigint: true }) : undefined;
  const fh = await open(file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, offset);
    one[0] ^= 0x10;
    await fh.write(one, 0, 1, offset);
  } finally {
    await fh.close();
  }
  if (times) setTimesNs(file, times.atimeNs, times.mtimeNs);
}

/** The chunks a local store holds (and, for a server root's store, its rebuilt files hold), in no particular order. */
export async function storedChunks(storeDir: string): Promise<ChunkId[]> {
  const store = await LocalStore.open(storeDir, { create: false });
  const ids: ChunkId[] = [];
  try {
    const seen = new Set<string>();
    const key = (id: ChunkId) => `${id.algorithm}:${Buffer.from(id.digest).toString('hex')}`;
    for await (const id of store.listChunks()) {
      ids.push(id);
      seen.add(key(id));
    }
    for (const p of await heldPlaces(storeDir, store)) {
      if (seen.has(key(p.id))) continue;
      seen.add(key(p.id));
      ids.push(p.id);
    }
  } finally {
    await store.close();
  }
  return ids;
}

/**
 * The store at `storeDir` as its server sees it: for a server root's `store`, with the
 * chunks the root's rebuilt files hold (server/held.ts); else the LocalStore alone.
 * For a root no server is committing to. The caller closes it.
 */
export async function openServedStore(storeDir: string): Promise<ChunkStore & ManifestStore> {
  const store = await LocalStore.open(storeDir, { create: false });
  const root = dirname(storeDir);
  if (basename(storeDir) !== 'store' || !(await stat(join(root, HELD_DIR)).then(() => true, () => false))) return store;
  return HeldStore.open(store, { root, filesDir: join(root, 'files'), log: silentLogger });
}
