/*
 * `xfer serve --root DIR --store s3://bucket/prefix`: the server keeps chunks and manifests
 * in S3 (moto, started by the test) and rebuilds pushed files under DIR/files. Every
 * feature of the server works over it: stages (file and tree), deltas, in-place commits,
 * fetches, listings, and a restart (or a kill) of the server loses nothing stored.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isOneLineError, runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { S3FaultProxy } from './helpers/s3-proxy.js';
import { freshLocation, listKeys, motoMissing, useS3Service } from './helpers/s3.js';
import { startServeProcess } from './helpers/server.js';

const MiB = 1024 * 1024;

describe('xfer serve --store s3://', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let dir: string;
  /** The AWS environment the server reads its credentials and region from. */
  let env: NodeJS.ProcessEnv;
  let s3Args: string[];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-serve-s3-'));
    const credentials = f.service.options.credentials as { accessKeyId: string; secretAccessKey: string };
    env = { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, AWS_REGION: 'us-east-1' };
    s3Args = ['--s3-endpoint', f.service.endpoint!, '--s3-path-style'];
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const serve = (root: string, store: string, more: string[] = []) =>
    startServeProcess(['--root', root, '--port', '0', '--store', store, ...s3Args, ...more], env);

  it('stores pushed files and trees in the bucket, rebuilds them under the root, and serves them again after a restart on an empty root', async () => {
    const store = freshLocation(f.service);
    const root = join(dir, 'root1');
    const src = join(dir, 'volume.bin');
    const v1 = pseudoRandom(6 * MiB, 41);
    await writeFile(src, v1);
    const tree = join(dir, 'tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.txt'), 'alpha\n');
    await writeFile(join(tree, 'sub', 'b.bin'), pseudoRandom(300_000, 42));
    const v2 = Buffer.from(v1);
    for (const off of [1 * MiB + 5, 4 * MiB + 3]) pseudoRandom(4096, off).copy(v2, off);

    let server = await serve(root, store, ['--in-place-above', '1M']);
    try {
      const p1 = await runCli(['push', src, `${server.url}/imaging/volume.bin`, '--json']);
      assert.equal(p1.code, 0, p1.stderr);
      assert.equal(JSON.parse(p1.stdout).bytesSent, v1.length);
      assert.ok((await readFile(join(root, 'files', 'imaging', 'volume.bin'))).equals(v1), 'rebuilt under the root');
      const t1 = await runCli(['push', tree, `${server.url}/trees/t`]);
      assert.equal(t1.code, 0, t1.stderr);
      assert.equal(await readFile(join(root, 'files', 'trees', 't', 'a.txt'), 'utf8'), 'alpha\n');

      // An edited version: deltas against chunks read back from S3, then an in-place commit.
      await writeFile(src, v2);
      const ino = (await stat(join(root, 'files', 'imaging', 'volume.bin'))).ino;
      const p2 = await runCli(['push', src, `${server.url}/imaging/volume.bin`, '--json', '--in-place']);
      assert.equal(p2.code, 0, p2.stderr);
      const r2 = JSON.parse(p2.stdout);
      assert.ok(r2.chunksDelta > 0, `chunks went as deltas: ${p2.stdout}`);
      assert.ok(r2.bytesSent < v1.length / 4);
      assert.ok((await readFile(join(root, 'files', 'imaging', 'volume.bin'))).equals(v2));
      assert.equal((await stat(join(root, 'files', 'imaging', 'volume.bin'))).ino, ino, 'rewritten in place');

      const ls = await runCli(['ls', `${server.url}/`, '--json']);
      assert.equal(ls.code, 0, ls.stderr);
      assert.deepEqual(JSON.parse(ls.stdout).entries.map((e: { path: string }) => e.path).sort(), ['imaging/volume.bin', 'trees/t']);
      const back = join(dir, 'back1.bin');
      const q1 = await runCli(['pull', `${server.url}/imaging/volume.bin`, back]);
      assert.equal(q1.code, 0, q1.stderr);
      assert.ok((await readFile(back)).equals(v2));
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }

    // In the bucket: packs, index objects and the manifests, by their names.
    const keys = await listKeys(f.service, store);
    assert.ok(keys.includes('manifests/imaging/volume.bin'), keys.join(' '));
    assert.ok(keys.includes('manifests/trees/t'), keys.join(' '));
    assert.ok(keys.some((k) => /^packs\/.+\.pack$/.test(k)) && keys.some((k) => /^index\/.+\.idx$/.test(k)), keys.join(' '));

    // A new server on an empty root: everything comes from the bucket.
    server = await serve(join(dir, 'root2'), store);
    try {
      const back = join(dir, 'back2.bin');
      const q2 = await runCli(['pull', `${server.url}/imaging/volume.bin`, back]);
      assert.equal(q2.code, 0, q2.stderr);
      assert.ok((await readFile(back)).equals(v2), 'bit-identical after the restart');
      const q3 = await runCli(['pull', `${server.url}/trees/t`, join(dir, 'tree-back')]);
      assert.equal(q3.code, 0, q3.stderr);
      assert.equal(await readFile(join(dir, 'tree-back', 'a.txt'), 'utf8'), 'alpha\n');
      assert.ok((await readFile(join(dir, 'tree-back', 'sub', 'b.bin'))).equals(pseudoRandom(300_000, 42)));
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });

  it('a server killed during a push loses nothing: restarted, the push is run again and completes', async () => {
    const store = freshLocation(f.service);
    const root = join(dir, 'root-kill');
    const src = join(dir, 'killed.bin');
    const data = pseudoRandom(8 * MiB, 43);
    await writeFile(src, data);
    let server = await serve(root, store);
    const pushing = runCli(['push', src, `${server.url}/k.bin`, '--bwlimit', '4M', '--retries', '0']);
    await new Promise((r) => setTimeout(r, 1000));
    await server.stop('SIGKILL');
    assert.notEqual((await pushing).code, 0);
    server = await serve(root, store);
    try {
      const again = await runCli(['push', src, `${server.url}/k.bin`]);
      assert.equal(again.code, 0, again.stderr);
      const back = join(dir, 'killed-back.bin');
      const q = await runCli(['pull', `${server.url}/k.bin`, back]);
      assert.equal(q.code, 0, q.stderr);
      assert.ok((await readFile(back)).equals(data));
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });

  it("tells clients of a failure of the S3 store without naming the bucket (as a local store's path is hidden)", async () => {
    const proxy = await S3FaultProxy.start(f.service.endpoint!);
    const store = freshLocation(f.service);
    const server = await startServeProcess(['--root', join(dir, 'root-hide'), '--port', '0', '--store', store, '--s3-endpoint', proxy.endpoint, '--s3-path-style'], env);
    try {
      proxy.failNext((r) => r.method === 'GET' && /list-type=2/.test(r.query), { kind: 'status', status: 403, code: 'AccessDenied' });
      const ls = await runCli(['ls', `${server.url}/`]);
      assert.notEqual(ls.code, 0);
      assert.ok(isOneLineError(ls.stderr), ls.stderr);
      assert.match(ls.stderr, /LIST the server's store\/.*manifests\/: access denied/);
      const bucket = new URL(store.replace(/^s3:/, 'http:')).hostname;
      assert.ok(!ls.stderr.includes(bucket), ls.stderr);
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
      await proxy.close();
    }
  });

  it('refuses a --store that is not an S3 location, a bucket that does not exist, and S3 flags without --store, each with a one-line error', async () => {
    const root = join(dir, 'root-bad');
    const local = await runCli(['serve', '--root', root, '--port', '0', '--store', join(dir, 'elsewhere')], { env });
    assert.equal(local.code, 2, local.stderr);
    assert.ok(isOneLineError(local.stderr) && /--store: expected s3:\/\/bucket\/prefix/.test(local.stderr), local.stderr);
    const missing = await runCli(['serve', '--root', root, '--port', '0', '--store', 's3://no-such-bucket-here/x', ...s3Args], { env });
    assert.notEqual(missing.code, 0);
    assert.ok(isOneLineError(missing.stderr) && /no-such-bucket-here/.test(missing.stderr), missing.stderr);
    const stray = await runCli(['serve', '--root', root, '--port', '0', ...s3Args], { env });
    assert.equal(stray.code, 2, stray.stderr);
    assert.ok(isOneLineError(stray.stderr) && /give --store/.test(stray.stderr), stray.stderr);
  });
});
