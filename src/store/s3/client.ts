import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

/** S3 requests in flight at once per store (uploads, ranged reads, listings together). */
export const S3_MAX_REQUESTS_IN_FLIGHT = 8;
/** A connection attempt that takes longer fails (and is retried). */
export const S3_CONNECT_TIMEOUT_MS = 10_000;
/** A request whose socket stays idle this long fails (and is retried). */
export const S3_IDLE_TIMEOUT_MS = 60_000;

/** How to reach the S3 service; everything left out comes from the AWS environment. */
export interface S3ClientOptions {
  /**
   * The service URL (MinIO, Ceph RGW, a test server): by default AWS_ENDPOINT_URL (or
   * AWS_ENDPOINT_URL_S3), else AWS itself.
   */
  readonly endpoint?: string;
  /** Address buckets as <endpoint>/<bucket> rather than <bucket>.<endpoint> (MinIO, Ceph, most self-hosted). */
  readonly forcePathStyle?: boolean;
  /** By default AWS_REGION or the profile's region. */
  readonly region?: string;
  /** By default the SDK's provider chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance roles. */
  readonly credentials?: S3ClientConfig['credentials'];
}

/**
 * An S3Client for one store. The SDK's own retries are off (maxAttempts 1): the store
 * retries, with the classification of errors.ts, and verifies what it reads itself.
 * Checksums are sent and checked only where S3 requires them, as MinIO, Ceph and other
 * S3 clones do not all know the newer CRC headers; pack and index uploads carry a
 * Content-MD5, which every S3 server checks.
 */
export function createS3Client(options: S3ClientOptions): S3Client {
  // Library code never prints: the SDK would warn on stderr, once per process, that its
  // releases from 2027 need Node 22; this is its documented switch (an explicit setting wins).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const agent = { keepAlive: true, maxSockets: S3_MAX_REQUESTS_IN_FLIGHT };
  return new S3Client({
    ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
    ...(options.region !== undefined ? { region: options.region } : {}),
    ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
    forcePathStyle: options.forcePathStyle ?? false,
    maxAttempts: 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: new HttpAgent(agent),
      httpsAgent: new HttpsAgent(agent),
      connectionTimeout: S3_CONNECT_TIMEOUT_MS,
      requestTimeout: S3_IDLE_TIMEOUT_MS,
    },
  });
}
