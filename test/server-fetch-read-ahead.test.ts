import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { createHandler } from '../src/server/handler.js';
import { FETCH_READ_AHEAD, FETCH_READ_AHEAD_BYTES } from '../src/server/limits.js';
import { LocalStore } from '../src/store/local.js';

/** Large enough that FETCH_READ_AHEAD of them is far over FETCH_READ_AHEAD_BYTES. */
const CHUNK_BYTES = 4 * 1024 * 1024;

describe('chunks/fetch reads ahead of a slow client within a bound', () => {
  it(`a client that takes nothing of its answer makes the server read at most ${FETCH_READ_AHEAD_BYTES / 1048576} MiB ahead, not ${FETCH_READ_AHEAD} chunks`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-fetch-ahead-'));
    const store = await LocalStore.open(join(dir, 'store'), { create: true });
    let server: Http2Server | undefined;
    const controller = new AbortController();
    try {
      const data = Buffer.alloc(CHUNK_BYTES, 7);
      const id = { algorithm: 'blake3' as const, digest: digestOf('blake3', data) };
      await store.put(id, data);
      await store.flush();
      // The real store, its reads counted (the handler's only way to a chunk's bytes).
      let reads = 0;
      const counted = Object.create(store) as LocalStore;
      counted.get = (...args: Parameters<LocalStore['get']>) => {
        reads++;
        return store.get(...args);
      };
      await mkdir(join(dir, 'files'));
      await mkdir(join(dir, 'tmp'));
      server = createServer(createHandler({ store: counted, filesDir: join(dir, 'files'), tmpDir: join(dir, 'tmp'), signal: controller.signal }));
      await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
      const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      session.on('error', () => {});
      try {
        const stream = session.request({ ':method': 'POST', ':path': '/v1/chunks/fetch?algorithm=blake3' });
        stream.on('error', () => {});
        stream.pause(); // takes nothing: the answer stops at the client's 64 KiB window
        const status = new Promise<number>((r) => stream.on('response', (h) => r(Number(h[':status']))));
        stream.end(Buffer.concat(Array.from({ length: 2 * FETCH_READ_AHEAD }, () => Buffer.from(id.digest))));
        assert.equal(await status, 200);
        await new Promise((r) => setTimeout(r, 1000));
        // The chunk being written, and what fits in the bound ahead of it.
        const most = 1 + FETCH_READ_AHEAD_BYTES / CHUNK_BYTES;
        assert.ok(reads <= most, `${reads} chunks of ${CHUNK_BYTES} bytes read (at most ${most})`);
        assert.ok(reads >= 2, `and it does read ahead (${reads})`);
      } finally {
        session.destroy();
      }
    } finally {
      controller.abort();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
