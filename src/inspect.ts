/*
 * The library's look at locations, apart from push and pull (api.ts): list, verify and
 * readManifest over any location the registry knows (endpoint/registry.ts), a local
 * destination or a store object. Apart so that `xfer ls`, `verify` and `manifest show`
 * do not load the scanner, the push and the rebuild (about 35 ms of CPU at start-up).
 */
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, InvalidOptionError } from './core/errors.js';
import { checkBoolean, checkFunction, checkNonNegativeInteger, checkPositiveNumber, checkSignal } from './core/options.js';
import { MIN_RATE_BYTES_PER_SECOND } from './core/rate.js';
import type { RemoteOptions } from './endpoint/http.js';
import { holdsStore, isPushedTarget, localTargetOf, openLocalSource, openLocalStore, STORE_DIR_NAME } from './endpoint/local.js';
import { openStoreLocation, parseLocation, refuseWireOptions, type LocationSpec, type TargetInfo } from './endpoint/open.js';
import { listTargets } from './endpoint/store.js';
import { openManifest, openManifestFile, type ManifestReader } from './manifest/reader.js';
import { localManifests, type LocalStore } from './store/local.js';
import { isReservedName } from './store/names.js';
import { serverRootOf, verifyServerRoot } from './server/root.js';
import { hasRebuiltCopy, parseReadDataSubset, verifyManifests, type VerifyProgress, type VerifyReport } from './transfer/verify.js';

/** Options of list, verify and readManifest: the signal, and a server's (RemoteOptions). */
export interface LocationOptions extends Omit<RemoteOptions, 'signal' | 'delta'> {
  readonly signal?: AbortSignal;
}

/**
 * The targets at a location, sorted by name: a server's or a store's under the location's
 * path (a prefix: `backups/` what is inside the folder `backups`); a local destination
 * directory's (it holds `.xfer/`), or, for another local path, the targets of the store
 * beside it whose names start with the path's base name.
 */
export async function list(location: LocationSpec, options: LocationOptions = {}): Promise<TargetInfo[]> {
  checkLocationOptions(options);
  const { signal } = options;
  const parsed = parseLocation(location, 'what list reads');
  if (parsed.kind === 'store') {
    const endpoint = await openStoreLocation(parsed, options);
    try {
      return await endpoint.list(parsed.path && parsed.trailingSlash ? `${parsed.path}/` : parsed.path, { signal });
    } finally {
      await endpoint.close();
    }
  }
  refuseWireOptions(parsed, options);
  if (await holdsStore(parsed.path)) return listTargets(localManifests(join(parsed.path, STORE_DIR_NAME)), '', { signal });
  const t = localTargetOf(parsed.path);
  return listTargets(localManifests(t.storeDir), /[/\\]$/.test(parsed.path) ? `${t.name}/` : t.name, { signal });
}

export interface VerifyOptions extends LocationOptions {
  /** Check the stored chunks only, not the files a local destination or a server rebuilt. */
  readonly chunksOnly?: boolean;
  /** Read back and re-hash every chunk (and rebuilt file), not only check that it exists. */
  readonly readData?: boolean;
  /** Read only a part of the data: `n/t` or `p%` (restic's --read-data-subset; implies readData). */
  readonly readDataSubset?: string;
  /** Told what was done so far (at most twice a second), and once at the end. */
  readonly onProgress?: (progress: VerifyProgress) => void;
}

/**
 * Verifies a location (transfer/verify.ts): that every chunk the manifests refer to exists
 * (from the store's index), with readData that it is intact (read and re-hashed), and,
 * unless chunksOnly, that every rebuilt file of a local destination or a server is still
 * its manifest's file. A local destination directory (it holds `.xfer/`) is checked whole,
 * any other local path as a target; a server root or its `store/` directory (server/root.ts)
 * whole, as its server would, the chunks its rebuilt files hold included; a store
 * location's path names a target or a folder of them ('' all). A server verifies itself
 * (POST /v1/verify). Damage is reported, never thrown.
 */
export async function verify(location: LocationSpec, options: VerifyOptions = {}): Promise<VerifyReport> {
  checkLocationOptions(options);
  checkBoolean(options, 'chunksOnly');
  checkBoolean(options, 'readData');
  checkFunction(options, 'onProgress');
  if (options.readDataSubset !== undefined && typeof options.readDataSubset !== 'string') throw new InvalidOptionError('readDataSubset', 'a string: n/t or a percentage');
  const subset = options.readDataSubset === undefined ? undefined : parseReadDataSubset(options.readDataSubset);
  const { signal, onProgress } = options;
  const job = { signal, readData: options.readData, subset, onProgress };
  const parsed = parseLocation(location, 'what verify checks');
  if (parsed.kind === 'store') {
    const endpoint = await openStoreLocation(parsed, options);
    try {
      if (!endpoint.verify) throw new InvalidArgumentError(`${parsed.text}: verify is not supported for ${parsed.scheme?.name ?? 'these'} locations`);
      return await endpoint.verify(parsed.path, { ...job, chunksOnly: options.chunksOnly });
    } finally {
      await endpoint.close();
    }
  }
  refuseWireOptions(parsed, options);
  // A server root, or its store/, read where it lies: held chunks (server/held.ts) count.
  const serverRoot = (await stat(join(parsed.path, STORE_DIR_NAME)).then(() => true, () => false)) ? undefined : await serverRootOf(parsed.path);
  if (serverRoot !== undefined) return verifyServerRoot(serverRoot, { ...job, chunksOnly: options.chunksOnly });
  let store: LocalStore;
  let names: string[];
  let dir: string;
  if (await holdsStore(parsed.path)) {
    store = await openLocalStore(parsed.path, { signal });
    dir = resolve(parsed.path);
  } else {
    const opened = await openLocalSource(parsed.path, { signal });
    store = opened.store;
    names = [opened.name];
    dir = opened.t.dir;
  }
  try {
    names ??= targetNames(await store.listManifests('', { signal }));
    // A local destination's targets are rebuilt beside its store: <dir>/<name>.
    const targetOf = options.chunksOnly ? undefined : (name: string) => (hasRebuiltCopy(name) ? join(dir, ...name.split('/')) : undefined);
    return await verifyManifests(store, store, names, { ...job, targetOf });
  } finally {
    await store.close();
  }
}

/**
 * The manifest of a pushed target (a local `<dest-dir>/<name>`, or a location of a store
 * naming one), or a manifest file at a local path. The reader holds what it reads from:
 * read its events() to the end, or close() it.
 */
export async function readManifest(location: LocationSpec, options: LocationOptions = {}): Promise<ManifestReader> {
  checkLocationOptions(options);
  const { signal } = options;
  const parsed = parseLocation(location, 'the manifest to show');
  if (parsed.kind === 'local') {
    refuseWireOptions(parsed, options);
    if (!(await isPushedTarget(parsed.path))) return openManifestFile(parsed.path, { signal });
    const t = localTargetOf(parsed.path);
    return openManifest(await localManifests(t.storeDir).getManifest(t.name, { signal }), { signal });
  }
  if (!parsed.path) throw new InvalidArgumentError(`${parsed.text}: name the target whose manifest to show`);
  const endpoint = await openStoreLocation(parsed, options);
  try {
    const reader = await openManifest(await endpoint.store.getManifest(parsed.path, { signal }), { signal });
    return closingWith(reader, () => endpoint.close());
  } catch (err) {
    await endpoint.close();
    throw err;
  }
}

/**
 * The targets among a store's manifests: its versions (store/versions.ts) left out. A
 * target's current version is its manifest, checked as the target; older versions are not
 * checked here yet (issue 16's verify jobs decide how to report them).
 */
function targetNames(manifests: readonly { readonly name: string }[]): string[] {
  return manifests.map((m) => m.name).filter((n) => !isReservedName(n));
}

/** `reader`, which also runs `done` (once) when its events end or it is closed. */
function closingWith(reader: ManifestReader, done: () => Promise<void>): ManifestReader {
  let finished: Promise<void> | undefined;
  const finish = () => (finished ??= done());
  return {
    header: reader.header,
    async *events() {
      try {
        yield* reader.events();
      } finally {
        await finish();
      }
    },
    async close() {
      try {
        await reader.close();
      } finally {
        await finish();
      }
    },
  };
}

/** A location's options: a server's, checked whatever the location (a bad value is the caller's bug). */
export function checkLocationOptions(options: LocationOptions): void {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('options', 'an object');
  checkSignal(options);
  checkNonNegativeInteger(options, 'retries');
  checkPositiveNumber(options, 'bwlimitBytesPerSecond', MIN_RATE_BYTES_PER_SECOND);
  checkPositiveNumber(options, 'answerTimeoutMs');
  checkBoolean(options, 'insecure');
  checkFunction(options, 'onRetry');
}
