/**
 * HttpStore keeps the ChunkStore and ManifestStore contracts (test/store-conformance.ts),
 * against a real `xfer serve` on 127.0.0.1 (HTTP/2, in process), one fresh server per case.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from '../src/server/server.js';
import { HttpStore } from '../src/store/http/store.js';
import { runStoreConformance } from './store-conformance.js';

runStoreConformance('HttpStore (xfer serve over h2c)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'xfer-store-http-'));
  const server = await createServer({ root: join(dir, 'root'), port: 0 });
  const store = await HttpStore.connect(server.url);
  return {
    store,
    cleanup: async () => {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
