/**
 * The protocol client and the HTTP store's edges: which failures are retried, and the
 * manifest endpoints a ManifestStore needs (stored as given, deleted), behind the token.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer, type XferServer } from '../src/server/server.js';
import { HttpStore } from '../src/store/http/store.js';
import { rawRequest } from './helpers/server.js';
import { bytesSource, makeChunk, readAll } from './store-conformance.js';

const TOKEN = 'sesame';

describe('the protocol client', () => {
  let dir: string;
  let server: XferServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-client-'));
    server = await createServer({ root: join(dir, 'root'), port: 0, token: TOKEN });
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('an error of its caller (no network failure) is passed on as it is, never retried as a broken connection', async () => {
    const store = await HttpStore.connect(server.url, { token: TOKEN });
    const client = store.client;
    try {
      const { id, data } = makeChunk('blake3', 5000, 1);
      await store.put(id, data);
      await store.flush();
      const bug = new TypeError('a bug in the record handler');
      await assert.rejects(
        client.fetch('blake3', [id.digest], () => {
          throw bug;
        }),
        (err: unknown) => err === bug,
      );
      assert.equal(client.retriesMade, 0);
    } finally {
      await store.close();
    }
  });

  it('stores a manifest as given, lists it with its own size, deletes it; each only with the token', async () => {
    const store = await HttpStore.connect(server.url, { token: TOKEN });
    try {
      await store.putManifest('notes/a', bytesSource('not a manifest at all'));
      assert.equal((await readAll(await store.getManifest('notes/a'))).toString(), 'not a manifest at all');
      assert.deepEqual((await store.listManifests('notes/')).map((m) => [m.name, m.bytes]), [['notes/a', 21]]);
      for (const [method, body] of [['PUT', Buffer.from('x')], ['DELETE', undefined]] as const) {
        const r = await rawRequest(server.url, method, `/v1/manifests/notes/a${method === 'PUT' ? '?raw=1' : ''}`, body);
        assert.equal(r.status, 401, `${method}: ${r.body.toString()}`);
      }
      assert.equal((await readAll(await store.getManifest('notes/a'))).toString(), 'not a manifest at all');
      await store.deleteManifest('notes/a');
      assert.deepEqual(await store.listManifests(''), []);
    } finally {
      await store.close();
    }
  });
});
