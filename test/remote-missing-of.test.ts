/**
 * `POST /v1/chunks/missing-of/<path>` (docs/PROTOCOL.md): the chunks of the tree committed
 * at a path that the server lacks, the tree named by its tag. It answers only for the tree
 * the tag names, and names every chunk of it the store lacks: a push trusts the rest.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { push } from '../src/api.js';
import { digestKey } from '../src/core/ids.js';
import { openManifestFile } from '../src/manifest/reader.js';
import { manifestTag } from '../src/manifest/tag.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { HttpStore } from '../src/store/http/store.js';
import { pseudoRandom } from './helpers/gen.js';

describe('chunks/missing-of answers for the tree its tag names', () => {
  let dir: string;
  let server: XferServer;
  let empty: XferServer;
  let store: HttpStore;
  let emptyStore: HttpStore;
  let manifest: Buffer;
  let tag: string;
  let digests: Set<string>;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-missing-of-'));
    process.env.XDG_CACHE_HOME = join(dir, 'cache');
    server = await createServer({ root: join(dir, 'root'), port: 0 });
    empty = await createServer({ root: join(dir, 'empty'), port: 0 });
    const tree = join(dir, 'tree');
    await mkdir(tree, { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(tree, `f${i}.bin`), pseudoRandom(20_000 + i, i));
    await writeFile(join(tree, 'again.bin'), pseudoRandom(20_000, 0)); // f0.bin's chunk again
    await push(tree, `${server.url}/t`);
    const keptDir = join(dir, 'cache', 'xfer', 'pushed');
    const kept = join(keptDir, (await readdir(keptDir)).find((n) => n.endsWith('.manifest'))!);
    manifest = await readFile(kept);
    const reader = await openManifestFile(kept);
    tag = manifestTag(reader.header)!;
    digests = new Set();
    for await (const ev of reader.events()) if (ev.kind === 'chunks') for (const r of ev.records) digests.add(digestKey(r.digest));
    store = await HttpStore.connect(server.url, { retry: undefined });
    emptyStore = await HttpStore.connect(empty.url, { retry: undefined });
  });
  after(async () => {
    await store?.close();
    await emptyStore?.close();
    await server?.close();
    await empty?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the committed tree, all chunks stored: none missing', async () => {
    assert.deepEqual(await store.client.missingOf('t', tag), []);
  });

  it('another tag, or no manifest at the path: no answer (the client lists digests)', async () => {
    assert.equal(await store.client.missingOf('t', `tree.blake3.${'0'.repeat(64)}`), undefined);
    assert.equal(await store.client.missingOf('none', tag), undefined);
  });

  it('a manifest whose chunks the store lacks: each of them named once', async () => {
    // The same manifest stored as given on a server that holds none of its chunks.
    await emptyStore.client.putManifest('t', (async function* () {
      yield manifest;
    })());
    const missing = await emptyStore.client.missingOf('t', tag);
    assert.ok(missing);
    assert.equal(missing.length, digests.size);
    assert.deepEqual(new Set(missing.map(digestKey)), digests);
  });
});
