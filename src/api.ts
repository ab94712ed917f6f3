import { createWriteStream } from 'node:fs';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { StreamSource } from './scan/scanner.js';
import { InvalidArgumentError, isXferError } from './core/errors.js';
import type { RemoteOptions } from './endpoint/http.js';
import { checkLocalPath, isRemote, parseRemote } from './endpoint/remote.js';
import { destinationPathsIn, LocalDestination, localTargetOf, openLocalSource, resolveCopyTarget, resolvePushTarget, sourceBaseName } from './endpoint/local.js';
import { makeTempDir, removeTempDir } from './io/temp.js';
import { openManifestFile } from './manifest/reader.js';
import { filesOf, reconstruct, type PullProgress, type PullResult } from './reconstruct/reconstruct.js';
import { ScanPool } from './scan/pool.js';
import type { ChunkStore, ManifestStore } from './store/store.js';
import type { PushDestination } from './transfer/destination.js';
import { push as pushToDestination, statSource, type PushOptions as TransferPushOptions, type PushProgress, type PushResult } from './transfer/push.js';

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
  /** rsync --numeric-ids: owners and groups applied by number, never mapped through their names. */
  readonly numericIds?: boolean;
}

/**
 * Pushes a file, a tree or a stream to a destination: a local path (the store goes to
 * `.xfer/` beside the target) or `http(s)://host:port/<remote-path>`. Destinations follow
 * cp: an existing directory or a trailing '/' means "inside it, under the source's name".
 * Resolves with the figures of the push and the target it wrote.
 */
export async function push(source: PushSource, destination: string, options: PushOptions = {}): Promise<PushResult & { target: string }> {
  if (typeof source === 'string') checkLocalPath(source, 'the source of a push');
  const sourceName = typeof source === 'string' ? sourceBaseName(source) : source.name;
  // A missing source is the error to report, not what the destination would make of it.
  const sourceIsTree = typeof source === 'string' && (await statSource(source)).isDirectory();
  let dest: PushDestination;
  /** Retries the remote store made so far (none for a local destination). */
  let retriesMade = () => 0;
  let exclude: ((absPath: string) => boolean) | undefined;
  if (isRemote(destination)) {
    if (options.delete) throw new InvalidArgumentError('--delete applies to pulls and to pushes into a local directory; a server\'s copy of a pushed tree always mirrors it');
    const r = parseRemote(destination);
    const { connectRemote, HttpDestination, resolveRemoteTarget } = await import('./endpoint/http.js');
    const store = await connectRemote(r.base, { ...options, signal: options.signal });
    try {
      dest = new HttpDestination(store, await resolveRemoteTarget(store, r.path, r.trailingSlash, sourceName, { signal: options.signal, sourceIsTree }), { delta: options.delta });
      retriesMade = () => store.retriesMade;
    } catch (err) {
      await store.close();
      throw err;
    }
  } else {
    refuseLocalLimit(options);
    const t = localTargetOf(await resolvePushTarget(sourceName, destination, sourceIsTree));
    // A destination inside the source tree is left out of what is read (see destinationPathsIn).
    if (sourceIsTree) exclude = destinationPathsIn(source as string, t);
    dest = await LocalDestination.open(t, { signal: options.signal, onLockWait: options.onLockWait, deleteExtra: options.delete === true, numericIds: options.numericIds === true });
  }
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
        const result = await pushToDestination(typeof source === 'string' ? source : { stream: source.stream }, dest, { ...options, exclude, onProgress });
        return {
          ...result,
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
  }
}

/**
 * Rebuilds a pushed file or tree (`<dest-dir>/<name>` or `http(s)://host:port/<remote-path>`)
 * at a local path (cp semantics), reusing chunks already there and in seeds, verifying
 * everything, replacing atomically; an interrupted pull resumes from its partial file.
 */
export async function pull(source: string, destination: string, options: PullOptions = {}): Promise<PullResult & { target: string }> {
  const { signal } = options;
  checkLocalPath(destination, 'the destination of a pull');
  let store: ChunkStore & ManifestStore & { close(): Promise<void> };
  let name: string;
  if (isRemote(source)) {
    const r = parseRemote(source);
    if (!r.path) throw new InvalidArgumentError(`${source}: name a remote path to pull`);
    const { connectRemote } = await import('./endpoint/http.js');
    store = await connectRemote(r.base, { ...options, signal });
    name = r.path;
  } else {
    refuseLocalLimit(options);
    const opened = await openLocalSource(source, { signal });
    store = opened.store;
    name = opened.name;
  }
  const ownPool = !options.pool;
  const pool = options.pool ?? new ScanPool();
  const tmp = await makeTempDir('xfer-pull-');
  try {
    // The manifest is fetched whole before any chunk: a manifest stream left half-read while
    // chunks are fetched on the same HTTP/2 connection could hold its flow-control window.
    const manifestPath = join(tmp, 'manifest');
    await pipeline(Readable.from(await store.getManifest(name, { signal })), createWriteStream(manifestPath), { signal });
    const reader = await openManifestFile(manifestPath, { signal });
    const target = await resolveCopyTarget(posix.basename(name), destination);
    // The quick check: the manifest's own files, as reconstruct's previous version.
    const quick = options.checksum ? undefined : { targetDigest: reader.header.digest, previousFiles: await filesOf(await openManifestFile(manifestPath, { signal }), signal) };
    const result = await reconstruct(reader, store, target, { signal, pool, seeds: options.seeds ?? [], onProgress: options.onProgress, deleteExtra: options.delete === true, attributes: { numericIds: options.numericIds === true }, ...quick });
    return { ...result, target };
  } finally {
    await removeTempDir(tmp);
    if (ownPool) await pool.close();
    await store.close();
  }
}

/** A rate limit applies to the wire: a local destination or source has none. */
function refuseLocalLimit(options: { readonly bwlimitBytesPerSecond?: number }): void {
  if (options.bwlimitBytesPerSecond !== undefined) throw new InvalidArgumentError('--bwlimit applies to transfers to or from a server (http:// or https://)');
}
