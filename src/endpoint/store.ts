import { AlreadyExistsError, InvalidArgumentError, isXferError } from '../core/errors.js';
import { digestToHex } from '../core/ids.js';
import { openManifest } from '../manifest/reader.js';
import type { EntryMeta, ManifestHeader, ManifestKind } from '../manifest/types.js';
import { isReservedName, validateTargetName } from '../store/names.js';
import { commitManifest } from '../store/versions.js';
import type { ManifestStore, OpOptions } from '../store/store.js';
import type { BeginOptions, KnownFile, PushDestination, PushSession } from '../transfer/destination.js';
import { KnownFiles, previousVersion } from '../transfer/known.js';
import type { Store, StoreEndpoint, TargetInfo, TargetType } from './registry.js';

/*
 * Any Store as a location: what commands need of a store that holds targets by name and
 * does nothing else for them (a memory store, an object store). Targets are manifests
 * only: nothing is rebuilt from them where they are, so a push stores chunks and the
 * manifest, a pull rebuilds locally, and verify checks chunks.
 */

/**
 * The endpoint of `store`; `describe` names a target in messages and results. `owned`:
 * closing the endpoint closes the store (false for a store object the caller passed).
 * `retriesMade` counts the retries of its operations (Composition.retriesMade; none if absent).
 */
export function storeEndpoint(store: Store, describe: (name: string) => string, owned: boolean, retriesMade: () => number = () => 0): StoreEndpoint {
  let closed = false;
  const endpoint: StoreEndpoint = {
    store,
    describe,
    get retriesMade() {
      return retriesMade();
    },
    stat: (name, options) => statTarget(store, name, options),
    list: (prefix, options) => listTargets(store, prefix, options),
    destination: (name, options = {}) => {
      if (options.inPlace) throw new InvalidArgumentError('push --in-place applies to a push to a server; a store holds no rebuilt copy to rewrite');
      return new StoreDestination(endpoint, name, options.previous);
    },
    // transfer/verify.ts is loaded by the first verify, not with this module: a push or pull does not need it.
    verify: async (path, options = {}) => {
      const { manifestsAt, verifyManifests } = await import('../transfer/verify.js');
      return verifyManifests(store, store, await manifestsAt(store, path, { signal: options.signal, describe }), options);
    },
    async close() {
      if (closed || !owned) return;
      closed = true;
      await store.close();
    },
  };
  return endpoint;
}

/** What `name` is in `store`: the kind of its manifest, a folder of targets, or nothing. */
export async function statTarget(store: ManifestStore, name: string, options: OpOptions = {}): Promise<TargetType> {
  validateTargetName(name);
  try {
    const reader = await openManifest(await store.getManifest(name, options), { signal: options.signal });
    await reader.close();
    return reader.header.kind;
  } catch (err) {
    if (!isXferError(err, 'XFER_NOT_FOUND')) throw err;
  }
  return (await store.listManifests(`${name}/`, options)).length > 0 ? 'dir' : 'none';
}

/**
 * The targets of `store` under `prefix`, each with its manifest's kind, size and digest
 * (read from its header). The store's own namespace (versions) is left out, unless the
 * prefix is inside it (store/versions.ts lists versions so).
 */
export async function listTargets(store: ManifestStore, prefix: string, options: OpOptions = {}): Promise<TargetInfo[]> {
  const out: TargetInfo[] = [];
  for (const m of await store.listManifests(prefix, options)) {
    if (isReservedName(m.name) && !isReservedName(prefix)) continue;
    let header: ManifestHeader;
    try {
      const reader = await openManifest(await store.getManifest(m.name, options), { signal: options.signal });
      await reader.close();
      header = reader.header;
    } catch (err) {
      // One unreadable manifest does not hide the others: it is listed as damaged, saying why.
      if (!isXferError(err) || err.code === 'XFER_ABORTED') throw err;
      out.push({ path: m.name, kind: 'damaged', bytes: 0, mtimeMs: m.mtimeMs, digest: '', error: err.message });
      continue;
    }
    out.push({ path: m.name, kind: header.kind, bytes: header.totalBytes, mtimeMs: m.mtimeMs, digest: digestToHex(header.digest) });
  }
  return out;
}

/**
 * cp's rule for a push into a store: "inside it, under the source's base name" when the
 * path ends with '/', is empty, or names a folder of targets. A path that names a pushed
 * tree is that target when the source is a tree (`sourceIsTree`): the push updates it, as
 * running the same push again must (see resolvePushTarget in local.ts).
 */
export async function resolveStoreTarget(
  endpoint: StoreEndpoint, path: string, trailingSlash: boolean, sourceName: string, options: OpOptions & { readonly sourceIsTree?: boolean } = {},
): Promise<string> {
  if (path === '') return validateTargetName(sourceName);
  const type = await endpoint.stat(validateTargetName(path), options);
  if (type === 'tree' && options.sourceIsTree && !trailingSlash) return path;
  // A pushed tree cannot hold another pushed copy inside it (a server refuses the name at
  // commit). Say so before uploading anything.
  if (type === 'tree') {
    const where = endpoint.describe(path);
    throw new AlreadyExistsError(`${where} is a pushed tree: a copy cannot go inside it. To replace it, push a tree to ${where} (no trailing /), or push to a new path`);
  }
  return type === 'dir' || trailingSlash ? validateTargetName(`${path}/${sourceName}`) : path;
}

/**
 * A push into a store that only stores (StoreEndpoint of storeEndpoint): chunks go in as
 * they are scanned, and the commit stores the manifest, which replaces the previous
 * version atomically (ManifestStore.putManifest). Nothing is rebuilt there. The quick
 * check reuses the previous version's files as a server's does (KnownFiles).
 */
class StoreDestination implements PushDestination {
  readonly chunks: Store;
  readonly description: string;
  private known: KnownFiles | undefined;

  constructor(
    private readonly endpoint: StoreEndpoint,
    private readonly name: string,
    /** Where the current manifest is read from (StoreEndpoint.destination's `previous`). */
    private readonly previous: Pick<ManifestStore, 'getManifest'> = endpoint.store,
  ) {
    this.chunks = endpoint.store;
    this.description = endpoint.describe(name);
  }

  async begin(kind: ManifestKind, options: BeginOptions = {}): Promise<PushSession> {
    const store = this.chunks;
    const name = this.name;
    this.known = KnownFiles.for(await previousVersion(this.previous, name, kind, options), store, options);
    return {
      entry: async () => undefined,
      async commit(manifestPath: string, header: ManifestHeader, opts: OpOptions = {}): Promise<void> {
        await commitManifest(store, name, manifestPath, header, opts);
      },
      abort: async () => {},
    };
  }

  knownFile(meta: EntryMeta, options: OpOptions = {}): Promise<KnownFile | undefined> {
    return this.known?.find(meta, options) ?? Promise.resolve(undefined);
  }

  previousFile(path: string): { readonly size: number; readonly digest: Uint8Array } | undefined {
    return this.known?.previousFile(path);
  }

  close(): Promise<void> {
    return this.endpoint.close();
  }
}
