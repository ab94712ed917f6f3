/*
 * Objects larger than the multipart bound (S3_MULTIPART_ABOVE_BYTES; small here, through
 * the store's options) go up in parts: manifests as they are read, packs from memory. The
 * object appears only once complete; a failed upload is aborted, leaving no parts behind;
 * a completion whose answer was lost is recognised as done.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { MiB } from '../src/core/sizes.js';
import { S3_MIN_PART_BYTES, type S3Store } from '../src/store/s3/index.js';
import { makeChunk } from './store-conformance.js';
import { pseudoRandom } from './helpers/gen.js';
import type { LoggedRequest } from './helpers/s3-proxy.js';
import { listKeys, motoMissing, openTestStore, useS3FaultProxy, useS3Service } from './helpers/s3.js';

const PART_BYTES = S3_MIN_PART_BYTES;
const ABOVE_BYTES = 6 * MiB;

const isPartPut = (r: LoggedRequest): boolean => r.method === 'PUT' && /[?&]partNumber=/.test(r.query);
const isStart = (r: LoggedRequest): boolean => r.method === 'POST' && /[?&]uploads/.test(r.query);
const isComplete = (r: LoggedRequest): boolean => r.method === 'POST' && /[?&]uploadId=/.test(r.query);
const isAbort = (r: LoggedRequest): boolean => r.method === 'DELETE' && /[?&]uploadId=/.test(r.query);

async function* pieces(data: Buffer, size = 1 * MiB): AsyncIterable<Uint8Array> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

async function readAll(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const p of source) out.push(Buffer.from(p));
  return Buffer.concat(out);
}

describe('S3Store uploads large objects in parts', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  const fx = useS3FaultProxy(f);
  const open = (): Promise<S3Store> =>
    openTestStore(f.service, fx.url, { endpoint: fx.proxy.endpoint, multipartAboveBytes: ABOVE_BYTES, partBytes: PART_BYTES });
  const uploadsLeft = async (): Promise<number> => {
    const bucket = f.service.base.slice('s3://'.length).split('/')[0]!;
    const out = await f.service.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: fx.url.slice(`s3://${bucket}/`.length) }));
    return out.Uploads?.length ?? 0;
  };


  it('a manifest over the bound goes up in parts as it is read, and reads back whole; one at the bound is one PUT', async () => {
    const big = pseudoRandom(11 * MiB + 12345, 61);
    const store = await open();
    let partsBeforeTheEnd = 0;
    await store.putManifest('big', (async function* () {
      yield* pieces(big.subarray(0, 11 * MiB));
      partsBeforeTheEnd = fx.proxy.log.filter(isPartPut).length;
      yield big.subarray(11 * MiB);
    })());
    assert.equal(partsBeforeTheEnd, 2, 'parts went up while the manifest was still being read');
    assert.equal(fx.proxy.log.filter(isStart).length, 1);
    assert.equal(fx.proxy.log.filter(isPartPut).length, 3, '5 MiB + 5 MiB + the rest');
    assert.equal(fx.proxy.log.filter(isComplete).length, 1);
    assert.ok((await readAll(await store.getManifest('big'))).equals(big));

    fx.proxy.log.length = 0;
    const small = pseudoRandom(ABOVE_BYTES, 62);
    await store.putManifest('small', pieces(small));
    assert.equal(fx.proxy.log.filter(isStart).length, 0);
    assert.equal(fx.proxy.count('PUT', /manifests\/small$/), 1);
    assert.ok((await readAll(await store.getManifest('small'))).equals(small));
    await store.close();
    assert.equal(await uploadsLeft(), 0);
  });

  it('a pack over the bound goes up in parts, and its chunks read back', async () => {
    const store = await openTestStore(f.service, fx.url, { endpoint: fx.proxy.endpoint, multipartAboveBytes: ABOVE_BYTES, partBytes: PART_BYTES, packTargetBytes: 12 * MiB });
    const chunks = Array.from({ length: 14 }, (_, i) => makeChunk('blake3', 1 * MiB, 70 + i));
    for (const c of chunks) await store.put(c.id, c.data);
    await store.flush();
    assert.equal(fx.proxy.log.filter((r) => isPartPut(r) && r.path.endsWith('.pack')).length, 3, 'the 12 MiB pack in 3 parts');
    assert.equal(fx.proxy.count('PUT', /\.pack$/), 4, 'and the rest in one PUT');
    assert.equal(fx.proxy.log.filter((r) => isStart(r) && r.path.endsWith('.pack')).length, 1, 'the 12 MiB pack in parts, the 2 MiB rest in one PUT');
    await store.close();
    const again = await open();
    for (const c of chunks) assert.ok((await again.get(c.id)).equals(c.data));
    await again.close();
  });

  it('a part refused for good aborts the upload: no parts and no manifest are left', async () => {
    const store = await open();
    fx.proxy.failNext((r) => isPartPut(r) && /[?&]partNumber=2(&|$)/.test(r.query), { kind: 'status', status: 403, code: 'AccessDenied' });
    await assert.rejects(store.putManifest('denied', pieces(pseudoRandom(12 * MiB, 63))), /access denied/);
    assert.equal(fx.proxy.log.filter(isAbort).length, 1, 'the upload was aborted');
    assert.equal(await uploadsLeft(), 0, 'no upload (and no part) is left in the bucket');
    assert.ok(!(await listKeys(f.service, fx.url)).includes('manifests/denied'));
    await store.close();
  });

  it('a completion whose answer was lost is retried and recognised as done', async () => {
    const store = await open();
    // The first completion is done but its answer lost; the service then knows the upload
    // no more (as S3 may, once an upload is completed).
    let completions = 0;
    fx.proxy.fault = (r) => (!isComplete(r) ? undefined : ++completions === 1 ? { kind: 'drop-after' } : { kind: 'status', status: 404, code: 'NoSuchUpload' });
    const data = pseudoRandom(11 * MiB, 64);
    await store.putManifest('lost-answer', pieces(data));
    assert.ok(fx.proxy.log.filter(isComplete).length >= 2, 'the completion was sent again');
    assert.ok((await readAll(await store.getManifest('lost-answer'))).equals(data));
    await store.close();
  });

  it('refuses parts smaller than S3 allows', async () => {
    await assert.rejects(openTestStore(f.service, fx.url, { partBytes: S3_MIN_PART_BYTES - 1 }), /partBytes/);
  });
});
