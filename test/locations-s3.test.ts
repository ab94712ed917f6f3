/*
 * s3:// locations through the registry (issues 15 and 16): the CLI's push, pull, ls,
 * manifest show and verify take `s3://bucket/path` like any other location, against
 * moto_server started on 127.0.0.1 by the test (skipped, with the reason, if it is absent).
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isOneLineError, runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { motoMissing, useS3Service } from './helpers/s3.js';

describe('s3:// locations through the CLI', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let dir = '';
  const data = pseudoRandom(700 * 1024, 11);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-locations-s3-'));
    await writeFile(join(dir, 'f.bin'), data);
    await mkdir(join(dir, 'tree', 'sub'), { recursive: true });
    await writeFile(join(dir, 'tree', 'a.txt'), 'a');
    await writeFile(join(dir, 'tree', 'sub', 'b.bin'), pseudoRandom(300 * 1024, 12));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The CLI with the service's endpoint and (any) credentials, as a user would set them. */
  const xfer = (...args: string[]) =>
    runCli([...args, '--s3-endpoint', f.service.endpoint!, '--s3-path-style'], {
      env: { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1' },
    });

  it('push, ls, manifest show, verify and pull of a file and a tree', async () => {
    const base = f.service.base; // s3://<bucket>/
    let r = await xfer('push', join(dir, 'f.bin'), `${base}backups/`, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).bytesTotal, data.length);
    r = await xfer('push', join(dir, 'tree'), `${base}backups/`, '--quiet');
    assert.equal(r.code, 0, r.stderr);

    r = await xfer('ls', `${base}backups/`, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).entries.map((e: { path: string; kind: string }) => [e.path, e.kind]), [['backups/f.bin', 'file'], ['backups/tree', 'tree']]);

    r = await xfer('manifest', 'show', `${base}backups/tree`, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /sub\/b\.bin/);

    r = await xfer('verify', base, '--json');
    assert.equal(r.code, 0, r.stderr);

    r = await xfer('pull', `${base}backups/f.bin`, join(dir, 'back.bin'), '--quiet');
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(join(dir, 'back.bin'))).equals(data));
    r = await xfer('pull', `${base}backups/tree`, join(dir, 'back-tree'), '--quiet');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await readFile(join(dir, 'back-tree', 'a.txt'), 'utf8'), 'a');
    assert.ok((await readFile(join(dir, 'back-tree', 'sub', 'b.bin'))).equals(pseudoRandom(300 * 1024, 12)));
  });

  it('refuses --bwlimit for an S3 location and a bad --s3-endpoint, in one line', async () => {
    let r = await xfer('push', join(dir, 'f.bin'), `${f.service.base}x`, '--bwlimit', '1M');
    assert.equal(r.code, 2, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    r = await runCli(['push', join(dir, 'f.bin'), `${f.service.base}x`, '--s3-endpoint', 'minio:9000']);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
  });
});
