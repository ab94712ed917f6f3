import { InvalidArgumentError } from '../core/errors.js';
import { DIGEST_ALGORITHMS, DIGEST_BYTES, digestToHex, type ChunkId } from '../core/ids.js';

/** Longest manifest name accepted, in UTF-8 bytes. */
export const MAX_MANIFEST_NAME_BYTES = 4096;

/**
 * Longest single '/'-separated segment, in UTF-8 bytes: the NAME_MAX of common local
 * filesystems, enforced for every store so a name accepted by one store works in all.
 */
export const MAX_MANIFEST_SEGMENT_BYTES = 255;

/** Reserved segment: a store directory is `<backup-dir>/.xfer`, never a manifest. */
const RESERVED_SEGMENT = '.xfer';

/**
 * The store's own namespace for versions (store/versions.ts): the version `<id>` of target
 * `<name>` is the manifest `.xfer/versions/<key>/<id>`, `<key>` a fixed-length hash of the
 * name (VERSION_KEY_PATTERN): a version's name is never longer than the limits allow, even
 * for a target whose own name is at them, and the versions of `a` never clash with those of
 * `a/b`. The only names with a '.xfer' segment a store accepts, and only in exactly this
 * form: no target can be named so (its names never contain '.xfer', validateTargetName).
 */
export const VERSIONS_PREFIX = `${RESERVED_SEGMENT}/versions/`;

/** A target's key in the versions' namespace: 32 hex digits (the first 128 bits of the SHA-256 of its UTF-8 name). */
export const VERSION_KEY_PATTERN = /^[0-9a-f]{32}$/;

/**
 * A version id: the commit's UTC time to the millisecond, then the first 8 hex digits of the
 * target's digest (`2026-12-06T15:04:05.123Z-1a2b3c4d`). Sorts as the commits were made.
 */
export const VERSION_ID_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z-[0-9a-f]{8}$/;

/** How much of an offending name an error message quotes, in characters. */
const QUOTED_NAME_MAX_CHARS = 200;

/**
 * Checks a manifest name and returns it unchanged. A name is a '/'-separated relative
 * path of non-empty segments; no segment is '.', '..' or '.xfer'; it contains no NUL and
 * no backslash, does not start or end with '/', and is at most MAX_MANIFEST_NAME_BYTES
 * bytes long (each segment at most MAX_MANIFEST_SEGMENT_BYTES). Otherwise throws
 * InvalidArgumentError with a one-line message naming it.
 *
 * Pure (no I/O): every store and the HTTP server validate names with it, so a name can
 * never escape a store's manifest directory or mean different things to different stores.
 */
export function validateManifestName(name: string): string {
  const reason = problemWith(name, true);
  if (reason !== undefined) throw new InvalidArgumentError(`invalid manifest name ${quoteName(name)}: ${reason}`);
  return name;
}

/**
 * validateManifestName for the name of a target (what a user pushes, pulls, lists, removes):
 * a manifest name outside the store's own namespace (VERSIONS_PREFIX). Refused names are
 * refused with the same message as before the namespace existed ('.xfer' is reserved).
 */
export function validateTargetName(name: string): string {
  const reason = problemWith(name, false);
  if (reason !== undefined) throw new InvalidArgumentError(`invalid manifest name ${quoteName(name)}: ${reason}`);
  return name;
}

/** Whether a (valid) manifest name lies in the store's own namespace: a version, never a target. */
export function isReservedName(name: string): boolean {
  return name.startsWith(`${RESERVED_SEGMENT}/`);
}

/** A manifest name in quotes with control characters escaped, so messages stay one line. */
export function quoteName(name: string): string {
  const text = String(name);
  return text.length > QUOTED_NAME_MAX_CHARS
    ? `${JSON.stringify(text.slice(0, QUOTED_NAME_MAX_CHARS))}...`
    : JSON.stringify(text);
}

/**
 * Checks a listing prefix and returns it unchanged. Prefixes match names as strings
 * ('daily/' lists everything under daily/, 'daily/2024-' the names starting so, '' all),
 * but the part before the last '/' must itself be a valid manifest name, so a prefix
 * can never reach outside a store's manifests. Otherwise throws InvalidArgumentError.
 */
export function validateManifestPrefix(prefix: string): string {
  if (typeof prefix !== 'string') throw new InvalidArgumentError('invalid manifest prefix: not a string');
  const slash = prefix.lastIndexOf('/');
  const reason =
    prefix.includes('\0') || prefix.includes('\\')
      ? 'contains a NUL or backslash'
      : slash >= 0
        ? problemWith(prefix.slice(0, slash), true, true)
        : undefined;
  if (reason !== undefined) throw new InvalidArgumentError(`invalid manifest prefix ${quoteName(prefix)}: ${reason}`);
  return prefix;
}

/** The order of every listing: by UTF-8 bytes, as S3 and most servers sort keys. */
export function compareManifestNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Checks that a chunk id names something a store could hold (a known algorithm, a digest
 * of DIGEST_BYTES bytes) and returns the digest as hex. Stores build keys and paths from
 * ids, so ids from outside (an untyped caller, a request) are checked before use.
 */
export function checkChunkId(id: ChunkId): string {
  validateChunkId(id);
  return digestToHex(id.digest);
}

/**
 * checkChunkId without the hex: for hot paths that need no name (has() of a million ids,
 * where a hex string per id was made and thrown away).
 */
export function validateChunkId(id: ChunkId): void {
  if (!DIGEST_ALGORITHMS.includes(id.algorithm)) {
    throw new InvalidArgumentError(`invalid chunk id: unknown digest algorithm "${String(id.algorithm)}"`);
  }
  if (!(id.digest instanceof Uint8Array) || id.digest.length !== DIGEST_BYTES) {
    throw new InvalidArgumentError(`invalid chunk id: the digest must be ${DIGEST_BYTES} bytes`);
  }
}

/**
 * Why `name` is not a valid manifest name, or undefined. `versions`: names of the versions
 * namespace are valid (`.xfer/versions/<key>/<id>`); `partial`: a prefix's folder part,
 * which may stop anywhere in that form.
 */
function problemWith(name: string, versions: boolean, partial = false): string | undefined {
  if (typeof name !== 'string') return 'not a string';
  if (versions && name.startsWith(VERSIONS_PREFIX)) {
    const [key, id, ...more] = name.slice(VERSIONS_PREFIX.length).split('/');
    if (VERSION_KEY_PATTERN.test(key!) && more.length === 0 && (partial ? id === undefined : VERSION_ID_PATTERN.test(id ?? ''))) return undefined;
    return 'not a version name (.xfer/versions/<key>/<version id>)';
  }
  if (versions && partial && `${name}/` === VERSIONS_PREFIX) return undefined;
  if (name === '') return 'empty';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_MANIFEST_NAME_BYTES) return `${bytes} bytes long, the limit is ${MAX_MANIFEST_NAME_BYTES}`;
  if (name.includes('\0')) return 'contains a NUL character';
  if (name.includes('\\')) return "contains a backslash (use '/' to separate segments)";
  if (name.startsWith('/')) return "starts with '/' (names are relative)";
  if (name.endsWith('/')) return "ends with '/'";
  for (const segment of name.split('/')) {
    if (segment === '') return "contains an empty segment ('//')";
    if (segment === '.' || segment === '..') return `contains a '${segment}' segment`;
    if (segment === RESERVED_SEGMENT) return `contains the reserved segment '${RESERVED_SEGMENT}'`;
    if (Buffer.byteLength(segment, 'utf8') > MAX_MANIFEST_SEGMENT_BYTES) {
      return `a segment is longer than ${MAX_MANIFEST_SEGMENT_BYTES} bytes`;
    }
  }
  return undefined;
}
