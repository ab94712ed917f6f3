import { strict as assert } from 'node:assert';
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestToHex, type ChunkId } from '../src/core/ids.js';
import { MiB } from '../src/core/sizes.js';
import { COMMIT_BATCH_CHUNKS, LocalStore, SET_ASIDE_RECHECK_MS, STALE_TEMP_AGE_MS } from '../src/store/local.js';
import { PACK_BLOCK_BYTES } from '../src/store/pack.js';
import { damageStoredChunk } from './helpers/damage.js';
import { bytesSource, makeChunk, readAll, rejectsWith, runStoreConformance } from './store-conformance.js';

/** How long a test waits for a background commit to show. */
const BACKGROUND_COMMIT_WAIT_MS = 20_000;

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'xfer-store-local-'));
}

for (const directIo of [true, false]) {
  runStoreConformance(`LocalStore (${directIo ? 'O_DIRECT packs' : 'buffered packs'})`, async () => {
    const root = await tempDir();
    const store = await LocalStore.open(path.join(root, '.xfer'), { create: true, directIo });
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

  async function packFiles(d: string): Promise<string[]> {
    return (await readdir(path.join(d, 'packs'))).sort();
  }

  it('creates the documented layout: chunks go to a pack and its index', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    assert.deepEqual(JSON.parse(await readFile(path.join(dir, 'store.json'), 'utf8')), {
      format: 'xfer-local-store',
      version: 2,
    });
    assert.deepEqual((await readdir(dir)).sort(), ['manifests', 'packs', 'store.json', 'tmp']);
    const { id, data } = makeChunk('sha256', 100, 1);
    await store.put(id, data);
    await store.putManifest('a/b', bytesSource('m'));
    await store.flush();
    const files = await packFiles(dir);
    assert.equal(files.length, 2);
    assert.match(files[0]!, /^[0-9a-z]{9,}-[0-9a-f]{16}\.idx$/);
    assert.equal(files[1], files[0]!.replace(/\.idx$/, '.pack'));
    const loc = (await store.chunkLocation(id))!;
    assert.equal(loc.file, path.join(dir, 'packs', files[1]!));
    assert.equal(loc.length, 100);
    assert.ok((await readFile(loc.file)).subarray(loc.offset, loc.offset + loc.length).equals(data));
    assert.equal(await store.chunkLocation(makeChunk('sha256', 100, 2).id), undefined);
    assert.equal(await readFile(path.join(dir, 'manifests', 'a', 'b'), 'utf8'), 'm');
  });

  for (const directIo of [true, false]) {
    it(`a byte flipped in a packed chunk: get reports ChunkCorruptError naming the digest and sets the chunk aside until a put stores it again (${directIo ? 'O_DIRECT' : 'buffered'})`, async () => {
      dir = freshDir();
      const store = await LocalStore.open(dir, { create: true, directIo });
      const { id, data } = makeChunk('blake3', 65_536, 2);
      const other = makeChunk('blake3', 65_536, 3);
      await store.put(id, data);
      await store.put(other.id, other.data);
      await store.flush();
      const bad = (await store.chunkLocation(id))!;
      const unchecked = await store.get(id, { unverified: true });
      await damageStoredChunk(dir, id, 1234);
      await rejectsWith(store.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
      // Set aside: no longer present, here and for any later opener; recorded with its place.
      assert.deepEqual(await store.has([id, other.id]), [false, true]);
      await rejectsWith(store.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest)); // and says it was set aside
      const lines = (await readFile(path.join(dir, 'set-aside'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(lines.length, 1);
      assert.deepEqual({ ...lines[0], at: undefined }, { algorithm: 'blake3', digest: digestToHex(id.digest), pack: path.basename(bad.file, '.pack'), offset: bad.offset, length: 65_536, at: undefined });
      const reopened = await LocalStore.open(dir, { create: false, directIo });
      assert.deepEqual(await reopened.has([id, other.id]), [false, true]);
      await reopened.close();
      // The damaged bytes stay where they were, for inspection.
      const kept = (await readFile(bad.file)).subarray(bad.offset, bad.offset + bad.length);
      assert.ok(!kept.equals(data) && kept.length === unchecked.length);
      // The next put stores it again, in another place; every opener then finds it there.
      assert.equal(await store.put(id, data), true);
      await store.flush();
      assert.ok((await store.get(id)).equals(data));
      assert.notDeepEqual(await store.chunkLocation(id), bad);
      await store.close();
      const healed = await LocalStore.open(dir, { create: false, directIo });
      assert.deepEqual(await healed.has([id]), [true]);
      assert.ok((await healed.get(id)).equals(data));
      await healed.close();
    });
  }

  it('a chunk another opener set aside stops counting as present here too (a push never skips it)', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const { id, data } = makeChunk('blake3', 65_536, 4);
    await store.put(id, data);
    await store.flush();
    const verifier = await LocalStore.open(dir, { create: false });
    await verifier.setAside(id);
    await verifier.close();
    await new Promise((r) => setTimeout(r, SET_ASIDE_RECHECK_MS + 10));
    assert.deepEqual(await store.has([id]), [false]);
    assert.equal(await store.put(id, data), true);
    await store.close();
  });

  it('a pack cut short is reported as corrupt for the chunks it lost (and they are set aside), not as missing', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const chunks = [1, 2].map((seed) => makeChunk('blake3', 50_000, 30 + seed));
    for (const c of chunks) await store.put(c.id, c.data);
    await store.close();
    const last = (await (await LocalStore.open(dir, { create: false })).chunkLocation(chunks[1]!.id))!;
    await truncate(last.file, last.offset + 10);
    const reopened = await LocalStore.open(dir, { create: false });
    assert.ok((await reopened.get(chunks[0]!.id)).equals(chunks[0]!.data));
    await assert.rejects(reopened.get(chunks[1]!.id), (err: Error) => {
      assert.equal((err as { code?: string }).code, 'XFER_CHUNK_CORRUPT');
      assert.match(err.message, new RegExp(`chunk ${digestToHex(chunks[1]!.id.digest)} is corrupt: .*truncated`));
      return true;
    });
    assert.deepEqual(await reopened.has(chunks.map((c) => c.id)), [true, false]);
  });

  it('chunks spanning pack blocks read back the same before, during and after their commit', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    // 3 MiB chunks against 4 MiB blocks: most straddle a block boundary; 7 of them keep
    // full blocks in flight while the rest is in memory.
    const chunks = Array.from({ length: 7 }, (_, i) => makeChunk('blake3', 3 * MiB + i, 40 + i));
    assert.ok(3 * MiB < PACK_BLOCK_BYTES);
    await Promise.all(chunks.map((c) => store.put(c.id, c.data)));
    for (const c of chunks) assert.ok((await store.get(c.id)).equals(c.data));
    const flushing = store.flush();
    const during = await Promise.all(chunks.map((c) => store.get(c.id)));
    await flushing;
    during.forEach((d, i) => assert.ok(d.equals(chunks[i]!.data)));
    for (const c of chunks) assert.ok((await store.get(c.id)).equals(c.data));
    const reopened = await LocalStore.open(dir, { create: false });
    for (const c of chunks) assert.ok((await reopened.get(c.id)).equals(c.data));
  });

  it('puts after a commit extend the same pack and stay readable (the tail block is rewritten whole)', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const chunks = Array.from({ length: 30 }, (_, i) => makeChunk('blake3', 1000 + 997 * i, 800 + i));
    for (const [i, c] of chunks.entries()) {
      await store.put(c.id, c.data);
      if (i % 3 === 0) await store.flush();
    }
    await store.flush();
    assert.equal((await packFiles(dir)).length, 2, 'one pack and its index');
    const reopened = await LocalStore.open(dir, { create: false });
    for (const c of chunks) assert.ok((await reopened.get(c.id)).equals(c.data));
  });

  it('starts a new pack beyond packTargetBytes; every pack is found after reopening', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true, packTargetBytes: 64 * 1024 });
    const chunks = Array.from({ length: 40 }, (_, i) => makeChunk('blake3', 10_000, 900 + i));
    for (const c of chunks) await store.put(c.id, c.data);
    await store.close();
    const files = await packFiles(dir);
    assert.ok(files.length >= 2 * 5, `expected several packs, got ${files.join(', ')}`);
    const reopened = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await reopened.has(chunks.map((c) => c.id)), chunks.map(() => true));
    for (const c of chunks) assert.ok((await reopened.get(c.id)).equals(c.data));
  });

  it('ignores a torn index record and pack bytes no record points to (a crash mid-commit)', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const kept = makeChunk('blake3', 5000, 50);
    await store.put(kept.id, kept.data);
    await store.close();
    const idx = (await packFiles(dir)).find((f) => f.endsWith('.idx'))!;
    const pack = path.join(dir, 'packs', idx.replace(/\.idx$/, '.pack'));
    // Half a record, and a whole record whose checksum does not match.
    await appendFile(path.join(dir, 'packs', idx), Buffer.alloc(30, 0xab));
    await appendFile(pack, Buffer.alloc(8192, 0xcd));
    const reopened = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await reopened.has([kept.id]), [true]);
    assert.ok((await reopened.get(kept.id)).equals(kept.data));
    const lost = makeChunk('blake3', 5000, 51);
    assert.deepEqual(await reopened.has([lost.id]), [false]);
    assert.equal(await reopened.put(lost.id, lost.data), true);
    await reopened.close();
    const third = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await third.has([kept.id, lost.id]), [true, true]);
  });

  it('opens a version 1 store: its chunk files are found, and store.json becomes version 2 once a pack is written', async () => {
    dir = freshDir();
    const old = makeChunk('blake3', 3000, 60);
    const hex = digestToHex(old.id.digest);
    await mkdir(path.join(dir, 'chunks', 'blake3', hex.slice(0, 2)), { recursive: true });
    await mkdir(path.join(dir, 'manifests'), { recursive: true });
    await writeFile(path.join(dir, 'chunks', 'blake3', hex.slice(0, 2), hex), old.data);
    await writeFile(path.join(dir, 'store.json'), '{"format":"xfer-local-store","version":1}\n');
    const store = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await store.has([old.id]), [true]);
    assert.ok((await store.get(old.id)).equals(old.data));
    assert.equal(await store.put(old.id, old.data), false, 'already stored as a file');
    assert.deepEqual(await listAll(store), [`blake3:${hex}`]);
    assert.equal(JSON.parse(await readFile(path.join(dir, 'store.json'), 'utf8')).version, 1, 'nothing written yet');
    const fresh = makeChunk('blake3', 3000, 61);
    await store.put(fresh.id, fresh.data);
    await store.flush();
    assert.equal(JSON.parse(await readFile(path.join(dir, 'store.json'), 'utf8')).version, 2);
    const reopened = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await reopened.has([old.id, fresh.id]), [true, true]);
    assert.deepEqual(await listAll(reopened), [`blake3:${hex}`, `blake3:${digestToHex(fresh.id.digest)}`].sort());
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

  it('commits chunks at flush: openers after it find them; an earlier opener finds them with get', async () => {
    dir = freshDir();
    const writer = await LocalStore.open(dir, { create: true });
    const chunks = [1, 2, 3].map((seed) => makeChunk('blake3', 10_000, 200 + seed));
    for (const c of chunks) await writer.put(c.id, c.data);
    const early = await LocalStore.open(dir, { create: false });
    const ids = chunks.map((c) => c.id);
    assert.deepEqual(await writer.has(ids), [true, true, true]);
    assert.deepEqual(await early.has(ids), [false, false, false]);
    await rejectsWith(early.get(ids[0]!), 'XFER_CHUNK_MISSING');
    await writer.flush();
    assert.deepEqual(await (await LocalStore.open(dir, { create: false })).has(ids), [true, true, true]);
    for (const c of chunks) assert.ok((await early.get(c.id)).equals(c.data));
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

  it(`commits in the background once ${COMMIT_BATCH_CHUNKS} chunks were put, before any flush`, async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const chunks = Array.from({ length: COMMIT_BATCH_CHUNKS }, (_, i) => makeChunk('blake3', 64, 10_000 + i));
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < chunks.length) {
          const c = chunks[next++]!;
          await store.put(c.id, c.data);
        }
      }),
    );
    const probe = [chunks[0]!.id, chunks[chunks.length - 1]!.id];
    const deadline = Date.now() + BACKGROUND_COMMIT_WAIT_MS;
    while (!(await (await LocalStore.open(dir, { create: false })).has(probe)).every(Boolean)) {
      assert.ok(Date.now() < deadline, 'the background commit did not happen');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await store.close();
  });

  it('close commits pending chunks', async () => {
    dir = freshDir();
    const store = await LocalStore.open(dir, { create: true });
    const { id, data } = makeChunk('blake3', 1000, 300);
    await store.put(id, data);
    await store.close();
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
    assert.deepEqual(await (await LocalStore.open(dir, { create: false })).has([id]), [true]);
    await assert.rejects(store.put(makeChunk('blake3', 10, 301).id, Buffer.alloc(10)), /is closed/);
  });

  it('refuses a store.json of another version or format, or not JSON', async () => {
    for (const [content, pattern] of [
      ['{"format":"xfer-local-store","version":3}', /store version 3 is not supported/],
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

  it('lists chunks, pending and committed, once each, by algorithm', async () => {
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
