/*
 * Set aside (ChunkStore.setAside): a chunk whose stored bytes no longer hash to its digest
 * is found by a get, which sets it aside itself: has answers false from then on (also for
 * stores opened later), its bytes stay where they were, and the next put stores it again.
 * The local store's case is in store-local.test.ts; here the S3 store (on moto) and the
 * memory store.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { digestToHex } from '../src/core/ids.js';
import { MemoryStore } from '../src/store/memory.js';
import { PACK_MAGIC, PACK_RECORD_HEADER_BYTES } from '../src/store/pack.js';
import { freshLocation, listKeys, motoMissing, openTestStore, useS3Service, type S3Service } from './helpers/s3.js';
import { makeChunk, rejectsWith } from './store-conformance.js';

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
