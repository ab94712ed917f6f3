/*
 * A push of a file to an S3Store (moto, through the counting proxy) and a pull back: the
 * chunks travel in packs, so PUT requests number at most one per 100 chunks, and the
 * pull reads them by few ranged GETs.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KiB, MiB } from '../src/core/sizes.js';
import type { ChunkerSpec } from '../src/core/ids.js';
import { openManifest } from '../src/manifest/reader.js';
import { reconstruct } from '../src/reconstruct/reconstruct.js';
import { push } from '../src/transfer/push.js';
import { pseudoRandom } from './helpers/gen.js';
import { storeDestination } from './helpers/s3-destination.js';
import { S3FaultProxy } from './helpers/s3-proxy.js';
import { freshLocation, motoMissing, openTestStore, useS3Service } from './helpers/s3.js';

/**
 * 24 MiB cut in chunks of 16 KiB on average keeps the test fast; XFER_TEST_S3_PUSH_MIB
 * (the measurement: 256) pushes that many MiB with the default chunker.
 */
const MEASURE_MIB = process.env.XFER_TEST_S3_PUSH_MIB === undefined ? undefined : Number(process.env.XFER_TEST_S3_PUSH_MIB);
const FILE_MIB = MEASURE_MIB ?? 24;
const CHUNKER: ChunkerSpec | undefined = MEASURE_MIB === undefined ? { algorithm: 'fastcdc2020', minBytes: 4 * KiB, avgBytes: 16 * KiB, maxBytes: 64 * KiB } : undefined;
const CHUNKS_PER_PUT = 100;

describe('push to and pull from an S3Store', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let proxy: S3FaultProxy;
  let dir: string;
  before(async () => {
    proxy = await S3FaultProxy.start(f.service.endpoint!);
    dir = await mkdtemp(join(tmpdir(), 'xfer-s3-push-'));
  });
  after(async () => {
    await proxy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`a ${FILE_MIB} MiB file goes up in at most one PUT per ${CHUNKS_PER_PUT} chunks and comes back whole`, async () => {
    const source = join(dir, 'source.bin');
    const data = pseudoRandom(FILE_MIB * MiB, 16);
    await writeFile(source, data);
    const url = freshLocation(f.service);
    const store = await openTestStore(f.service, url, { endpoint: proxy.endpoint });
    const started = performance.now();
    const result = await push(source, storeDestination(store, 'source.bin'), { chunker: CHUNKER });
    const pushMs = performance.now() - started;
    await store.close();
    const puts = proxy.count('PUT');
    const chunks = result.chunksSent;
    process.stderr.write(`push of ${FILE_MIB} MiB: ${chunks} chunks, ${puts} PUTs (${proxy.count('PUT', /\.pack$/)} packs), ${Math.round(pushMs)} ms\n`);
    assert.ok(chunks > 0);
    assert.ok(puts <= chunks / CHUNKS_PER_PUT, `${puts} PUTs for ${chunks} chunks`);

    proxy.log.length = 0;
    const again = await openTestStore(f.service, url, { endpoint: proxy.endpoint });
    const target = join(dir, 'back.bin');
    await reconstruct(await openManifest(await again.getManifest('source.bin')), again, target, {});
    await again.close();
    const gets = proxy.log.filter((r) => r.method === 'GET' && r.range !== undefined).length;
    process.stderr.write(`pull: ${gets} ranged GETs for ${chunks} chunks\n`);
    assert.ok((await readFile(target)).equals(data));
    assert.ok(gets <= chunks / 4, `${gets} ranged GETs for ${chunks} chunks`);
  });
});
