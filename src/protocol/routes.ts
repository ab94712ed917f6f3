/**
 * The protocol's routes (docs/PROTOCOL.md): request paths and query parameters, written by
 * the client (store/http/client.ts) and read by the server (server/handler.ts) from these
 * same functions, so the two cannot drift apart.
 */
import { InvalidArgumentError } from '../core/errors.js';
import type { DigestAlgorithm } from '../core/ids.js';
import { validateManifestName } from '../store/names.js';
import type { VerifyProgress, VerifyReport } from '../transfer/verify.js';

export const PROTOCOL_VERSION = 1;
/** Every route lies under this prefix; a change of protocol version gets a new one. */
export const API_PREFIX = '/v1/';

/** What `GET /v1/info` answers: the server's protocol, limits and capabilities. */
export interface ServerInfo {
  readonly protocol: number;
  readonly maxBatchBytes: number;
  readonly maxQueryDigests: number;
  readonly maxChunkBytes: number;
  readonly maxSumsAnswerBytes?: number;
  /** Servers that take delta uploads say their block size (protocol/delta.ts). */
  readonly deltaBlockBytes?: number;
  /** Servers that rebuild a pushed file while its chunks arrive (POST /v1/stage/<path>). */
  readonly stage?: boolean;
  /** Servers that take stages of trees too (kind=tree). */
  readonly stageTrees?: boolean;
  /** Servers that take a tree's commit as its manifest's header and trailer, the body being its stage's (`PUT ...?staged=1`). */
  readonly commitStaged?: boolean;
  /** Servers that answer which chunks of a committed tree they lack, named by its tag (`POST /v1/chunks/missing-of/<path>`). */
  readonly missingOf?: boolean;
  /** Servers that store manifests as given (`PUT ...?raw=1`) and delete them (`DELETE`). */
  readonly manifestStore?: boolean;
  /** Servers that verify themselves (POST /v1/verify). */
  readonly verify?: boolean;
}

/** One entry of `GET /v1/list`. */
export interface ListEntry {
  readonly path: string;
  readonly kind: string;
  /** The content's bytes (the manifest's totalBytes); 0 for a damaged one. */
  readonly bytes: number;
  /** The stored manifest's own size in bytes (servers that set `manifestStore`). */
  readonly manifestBytes?: number;
  readonly mtimeMs: number;
  readonly digest: string;
  readonly error?: string;
}

/** The segments after API_PREFIX that name each endpoint. */
export const ENDPOINTS = {
  info: 'info',
  missing: 'chunks/missing',
  missingOf: 'chunks/missing-of/',
  chunks: 'chunks',
  fetch: 'chunks/fetch',
  sums: 'chunks/sums',
  delta: 'chunks/delta',
  stage: 'stage/',
  manifests: 'manifests/',
  stat: 'stat/',
  list: 'list',
  targets: 'targets/',
  verify: 'verify',
  gc: 'gc',
} as const;

/** Query parameter names. */
export const PARAMS = {
  algorithm: 'algorithm',
  checksum: 'checksum',
  raw: 'raw',
  inPlace: 'in-place',
  staged: 'staged',
  prefix: 'prefix',
  recursive: 'recursive',
  kind: 'kind',
  mode: 'mode',
  mtimeMs: 'mtimeMs',
  size: 'size',
  readData: 'read-data',
  subset: 'subset',
  chunksOnly: 'chunks-only',
  dryRun: 'dry-run',
  maxUnused: 'max-unused',
  graceMs: 'grace-ms',
} as const;

/** The longest grace a gc request may ask for (ten years, in ms): bounds the number. */
export const MAX_GC_GRACE_MS = 10 * 366 * 24 * 3600 * 1000;

/** Request paths, as the client writes them. */
export const paths = {
  info: (): string => `${API_PREFIX}${ENDPOINTS.info}`,
  missing: (algorithm: DigestAlgorithm): string => `${API_PREFIX}${ENDPOINTS.missing}?${PARAMS.algorithm}=${algorithm}`,
  /** POST with `If-Match: "<tree tag>"`: the chunks of the tree committed at `name` the server lacks. */
  missingOf: (name: string): string => `${API_PREFIX}${ENDPOINTS.missingOf}${nameToRemotePath(name)}`,
  upload: (algorithm: DigestAlgorithm): string => `${API_PREFIX}${ENDPOINTS.chunks}?${PARAMS.algorithm}=${algorithm}`,
  fetch: (algorithm: DigestAlgorithm): string => `${API_PREFIX}${ENDPOINTS.fetch}?${PARAMS.algorithm}=${algorithm}`,
  sums: (algorithm: DigestAlgorithm): string => `${API_PREFIX}${ENDPOINTS.sums}?${PARAMS.algorithm}=${algorithm}`,
  delta: (algorithm: DigestAlgorithm): string => `${API_PREFIX}${ENDPOINTS.delta}?${PARAMS.algorithm}=${algorithm}`,
  /** `query`: see stageQuery. */
  stage: (name: string, query: string): string => `${API_PREFIX}${ENDPOINTS.stage}${nameToRemotePath(name)}?${query}`,
  /** GET and DELETE; PUT with `checksum`, `inPlace`, `staged` (a commit) or `raw` (stored as given). */
  manifest: (name: string, options: { readonly checksum?: boolean; readonly raw?: boolean; readonly inPlace?: boolean; readonly staged?: boolean } = {}): string => {
    const query = options.raw
      ? [`${PARAMS.raw}=1`]
      : [options.checksum ? `${PARAMS.checksum}=1` : '', options.inPlace ? `${PARAMS.inPlace}=1` : '', options.staged ? `${PARAMS.staged}=1` : ''].filter((q) => q !== '');
    return `${API_PREFIX}${ENDPOINTS.manifests}${nameToRemotePath(name)}${query.length > 0 ? `?${query.join('&')}` : ''}`;
  },
  stat: (name: string): string => `${API_PREFIX}${ENDPOINTS.stat}${nameToRemotePath(name)}`,
  list: (prefix: string): string => `${API_PREFIX}${ENDPOINTS.list}?${PARAMS.prefix}=${encodeURIComponent(prefix)}`,
  /** DELETE: removes a target, or with `recursive` a folder of them (xfer rm). */
  target: (name: string, recursive: boolean): string => `${API_PREFIX}${ENDPOINTS.targets}${nameToRemotePath(name)}${recursive ? `?${PARAMS.recursive}=1` : ''}`,
  /** `path`: '' (every target), a target or a folder of them; `subset` as the user wrote it (`1/5`, `10%`). */
  verify: (path: string, options: { readonly readData?: boolean; readonly subset?: string; readonly chunksOnly?: boolean } = {}): string => {
    const query = [`${PARAMS.prefix}=${encodeURIComponent(path)}`];
    if (options.readData) query.push(`${PARAMS.readData}=1`);
    if (options.subset !== undefined) query.push(`${PARAMS.subset}=${encodeURIComponent(options.subset)}`);
    if (options.chunksOnly) query.push(`${PARAMS.chunksOnly}=1`);
    return `${API_PREFIX}${ENDPOINTS.verify}?${query.join('&')}`;
  },
  /** POST: the server collects its store's garbage and answers the report. */
  gc: (o: { readonly dryRun: boolean; readonly maxUnusedPercent: number; readonly graceMs: number }): string =>
    `${API_PREFIX}${ENDPOINTS.gc}?${PARAMS.dryRun}=${o.dryRun ? 1 : 0}&${PARAMS.maxUnused}=${o.maxUnusedPercent}&${PARAMS.graceMs}=${o.graceMs}`,
};

/** What `DELETE /v1/targets/<path>` answers: each target removed, with how many of its versions went. */
export interface RemoveAnswer {
  readonly removed: readonly { readonly path: string; readonly versions: number }[];
}

/**
 * One line of the answer to `POST /v1/verify` (NDJSON, docs/PROTOCOL.md): progress lines,
 * then exactly one `report` (the job ended; damage is in it) or `error` (the job failed).
 */
export type VerifyAnswerLine =
  | { readonly progress: VerifyProgress }
  | { readonly report: VerifyReport }
  | { readonly error: { readonly code: string; readonly message: string } };

/** The longest line of a verify answer a client reads (a report of MAX_DAMAGE_REPORTED damages fits). */
export const MAX_VERIFY_LINE_BYTES = 32 * 1024 * 1024;

/** A request path without its query, for messages (`POST /v1/chunks`). */
export function pathOnly(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/**
 * Turns the remote-path part of a request path into a manifest name, or throws
 * InvalidArgumentError. Each segment is percent-decoded exactly once; a segment that
 * decodes to something containing '/', '\', NUL, or that is empty, '.' or '..' is refused,
 * so `%2e%2e`, `%2f` and friends cannot smuggle traversal past the check. The result is
 * then held to the store's manifest-name rules. Nothing here touches the file system.
 */
export function remotePathToName(raw: string): string {
  if (raw === '') throw new InvalidArgumentError('a remote path is required');
  const segments = raw.split('/');
  const decoded = segments.map((s) => {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      throw new InvalidArgumentError(`invalid percent-encoding in remote path segment "${s}"`);
    }
    if (d === '' || d === '.' || d === '..') throw new InvalidArgumentError(`invalid remote path: empty, "." or ".." segment`);
    if (d.includes('/') || d.includes('\\') || d.includes('\0')) throw new InvalidArgumentError('invalid remote path: a segment contains "/", "\\" or NUL');
    return d;
  });
  return validateManifestName(decoded.join('/'));
}

/** Percent-encodes a name for use in a request path (each segment, '/' kept). */
export function nameToRemotePath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/**
 * A boolean query parameter (`checksum`, `raw`): `1` true, absent or `0` false, anything
 * else InvalidArgumentError.
 */
export function flagParam(params: URLSearchParams, key: string): boolean {
  const raw = params.get(key);
  if (raw !== null && raw !== '0' && raw !== '1') throw new InvalidArgumentError(`query parameter ${key} must be 0 or 1`);
  return raw === '1';
}

/** A required integer query parameter in [0, max]. */
export function intParam(params: URLSearchParams, key: string, max: number): number {
  const raw = params.get(key);
  const n = raw === null || !/^\d+$/.test(raw) ? NaN : Number(raw);
  if (!Number.isSafeInteger(n) || n > max) throw new InvalidArgumentError(`query parameter ${key} must be an integer from 0 to ${max}`);
  return n;
}
