/*
 * S3Store between the SDK and moto_server through a fault-injecting proxy
 * (helpers/s3-proxy.ts): it retries what can pass (500, 503 SlowDown, dropped
 * connections, truncated bodies) and completes, never retries what cannot (403), never
 * accepts a chunk whose bytes came back wrong, uploads one PUT per pack and coalesces
 * reads of neighbouring chunks.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { digestToHex } from '../src/core/ids.js';
import { MiB } from '../src/core/sizes.js';
import { S3_PACK_TARGET_BYTES, type S3Store } from '../src/store/s3/index.js';
import { makeChunk, rejectsWith } from './store-conformance.js';
import type { LoggedRequest } from './helpers/s3-proxy.js';
import { listKeys, motoMissing, openTestStore, TEST_RETRY_POLICY, useS3FaultProxy, useS3Service } from './helpers/s3.js';

const isPackPut = (r: LoggedRequest): boolean => r.method === 'PUT' && r.path.endsWith('.pack');
const isIndexPut = (r: LoggedRequest): boolean => r.method === 'PUT' && r.path.endsWith('.idx');
const isRangedGet = (r: LoggedRequest): boolean => r.method === 'GET' && r.range !== undefined;

describe('S3Store through a faulty network', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  const fx = useS3FaultProxy(f);
  const open = (): Promise<S3Store> => openTestStore(f.service, fx.url, { endpoint: fx.proxy.endpoint });


  /** Stores `count` chunks of `bytes` in a fresh store, flushed; the store is closed. */
  async function storeChunks(count: number, bytes: number, seed = 1): Promise<ReturnType<typeof makeChunk>[]> {
    const chunks = Array.from({ length: count }, (_, i) => makeChunk('blake3', bytes, seed + i));
    const store = await open();
    for (const c of chunks) await store.put(c.id, c.data);
    await store.flush();
    await store.close();
    return chunks;
  }

  for (const [what, fault] of [
    ['a 500', { kind: 'status', status: 500, code: 'InternalError' }],
    ['a 503 SlowDown', { kind: 'status', status: 503, code: 'SlowDown' }],
    ['a connection dropped before the request reached the server', { kind: 'drop' }],
    ['a connection dropped after the server stored the object', { kind: 'drop-after' }],
  ] as const) {
    it(`retries pack and index uploads that meet ${what}, and completes`, async () => {
      let packFaults = 2;
      let indexFaults = 2;
      fx.proxy.fault = (r) => ((isPackPut(r) && packFaults-- > 0) || (isIndexPut(r) && indexFaults-- > 0) ? fault : undefined);
      const chunks = await storeChunks(3, 100_000);
      assert.equal(fx.proxy.count('PUT', /\.pack$/), 3);
      assert.equal(fx.proxy.count('PUT', /\.idx$/), 3);
      const store = await open();
      for (const c of chunks) assert.ok((await store.get(c.id)).equals(c.data));
      await store.close();
    });
  }

  it('retries a ranged GET whose body is cut short, and returns the whole chunk', async () => {
    const [c] = await storeChunks(1, 200_000);
    const store = await open();
    fx.proxy.failNext(isRangedGet, { kind: 'truncate' }, 2);
    assert.ok((await store.get(c!.id)).equals(c!.data));
    assert.equal(fx.proxy.log.filter(isRangedGet).length, 3);
    await store.close();
  });

  it('retries a ranged GET answered completely but with fewer bytes than asked for', async () => {
    const [c] = await storeChunks(1, 200_000);
    const store = await open();
    fx.proxy.failNext(isRangedGet, { kind: 'short' }, 1);
    assert.ok((await store.get(c!.id)).equals(c!.data));
    assert.equal(fx.proxy.log.filter(isRangedGet).length, 2);
    await store.close();
  });

  it('retries a ranged GET answered by a dropped connection or a 503', async () => {
    const [c] = await storeChunks(1, 50_000);
    const store = await open();
    fx.proxy.failNext(isRangedGet, { kind: 'drop' }, 1);
    assert.ok((await store.get(c!.id)).equals(c!.data));
    fx.proxy.failNext(isRangedGet, { kind: 'status', status: 503, code: 'SlowDown' }, 1);
    assert.ok((await store.get(c!.id)).equals(c!.data));
    await store.close();
  });

  it('never returns a chunk whose bytes came back changed: read again once, the right bytes; changed twice, ChunkCorruptError naming it', async () => {
    const [c] = await storeChunks(1, 100_000);
    const store = await open();
    // Changed on the way once: the stored copy is fine, so it is read again and not set aside.
    fx.proxy.failNext(isRangedGet, { kind: 'corrupt' }, 1);
    assert.ok((await store.get(c!.id)).equals(c!.data));
    assert.deepEqual(await store.has([c!.id]), [true]);
    // Changed on both reads: counted damaged (set aside), never returned.
    fx.proxy.failNext(isRangedGet, { kind: 'corrupt' }, 2);
    await rejectsWith(store.get(c!.id), 'XFER_CHUNK_CORRUPT', digestToHex(c!.id.digest));
    await store.close();
  });

  it('does not retry a 403: the flush fails at once with PermissionDeniedError; the chunks stay pending and the next flush stores them', async () => {
    const store = await open();
    const c = makeChunk('blake3', 10_000, 5);
    await store.put(c.id, c.data);
    fx.proxy.fault = (r) => (isPackPut(r) ? { kind: 'status', status: 403, code: 'AccessDenied' } : undefined);
    await rejectsWith(store.flush(), 'XFER_PERMISSION_DENIED');
    assert.equal(fx.proxy.count('PUT', /\.pack$/), 1);
    assert.deepEqual(await store.has([c.id]), [true]);
    fx.proxy.fault = undefined;
    await store.flush();
    await store.close();
    const again = await open();
    assert.ok((await again.get(c.id)).equals(c.data));
    await again.close();
  });

  it(`gives up after ${TEST_RETRY_POLICY.retries} retries of a request that keeps failing, with an IoError`, async () => {
    const store = await open();
    const c = makeChunk('blake3', 10_000, 6);
    await store.put(c.id, c.data);
    fx.proxy.fault = (r) => (isPackPut(r) ? { kind: 'status', status: 500, code: 'InternalError' } : undefined);
    await rejectsWith(store.flush(), 'XFER_IO');
    assert.equal(fx.proxy.count('PUT', /\.pack$/), TEST_RETRY_POLICY.retries + 1);
    fx.proxy.fault = undefined;
    await store.close();
  });

  it('stores chunks in packs: one PUT per pack of about 16 MiB, and one index object per flush', async () => {
    const chunkBytes = 1 * MiB;
    const count = 40;
    const chunks = await storeChunks(count, chunkBytes, 100);
    const packs = Math.ceil((count * chunkBytes) / S3_PACK_TARGET_BYTES);
    assert.equal(fx.proxy.count('PUT', /\.pack$/), packs);
    assert.equal(fx.proxy.count('PUT', /\.idx$/), 1);
    assert.equal(fx.proxy.count('PUT'), packs + 1);
    const keys = await listKeys(f.service, fx.url);
    assert.equal(keys.filter((k) => /^packs\/[0-9a-z]+-[0-9a-f]{16}\.pack$/.test(k)).length, packs);
    assert.equal(keys.filter((k) => /^index\/[0-9a-z]+-[0-9a-f]{16}\.idx$/.test(k)).length, 1);
    const store = await open();
    assert.deepEqual(await store.has(chunks.map((c) => c.id)), chunks.map(() => true));
    assert.deepEqual(store.damagedIndexes, []);
    await store.close();
  });

  it('leaves out a damaged index object, naming it: its chunks count as missing and can be stored again', async () => {
    const chunks = await storeChunks(3, 1000, 400);
    const [indexKey] = (await listKeys(f.service, fx.url)).filter((k) => k.startsWith('index/'));
    const { bucket, prefix } = { bucket: fx.url.slice(5, fx.url.indexOf('/', 5)), prefix: fx.url.slice(fx.url.indexOf('/', 5) + 1) };
    const damaged = Buffer.from(await (await f.service.client.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/${indexKey}` }))).Body!.transformToByteArray());
    damaged[20] = damaged[20]! ^ 1;
    await f.service.client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${indexKey}`, Body: damaged }));
    const store = await open();
    assert.deepEqual(store.damagedIndexes, [indexKey!.slice('index/'.length, -'.idx'.length)]);
    assert.deepEqual(await store.has(chunks.map((c) => c.id)), [false, false, false]);
    assert.equal(await store.put(chunks[0]!.id, chunks[0]!.data), true);
    await store.close();
  });

  it('reads neighbouring chunks asked for together with one ranged GET', async () => {
    const chunks = await storeChunks(20, 30_000, 200);
    const store = await open();
    fx.proxy.log.length = 0;
    const back = await Promise.all(chunks.map((c) => store.get(c.id)));
    back.forEach((data, i) => assert.ok(data.equals(chunks[i]!.data)));
    assert.equal(fx.proxy.log.filter(isRangedGet).length, 1);
    await store.close();
  });

  it('an aborted get stops waiting for a server that does not answer', async () => {
    const [c] = await storeChunks(1, 1000, 300);
    const store = await open();
    fx.proxy.failNext(isRangedGet, { kind: 'hang' }, 1);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await rejectsWith(store.get(c!.id, { signal: controller.signal }), 'XFER_ABORTED');
    fx.proxy.fault = undefined;
    fx.proxy.releaseHanging();
    await store.close();
  });
});
