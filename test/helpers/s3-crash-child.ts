/*
 * A client that dies mid-push, for store-s3-crash.test.ts: opens the S3 store at argv[3]
 * (endpoint argv[2], moto's credentials), puts S3_CRASH_CHUNKS chunks, then stores a
 * manifest 'm' listing their ids (hex, one a line) and prints "done". The test kills it
 * (SIGKILL) at a chosen request.
 */
import { openS3Store } from '../../src/store/s3/index.js';
import { makeChunk } from '../store-conformance.js';
import { CRASH_CHUNK_BYTES, CRASH_CHUNKS, CRASH_PACK_TARGET_BYTES } from './s3-crash-plan.js';

const [endpoint, url] = process.argv.slice(2) as [string, string];
const store = await openS3Store(url, {
  endpoint,
  forcePathStyle: true,
  region: 'us-east-1',
  credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
  packTargetBytes: CRASH_PACK_TARGET_BYTES,
});
const chunks = Array.from({ length: CRASH_CHUNKS }, (_, i) => makeChunk('blake3', CRASH_CHUNK_BYTES, 1000 + i));
for (const c of chunks) await store.put(c.id, c.data);
async function* manifest(): AsyncGenerator<Uint8Array> {
  yield Buffer.from(chunks.map((c) => Buffer.from(c.id.digest).toString('hex')).join('\n'));
}
await store.putManifest('m', manifest());
await store.close();
process.stdout.write('done\n');
