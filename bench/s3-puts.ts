/**
 * `npm run build && node dist/bench/s3-puts.js [--size 2G] [--avg 64K] [--work DIR]`
 *
 * Issue 16's PUT bar: a push of SIZE of incompressible data (64 KiB average chunks by
 * default) to an S3 store makes at most (chunk count / 100) PUT requests. Starts
 * moto_server on 127.0.0.1 with a bucket, puts the test suite's counting proxy
 * (test/helpers/s3-proxy.ts) between `xfer push` (the CLI, as a user runs it) and moto,
 * and counts every PUT the proxy saw (packs, index objects, manifest, parts). Prints one
 * line of figures and exits 1 if the bar is missed. Never part of npm test.
 */
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { parseSize } from '../src/core/sizes.js';
import { writeRandomFile } from '../test/helpers/cli.js';
import { MOTO_CREDENTIALS, motoMissing, startMoto, stopChild } from '../test/helpers/moto.js';
import { S3FaultProxy } from '../test/helpers/s3-proxy.js';
import { XFER } from './harness.js';
import { timed } from './measure.js';

/** The bar: chunks per PUT request at least. */
const CHUNKS_PER_PUT = 100;
const BUCKET = 'xfer-bench-puts';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '2G' },
    avg: { type: 'string', default: '64K' },
    work: { type: 'string', default: join(tmpdir(), 'xfer-bench-s3-puts') },
  },
});
const log = (s: string) => process.stdout.write(`${s}\n`);
// As createS3Client does for the CLI: no warning about the SDK's future Node versions.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const missing = motoMissing();
if (missing !== undefined) throw new Error(missing);
const sizeBytes = parseSize(values.size!, '--size');
const work = values.work!;
await mkdir(work, { recursive: true });
const source = join(work, 'source.bin');
log(`writing ${values.size} of incompressible data to ${source}`);
await writeRandomFile(source, sizeBytes, 16);
const moto = await startMoto();
const proxy = await S3FaultProxy.start(moto.endpoint);
try {
  const admin = new S3Client({ endpoint: moto.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: MOTO_CREDENTIALS });
  await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
  admin.destroy();
  const env = { AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey, AWS_REGION: 'us-east-1' };
  log(`xfer push to s3://${BUCKET}/source.bin through the counting proxy (moto at ${moto.endpoint})`);
  const run = await timed(process.execPath, [XFER, 'push', source, `s3://${BUCKET}/source.bin`, '--avg', values.avg!, '--s3-endpoint', proxy.endpoint, '--s3-path-style', '--json'], env);
  const result = JSON.parse(run.stdout) as { chunksTotal: number; chunksSent: number };
  const puts = proxy.count('PUT');
  const packs = proxy.count('PUT', /\.pack$/);
  const indexes = proxy.count('PUT', /\.idx$/);
  const manifests = proxy.count('PUT', /\/manifests\//);
  const bar = result.chunksSent / CHUNKS_PER_PUT;
  log(
    `size ${sizeBytes} B, avg ${values.avg}: ${result.chunksTotal} chunks (${result.chunksSent} stored), ${puts} PUTs ` +
      `(${packs} packs, ${indexes} index, ${manifests} manifest, ${puts - packs - indexes - manifests} other), ` +
      `${(result.chunksSent / puts).toFixed(1)} chunks per PUT; bar: at most ${Math.floor(bar)} PUTs: ${puts <= bar ? 'PASS' : 'FAIL'}; ` +
      `push ${run.wallSeconds.toFixed(1)} s, cpu ${run.cpuSeconds.toFixed(1)} s, rss ${run.maxRssMiB.toFixed(0)} MiB`,
  );
  process.exitCode = puts <= bar ? 0 : 1;
} finally {
  await proxy.close();
  await stopChild(moto.child);
  await rm(work, { recursive: true, force: true });
}
