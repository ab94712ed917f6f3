/**
 * `createServer({ store })` serves from any ChunkStore & ManifestStore it is given, through
 * the interfaces only: here a MemoryStore (its conformance through HttpStore: store-http.test.ts).
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { createServer } from '../src/server/server.js';
import { MemoryStore } from '../src/store/memory.js';
import { pseudoRandom } from './helpers/gen.js';

describe('a server over a store it is given', () => {
  it('commits a push into that store and answers a pull from it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-any-store-'));
    const memory = new MemoryStore();
    const server = await createServer({ root: join(dir, 'root'), port: 0, store: memory });
    try {
      const data = pseudoRandom(3 * 1024 * 1024, 77);
      await writeFile(join(dir, 'src.bin'), data);
      await push(join(dir, 'src.bin'), `${server.url}/kept/src.bin`);
      // The target, and its first version in the store's namespace (issue 16).
      assert.deepEqual((await memory.listManifests('')).map((m) => m.name.replace(/^\.xfer\/versions\/[0-9a-f]{32}\/[^/]+$/, '.xfer/versions/<key>/<id>')), ['.xfer/versions/<key>/<id>', 'kept/src.bin']);
      await pull(`${server.url}/kept/src.bin`, join(dir, 'back.bin'));
      assert.ok((await readFile(join(dir, 'back.bin'))).equals(data));
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
