import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestToHex, type ChunkId } from '../src/core/ids.js';
import { LocalStore, PUBLISH_BATCH_CHUNKS, STALE_TEMP_AGE_MS, type Durability } from '../src/store/local.js';
import { bytesSource, makeChunk, readAll, rejectsWith, runStoreConformance } from './store-conformance.js';

/** How long a test waits for a background publish to show. */
const BACKGROUND_PUBLISH_WAIT_MS = 20_000;

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'xfer-store-local-'));
}

for (const durability of ['syncfs', 'fsync'] as Durability[]) {
  runStoreConformance(`LocalStore (${durability})`, async () => {
    const root = await tempDir();
    const store = await LocalStore.open(path.join(root, '.xfer'), { create: true, durability });
    return { store, cleanup: () => rm(root, { recursive: true, force: true }) };
  });
}

describe('LocalStore', () => {
  let root: string;
  let dir: string;
  before(async () => {
    root = await tempDir();
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  let n = 0;
  /** A fresh store directory path for each test. */
  const freshDir = (): string => path.join(root, `case-${++n}`, '.xfer');

  async function listAll(store: LocalStore): Promise<string[]> {
    const ids: string[] = [];
    for await (const id of store.listChunks()) ids.push(`${id.algorithm}:${digestToHex(id.digest)}`);
    return ids.sort();
  }

  it('creates the documented layout', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    assert.deepEqual(JSON.parse(await readFile(path.join(dir, 'store.json'), 'utf8')), {
      format: 'xfer-local-store',
      version: 1,
    });
    assert.deepEqual((await readdir(dir)).sort(), ['chunks', 'manifests', 'store.json', 'tmp']);
    const { id, data } = makeChunk('sha256', 100, 1);
    await store.put(id, data);
    await store.putManifest('a/b', bytesSource('m'));
    await store.flush();
    const hex = digestToHex(id.digest);
    assert.equal(store.chunkPath(id), path.join(dir, 'chunks', 'sha256', hex.slice(0, 2), hex));
    assert.equal(store.chunkDir, path.join(dir, 'chunks'));
    assert.ok((await readFile(store.chunkPath(id))).equals(data));
    assert.equal(await readFile(path.join(dir, 'manifests', 'a', 'b'), 'utf8'), 'm');
  });

  it('reports a byte flipped in a stored chunk file as ChunkCorruptError naming the digest', async () => {
    const store = await LocalStore.open(freshDir(), { create: true });
    const { id, data } = makeChunk('blake3', 65_536, 2);
    await store.put(id, data);
    await store.flush();
    const file = store.chunkPath(id);
    const bytes = await readFile(file);
    bytes[1234] = bytes[1234]! ^ 0x01;
    await writeFile(file, bytes);
    await rejectsWith(store.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
  });

  it('leaves no temp files in tmp/ after puts, flush and manifest puts', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const chunks = Array.from({ length: 50 }, (_, i) => makeChunk('blake3', 5000, 100 + i));
    await Promise.all(chunks.map((c) => store.put(c.id, c.data)));
    await Promise.all(chunks.map((c) => store.put(c.id, c.data))); // all present already
    await store.flush();
    for (let i = 0; i < 5; i++) await store.putManifest(`m/${i}`, bytesSource('manifest'));
    await store.putManifest('m/0', bytesSource('replaced'));
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('x');
      throw new Error('broken source');
    }
    await assert.rejects(store.putManifest('m/1', failing()), /broken source/);
    const bad = makeChunk('blake3', 100, 999);
    await rejectsWith(store.put(bad.id, Buffer.from('not it')), 'XFER_CHUNK_CORRUPT');
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
  });

  it('publishes chunks at flush: another opener sees them only then, a reopened store finds them', async () => {
    dir = freshDir();
    const writer = await LocalStore.open(dir, { create: true });
    const chunks = [1, 2, 3].map((seed) => makeChunk('blake3', 10_000, 200 + seed));
    for (const c of chunks) await writer.put(c.id, c.data);
    const reader = await LocalStore.open(dir, { create: false });
    const ids = chunks.map((c) => c.id);
    assert.deepEqual(await writer.has(ids), [true, true, true]);
    assert.deepEqual(await reader.has(ids), [false, false, false]);
    assert.equal((await readdir(path.join(dir, 'tmp'))).length, 3);
    await writer.flush();
    assert.deepEqual(await reader.has(ids), [true, true, true]);
    await writer.close();
    const reopened = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await reopened.has(ids), [true, true, true]);
    for (const c of chunks) assert.ok((await reopened.get(c.id)).equals(c.data));
  });

  it('an abort during flush rejects at once; a later flush still publishes', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const { id, data } = makeChunk('blake3', 100_000, 250);
    await store.put(id, data);
    const controller = new AbortController();
    const flushing = store.flush({ signal: controller.signal });
    controller.abort();
    await rejectsWith(flushing, 'XFER_ABORTED');
    await store.flush();
    assert.deepEqual(await (await LocalStore.open(dir, { create: false })).has([id]), [true]);
  });

  it(`publishes in the background once ${PUBLISH_BATCH_CHUNKS} chunks were put, before any flush`, async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const chunks = Array.from({ length: PUBLISH_BATCH_CHUNKS }, (_, i) => makeChunk('blake3', 64, 10_000 + i));
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < chunks.length) {
          const c = chunks[next++]!;
          await store.put(c.id, c.data);
        }
      }),
    );
    const reader = await LocalStore.open(dir, { create: false });
    const probe = [chunks[0]!.id, chunks[chunks.length - 1]!.id];
    const deadline = Date.now() + BACKGROUND_PUBLISH_WAIT_MS;
    while (!(await reader.has(probe)).every(Boolean)) {
      assert.ok(Date.now() < deadline, 'the background publish did not happen');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await store.flush();
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
  });

  it('falls back to fsync when `sync -f` cannot run', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true, durability: 'syncfs' });
    const { id, data } = makeChunk('blake3', 1000, 260);
    await store.put(id, data);
    const savedPath = process.env.PATH;
    process.env.PATH = path.join(root, 'no-such-bin');
    try {
      await store.flush();
    } finally {
      process.env.PATH = savedPath;
    }
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
    assert.deepEqual(await (await LocalStore.open(dir, { create: false })).has([id]), [true]);
  });

  it('close publishes pending chunks', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const { id, data } = makeChunk('blake3', 1000, 300);
    await store.put(id, data);
    await store.close();
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
    assert.deepEqual(await (await LocalStore.open(dir, { create: false })).has([id]), [true]);
  });

  it('refuses a store.json of another version or format, or not JSON', async () => {
    for (const [content, pattern] of [
      ['{"format":"xfer-local-store","version":2}', /store version 2 is not supported/],
      ['{"format":"something-else","version":1}', /not an xfer local store/],
      ['not json', /invalid JSON/],
    ] as const) {
      dir = freshDir();
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'store.json'), content);
      for (const create of [false, true]) {
        await assert.rejects(LocalStore.open(dir, { create }), (err: Error) => {
          assert.equal((err as { code?: string }).code, 'XFER_INVALID_ARGUMENT');
          assert.match(err.message, pattern);
          assert.ok(err.message.includes(dir), err.message);
          return true;
        });
      }
    }
  });

  it('create:false on a missing store throws NotFoundError "no xfer store at <dir>"', async () => {
    dir = freshDir();
    await assert.rejects(LocalStore.open(dir, { create: false }), (err: Error) => {
      assert.equal((err as { code?: string }).code, 'XFER_NOT_FOUND');
      assert.equal(err.message, `no xfer store at ${dir}`);
      return true;
    });
    await mkdir(dir, { recursive: true }); // an empty directory is no store either
    await rejectsWith(LocalStore.open(dir, { create: false }), 'XFER_NOT_FOUND');
  });

  it('open rejects with AbortedError on an aborted signal', async () => {
    await rejectsWith(LocalStore.open(freshDir(), { create: true, signal: AbortSignal.abort() }), 'XFER_ABORTED');
  });

  it('ignores crash leftovers in tmp/ and removes stale ones at open', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const { id, data } = makeChunk('blake3', 20_000, 400);
    const hex = digestToHex(id.digest);
    // A crash mid-put: a partial copy of the chunk in tmp/, even under its hex name.
    const fresh = path.join(dir, 'tmp', hex);
    const stale = path.join(dir, 'tmp', 'stale-leftover.tmp');
    await writeFile(fresh, data.subarray(0, 1000));
    await writeFile(stale, data.subarray(0, 500));
    const longAgo = (Date.now() - 2 * STALE_TEMP_AGE_MS) / 1000;
    await utimes(stale, longAgo, longAgo);
    assert.deepEqual(await store.has([id]), [false]);
    await rejectsWith(store.get(id), 'XFER_CHUNK_MISSING', hex);
    assert.deepEqual(await listAll(store), []);
    const reopened = await LocalStore.open(dir, { create: false });
    assert.deepEqual((await readdir(path.join(dir, 'tmp'))).sort(), [hex]);
    assert.equal(await reopened.put(id, data), true);
    await reopened.flush();
    assert.ok((await reopened.get(id)).equals(data));
  });

  it('fails flush, and forgets the chunk, if a pending temp file was removed', async () => {
    for (const durability of ['syncfs', 'fsync'] as Durability[]) {
      dir = freshDir();
      const store = await LocalStore.open(dir, { create: true, durability });
      const { id, data } = makeChunk('blake3', 1000, 500);
      await store.put(id, data);
      for (const name of await readdir(path.join(dir, 'tmp'))) await rm(path.join(dir, 'tmp', name));
      await assert.rejects(store.flush(), (err: Error) => {
        assert.equal((err as { code?: string }).code, 'XFER_IO');
        assert.match(err.message, new RegExp(`chunk ${digestToHex(id.digest)} was lost`));
        return true;
      });
      assert.deepEqual(await store.has([id]), [false]);
      assert.equal(await store.put(id, data), true);
      await store.flush();
      assert.deepEqual(await store.has([id]), [true]);
    }
  });

  it('lists chunks, pending and published, once each, by algorithm', async () => {
    const store = await LocalStore.open(freshDir(), { create: true });
    const blake = [1, 2, 3].map((seed) => makeChunk('blake3', 100, 600 + seed));
    const sha = [1, 2].map((seed) => makeChunk('sha256', 100, 700 + seed));
    for (const c of [...blake.slice(0, 2), sha[0]!]) await store.put(c.id, c.data);
    await store.flush();
    for (const c of [blake[2]!, sha[1]!]) await store.put(c.id, c.data);
    const key = (id: ChunkId): string => `${id.algorithm}:${digestToHex(id.digest)}`;
    assert.deepEqual(await listAll(store), [...blake, ...sha].map((c) => key(c.id)).sort());
    const onlySha: string[] = [];
    for await (const id of store.listChunks('sha256')) onlySha.push(key(id));
    assert.deepEqual(onlySha.sort(), sha.map((c) => key(c.id)).sort());
    await assert.rejects(async () => {
      for await (const id of store.listChunks(undefined, { signal: AbortSignal.abort() })) void id;
    }, (err: Error) => (err as { code?: string }).code === 'XFER_ABORTED');
  });

  it('a name cannot be both a manifest and a folder; deleting the last manifest frees the folder name', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    await store.putManifest('a/b', bytesSource('1'));
    await rejectsWith(store.putManifest('a', bytesSource('2')), 'XFER_ALREADY_EXISTS');
    await rejectsWith(store.putManifest('a/b/c', bytesSource('3')), 'XFER_ALREADY_EXISTS');
    await store.deleteManifest('a/b');
    assert.deepEqual(await readdir(path.join(dir, 'manifests')), []);
    await store.putManifest('a', bytesSource('4'));
    assert.equal((await readAll(await store.getManifest('a'))).toString(), '4');
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
  });

  it('a manifest stream opened before a replace reads the old version', async () => {
    const store = await LocalStore.open(freshDir(), { create: true });
    await store.putManifest('m', bytesSource('old'));
    const stream = await store.getManifest('m');
    await store.putManifest('m', bytesSource('new'));
    assert.equal((await readAll(stream)).toString(), 'old');
  });
});
