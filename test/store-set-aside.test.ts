/*
 * Set aside (ChunkStore.setAside): a chunk whose stored bytes no longer hash to its digest
 * is found by a get, which sets it aside itself: has answers false from then on (also for
 * stores opened later), its bytes stay where they were, and the next put stores it again.
 * The local store's case is in store-local.test.ts; here the S3 store (on moto) and the
 * memory store, and a gc that meets a damaged chunk as it repacks (it is set aside); and
 * a local pack whose chunks are all damaged, set aside by a verify in few durable writes.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { digestToHex, type ChunkId } from '../src/core/ids.js';
import { JsonLines } from '../src/io/json-lines.js';
import type { ChunkCheck } from '../src/store/store.js';
import { ReferencedSet } from '../src/store/gc.js';
import { LocalStore } from '../src/store/local.js';
import { MemoryStore } from '../src/store/memory.js';
import { PACK_MAGIC, PACK_RECORD_HEADER_BYTES } from '../src/store/pack.js';
import { freshLocation, listKeys, motoMissing, openTestStore, useS3Service, type S3Service } from './helpers/s3.js';
import { damageStoredChunk } from './helpers/damage.js';
import { makeChunk, rejectsWith } from './store-conformance.js';
import { processIo } from './helpers/proc-io.js';

/** Flips one bit of byte `at` of the object `key` (a key under `url`), as damage at rest would. */
async function flipObjectByte(service: S3Service, url: string, key: string, at: number): Promise<void> {
  const rest = url.slice('s3://'.length);
  const bucket = rest.slice(0, rest.indexOf('/'));
  const Key = `${rest.slice(rest.indexOf('/') + 1)}/${key}`;
  const got = await service.client.send(new GetObjectCommand({ Bucket: bucket, Key }));
  const body = Buffer.from(await got.Body!.transformToByteArray());
  body[at] ^= 0x10;
  await service.client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body }));
}

describe('S3Store sets a corrupt chunk aside', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');

  it('a byte flipped in a pack: get reports it corrupt and sets it aside (for later openers too); the next put stores it in a new pack', async () => {
    const url = freshLocation(f.service);
    const store = await openTestStore(f.service, url);
    const { id, data } = makeChunk('blake3', 30_000, 1);
    await store.put(id, data);
    await store.flush();
    const other = makeChunk('blake3', 30_000, 2);
    await store.put(other.id, other.data);
    await store.close();
    const packs = (await listKeys(f.service, url)).filter((k) => k.startsWith('packs/'));
    assert.equal(packs.length, 2);
    // The first pack holds only `id`: its bytes start after the magic and one record header.
    const first = await findPackOf(f.service, url, packs, data);
    await flipObjectByte(f.service, url, first, PACK_MAGIC.length + PACK_RECORD_HEADER_BYTES + 100);

    const reader = await openTestStore(f.service, url);
    assert.deepEqual(await reader.has([id, other.id]), [true, true]);
    await rejectsWith(reader.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
    assert.deepEqual(await reader.has([id, other.id]), [false, true]);
    await rejectsWith(reader.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
    const keys = await listKeys(f.service, url);
    assert.equal(keys.filter((k) => k.startsWith('aside/')).length, 1, `one set-aside object: ${keys.join(', ')}`);
    await reader.close();

    const later = await openTestStore(f.service, url);
    assert.deepEqual(await later.has([id, other.id]), [false, true]);
    assert.equal(await later.put(id, data), true);
    await later.flush();
    assert.ok((await later.get(id)).equals(data));
    await later.close();

    const healed = await openTestStore(f.service, url);
    assert.deepEqual(await healed.has([id]), [true]);
    assert.ok((await healed.get(id)).equals(data));
    await healed.close();
    // The damaged pack is kept, for inspection.
    assert.ok((await listKeys(f.service, url)).includes(first));
  });
});

/** The key of the pack (of `packs`) whose bytes contain `data`. */
async function findPackOf(service: S3Service, url: string, packs: string[], data: Buffer): Promise<string> {
  const rest = url.slice('s3://'.length);
  const bucket = rest.slice(0, rest.indexOf('/'));
  for (const p of packs) {
    const got = await service.client.send(new GetObjectCommand({ Bucket: bucket, Key: `${rest.slice(rest.indexOf('/') + 1)}/${p}` }));
    const body = Buffer.from(await got.Body!.transformToByteArray());
    if (body.indexOf(data) === PACK_MAGIC.length + PACK_RECORD_HEADER_BYTES) return p;
  }
  throw new Error('no pack holds the chunk at its start');
}

it('MemoryStore: a corrupt chunk found by get is set aside, its bytes kept; the next put stores it again', async () => {
  const store = new MemoryStore();
  const { id, data } = makeChunk('blake3', 1000, 1);
  await store.put(id, data);
  store.corruptChunk(id);
  await rejectsWith(store.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
  assert.deepEqual(await store.has([id]), [false]);
  assert.equal(store.setAsideChunks.size, 1);
  assert.equal(await store.put(id, data), true);
  assert.ok((await store.get(id)).equals(data));
});

it('LocalStore gc: a used chunk found damaged while its pack is repacked is set aside, and the gc completes', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'xfer-gc-aside-'));
  try {
    const dir = path.join(root, '.xfer');
    const good = makeChunk('blake3', 65_536, 10);
    const bad = makeChunk('blake3', 65_536, 11);
    const unused = Array.from({ length: 8 }, (_, i) => makeChunk('blake3', 65_536, 20 + i));
    const first = await LocalStore.open(dir, { create: true });
    for (const c of [good, bad, ...unused]) await first.put(c.id, c.data);
    await first.close();
    await damageStoredChunk(dir, bad.id, 100);
    const store = await LocalStore.open(dir, { create: false });
    const referenced = new ReferencedSet();
    for (const c of [good, bad]) referenced.add(c.id.algorithm, c.id.digest);
    const report = await store.collectGarbage(referenced, { maxUnusedPercent: 5, graceMs: 0 });
    assert.equal(report.repackedPacks, 1);
    assert.equal(report.deletedPacks, 1); // the old pack, set-aside place and all
    assert.deepEqual(await store.has([good.id, bad.id]), [true, false]);
    assert.ok((await store.get(good.id)).equals(good.data));
    await rejectsWith(store.get(bad.id), 'XFER_CHUNK_CORRUPT', digestToHex(bad.id.digest));
    await store.close();
    // The set-aside record names a pack that is gone: a later opener is not troubled, and a put heals.
    const later = await LocalStore.open(dir, { create: false });
    assert.deepEqual(await later.has([good.id, bad.id]), [true, false]);
    assert.equal(await later.put(bad.id, bad.data), true);
    await later.flush();
    assert.ok((await later.get(bad.id)).equals(bad.data));
    await later.close();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

describe('many chunks set aside at once', () => {
  it('appends made while one is being written go together in the next write, each resolved once it is durable', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'xfer-lines-'));
    try {
      const lines = new JsonLines<{ n: number }>(path.join(dir, 'list'), 'test list', (v) => (typeof v.n === 'number' ? { n: v.n } : undefined));
      const before = processIo('syscw');
      await Promise.all(Array.from({ length: 500 }, (_, n) => lines.append({ n })));
      const writes = processIo('syscw') - before;
      assert.deepEqual((await lines.readNew()).map((r) => r.n).sort((a, b) => a - b), Array.from({ length: 500 }, (_, n) => n));
      assert.ok(writes < 50, `${writes} writes for 500 lines`);
      await lines.append({ n: 500 });
      assert.deepEqual(await lines.readNew(), [{ n: 500 }], 'an append after them is written on its own');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a verify of a local pack whose 2,000 chunks are all damaged sets every one aside, in few writes of the list', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'xfer-aside-many-'));
    try {
      const chunks = Array.from({ length: 2000 }, (_, i) => makeChunk('blake3', 300, i + 1));
      const writer = await LocalStore.open(dir, { create: true });
      for (const c of chunks) await writer.put(c.id, c.data);
      await writer.close();
      const packs = path.join(dir, 'packs');
      for (const name of (await readdir(packs)).filter((n) => n.endsWith('.pack'))) {
        await writeFile(path.join(packs, name), Buffer.alloc((await stat(path.join(packs, name))).size));
      }
      const store = await LocalStore.open(dir, { create: false });
      try {
        const ids: ChunkId[] = chunks.map((c) => c.id);
        const checks: ChunkCheck[] = [];
        const before = processIo('syscw');
        await store.verifyChunks(ids, (i, check) => (checks[i] = check));
        const writes = processIo('syscw') - before;
        assert.equal(checks.filter((c) => typeof c !== 'number' && c.code === 'XFER_CHUNK_CORRUPT').length, chunks.length);
        assert.ok(writes < 200, `${writes} writes to set ${chunks.length} chunks aside`);
        assert.deepEqual(await store.has(ids.slice(0, 3)), [false, false, false], 'set aside: no longer present');
      } finally {
        await store.close();
      }
      const again = await LocalStore.open(dir, { create: false });
      try {
        assert.ok((await again.has(chunks.map((c) => c.id))).every((p) => !p), 'every one set aside for later openers too');
      } finally {
        await again.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
