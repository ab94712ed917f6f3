import { InvalidArgumentError } from '../../core/errors.js';

/** Where an S3 store lives: a bucket and a key prefix ('' or ending in '/'). */
export interface S3Location {
  readonly bucket: string;
  /** Prepended to every key the store writes: '' (the whole bucket) or 'a/b/'. */
  readonly prefix: string;
}

/** The scheme of S3 locations, as the location registry (endpoint/open.ts) matches it. */
export const S3_SCHEME = 's3:';

/** S3's rules for bucket names (3-63 characters of lower-case letters, digits, '.', '-'). */
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Whether `text` names an S3 location (starts with s3://), before it is checked. */
export function isS3Location(text: string): boolean {
  return text.startsWith('s3://');
}

/**
 * Parses `s3://bucket` or `s3://bucket/some/prefix` (a trailing '/' is optional). The
 * prefix is a '/'-separated path of non-empty segments other than '.' and '..', so that
 * two spellings of a location never mean two places. Throws InvalidArgumentError naming
 * the location otherwise.
 */
export function parseS3Location(text: string): S3Location {
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`invalid S3 location ${JSON.stringify(String(text))}: ${why}`);
  };
  if (typeof text !== 'string' || !isS3Location(text)) bad('expected s3://bucket/prefix');
  const rest = text.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  if (!BUCKET_RE.test(bucket)) bad('the bucket name must be 3-63 lower-case letters, digits, dots or hyphens');
  let path = slash < 0 ? '' : rest.slice(slash + 1);
  if (path.endsWith('/')) path = path.slice(0, -1);
  if (path === '') return { bucket, prefix: '' };
  if (/[\0\\?#]/.test(path)) bad('the prefix contains a NUL, backslash, ? or #');
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') bad(`the prefix contains an empty, '.' or '..' segment`);
  }
  return { bucket, prefix: `${path}/` };
}

/** The location as a URL again, for messages. */
export function formatS3Location(location: S3Location): string {
  return `s3://${location.bucket}/${location.prefix}`;
}

/** One object of a bucket as a URL, for messages (`key` is the whole key, prefix included). */
export function formatS3Object(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}
