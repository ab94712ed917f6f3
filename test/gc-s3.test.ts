/*
 * gc of an S3 store on moto_server (a real S3-protocol server on 127.0.0.1, started by the
 * test; skipped, with the reason, if moto_server is absent).
 */
import { pausedAtCommit } from './helpers/paused.js';
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { pull, push } from '../src/api.js';
import { gc } from '../src/gc.js';
import { verify } from '../src/inspect.js';
import { ScanPool } from '../src/scan/pool.js';
import { remove } from '../src/targets.js';
import { writeRandomFile } from './helpers/cli.js';
import { freshLocation, listKeys, motoMissing, openTestStore, useS3Service } from './helpers/s3.js';

const MiB = 1024 * 1024;
const HOUR_MS = 3_600_000;

describe('gc of an S3 store (moto_server)', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let dir: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-gc-s3-'));
    pool = new ScanPool();
    await writeRandomFile(join(dir, 'a.bin'), 3 * MiB, 21);
    await writeRandomFile(join(dir, 'b.bin'), 2 * MiB, 22);
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  const kinds = (keys: string[], kind: string) => keys.filter((k) => k.startsWith(`${kind}/`) || k.includes(`/${kind}/`));

  it('deletes the pack no manifest needs, merges the index objects into one, and a dry run changes nothing', async () => {
    const url = freshLocation(f.service);
    const store = await openTestStore(f.service, url);
    await push(join(dir, 'a.bin'), { store, path: 'a' }, { pool });
    await push(join(dir, 'b.bin'), { store, path: 'b' }, { pool });
    await remove({ store, path: 'a' });
    await store.close();
    const before = await listKeys(f.service, url);
    assert.equal(kinds(before, 'packs').length, 2);
    assert.equal(kinds(before, 'index').length, 2);
    const collecting = await openTestStore(f.service, url);
    const dry = await gc(collecting, { graceMs: 0, dryRun: true });
    assert.deepEqual(await listKeys(f.service, url), before, 'a dry run changes nothing');
    const r = await gc(collecting, { graceMs: 0 });
    await collecting.close();
    assert.deepEqual({ ...dry, dryRun: false }, r, 'the dry run reported what the run did');
    assert.equal(r.deletedPacks, 1);
    assert.ok(r.freedBytes >= 3 * MiB);
    assert.equal(r.mergedIndexes, 2);
    const afterKeys = await listKeys(f.service, url);
    assert.equal(kinds(afterKeys, 'packs').length, 1);
    assert.equal(kinds(afterKeys, 'index').length, 1, 'one merged index object');
    const reopened = await openTestStore(f.service, url);
    try {
      await pull({ store: reopened, path: 'b' }, join(dir, 'b1.bin'), { pool });
      assert.ok((await readFile(join(dir, 'b1.bin'))).equals(await readFile(join(dir, 'b.bin'))));
      assert.deepEqual((await verify(reopened)).damaged, []);
    } finally {
      await reopened.close();
    }
  });

  it('is safe beside a push paused at its commit: the chunks it skipped survive, recovered after the grace', async () => {
    const url = freshLocation(f.service);
    const first = await openTestStore(f.service, url);
    await push(join(dir, 'a.bin'), { store: first, path: 'a' }, { pool });
    await remove({ store: first, path: 'a' });
    await first.close();
    const pushing = await openTestStore(f.service, url);
    const { store: paused, atCommit, release } = pausedAtCommit(pushing);
    const pushed = push(join(dir, 'a.bin'), { store: paused, path: 'again' }, { pool });
    await atCommit;
    const collecting = await openTestStore(f.service, url);
    const now = Date.now() + 2 * HOUR_MS; // the pack is two hours old by then
    try {
      assert.equal((await gc(collecting, { graceMs: HOUR_MS, nowMs: now })).markedPacks, 1);
      const early = await gc(collecting, { graceMs: HOUR_MS, nowMs: now + HOUR_MS / 2 });
      assert.equal(early.deletedPacks, 0);
      release();
      assert.equal((await pushed).chunksSent, 0, 'the push relied on the stored chunks');
      await pushing.close();
      const late = await gc(collecting, { graceMs: HOUR_MS, nowMs: now + 2 * HOUR_MS });
      assert.equal(late.deletedPacks, 0);
      assert.equal(late.recoveredPacks, 1);
    } finally {
      await collecting.close();
    }
    const reopened = await openTestStore(f.service, url);
    try {
      await pull({ store: reopened, path: 'again' }, join(dir, 'again.bin'), { pool });
      assert.ok((await readFile(join(dir, 'again.bin'))).equals(await readFile(join(dir, 'a.bin'))));
      assert.deepEqual((await verify(reopened)).damaged, []);
    } finally {
      await reopened.close();
    }
  });

  it('a push after gc marked a pack stores its chunks again, so deleting the pack loses nothing', async () => {
    const url = freshLocation(f.service);
    const first = await openTestStore(f.service, url);
    await push(join(dir, 'a.bin'), { store: first, path: 'a' }, { pool });
    await remove({ store: first, path: 'a' });
    await first.close();
    const collecting = await openTestStore(f.service, url);
    const now = Date.now() + 2 * HOUR_MS;
    try {
      assert.equal((await gc(collecting, { graceMs: HOUR_MS, nowMs: now })).markedPacks, 1);
      const pushing = await openTestStore(f.service, url);
      const again = await push(join(dir, 'a.bin'), { store: pushing, path: 'a' }, { pool });
      await pushing.close();
      assert.ok(again.chunksSent > 0, 'the marked chunks count as absent');
      const late = await gc(collecting, { graceMs: HOUR_MS, nowMs: now + 2 * HOUR_MS });
      assert.equal(late.deletedPacks, 1);
    } finally {
      await collecting.close();
    }
    const reopened = await openTestStore(f.service, url);
    try {
      await pull({ store: reopened, path: 'a' }, join(dir, 'a3.bin'), { pool });
      assert.ok((await readFile(join(dir, 'a3.bin'))).equals(await readFile(join(dir, 'a.bin'))));
    } finally {
      await reopened.close();
    }
  });

  it('aborts the incomplete multipart uploads under its prefix once older than the grace, and only those', async () => {
    const url = freshLocation(f.service);
    const other = freshLocation(f.service);
    const bucket = f.service.base.slice('s3://'.length, -1);
    const keyOf = (location: string, rest: string) => `${location.slice(f.service.base.length)}/${rest}`;
    const client = f.service.client;
    const start = async (key: string) => {
      const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: Buffer.alloc(1024, 7) }));
    };
    await start(keyOf(url, 'manifests/big'));
    await start(keyOf(other, 'manifests/big'));
    const listed = async () => (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [];
    const uploads = async () => (await listed()).map((u) => u.Key).sort();
    const both = [keyOf(url, 'manifests/big'), keyOf(other, 'manifests/big')].sort();
    // Times from the server's own clock (moto reports one fixed start time for every upload).
    const started = Math.max(...(await listed()).map((u) => u.Initiated!.getTime()));
    const store = await openTestStore(f.service, url);
    try {
      const young = await gc(store, { graceMs: HOUR_MS, nowMs: started + HOUR_MS - 1000 });
      assert.equal(young.abortedUploads, 0, 'an upload younger than the grace may be a running one');
      assert.deepEqual(await uploads(), both);
      const later = started + 2 * HOUR_MS;
      assert.equal((await gc(store, { graceMs: HOUR_MS, nowMs: later, dryRun: true })).abortedUploads, 1);
      assert.deepEqual(await uploads(), both, 'a dry run aborts nothing');
      assert.equal((await gc(store, { graceMs: HOUR_MS, nowMs: later })).abortedUploads, 1);
      assert.deepEqual(await uploads(), [keyOf(other, 'manifests/big')], "another prefix's upload is not the store's");
    } finally {
      await store.close();
    }
  });
});
