/*
 * S3 failures name the object as s3://bucket/key, the store's prefix once (a key already
 * holds the prefix), on moto_server started by the test.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { freshLocation, motoMissing, openTestStore, useS3Service } from './helpers/s3.js';

describe('S3 error messages (moto_server)', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');

  it('a store opened on a missing bucket names its first listing (set-aside records, then the index) with its prefix once', async () => {
    const prefix = freshLocation(f.service).slice(f.service.base.length);
    await assert.rejects(openTestStore(f.service, `s3://xfer-no-such-bucket/${prefix}`), (err: Error) => {
      assert.match(err.message, new RegExp(`s3://xfer-no-such-bucket/${prefix}/(aside|index)/`));
      assert.doesNotMatch(err.message, new RegExp(`${prefix}/${prefix}/`));
      return true;
    });
  });

  it('damaged gc marks are named as s3://bucket/prefix/gc/marks.json, the prefix once', async () => {
    const url = freshLocation(f.service);
    const bucket = f.service.base.slice('s3://'.length, -1);
    const prefix = url.slice(f.service.base.length);
    await f.service.client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/gc/marks.json`, Body: 'not json' }));
    await assert.rejects(openTestStore(f.service, url), (err: Error) => {
      assert.equal(err.message, `${url}/gc/marks.json: damaged gc marks (invalid JSON)`);
      return true;
    });
  });
});
