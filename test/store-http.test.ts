/**
 * HttpStore keeps the ChunkStore and ManifestStore contracts (test/store-conformance.ts),
 * against a real `xfer serve` on 127.0.0.1 (HTTP/2, in process), one fresh server per case,
 * over its own local store and over a MemoryStore it is given.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from '../src/server/server.js';
import { HttpStore } from '../src/store/http/store.js';
import { MemoryStore } from '../src/store/memory.js';
import type { ChunkStore, ManifestStore } from '../src/store/store.js';
import { runStoreConformance } from './store-conformance.js';

/** A fresh server (over `store`, else its own local store) and an HttpStore on it, for one case. */
function httpStoreOn(store?: () => ChunkStore & ManifestStore) {
  return async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-store-http-'));
    const server = await createServer({ root: join(dir, 'root'), port: 0, ...(store ? { store: store() } : {}) });
    return {
      store: await HttpStore.connect(server.url),
      cleanup: async () => {
        await server.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  };
}

runStoreConformance('HttpStore (xfer serve over h2c)', httpStoreOn());
// createServer({ store }) serves from any store it is given, through the interfaces only.
runStoreConformance('HttpStore on a server over a MemoryStore', httpStoreOn(() => new MemoryStore()));
