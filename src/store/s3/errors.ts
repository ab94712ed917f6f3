/*
 * How the S3 store sorts the errors of the SDK (restic's IsPermanentError): which failures
 * may pass if the request is made again (5xx, SlowDown, throttling, a broken connection, a
 * truncated body) and which never will (a 4xx: denied, no such bucket, bad request), and
 * what a user is told about each. Kept apart from the store so the table is the one place
 * to read, and testable without a server.
 */
import { abortedError } from '../../core/abort.js';
import {
  InvalidArgumentError,
  IoError,
  isXferError,
  NotFoundError,
  PermissionDeniedError,
  ProtocolError,
  UnauthorizedError,
  XferError,
} from '../../core/errors.js';

/** What the SDK's service and transport errors carry that we read. */
interface SdkErrorShape {
  readonly name?: string;
  readonly code?: string;
  readonly message?: string;
  readonly $metadata?: { readonly httpStatusCode?: number };
  readonly $response?: { readonly statusCode?: number };
  readonly cause?: { readonly code?: string };
}

/** Error codes S3 and its clones send with a status that may be retried. */
const TRANSIENT_CODES = new Set([
  'SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'RequestTimeTooSkewed',
  'InternalError', 'ServiceUnavailable', 'RequestLimitExceeded', 'TooManyRequestsException',
]);

/** Error names and codes of programming errors and deliberate stops: never retried. */
const PERMANENT_NAMES = new Set(['AbortError', 'TypeError', 'RangeError', 'SyntaxError', 'ReferenceError', 'CredentialsProviderError']);

/** The HTTP status of an SDK error, if the server answered. */
export function s3StatusOf(err: unknown): number | undefined {
  const e = err as SdkErrorShape | undefined;
  return e?.$metadata?.httpStatusCode ?? e?.$response?.statusCode;
}

/** The S3 error code (NoSuchKey, SlowDown, AccessDenied, ...) or the error's name. */
export function s3CodeOf(err: unknown): string | undefined {
  const e = err as SdkErrorShape | undefined;
  return e?.name ?? e?.code;
}

/**
 * Whether trying the same request again cannot succeed. Transient: a 5xx, 429, SlowDown
 * and the other TRANSIENT_CODES, and every failure without an HTTP status that is not a
 * programming error or a stop (a refused, reset or broken connection, a timeout, a body
 * that ended early: undici, Node and the SDK name these in many ways, so anything else
 * without a status counts as the network's). Permanent: every other 4xx (403 denied, 404
 * no such bucket or key, 400 bad request), an abort, and xfer's own errors, which are
 * decisions (a chunk that does not hash to its id is never fetched again silently).
 */
export function isPermanentS3Error(err: unknown): boolean {
  if (err instanceof XferError) return err.code !== 'XFER_IO' && err.code !== 'XFER_PROTOCOL';
  const status = s3StatusOf(err);
  const code = s3CodeOf(err);
  if (code !== undefined && TRANSIENT_CODES.has(code)) return false;
  if (status !== undefined && status >= 100) return !(status >= 500 || status === 429 || status === 408);
  if (code !== undefined && PERMANENT_NAMES.has(code)) return true;
  return false;
}

/**
 * The XferError a failed S3 request ends in, after any retries: one line naming `what`
 * (e.g. "PUT s3://b/p/packs/x.pack"). XferErrors pass through; an abort of `signal` is
 * AbortedError.
 */
export function s3Failure(err: unknown, what: string, signal?: AbortSignal): XferError {
  if (isXferError(err)) return err;
  const e = err as SdkErrorShape | undefined;
  if (signal?.aborted || e?.name === 'AbortError') return abortedError(signal);
  const status = s3StatusOf(err);
  const code = s3CodeOf(err);
  const message = firstLine(e?.message ?? String(err));
  const detail = status !== undefined ? `${status} ${code ?? ''}`.trim() : (e?.cause?.code ?? code ?? 'failed');
  if (code === 'CredentialsProviderError') {
    return new UnauthorizedError(`${what}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): ${message}`);
  }
  if (/region is missing/i.test(message)) return new InvalidArgumentError(`${what}: no S3 region (set AWS_REGION)`);
  if (code === 'NoSuchBucket') return new NotFoundError(`${what}: no such bucket`, { cause: err });
  if (status === 404) return new NotFoundError(`${what}: not found (${detail})`, { cause: err });
  if (status === 401 || status === 403) {
    return new PermissionDeniedError(`${what}: access denied (${detail}; check the credentials and the bucket policy)`, { cause: err });
  }
  if (status !== undefined && status >= 400 && status < 500) return new ProtocolError(`${what}: ${detail}: ${message}`, { cause: err });
  return new IoError(`${what}: ${detail}${message && message !== detail ? `: ${message}` : ''}`, { cause: err });
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0]!.trim().slice(0, 300);
}
