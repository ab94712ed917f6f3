import { Option } from 'commander';
import { DEFAULT_AVG_BYTES, DEFAULT_MAX_BYTES, DEFAULT_MIN_BYTES, validateChunkerSpec } from '../chunker/params.js';
import { readFile } from 'node:fs/promises';
import { chunkerForSource } from '../scan/image-source.js';
import { fromSystemError, InvalidArgumentError } from '../core/errors.js';
import { parseRuleFile, PathFilter, type FilterRule } from '../scan/filter.js';
import { checkRate } from '../core/rate.js';
import { MAX_CONNECTIONS } from '../store/http/connections.js';
import { DEFAULT_RETRIES } from '../core/retry.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { parseDigestAlgorithm } from '../core/ids.js';
import { parseSize } from '../core/sizes.js';

export interface ChunkerFlags {
  min?: string;
  avg?: string;
  max?: string;
  fixed?: string;
  digest?: string;
}

export function chunkerOptions(): Option[] {
  return [
    new Option('--min <size>', 'minimum chunk size (bytes, or K/M/G); an ext2/3/4 image: 4K unless a size option is given').default('16K'),
    new Option('--avg <size>', 'average chunk size; an ext2/3/4 image: 16K').default('64K'),
    new Option('--max <size>', 'maximum chunk size; an ext2/3/4 image: 64K').default('256K'),
    new Option('--fixed <size>', 'fixed-size chunks instead of FastCDC (disk images), e.g. 64K'),
    new Option('--digest <algorithm>', 'chunk digest: blake3 or sha256').default('blake3'),
  ];
}

/** Turns --min/--avg/--max/--fixed into a validated spec; mixing --fixed with CDC sizes is an error. */
export function chunkerSpecFrom(flags: ChunkerFlags, explicit: (name: string) => boolean): ChunkerSpec {
  if (flags.fixed !== undefined) {
    if (explicit('min') || explicit('avg') || explicit('max')) {
      throw new InvalidArgumentError('--fixed cannot be combined with --min, --avg or --max');
    }
    return validateChunkerSpec({ algorithm: 'fixed', sizeBytes: parseSize(flags.fixed, '--fixed size') });
  }
  return validateChunkerSpec({
    algorithm: 'fastcdc2020',
    minBytes: flags.min ? parseSize(flags.min, '--min size') : DEFAULT_MIN_BYTES,
    avgBytes: flags.avg ? parseSize(flags.avg, '--avg size') : DEFAULT_AVG_BYTES,
    maxBytes: flags.max ? parseSize(flags.max, '--max size') : DEFAULT_MAX_BYTES,
  });
}

/**
 * The chunker of a push or chunk of `source` (undefined: standard input): the options'
 * (chunkerSpecFrom); or, when no chunker option was given and the source is a regular file
 * or block device holding an ext2/3/4 file system, the image chunker (chunker/image.ts).
 */
export async function chunkerSpecFor(source: string | undefined, flags: ChunkerFlags, explicit: (name: string) => boolean): Promise<ChunkerSpec> {
  const spec = chunkerSpecFrom(flags, explicit);
  if (source === undefined || flags.fixed !== undefined || ['min', 'avg', 'max'].some(explicit)) return spec;
  return chunkerForSource(source, spec);
}

export function digestFrom(flags: ChunkerFlags): DigestAlgorithm {
  return parseDigestAlgorithm(flags.digest ?? 'blake3');
}

export interface RemoteFlags extends S3Flags {
  token?: string;
  ca?: string;
  insecure?: boolean;
  retries?: string;
  bwlimit?: string;
  timeout?: string;
  connections?: string;
}

/** rsync's --numeric-ids, for push and pull: owners and groups by number, never mapped by name. */
export function numericIdsOption(): Option {
  return new Option('--numeric-ids', 'owners and groups by their numbers, not mapped through user and group names (rsync --numeric-ids)');
}

/** --connections, for push and pull: how many connections a transfer to or from a server uses. */
export function connectionsOption(): Option {
  return new Option(
    '--connections <n>',
    `to or from a server: connections to spread the transfer over, 1 to ${MAX_CONNECTIONS}, or auto: one, and more while the measured round trip and rate say one connection's window holds the transfer back (a long fat link)`,
  ).default('auto');
}

/** Options of commands that may talk to an `xfer serve` server or an S3 store. */
export function remoteOptions(): Option[] {
  return [
    new Option('--token <token>', 'bearer token for the server').env('XFER_TOKEN'),
    new Option('--ca <file>', 'PEM CA certificate to trust (self-signed servers)'),
    new Option('--insecure', 'accept any server certificate (testing only)'),
    new Option('--bwlimit <rate>', 'to or from a server: at most RATE bytes of chunk data per second each way (K/M/G suffixes, e.g. 10M or 1.5M; 0 for no limit)'),
    new Option('--timeout <seconds>', 'to or from a server: how long to wait for an answer before the connection counts as broken (a commit waits as long as the server works)').default('300'),
    new Option('--retries <n>', 'times a request is tried again after the connection broke or the server restarted, waiting 0.25 s, then twice as long each time').default(String(DEFAULT_RETRIES)),
    ...s3Options(),
  ];
}

export function remoteFrom(
  flags: RemoteFlags, signal: AbortSignal,
): { token?: string; caFile?: string; insecure?: boolean; retries?: number; bwlimitBytesPerSecond?: number; answerTimeoutMs?: number; connections?: number; s3Endpoint?: string; s3PathStyle?: boolean; signal: AbortSignal } {
  const s3 = s3From(flags);
  return {
    ...(s3.endpoint !== undefined ? { s3Endpoint: s3.endpoint } : {}),
    ...(s3.forcePathStyle ? { s3PathStyle: true } : {}),
    token: flags.token,
    caFile: flags.ca,
    insecure: !!flags.insecure,
    retries: flags.retries === undefined ? undefined : parseCount(flags.retries, '--retries'),
    bwlimitBytesPerSecond: parseBwlimit(flags.bwlimit),
    answerTimeoutMs: flags.timeout === undefined ? undefined : parseSeconds(flags.timeout, '--timeout') * 1000,
    ...(flags.connections === undefined || flags.connections === 'auto' ? {} : { connections: parseConnections(flags.connections) }),
    signal,
  };
}

/** Options of commands that may reach an S3 store (s3://bucket/prefix); they map to openS3Store's by s3From. */
export function s3Options(): Option[] {
  return [
    new Option('--s3-endpoint <url>', 'S3 service URL (MinIO, Ceph RGW, ...); by default AWS_ENDPOINT_URL, else AWS'),
    new Option('--s3-path-style', 'address S3 buckets as <endpoint>/<bucket> (MinIO, Ceph and most self-hosted S3 need it)'),
  ];
}

export interface S3Flags {
  s3Endpoint?: string;
  s3PathStyle?: boolean;
}

export function s3From(flags: S3Flags): { endpoint?: string; forcePathStyle?: boolean } {
  const endpoint = flags.s3Endpoint;
  if (endpoint !== undefined && !/^https?:\/\/[^/]/.test(endpoint)) {
    throw new InvalidArgumentError(`--s3-endpoint: expected an http:// or https:// URL, got "${endpoint}"`);
  }
  return { ...(endpoint !== undefined ? { endpoint } : {}), ...(flags.s3PathStyle === true ? { forcePathStyle: true } : {}) };
}

/** --bwlimit: a rate like 10M or 1.5M; 0 means no limit, as in rsync. */
function parseBwlimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const bytesPerSecond = parseSize(text, '--bwlimit rate');
  return bytesPerSecond === 0 ? undefined : checkRate(bytesPerSecond);
}

/** --connections: a whole number from 1 to MAX_CONNECTIONS ('auto' is left out by the caller). */
function parseConnections(text: string): number {
  const n = Number(text.trim());
  if (!/^\d{1,3}$/.test(text.trim()) || n < 1 || n > MAX_CONNECTIONS) {
    throw new InvalidArgumentError(`--connections: expected a whole number from 1 to ${MAX_CONNECTIONS}, or auto, got "${text}"`);
  }
  return n;
}

function parseCount(text: string, what: string): number {
  if (!/^\d{1,3}$/.test(text.trim())) throw new InvalidArgumentError(`${what}: expected a whole number from 0 to 999, got "${text}"`);
  return Number(text.trim());
}

function parseSeconds(text: string, what: string): number {
  const seconds = Number(text.trim());
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || seconds <= 0 || seconds > 86_400) {
    throw new InvalidArgumentError(`${what}: expected seconds, more than 0 and at most 86400, got "${text}"`);
  }
  return seconds;
}

/**
 * rsync's habits, shared by push and pull, with rsync's spelling and meaning. The filter
 * options are collected in command-line order into one list (commander keeps each option's
 * values apart), since the first matching rule wins.
 */
export function syncOptions(rules: FilterArg[]): Option[] {
  const collect = (kind: FilterArg['kind']) => (value: string, previous: unknown) => {
    rules.push({ kind, value });
    return previous;
  };
  return [
    new Option('-n, --dry-run', 'show what would be sent and deleted, with byte counts, and write nothing anywhere (the destination is asked which chunks it has)'),
    new Option('-v, --verbose', 'one line per file transferred (">f path") and per entry deleted ("*deleting path"), on stdout'),
    new Option('--exclude <pattern>', 'leave out entries matching PATTERN (rsync rules; repeatable; first matching --include/--exclude wins)').argParser(collect('exclude')),
    new Option('--include <pattern>', 'keep entries matching PATTERN even if a later --exclude matches them (repeatable)').argParser(collect('include')),
    new Option('--exclude-from <file>', 'read exclude patterns from FILE, one per line ("+ " starts an include; # and ; start comments)').argParser(collect('exclude-from')),
    new Option('--stats', 'print rsync-style transfer statistics at the end (with --json: a "stats" object)'),
    new Option('-P, --progress', 'show the progress line even when stderr is not a terminal (the default on one); rsync\'s --partial, the other half of its -P, is what xfer always does: an interrupted transfer resumes when run again'),
  ];
}

/** An --exclude, --include or --exclude-from argument, in command-line order. */
export interface FilterArg {
  readonly kind: 'exclude' | 'include' | 'exclude-from';
  readonly value: string;
}

export interface SyncFlags {
  dryRun?: boolean;
  verbose?: boolean;
  stats?: boolean;
  progress?: boolean;
}

/**
 * The user's filter rules as one test (true: left out), or undefined if none were given.
 * An --exclude-from file is read here (its rules take its place in the order).
 */
export async function filterFrom(args: readonly FilterArg[]): Promise<((path: string, isDir: boolean) => boolean) | undefined> {
  if (args.length === 0) return undefined;
  const rules: FilterRule[] = [];
  for (const a of args) {
    if (a.kind === 'exclude-from') {
      let text: string;
      try {
        text = await readFile(a.value, 'utf8');
      } catch (err) {
        throw fromSystemError(err, a.value, 'read exclude file');
      }
      rules.push(...parseRuleFile(text));
    } else rules.push({ include: a.kind === 'include', pattern: a.value });
  }
  const filter = PathFilter.from(rules);
  return filter.empty ? undefined : (path, isDir) => filter.excludes(path, isDir);
}
