import { createReadStream } from 'node:fs';
import type { ChunkStore, ManifestStore } from '../../src/store/store.js';
import type { PushDestination } from '../../src/transfer/destination.js';

/**
 * The smallest PushDestination over a store: chunks go to `store`, the manifest under
 * `name` at commit (push flushes the chunks first). Until the library's push takes a
 * store itself (issue 16's endpoint work), this is how tests push to an S3Store.
 */
export function storeDestination(store: ChunkStore & ManifestStore, name: string): PushDestination {
  return {
    chunks: store,
    description: name,
    async begin() {
      return {
        async entry() {
          return undefined;
        },
        async commit(manifestPath, _header, options) {
          await store.putManifest(name, createReadStream(manifestPath), options);
        },
        async abort() {},
      };
    },
    async close() {
      await store.close();
    },
  };
}
