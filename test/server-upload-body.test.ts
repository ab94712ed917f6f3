/**
 * A chunk batch is bounded as it arrives (server/body.ts consumeBody), not only by the
 * content-length it declares: a client that declares none and sends more than
 * MAX_BATCH_BYTES is answered 413 XFER_TOO_LARGE, and the whole records before the limit
 * are stored (each was verified as it came).
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { chunkRecordBytes, writeChunkRecord } from '../src/protocol/records.js';
import { MAX_BATCH_BYTES } from '../src/server/limits.js';
import { MiB } from '../src/core/sizes.js';
import { pseudoRandom } from './helpers/gen.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { rawRequest } from './helpers/server.js';

describe('chunk batch body limit', () => {
  const f = {} as { dir: string; server: XferServer };
  before(async () => {
    f.dir = await mkdtemp(join(tmpdir(), 'xfer-upload-body-'));
    f.server = await createServer({ root: join(f.dir, 'root'), port: 0 });
  });
  after(async () => {
    // A short grace: the refused upload's stream is left to the client, which sends on.
    await f.server?.close(1000);
    if (f.dir) await rm(f.dir, { recursive: true, force: true });
  });

  it('a batch without a content-length that runs over the limit is refused with 413, the records before it stored', async () => {
    const chunks = Array.from({ length: Math.floor(MAX_BATCH_BYTES / MiB) + 1 }, (_, i) => pseudoRandom(MiB, 1000 + i));
    const body = Buffer.allocUnsafe(chunks.reduce((n, c) => n + chunkRecordBytes(c.length), 0));
    let at = 0;
    for (const c of chunks) at += writeChunkRecord(body, at, digestOf('blake3', c), c);
    assert.ok(body.length > MAX_BATCH_BYTES);
    const r = await rawRequest(f.server.url, 'POST', '/v1/chunks?algorithm=blake3', body);
    assert.equal(r.status, 413, r.body.toString());
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_TOO_LARGE');
    const ids = Buffer.concat(chunks.map((c) => digestOf('blake3', c)));
    const missing = await rawRequest(f.server.url, 'POST', '/v1/chunks/missing?algorithm=blake3', ids);
    assert.equal(missing.status, 200);
    const stored = chunks.filter((_, i) => (missing.body[i >> 3]! & (1 << (i & 7))) === 0).length;
    // Every record that ends within the limit (the next one crosses it).
    assert.equal(stored, Math.floor(MAX_BATCH_BYTES / chunkRecordBytes(MiB)));
  });
});
