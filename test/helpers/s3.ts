/*
 * Real S3-protocol servers for tests, started on 127.0.0.1 by the test and stopped after
 * it: moto_server (Python, on PATH here and in CI) and s3rver (npm). Or, when
 * XFER_TEST_S3_URL is set, an outside S3 service (MinIO, Ceph RGW, AWS): see README
 * "S3 storage". No mock of the SDK: every store under test speaks HTTP to a server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach } from 'node:test';
import { CreateBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { openS3Store, type S3Store, type S3StoreOptions } from '../../src/store/s3/index.js';
import type { RetryPolicy } from '../../src/core/retry.js';
import { MOTO_CREDENTIALS, START_TIMEOUT_MS, startMoto, stopChild, waitUntilAnswers } from './moto.js';
import { S3FaultProxy } from './s3-proxy.js';

export { motoMissing } from './moto.js';

/** Retries for tests: quick, so that a test of retries takes milliseconds. */
export const TEST_RETRY_POLICY: RetryPolicy = { retries: 5, firstDelayMs: 10, maxDelayMs: 50 };
/** s3rver's built-in account. */
const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const HERE = dirname(fileURLToPath(import.meta.url));
// As createS3Client does: no warning about the SDK's future Node versions in test output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** A running S3 service a test can open stores on. */
export interface S3Service {
  readonly name: string;
  readonly endpoint: string | undefined;
  /** s3://bucket/ of a bucket for this service's tests (a prefix for outside services). */
  readonly base: string;
  readonly options: S3StoreOptions;
  /** An admin client (creating buckets, listing keys). */
  readonly client: S3Client;
}

function adminClient(endpoint: string | undefined, options: S3StoreOptions): S3Client {
  return new S3Client({
    ...(endpoint !== undefined ? { endpoint } : {}),
    region: options.region ?? process.env.AWS_REGION ?? 'us-east-1',
    forcePathStyle: options.forcePathStyle ?? false,
    ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
  });
}

/**
 * For a describe(): starts the named S3 server before its tests (with one bucket) and
 * stops it after them. The service is set once `before` has run. 'moto' needs
 * moto_server on PATH (check motoMissing() and skip with its reason).
 */
export function useS3Service(kind: 'moto' | 's3rver' | 'outside'): { service: S3Service } {
  const f = {} as { service: S3Service };
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  before(async () => {
    if (kind === 'outside') {
      const url = process.env.XFER_TEST_S3_URL!;
      const endpoint = process.env.XFER_TEST_S3_ENDPOINT || undefined;
      const options: S3StoreOptions = {
        ...(endpoint !== undefined ? { endpoint } : {}),
        forcePathStyle: process.env.XFER_TEST_S3_PATH_STYLE === '1',
      };
      const base = url.endsWith('/') ? url : `${url}/`;
      f.service = { name: `outside (${url})`, endpoint, base, options, client: adminClient(endpoint, options) };
      return;
    }
    let endpoint = '';
    let credentials: S3StoreOptions['credentials'];
    if (kind === 'moto') {
      const moto = await startMoto();
      child = moto.child;
      endpoint = moto.endpoint;
      credentials = MOTO_CREDENTIALS;
    } else {
      dir = await mkdtemp(join(tmpdir(), 'xfer-s3rver-'));
      const s3rver = spawn(process.execPath, ['--openssl-legacy-provider', join(HERE, 's3rver-child.js'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = s3rver;
      credentials = S3RVER_CREDENTIALS;
      let output = '';
      s3rver.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
      s3rver.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
      const started = Date.now();
      while (endpoint === '') {
        const m = /listening (\d+)/.exec(output);
        if (m) endpoint = `http://127.0.0.1:${m[1]}`;
        else if (s3rver.exitCode !== null) throw new Error(`s3rver exited (${s3rver.exitCode}): ${output}`);
        else if (Date.now() - started > START_TIMEOUT_MS) throw new Error(`s3rver did not start: ${output}`);
        else await new Promise((r) => setTimeout(r, 50));
      }
      await waitUntilAnswers(endpoint, s3rver, () => output);
    }
    const options: S3StoreOptions = { endpoint, forcePathStyle: true, region: 'us-east-1', credentials };
    const client = adminClient(endpoint, options);
    const bucket = `xfer-test-${randomBytes(4).toString('hex')}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    f.service = { name: kind, endpoint, base: `s3://${bucket}/`, options, client };
  });
  after(async () => {
    f.service?.client.destroy();
    await stopChild(child);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  return f;
}

/**
 * For a describe() after useS3Service(`s`): a fault-injecting proxy (helpers/s3-proxy.ts)
 * in front of the service, started before its tests and closed after them. Before each
 * test its fault and log are cleared and `url` is a fresh location (freshLocation). Open
 * stores on `url` with `endpoint: proxy.endpoint` to go through it.
 */
export function useS3FaultProxy(s: { readonly service: S3Service }): { readonly proxy: S3FaultProxy; readonly url: string } {
  const f = {} as { proxy: S3FaultProxy; url: string };
  before(async () => {
    f.proxy = await S3FaultProxy.start(s.service.endpoint!);
  });
  after(async () => {
    await f.proxy?.close();
  });
  beforeEach(() => {
    f.url = freshLocation(s.service);
    f.proxy.fault = undefined;
    f.proxy.log.length = 0;
  });
  return f;
}

/** A location of its own for one test: the service's base plus a fresh prefix. */
export function freshLocation(service: S3Service): string {
  return `${service.base}t-${randomBytes(6).toString('hex')}`;
}

/** Opens a store on `url` of `service`, with quick retries unless `options` say otherwise. */
export function openTestStore(service: S3Service, url: string, options: S3StoreOptions = {}): Promise<S3Store> {
  return openS3Store(url, { ...service.options, retry: TEST_RETRY_POLICY, ...options });
}

/** Every key under s3://bucket/prefix `url`, sorted. */
export async function listKeys(service: S3Service, url: string): Promise<string[]> {
  const { bucket, prefix } = splitUrl(url);
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await service.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const item of page.Contents ?? []) keys.push(item.Key!.slice(prefix.length));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys.sort();
}

/** Removes every key under `url` (for outside services, which outlive the test). */
export async function removeKeys(service: S3Service, url: string): Promise<void> {
  const { bucket, prefix } = splitUrl(url);
  const keys = await listKeys(service, url);
  for (let i = 0; i < keys.length; i += 1000) {
    await service.client.send(
      new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((k) => ({ Key: prefix + k })) } }),
    );
  }
}

function splitUrl(url: string): { bucket: string; prefix: string } {
  const rest = url.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  let prefix = slash < 0 ? '' : rest.slice(slash + 1);
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  return { bucket, prefix };
}
