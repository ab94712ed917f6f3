import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { StreamSource } from './scan/scanner.js';
import type { EntryMeta } from './manifest/types.js';
import { AlreadyExistsError, InvalidArgumentError, InvalidOptionError, isXferError } from './core/errors.js';
import { checkBoolean, checkFunction, checkIntegerInRange, checkNonNegativeInteger, checkPositiveNumber, checkSignal } from './core/options.js';
import { MIN_RATE_BYTES_PER_SECOND } from './core/rate.js';
import { MAX_CONNECTIONS } from './store/http/connections.js';
import type { RemoteOptions } from './endpoint/http.js';
import { checkLocalPath, openStoreLocation, parseLocation, refuseWireOptions, type Location, type LocationSpec, type StoreLocation } from './endpoint/open.js';
import { pullTarget } from './endpoint/copy-target.js';
import { makeTempDir, removeTempDir } from './io/temp.js';
import { openManifest, openManifestFile } from './manifest/reader.js';
import type { FallbackChunks, FallbackFigures } from './reconstruct/fallback.js';
import type { ReadAheadChunks } from './reconstruct/prefetch.js';
import { Staging } from './reconstruct/staging.js';
import { filesOf, reconstruct, type PullProgress, type PullResult } from './reconstruct/reconstruct.js';
import type { SnapshotKey, SnapshotRecorder } from './reconstruct/snapshot.js';
import { ScanPool } from './scan/pool.js';
import { chunkerForSource } from './scan/image-source.js';
import { DEFAULT_CHUNKER } from './chunker/params.js';
import type { ChunkStore, ManifestStore, OpOptions } from './store/store.js';
import type { PushDestination } from './transfer/destination.js';
import type { PushOptions as TransferPushOptions, PushProgress, PushResult } from './transfer/push.js';
import type { DryRunDestination, PullPlan } from './transfer/dry-run.js';
import { previousVersion } from './transfer/known.js';
import { excludedEntries, selectEntries, type CarriedEntry } from './transfer/select.js';
import { validateTargetName } from './store/names.js';
import { manifestExists, parseVersionSelector, resolveVersion, splitVersion } from './store/versions.js';

/*
 * Loaded where first needed, not with this module: a pull from a server needs none of them
 * (with them, 28 more modules, about 25 ms of a no-op pull's start-up).
 */
const localEndpoint = () => import('./endpoint/local.js');
const transferPush = () => import('./transfer/push.js');
const dryRunModule = () => import('./transfer/dry-run.js');

/** Runs of a push, at most, when a server restart lost chunks it had taken (see push). */
const MAX_PUSH_ROUNDS = 3;

export type PushSource = string | { readonly stream: StreamSource; readonly name: string };

export interface PushOptions extends TransferPushOptions, Omit<RemoteOptions, 'signal'> {
  /**
   * To a local target: told when another process is pushing to the same target (its
   * `<host>~<pid>`), and this push waits for it to finish (see LocalDestination.begin).
   */
  readonly onLockWait?: (holder: string) => void;
  /**
   * To a local target: remove the entries of the existing target tree that the source
   * lacks (rsync --delete), listed in the result's `deleted`. By default they are kept.
   * Not for a server (InvalidArgumentError): a server keeps them.
   */
  readonly delete?: boolean;
  /**
   * Find what the push would send and delete without writing anything anywhere (rsync -n):
   * files are read, chunked and hashed, and the destination is asked which chunks it has.
   * The result's bytesSent and chunksSent are those of the chunks it lacks, `deleted` what
   * the commit would remove.
   */
  readonly dryRun?: boolean;
  /**
   * To a server: ask it to rewrite a file target larger than its threshold (`xfer serve
   * --in-place-above`) where it is, only the chunks that changed, instead of rebuilding it
   * and swapping it in; its copy is inconsistent until the commit ends (server/in-place.ts).
   * Not for a local target (InvalidArgumentError).
   */
  readonly inPlace?: boolean;
}

export interface PullOptions extends Omit<RemoteOptions, 'signal'> {
  readonly signal?: AbortSignal;
  /** Local files whose chunks may be reused instead of fetched. */
  readonly seeds?: readonly string[];
  /**
   * Read every file already at the destination (rsync's --checksum). By default a file
   * there with the size, mtime and mode the manifest gives it is taken as the manifest's
   * (rsync's quick check): kept, or linked into the new tree, without being read.
   */
  readonly checksum?: boolean;
  readonly pool?: ScanPool;
  readonly onProgress?: (p: PullProgress) => void;
  /**
   * Remove the entries of an existing destination tree that the pulled tree lacks (rsync
   * --delete), listed in the result's `deleted`. By default they are kept.
   */
  readonly delete?: boolean;
  /**
   * The user's --exclude/--include rules (scan/filter.ts): entries of the pulled tree they
   * match are not pulled, and entries at the destination they match are never deleted.
   */
  readonly excludes?: (path: string, isDir: boolean) => boolean;
  /** Find what the pull would fetch and delete without writing anything (rsync -n); see PullResult's plan. */
  readonly dryRun?: boolean;
  /** Work out the plan (which files go) also for a real pull, for -v and --stats. */
  readonly plan?: boolean;
  /** rsync --numeric-ids: owners and groups applied by number, never mapped through their names. */
  readonly numericIds?: boolean;
  /**
   * Rewrite an existing regular file at the destination where it is, only in the ranges
   * whose chunks differ (reconstruct/in-place.ts), instead of rebuilding it beside and
   * renaming it over: the file is inconsistent until the pull completes (onInconsistent).
   * A block device destination is always written so, without this option. A missing
   * destination is made atomically as usual.
   */
  readonly inPlace?: boolean;
  /** Told, before the first in-place write, that the destination is inconsistent until the pull completes. */
  readonly onInconsistent?: (target: string) => void;
  /**
   * Stores to take a chunk from when the source lacks it or holds it damaged, tried in
   * order (`pull --fallback`): any location (a destination directory, a target in one, a
   * server or object store URL, a store object), of which the store is used. Each chunk so
   * fetched is verified and put back into the source store, which heals it where the
   * source takes puts (reconstruct/fallback.ts); the result's `fallback` counts them.
   */
  readonly fallback?: readonly LocationSpec[];
  /**
   * Pull this version of the target instead of its current one: a version id (`xfer ls
   * --versions`) or a UTC time (`2026-12-06`, `2026-12-06T15:04`, ...), which picks the
   * newest version committed at or before it (store/versions.ts). The same as a source
   * ending `@<version>`, without the rule that decides whether an '@' selects a version.
   */
  readonly version?: string;
}

/**
 * Pushes a file, a tree or a stream to a destination: a local path (the store goes to
 * `.xfer/` beside the target), a URL of a registered scheme (`http(s)://host:port/<remote-path>`)
 * or a store object (LocationSpec). Destinations follow cp: an existing directory, a
 * trailing '/' or a store's root means "inside it, under the source's name".
 * Resolves with the figures of the push and the target it wrote.
 */
export async function push(source: PushSource, destination: LocationSpec, options: PushOptions = {}): Promise<PushResult & { target: string }> {
  const [{ checkPushOptions, push: pushToDestination, statSource }, { destinationPathsIn, LocalDestination, localTargetOf, resolvePushTarget, sourceBaseName }] = await Promise.all([transferPush(), localEndpoint()]);
  checkPushOptions(options);
  checkRemoteOptions(options);
  for (const name of ['delete', 'dryRun', 'inPlace']) checkBoolean(options, name);
  for (const name of ['onLockWait', 'excludes', 'onEntry']) checkFunction(options, name);
  if (typeof source === 'string') checkLocalPath(source, 'the source of a push');
  // A missing source is the error to report, not what the destination would make of it.
  const sourceIsTree = typeof source === 'string' && (await statSource(source)).isDirectory();
  // rsync's trailing '/': a directory's contents go to the destination itself.
  const contents = sourceIsTree && endsWithSlash(source as string);
  const sourceName = typeof source === 'string' ? (contents ? '' : sourceBaseName(source)) : source.name;
  let dest: PushDestination;
  /** Retries the remote store made so far (none for a local destination). */
  let retriesMade = () => 0;
  let exclude: ((absPath: string) => boolean) | undefined;
  /** A server's current tree (its entries) and the entries pushed over it, for `deleted`. */
  let mirrored: { before: Map<string, boolean>; pushed: Set<string> } | undefined;
  /** The server's excluded entries, kept in the pushed manifest (PushOptions.carry). */
  let carry: CarriedEntry[] | undefined;
  const location = parseLocation(destination, 'the destination of a push');
  if (options.dryRun) return dryPush(source, location, sourceName, sourceIsTree, contents, options);
  /** The target's current manifest, fetched once (onceManifest), removed at the end. */
  let current: OnceManifest | undefined;
  if (location.kind === 'store') {
    if (options.delete) throw new InvalidArgumentError(DELETE_IN_STORE);
    const endpoint = await openStoreLocation(location, options);
    // A file or tree pushed to `<url>/<path>` most often goes to that path itself (a first
    // copy, or the same push again): its manifest is asked for while the path's type is, one
    // round trip instead of two; dropped if the push goes elsewhere (into a folder of targets).
    const guessed = !contents && location.path !== '' && !location.trailingSlash ? onceManifest(endpoint.store, location.path, options.signal, endpoint.currentManifest) : undefined;
    guessed?.catch(() => {}); // awaited or dropped below
    try {
      const name = contents ? contentsTarget(location) : await (await import('./endpoint/store.js')).resolveStoreTarget(endpoint, location.path, location.trailingSlash, sourceName, { signal: options.signal, sourceIsTree });
      // A tree's current manifest is read for its entries, the excluded ones and as the
      // previous version (quick check, delta bases): one fetch for all of them. A file's
      // only as its previous version, by the destination, if not guessed right.
      if (guessed && name === location.path) current = await guessed;
      else if (sourceIsTree) current = await onceManifest(endpoint.store, name, options.signal, endpoint.currentManifest);
      dest = endpoint.destination(name, { delta: options.delta, inPlace: options.inPlace, previous: current });
      // A store's copy (a server's tree, a stored manifest) mirrors the pushed tree: the
      // entries of its current version that the push lacks go at the commit. Listed (the
      // result's `deleted`) from that version's manifest.
      if (current && sourceIsTree) {
        const state = await remoteTree(current, name, options.excludes, options.signal);
        if (state) {
          mirrored = { before: state.before, pushed: new Set() };
          carry = state.carry;
        }
      }
      retriesMade = () => endpoint.retriesMade;
    } catch (err) {
      await current?.remove();
      await endpoint.close();
      throw err;
    } finally {
      if (guessed) {
        const g = await guessed.catch(() => undefined);
        if (g !== current) await g?.remove();
      }
    }
  } else {
    refuseWireOptions(location, options);
    if (options.inPlace) throw new InvalidArgumentError('push --in-place applies to a push to a server; to rewrite a local copy in place, pull it with --in-place');
    const t = localTargetOf(contents ? await resolveContentsTarget(location.path) : await resolvePushTarget(sourceName, location.path, sourceIsTree));
    // A destination inside the source tree is left out of what is read (see destinationPathsIn).
    if (sourceIsTree) exclude = destinationPathsIn(source as string, t);
    dest = await LocalDestination.open(t, { signal: options.signal, onLockWait: options.onLockWait, deleteExtra: options.delete === true, protect: options.excludes, numericIds: options.numericIds === true });
  }
  // A file or block device holding a file system gets the image chunker unless the caller
  // named a chunker (scan/image-source.ts: the CLI's rule too).
  const chunker = options.chunker ?? (typeof source === 'string' && !sourceIsTree ? await chunkerForSource(source, DEFAULT_CHUNKER) : undefined);
  const started = performance.now();
  // What earlier runs sent (see below), as their last progress reports said.
  let earlier = { bytesSent: 0, chunksSent: 0 };
  let latest = earlier;
  const onProgress = (p: PushProgress) => {
    latest = { bytesSent: p.bytesSent, chunksSent: p.chunksSent };
    options.onProgress?.({ ...p, bytesSent: earlier.bytesSent + p.bytesSent });
  };
  try {
    for (let round = 1; ; round++) {
      const retriesBefore = retriesMade();
      try {
        mirrored?.pushed.clear();
        const onEntry = (meta: EntryMeta) => {
          mirrored?.pushed.add(meta.path);
          options.onEntry?.(meta);
        };
        const result = await pushToDestination(typeof source === 'string' ? source : { stream: source.stream }, dest, { ...options, chunker, exclude, onProgress, onEntry, carry });
        const m = mirrored;
        return {
          ...result,
          deleted: m && result.kind === 'tree' ? [...m.before.keys()].filter((p) => !m.pushed.has(p)) : result.deleted,
          bytesSent: earlier.bytesSent + result.bytesSent,
          chunksSent: earlier.chunksSent + result.chunksSent,
          seconds: round === 1 ? result.seconds : (performance.now() - started) / 1000,
          target: dest.description,
        };
      } catch (err) {
        // A server makes the chunks it took durable at the commit, so one that crashed
        // (and came back while requests were retried) may have lost some: the commit then
        // finds them missing. A push that saw the connection break runs again, as a user
        // would run it again: only the chunks the server lacks go up. A stream cannot be
        // read twice.
        const lost = isXferError(err) && err.code === 'XFER_MANIFEST_INCOMPLETE' && retriesMade() > retriesBefore;
        if (!lost || typeof source !== 'string' || round >= MAX_PUSH_ROUNDS || options.signal?.aborted) throw err;
        earlier = { bytesSent: earlier.bytesSent + latest.bytesSent, chunksSent: earlier.chunksSent + latest.chunksSent };
        latest = { bytesSent: 0, chunksSent: 0 };
      }
    }
  } finally {
    await dest.close();
    await current?.remove();
  }
}

/**
 * The store of a `--fallback` location (PullOptions.fallback): a destination directory's, a
 * local target's (the store beside it), or a store location's whatever its path.
 */
async function openFallback(spec: LocationSpec, options: PullOptions): Promise<{ store: ChunkStore; close(): Promise<void> }> {
  const location = parseLocation(spec, 'a fallback of a pull');
  if (location.kind === 'store') {
    const endpoint = await openStoreLocation(location, options);
    return { store: endpoint.store, close: () => endpoint.close() };
  }
  refuseWireOptions(location, options);
  const { signal } = options;
  const { holdsStore, openLocalSource, openLocalStore } = await localEndpoint();
  const store = (await holdsStore(location.path)) ? await openLocalStore(location.path, { signal }) : (await openLocalSource(location.path, { signal })).store;
  return { store, close: () => store.close() };
}

/**
 * Rebuilds a pushed file or tree (`<dest-dir>/<name>`, `http(s)://host:port/<remote-path>`,
 * any LocationSpec naming a target) at a local path (cp semantics), reusing chunks already
 * there and in seeds, verifying everything, replacing atomically; an interrupted pull
 * resumes from its partial file.
 */
export async function pull(source: LocationSpec, destination: string, options: PullOptions = {}): Promise<PullResult & { target: string; plan?: PullPlan; bytesWritten?: number; bytesReadBack?: number; fallback?: FallbackFigures }> {
  checkRemoteOptions(options);
  checkSignal(options);
  for (const name of ['checksum', 'delete', 'dryRun', 'plan', 'inPlace']) checkBoolean(options, name);
  for (const name of ['onProgress', 'excludes', 'onInconsistent']) checkFunction(options, name);
  const asked = options.version === undefined ? undefined : parseVersionSelector(typeof options.version === 'string' ? options.version : '');
  if (options.version !== undefined && !asked) throw new InvalidOptionError('version', 'a version id or a UTC time (2026-12-06, 2026-12-06T15:04, 2026-12-06T15:04:05)');
  if (options.seeds !== undefined && !(Array.isArray(options.seeds) && options.seeds.every((s) => typeof s === 'string'))) {
    throw new InvalidOptionError('seeds', 'an array of paths');
  }
  if (options.fallback !== undefined && !Array.isArray(options.fallback)) throw new InvalidOptionError('fallback', 'an array of locations');
  const { signal } = options;
  checkLocalPath(destination, 'the destination of a pull');
  const location = parseLocation(source, 'the source of a pull');
  // What only a pull uses is loaded by the pull, not with this module: a push (and the
  // CLI's push, which imports this module) does not pay for loading it (issue 15).
  const [{ FallbackChunks }, { inPlaceKind, inPlaceRebuild }, { ReadAheadChunks }, { recordPulledTree, SnapshotRecorder, writeSnapshot }, { pullFromSnapshot, snapshotApplies, snapshotKey, triedSnapshot }, { manifestTag }] = await Promise.all([
    import('./reconstruct/fallback.js'),
    import('./reconstruct/in-place.js'),
    import('./reconstruct/prefetch.js'),
    import('./reconstruct/snapshot.js'),
    import('./pull-snapshot.js'),
    import('./manifest/tag.js'),
  ]);
  let store: ChunkStore & ManifestStore;
  let name: string;
  /** With a snapshot of the target to write if the pull finds it unchanged (see pullFromSnapshot). */
  let snapshot: { key: Omit<SnapshotKey, 'tag'>; recorder: SnapshotRecorder } | undefined;
  /** Closes the store (a store object the caller passed stays open). */
  let close: () => Promise<void>;
  /** The store batches gets: a first copy of a tree reads ahead (StoreEndpoint.readAhead). */
  let readAhead = false;
  if (location.kind === 'store') {
    if (!location.path) throw new InvalidArgumentError(`${location.text}: name a remote path to pull`);
    if (typeof source === 'string' && snapshotApplies(source, options)) {
      if (!triedSnapshot(options)) {
        const done = await pullFromSnapshot(source, destination, options);
        if (done) return done;
      }
      snapshot = { key: snapshotKey(new URL(location.where), location.path, options), recorder: new SnapshotRecorder() };
    }
    const endpoint = await openStoreLocation(location, options);
    store = endpoint.store;
    name = location.path;
    close = () => endpoint.close();
    readAhead = endpoint.readAhead === true;
  } else {
    refuseWireOptions(location, options);
    const opened = await (await localEndpoint()).openLocalSource(location.path, { signal });
    store = opened.store;
    name = opened.name;
    close = () => opened.store.close();
  }
  // Chunks the source cannot give come from the fallbacks (and heal the source).
  const fallbacks: { store: ChunkStore; close(): Promise<void> }[] = [];
  let fallbackChunks: FallbackChunks | undefined;
  let chunks: ChunkStore = store;
  /** A first copy of a tree from a store that batches gets reads ahead (see below). */
  let readingAhead: ReadAheadChunks | undefined;
  try {
    for (const spec of options.fallback ?? []) fallbacks.push(await openFallback(spec, options));
  } catch (err) {
    for (const f of fallbacks) await f.close().catch(() => undefined);
    await close();
    throw err;
  }
  if (fallbacks.length > 0) chunks = fallbackChunks = new FallbackChunks(store, fallbacks.map((f) => f.store));
  /** The result's fallback figures, once the heals are durable. */
  const withFallback = async <R extends object>(result: R): Promise<R & { fallback?: FallbackFigures }> => {
    if (!fallbackChunks) return result;
    await fallbackChunks.close();
    return { ...result, fallback: fallbackChunks.figures() };
  };
  const ownPool = !options.pool;
  // A pull scans only to reuse local chunks (seeds, a changed file at the target): often nothing.
  const pool = options.pool ?? new ScanPool({ startOnFirstTask: true });
  const tmp = await makeTempDir('xfer-pull-');
  try {
    // The manifest is fetched whole before any chunk: a manifest stream left half-read while
    // chunks are fetched on the same HTTP/2 connection could hold its flow-control window.
    // `<name>@<version or time>`, or options.version: the version's manifest is read, the
    // target keeps its name (where it goes). A pull of a version leaves no snapshot: the
    // snapshot says the destination holds the current version.
    const split = asked ? { name, selector: asked } : await splitVersion(name, (n) => manifestExists(store, n, { signal }));
    name = split.name;
    const manifestName = split.selector ? await resolveVersion(store, name, split.selector, { signal, describe: location.kind === 'store' ? location.text : location.path }) : name;
    if (split.selector) snapshot = undefined;
    let manifestPath = join(tmp, 'manifest');
    await pipeline(Readable.from(await store.getManifest(manifestName, { signal })), createWriteStream(manifestPath), { signal });
    let reader = await openManifestFile(manifestPath, { signal });
    if (options.excludes && reader.header.kind === 'tree') {
      // The pushed manifest less the excluded entries: what is rebuilt and verified.
      const selected = join(tmp, 'selected');
      await selectEntries(reader, selected, options.excludes, signal);
      manifestPath = selected;
      reader = await openManifestFile(manifestPath, { signal });
    }
    // rsync's trailing '/' on a tree: its contents go to the destination itself.
    const contents = reader.header.kind === 'tree' && (location.kind === 'store' ? location.trailingSlash : endsWithSlash(location.path));
    const target = await pullTarget(name, contents, destination);
    const plan = options.dryRun || options.plan
      ? await (await dryRunModule()).planPull(await openManifestFile(manifestPath, { signal }), target, { signal, delete: options.delete, excludes: options.excludes })
      : undefined;
    if (options.dryRun) {
      await reader.close();
      const p = plan!;
      return {
        kind: reader.header.kind, bytesTotal: p.bytesTotal, bytesReceived: p.chunkBytes, bytesReused: p.bytesTotal - p.chunkBytes,
        bytesZero: 0, bytesAllocated: 0, // a dry run writes nothing
        chunksTotal: reader.header.chunkCount, seconds: 0, digest: '', deleted: p.deleted, target, plan: p,
      };
    }
    // In place: a single file onto a block device always (a rename cannot replace a device
    // node), onto a regular file when asked (--in-place). A tree onto a device is refused by
    // Staging (SpecialFileError), as any special file is.
    const inPlace = reader.header.kind === 'file' ? await inPlaceKind(target) : undefined;
    if (inPlace === 'device' || (inPlace === 'file' && options.inPlace)) {
      const result = await inPlaceRebuild(reader, chunks, target, {
        signal, pool, seeds: options.seeds ?? [], onProgress: options.onProgress, onInconsistent: options.onInconsistent,
        attributes: { numericIds: options.numericIds === true }, quickCheck: !options.checksum,
      });
      return withFallback({ ...result, target, plan });
    }
    if (options.inPlace && reader.header.kind === 'tree') {
      await reader.close();
      throw new InvalidArgumentError(`${source}: --in-place applies to a single file or a block device; this is a tree`);
    }
    // A first copy of a tree (nothing at the target, no seeds, no partial tree of an
    // interrupted pull to resume from): every chunk is fetched, so they are asked for ahead
    // of the rebuild, which takes a few files at a time: a round trip per few files on a
    // long link otherwise (reconstruct/prefetch.ts).
    if (
      readAhead && reader.header.kind === 'tree' && (options.seeds ?? []).length === 0 &&
      !(await lstat(target).then(() => true, () => false)) && !(await Staging.hasLeftovers(target))
    ) {
      chunks = readingAhead = new ReadAheadChunks(chunks, await openManifestFile(manifestPath, { signal }), signal);
    }
    // The quick check: the manifest's own files, as reconstruct's previous version (a tree's
    // compared entry by entry as they are read, without a second reading of the manifest).
    const quick = options.checksum
      ? undefined
      : reader.header.kind === 'tree'
        ? { targetDigest: reader.header.digest, previousIsManifest: true }
        : { targetDigest: reader.header.digest, previousFiles: await filesOf(await openManifestFile(manifestPath, { signal }), signal) };
    const result = await reconstruct(reader, chunks, target, {
      signal, pool, seeds: options.seeds ?? [], onProgress: options.onProgress, deleteExtra: options.delete === true, protect: options.excludes,
      attributes: { numericIds: options.numericIds === true }, unchangedRecord: snapshot?.recorder, ...quick,
    });
    const tag = manifestTag(reader.header);
    if (snapshot && tag !== undefined && result.kind === 'tree') {
      let { recorder } = snapshot;
      let fileBytes = result.bytesReused;
      if (!recorder.usable) {
        // The pull wrote the tree: recorded now, so that the next pull can be a no-op too.
        recorder = new SnapshotRecorder();
        const written = await openManifestFile(manifestPath, { signal });
        try {
          fileBytes = await recordPulledTree(target, written.events(), recorder, signal);
        } finally {
          await written.close();
        }
      }
      if (recorder.usable) {
        await writeSnapshot(target, recorder, { ...snapshot.key, tag }, { bytesTotal: result.bytesTotal, chunksTotal: result.chunksTotal, fileBytes, digest: result.digest });
      }
    }
    return withFallback({ ...result, target, plan });
  } finally {
    await readingAhead?.close();
    await removeTempDir(tmp);
    if (ownPool) await pool.close();
    await fallbackChunks?.close();
    for (const f of fallbacks) await f.close().catch(() => undefined);
    await close();
  }
}

/**
 * The options of a transfer to or from a server (RemoteOptions), checked whatever the
 * location: a bad value is a bug of the caller's even where it would not be used.
 */
function checkRemoteOptions(options: Omit<RemoteOptions, 'signal'>): void {
  checkNonNegativeInteger(options, 'retries');
  checkPositiveNumber(options, 'bwlimitBytesPerSecond', MIN_RATE_BYTES_PER_SECOND);
  checkPositiveNumber(options, 'answerTimeoutMs');
  checkIntegerInRange(options, 'connections', 1, MAX_CONNECTIONS);
  for (const name of ['delta', 'insecure', 's3PathStyle']) checkBoolean(options, name);
  checkFunction(options, 'onRetry');
  if (options.s3Endpoint !== undefined && (typeof options.s3Endpoint !== 'string' || !/^https?:\/\/[^/]/.test(options.s3Endpoint))) {
    throw new InvalidOptionError('s3Endpoint', 'an http:// or https:// URL');
  }
}

const DELETE_IN_STORE = '--delete applies to pulls and to pushes into a local directory; a server\'s copy of a pushed tree always mirrors it';

function endsWithSlash(spec: string): boolean {
  return spec.endsWith('/') || spec.endsWith(sep);
}

/**
 * The target of a local push of a tree's contents (`xfer push dir/ dest`): `dest` itself,
 * whether or not it exists or ends with '/'. Not a directory that holds pushed targets (its
 * own .xfer/ store): their names would become entries of the tree, for --delete to remove.
 */
async function resolveContentsTarget(destination: string): Promise<string> {
  const { resolvePushTarget, STORE_DIR_NAME } = await localEndpoint();
  const abs = resolve(destination);
  if (await stat(join(abs, STORE_DIR_NAME)).then(() => true, () => false)) {
    throw new AlreadyExistsError(`${destination} holds pushed targets (${STORE_DIR_NAME}/): a tree's contents cannot go into it; push to a new directory, or without the trailing / on the source`);
  }
  return resolvePushTarget(basename(abs), `${dirname(abs)}/`, true);
}

/** The target of a push of a tree's contents into a store: the location's path itself. */
function contentsTarget(location: StoreLocation): string {
  if (location.path === '') throw new InvalidArgumentError(`${location.text}: name the target ${location.given ? 'as its path ({ store, path })' : 'in the URL'}; a source ending in / puts its contents at that path`);
  return validateTargetName(location.path);
}

/** A dry push (PushOptions.dryRun): the push itself, into a DryRunDestination. */
async function dryPush(
  source: PushSource, location: Location, sourceName: string, sourceIsTree: boolean, contents: boolean, options: PushOptions,
): Promise<PushResult & { target: string }> {
  const { signal } = options;
  const [{ push: pushToDestination }, { DryRunDestination, extrasOnDisk }, { destinationPathsIn, localTargetOf, resolvePushTarget }, { LocalStore }] = await Promise.all([
    transferPush(), dryRunModule(), localEndpoint(), import('./store/local.js'),
  ]);
  const kind = sourceIsTree ? 'tree' : 'file';
  const go = (dest: DryRunDestination, exclude?: (absPath: string) => boolean) =>
    pushToDestination(typeof source === 'string' ? source : { stream: source.stream }, dest, { ...options, exclude }).then((r) => ({ ...r, target: dest.description }));
  if (location.kind === 'store') {
    if (options.delete) throw new InvalidArgumentError(DELETE_IN_STORE);
    const endpoint = await openStoreLocation(location, options);
    const store = endpoint.store;
    let current: OnceManifest | undefined;
    try {
      const name = contents ? contentsTarget(location) : await (await import('./endpoint/store.js')).resolveStoreTarget(endpoint, location.path, location.trailingSlash, sourceName, { signal, sourceIsTree });
      if (sourceIsTree) current = await onceManifest(store, name, signal);
      const previous = await previousVersion(current ?? store, name, kind, { signal });
      const state = current ? await remoteTree(current, name, options.excludes, signal) : undefined;
      const kept = new Set(state?.carry.map((c) => c.meta.path));
      // A store's copy mirrors the pushed tree: what its current version has and the push lacks
      // goes, but for the excluded entries the push carries over.
      const wouldDelete = async (paths: ReadonlyMap<string, boolean>) => [...(state?.before.keys() ?? [])].filter((p) => !paths.has(p) && !kept.has(p));
      return await go(new DryRunDestination({ description: endpoint.describe(name), has: (ids, o) => store.has(ids, o), previous, wouldDelete }));
    } finally {
      await current?.remove();
      await endpoint.close();
    }
  }
  refuseWireOptions(location, options);
  const t = localTargetOf(contents ? await resolveContentsTarget(location.path) : await resolvePushTarget(sourceName, location.path, sourceIsTree));
  const store = await LocalStore.open(t.storeDir, { create: false, signal }).catch((err) => {
    if ((err as { code?: string }).code === 'XFER_NOT_FOUND') return undefined;
    throw err;
  });
  try {
    const previous = store ? await previousVersion(store, t.name, kind, { signal }) : undefined;
    return await go(
      new DryRunDestination({
        description: t.target,
        has: store ? (ids, o) => store.has(ids, o) : undefined,
        previous,
        currentCopy: (path) => (path === '' ? t.target : join(t.target, ...path.split('/'))),
        wouldDelete: (paths) => (options.delete ? extrasOnDisk(t.target, paths, options.excludes, { signal }) : Promise.resolve([])),
      }),
      sourceIsTree ? destinationPathsIn(source as string, t) : undefined,
    );
  } finally {
    await store?.close();
  }
}

/**
 * A server's current tree at `name`, if there is one: its entries, and those `excludes`
 * matches (with what is below them), which a push carries over so that the server's copy,
 * a mirror of the pushed manifest, keeps them (rsync keeps excluded entries at the receiver).
 */
async function remoteTree(
  store: Pick<ManifestStore, 'getManifest'>, name: string, excludes: ((path: string, isDir: boolean) => boolean) | undefined, signal?: AbortSignal,
): Promise<{ before: Map<string, boolean>; carry: CarriedEntry[] } | undefined> {
  const open = () => store.getManifest(name, { signal }).then(async (m) => openManifest(m, { signal }));
  let reader;
  try {
    reader = await open();
  } catch (err) {
    if (isXferError(err, 'XFER_NOT_FOUND')) return undefined;
    throw err;
  }
  const before = await (await dryRunModule()).entryPaths(reader, signal);
  return { before, carry: excludes && before.size > 0 ? await excludedEntries(await open(), excludes, signal, open) : [] };
}

/** A manifest read from a local copy (onceManifest); remove() deletes the copy. */
type OnceManifest = Pick<ManifestStore, 'getManifest'> & { remove(): Promise<void> };

/**
 * The manifest `name` of `store`, fetched once into a temporary file and read from there
 * as often as asked (getManifest of that name; of any other, the store's): a push of a tree
 * reads its target's current manifest up to three times (remoteTree, twice with excludes;
 * the destination's previous version), each a round trip and the whole manifest over the
 * wire. A manifest the store lacks is NotFoundError each time, as the store said.
 */
async function onceManifest(
  store: ManifestStore, name: string, signal?: AbortSignal,
  /** Where a push reads the current manifest from (StoreEndpoint.currentManifest), if not the store. */
  currentManifest?: (name: string, options?: OpOptions) => Promise<AsyncIterable<Uint8Array>>,
): Promise<OnceManifest> {
  const dir = await makeTempDir('xfer-push-');
  const path = join(dir, 'current');
  let missing: unknown;
  try {
    const current = currentManifest ? currentManifest(name, { signal }) : store.getManifest(name, { signal });
    await pipeline(Readable.from(await current), createWriteStream(path), { signal });
  } catch (err) {
    if (!isXferError(err, 'XFER_NOT_FOUND')) {
      await removeTempDir(dir);
      throw err;
    }
    missing = err;
  }
  return {
    getManifest: async (n, o) => {
      if (n !== name) return store.getManifest(n, o);
      if (missing !== undefined) throw missing;
      return createReadStream(path);
    },
    remove: () => removeTempDir(dir),
  };
}
