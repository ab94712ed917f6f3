import { InvalidArgumentError } from '../core/errors.js';
import { checkFunction, checkOneOf, checkPositiveInteger } from '../core/options.js';
import { retryPolicy, type RetryEvent, type RetryPlan } from '../core/retry.js';
import type { ManifestKind } from '../manifest/types.js';
import { LimitedStore } from '../store/decorators/limit.js';
import { RetryingStore } from '../store/decorators/retry.js';
import { isPermanentHttpError } from '../store/net-errors.js';
import { isPermanentS3Error } from '../store/s3/errors.js';
import type { ChunkStore, ManifestStore, OpOptions } from '../store/store.js';
import type { PushDestination } from '../transfer/destination.js';
import type { VerifyOptions, VerifyReport } from '../transfer/verify.js';
import { parseRemote } from './remote.js';

/*
 * The one place where a location becomes a store. A location is a local path, a URL of a
 * registered scheme (`http://`, `https://`; `s3://` once its store is in the `schemes`
 * table below), or, from the library, a store object. Each scheme says how to parse its
 * locations and how to open the store behind them (a StoreEndpoint); every command and the
 * library API go through parseLocation and openStoreLocation (open.ts), never through a
 * test of their own.
 *
 * Cross-cutting behaviour is composed here, once, for every scheme alike (compose below,
 * as restic's `retry.New(sema.NewBackend(be))`): each scheme's entry declares the
 * decorators its stores take (Decorators: its sorting of errors for the retries, a limit
 * of operations in flight), and every opened store gets exactly those.
 *
 * This module holds the vocabulary, the table and the composition, and imports no store
 * (only the stores' error classifiers and the decorators, which load nothing heavy): a
 * command that touches no server never loads the HTTP client (about 90 ms of start-up).
 */

/** Anything that stores chunks and manifests: every store of src/store satisfies it. */
export type Store = ChunkStore & ManifestStore;

/**
 * A location as the library takes it: a local path or a URL (a string); a store object,
 * whose root is the location (a push goes into it under the source's name); or a store
 * object and a path inside it (`{ store, path: 'backups/photos' }`), as a URL's path.
 * A store object stays the caller's: xfer never closes it.
 */
export type LocationSpec = string | Store | { readonly store: Store; readonly path?: string };

/** A local path: its store is `.xfer/` beside the target (endpoint/local.ts). */
export interface LocalLocation {
  readonly kind: 'local';
  /** As given, for messages. */
  readonly text: string;
  readonly path: string;
}

/** A location in a store that holds targets by name (a server, an object store, a store object). */
export interface StoreLocation {
  readonly kind: 'store';
  /** As given, for messages. */
  readonly text: string;
  /** The scheme that parsed it (undefined for a store object the caller passed). */
  readonly scheme?: Scheme;
  /** Which store of the scheme: a server's origin, a bucket, a memory store's name. */
  readonly where: string;
  /** The path inside the store, '/'-separated and decoded ('' is the store's root). */
  readonly path: string;
  /** The location ends with '/' (or names the root): "inside it" (cp), or a tree's contents (rsync). */
  readonly trailingSlash: boolean;
  /** The store object the caller passed, if any. */
  readonly given?: Store;
}

export type Location = LocalLocation | StoreLocation;

/** What a name is in a store: a pushed file or tree, a folder of targets, or nothing. */
export type TargetType = ManifestKind | 'dir' | 'none';

/** One target as a listing gives it; a manifest that cannot be read is kind `damaged`, with its `error`. */
export interface TargetInfo {
  readonly path: string;
  readonly kind: string;
  readonly bytes: number;
  readonly mtimeMs: number;
  /** The whole target's digest (hex), '' when damaged. */
  readonly digest: string;
  readonly error?: string;
}

/**
 * The options of opening a store, whatever the scheme: each scheme takes those that apply
 * to it. The wire's (token, retries, timeouts, bwlimit, TLS) go to schemes with `wire`.
 */
export interface OpenOptions {
  readonly signal?: AbortSignal;
  /** Bearer token for a server started with --token. */
  readonly token?: string;
  /** Times a request is tried again after a passing failure (core/retry.ts); DEFAULT_RETRIES if not given. */
  readonly retries?: number;
  /** Told before each retry waits. */
  readonly onRetry?: (event: RetryEvent) => void;
  /** Chunk data per second, at most, each way (HttpStoreOptions.bwlimitBytesPerSecond). */
  readonly bwlimitBytesPerSecond?: number;
  /** How long to wait for an answer before the connection counts as broken (HttpStoreOptions.answerTimeoutMs). */
  readonly answerTimeoutMs?: number;
  /** Connections to a server, 1 to MAX_CONNECTIONS; automatic if not given (HttpStoreOptions.connections). */
  readonly connections?: number;
  /** Path of a PEM CA file to trust. */
  readonly caFile?: string;
  readonly insecure?: boolean;
  /** S3 service URL for s3:// locations (default: AWS_ENDPOINT_URL, else AWS itself). */
  readonly s3Endpoint?: string;
  /** Address S3 buckets as `<endpoint>/<bucket>` (MinIO, Ceph RGW). */
  readonly s3PathStyle?: boolean;
}

/**
 * What a verify of a location takes (transfer/verify.ts; where targets are rebuilt is the
 * endpoint's own business). chunksOnly: check no rebuilt file.
 */
export type VerifyJobOptions = Omit<VerifyOptions, 'targetOf'> & { readonly chunksOnly?: boolean };

/**
 * An opened store location: the store and what commands need of it. Generic over any
 * Store (endpoint/store.ts, storeEndpoint); a scheme whose store does some of this
 * itself (a server: stat, list, staged pushes) gives its own (endpoint/http.ts).
 */
export interface StoreEndpoint {
  readonly store: Store;
  /** How messages and results name target `name` of this store (`http://host:7373/name`). */
  describe(name: string): string;
  stat(name: string, options?: OpOptions): Promise<TargetType>;
  /** The targets whose names start with `prefix`, sorted by name. */
  list(prefix: string, options?: OpOptions): Promise<TargetInfo[]>;
  /**
   * A push to target `name`. The destination owns the endpoint: closing it closes this.
   * `inPlace` asks a server to rewrite its large copy where it is (push --in-place); a
   * store with no rebuilt copies refuses it. `previous`: where the target's current
   * manifest is read from (a copy the caller fetched already, so that a push reads it
   * once; see api.ts onceManifest); the store by default.
   */
  destination(name: string, options?: { readonly delta?: boolean; readonly inPlace?: boolean; readonly previous?: Pick<ManifestStore, 'getManifest'> }): PushDestination;
  /**
   * Verifies the targets under `path` ('' all, a target, or a folder of them; NotFoundError
   * if none): transfer/verify.ts. A store is checked from here; a server checks itself
   * (POST /v1/verify), its rebuilt files too. Absent where a store cannot be verified.
   */
  readonly verify?: (path: string, options?: VerifyJobOptions) => Promise<VerifyReport>;
  /**
   * Removes target `name` (with `recursive`, a folder of them): its versions, its manifest
   * and the copy the location rebuilt of it (a server's files), in that order
   * (store/versions.ts, removeTargetManifests). Absent where the store holds manifests only:
   * `xfer rm` then removes them itself.
   */
  readonly remove?: (name: string, options: OpOptions & { readonly recursive: boolean }) => Promise<readonly { readonly path: string; readonly versions: number }[]>;
  /**
   * Target `name`'s current manifest for a push to it, as store.getManifest gives it, from
   * where it is cheapest: a server's from this user's copy of the last push when the server
   * says it is still current (endpoint/pushed.ts). Absent: the store's getManifest.
   */
  readonly currentManifest?: (name: string, options?: OpOptions) => Promise<AsyncIterable<Uint8Array>>;
  /** Requests tried again so far (after a broken connection); 0 for a store without a wire. */
  readonly retriesMade: number;
  /**
   * Its store gathers gets into batched requests (HttpStore), so that a pull may ask for
   * chunks far ahead of the rebuild (reconstruct/prefetch.ts) at the cost of a few requests.
   */
  readonly readAhead?: boolean;
  close(): Promise<void>;
}

/**
 * A kind of location. Adding a store to xfer is its store file in src/store/, one entry
 * in the `schemes` table below (storeScheme), and one line running
 * test/store-conformance.ts against the store.
 */
export interface Scheme {
  /** The prefixes of its locations, lower case (`http://`, `mem:`); matched case-insensitively. */
  readonly prefixes: readonly string[];
  /** Its name in messages (`http`, `s3`). */
  readonly name: string;
  /**
   * Whether its transfers cross a network: the wire's options (--bwlimit) apply. Those
   * of a scheme without one are refused, as for local paths.
   */
  readonly wire: boolean;
  /** Splits a location of this scheme (`text` starts with one of its prefixes); InvalidArgumentError if malformed. */
  parse(text: string): { readonly where: string; readonly path: string; readonly trailingSlash: boolean };
  /** The decorators its stores take (none if absent); composed by openStoreLocation, not by the scheme. */
  readonly decorators?: Decorators;
  /**
   * Opens the store behind a parsed location. `composed` is what the registry composed
   * for it from `decorators` and `options` (composition): a scheme made by storeScheme
   * wraps its store in it; one that retries in its transport passes `composed.retry` to it.
   * Commands only ever see the result.
   */
  open(location: StoreLocation, options: OpenOptions, composed: Composition): Promise<StoreEndpoint>;
}

/**
 * The decorators a scheme's stores take: the retry decorator with the store's own sorting
 * of its errors, and a limit of operations in flight. Timeouts and the bandwidth limit
 * belong to a wire (OpenOptions.answerTimeoutMs, bwlimitBytesPerSecond): the HTTP client
 * applies them per request and per byte, where they can be applied.
 */
export interface Decorators {
  /**
   * The store's classification of its errors (restic's IsPermanentError; each store
   * exports its own: isPermanentHttpError, isPermanentS3Error): true for a failure another
   * attempt cannot mend. Without it nothing is retried.
   */
  readonly isPermanent?: (error: unknown) => boolean;
  /**
   * Where retries happen. 'store' (the default): every operation of the store, by the
   * retry decorator (store/decorators/retry.ts). 'transport': inside the store, per
   * request, where a retry can resume what a break cut short (an HTTP upload or fetch
   * mid-body, an S3 pack upload in the background); the store takes the same RetryPlan
   * (Composition.retry) and is not wrapped as well, so that retries never multiply.
   */
  readonly retryIn?: 'store' | 'transport';
  /** Operations of the store in flight at most (store/decorators/limit.ts). */
  readonly maxInFlight?: number;
}

/** What the registry composed for one opened store. */
export interface Composition {
  /** The retries: the user's policy (OpenOptions.retries), the scheme's classifier, a listener that counts. Undefined: no retries. */
  readonly retry: RetryPlan | undefined;
  /** Wraps `store` in the decorators of the scheme (compose). */
  decorate(store: Store): Store;
  /** Operations tried again so far, wherever the retries happened. */
  readonly retriesMade: number;
}

/**
 * The composition of a scheme's decorators for one store opened with `options`: the one
 * place where cross-cutting behaviour is put around stores. Order, from the outside: retry,
 * then the limit, then the store (restic's `retry.New(sema.NewBackend(be))`): an operation
 * waiting to be tried again holds no slot.
 */
export function composition(decorators: Decorators | undefined, options: Pick<OpenOptions, 'retries' | 'onRetry'>): Composition {
  const d = decorators ?? {};
  let retries = 0;
  const retry: RetryPlan | undefined = d.isPermanent && {
    retry: retryPolicy(options.retries),
    isPermanent: d.isPermanent,
    onRetry: (event) => {
      retries++;
      options.onRetry?.(event);
    },
  };
  return {
    retry,
    decorate(store) {
      let s = store;
      if (d.maxInFlight !== undefined) s = new LimitedStore(s, d.maxInFlight);
      if (retry && (d.retryIn ?? 'store') === 'store') s = new RetryingStore(s, retry);
      return s;
    },
    get retriesMade() {
      return retries;
    },
  };
}

/** Servers (`xfer serve`): `http://host:port/<remote-path>`, `https://...`. */
const HTTP_SCHEME: Scheme = {
  name: 'http',
  prefixes: ['http://', 'https://'],
  wire: true,
  parse(text) {
    const r = parseRemote(text);
    return { where: r.base.origin, path: r.path, trailingSlash: r.trailingSlash };
  },
  // Retries in the protocol client, which resumes an upload or a fetch cut mid-body; no
  // limit of operations: HttpStore batches them into requests, bounded there.
  decorators: { isPermanent: isPermanentHttpError, retryIn: 'transport' },
  async open(location, options, composed) {
    const { connectRemote, httpEndpoint } = await import('./http.js');
    // Answer timeouts and the bandwidth limit are the wire's, applied by the client per
    // request and per byte (OpenOptions); the endpoint needs HttpStore itself (its stat,
    // listing, stages), which composed.decorate leaves as it is for these decorators.
    return httpEndpoint(await connectRemote(new URL(location.where), options, composed.retry));
  },
};

/**
 * The registered schemes, in the order locations are matched: the built-in ones, then
 * those registerScheme adds. A new kind of store is one entry here (storeScheme, as s3://
 * below), its store imported lazily so that commands not using it do not load it. Until a
 * scheme is here, its locations are refused (refuseForeignRemote).
 */
const schemes: Scheme[] = [
  HTTP_SCHEME,
  // s3://bucket/path: the bucket is the store (packs, index and manifests at its root), the path a target in it.
  // Retries per request inside the store: one request may serve many callers (a pack upload
  // in the background, a ranged read for several gets); S3Store bounds its requests itself.
  storeScheme('s3', 's3://', async (bucket, o, composed) => (await import('../store/s3/index.js')).openS3Store(`s3://${bucket}`, {
    signal: o.signal, endpoint: o.s3Endpoint, forcePathStyle: o.s3PathStyle, ...composed.retry,
  }), { wire: false, decorators: { isPermanent: isPermanentS3Error, retryIn: 'transport' } }),
];

/**
 * Adds a kind of location, matched after the built-in ones (the `schemes` table): a
 * library user or a test may add its own, in-process. A prefix already claimed is refused.
 */
export function registerScheme(scheme: Scheme): void {
  checkDecorators(scheme.decorators);
  for (const prefix of scheme.prefixes) {
    if (prefix !== prefix.toLowerCase() || !/^[a-z][a-z0-9+.-]*:/.test(prefix)) throw new InvalidArgumentError(`scheme prefix ${JSON.stringify(prefix)}: expected a lower-case scheme and a colon, as in "s3://"`);
    if (schemeOf(prefix)) throw new InvalidArgumentError(`locations starting ${prefix} are already registered`);
  }
  schemes.push(scheme);
}

/**
 * Checks a scheme's decorators where a library user hands them in (InvalidOptionError,
 * `options.decorators.maxInFlight must be a positive integer`): a limit of 0 would start
 * no operation and wait for ever.
 */
function checkDecorators(decorators: Decorators | undefined): void {
  if (decorators === undefined) return;
  const d = { 'decorators.isPermanent': decorators.isPermanent, 'decorators.retryIn': decorators.retryIn, 'decorators.maxInFlight': decorators.maxInFlight };
  checkFunction(d, 'decorators.isPermanent');
  checkOneOf(d, 'decorators.retryIn', ['store', 'transport']);
  checkPositiveInteger(d, 'decorators.maxInFlight');
}

/** Removes a scheme registerScheme added (for tests that register their own). */
export function unregisterScheme(scheme: Scheme): void {
  const i = schemes.indexOf(scheme);
  if (i >= 0) schemes.splice(i, 1);
}

function schemeOf(text: string): Scheme | undefined {
  const lower = text.toLowerCase();
  return schemes.find((s) => s.prefixes.some((p) => lower.startsWith(p)));
}

/** What a location may be, for messages that refuse another kind: `local paths, http:// and https://`. */
export function supportedLocations(): string {
  const prefixes = schemes.flatMap((s) => s.prefixes);
  const last = prefixes.pop();
  return last === undefined ? 'local paths' : `local paths, ${prefixes.length ? `${prefixes.join(', ')} and ` : ''}${last}`;
}

/**
 * Parses a location (`what` names its role in messages). A string of a registered scheme
 * is that scheme's; anything else that reads as a remote location is refused
 * (InvalidArgumentError) rather than taken as a local path: a push to `s3://bucket/x` or
 * `host:/path` would otherwise create a directory named `s3:` or `host:`. rsync's rule
 * tells them apart: a colon before any slash means remote (`host:path`, `scheme://`);
 * `./a:b` or `/x/a:b` is a local path.
 */
export function parseLocation(spec: LocationSpec, what = 'a location'): Location {
  if (typeof spec !== 'string') return givenStore(spec, what);
  const scheme = schemeOf(spec);
  if (scheme) return { kind: 'store', text: spec, scheme, ...scheme.parse(spec) };
  refuseForeignRemote(spec);
  return { kind: 'local', text: spec, path: spec };
}

/** Checks that `spec` is a local path (`what` names its role in the message): no location of a scheme, no `host:path`. */
export function checkLocalPath(spec: string, what: string): void {
  if (typeof spec !== 'string') throw new InvalidArgumentError(`${what} must be a local path (a string)`);
  const scheme = schemeOf(spec);
  if (scheme) throw new InvalidArgumentError(`${spec}: ${what} must be a local path, not ${scheme.wire ? 'a server URL' : `a ${scheme.name} location`}`);
  refuseForeignRemote(spec);
}

function refuseForeignRemote(spec: string): void {
  const colon = spec.indexOf(':');
  if (colon < 0) return;
  const slash = spec.indexOf('/');
  if (slash >= 0 && slash < colon) return;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec);
  if (scheme) throw new InvalidArgumentError(`${spec}: xfer does not support ${scheme[1]!.toLowerCase()}:// locations; it copies between ${supportedLocations()}`);
  throw new InvalidArgumentError(
    `${spec}: a colon before any slash means host:path, which xfer does not reach; it copies between ${supportedLocations()} (write ./${spec} for a local name with a colon)`,
  );
}

/**
 * A scheme for a kind of store whose locations are `<prefix><where>/<path>` (`s3://bucket/x`,
 * `mem:name/x`): `open` opens the store named `where` (a store that retries in its
 * transport takes `composed.retry`); the registry wraps it in the `decorators` given; the
 * endpoint is the generic one (endpoint/store.ts), which closes the store when done.
 */
export function storeScheme(
  name: string,
  prefix: string,
  open: (where: string, options: OpenOptions, composed: Composition) => Promise<Store>,
  options: { readonly wire: boolean; readonly decorators?: Decorators },
): Scheme {
  return {
    name,
    prefixes: [prefix],
    wire: options.wire,
    decorators: options.decorators,
    parse: (text) => parseStorePath(text, prefix),
    async open(location, o, composed) {
      const store = composed.decorate(await open(location.where, o, composed));
      const { storeEndpoint } = await import('./store.js');
      return storeEndpoint(store, (target) => `${prefix}${location.where}/${target}`, true, () => composed.retriesMade);
    },
  };
}

const STORE_METHODS = ['has', 'get', 'put', 'flush', 'close', 'putManifest', 'getManifest', 'listManifests'] as const;

function isStore(value: unknown): value is Store {
  return typeof value === 'object' && value !== null && STORE_METHODS.every((m) => typeof (value as Record<string, unknown>)[m] === 'function');
}

/** A store object, or `{ store, path }`, as a location. */
function givenStore(spec: unknown, what: string): StoreLocation {
  const wrapped = typeof spec === 'object' && spec !== null && 'store' in spec;
  const store = wrapped ? (spec as { store: unknown }).store : spec;
  const path = wrapped ? ((spec as { path?: unknown }).path ?? '') : '';
  if (!isStore(store) || typeof path !== 'string') {
    throw new InvalidArgumentError(`${what} must be a local path, a URL (${supportedLocations()}), a ChunkStore & ManifestStore, or { store, path }`);
  }
  const segments = path.split('/').filter((s) => s !== '');
  return { kind: 'store', text: path === '' ? 'the given store' : `${path} in the given store`, where: '', path: segments.join('/'), trailingSlash: path === '' || path.endsWith('/'), given: store };
}

/**
 * The parse of a store scheme's locations, `<prefix><where>/<path>` (`s3://bucket/dir/name`,
 * `mem:name/dir/name`): `where` names the store, the rest is the path inside it.
 */
export function parseStorePath(text: string, prefix: string): { where: string; path: string; trailingSlash: boolean } {
  const rest = text.slice(prefix.length);
  const slash = rest.indexOf('/');
  const where = slash < 0 ? rest : rest.slice(0, slash);
  if (where === '') throw new InvalidArgumentError(`${text}: name the store after ${prefix}`);
  const raw = slash < 0 ? '' : rest.slice(slash + 1);
  return { where, path: raw.split('/').filter((s) => s !== '').join('/'), trailingSlash: raw === '' || raw.endsWith('/') };
}
