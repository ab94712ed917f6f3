/*
 * The library's operations on a target's history and life, over any location (a local
 * destination, a server, an object store, a store object): its versions (`xfer ls
 * --versions`), forget (retention by policy) and remove (`xfer rm`). Versions are stored
 * by every commit (store/versions.ts); forget removes version manifests only, never chunks
 * (gc frees what no manifest references).
 */
import { randomBytes } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fromSystemError, InvalidArgumentError, NotFoundError } from './core/errors.js';
import { checkBoolean, checkNonNegativeInteger } from './core/options.js';
import { holdsStore, localTargetOf } from './endpoint/local.js';
import { openStoreLocation, parseLocation, refuseWireOptions, type LocationSpec, type StoreEndpoint } from './endpoint/open.js';
import { listTargets } from './endpoint/store.js';
import { checkLocationOptions, type LocationOptions } from './inspect.js';
import { acquireLock } from './store/lock.js';
import { localManifests } from './store/local.js';
import { validateTargetName } from './store/names.js';
import { applyPolicy, isEmptyPolicy, type RetentionPolicy } from './store/retention.js';
import type { ManifestStore, OpOptions } from './store/store.js';
import { listVersions, manifestExists, removeTargetManifests, targetsToRemove, versionNames, type HeaderLister, type VersionInfo } from './store/versions.js';

export type { RetentionPolicy } from './store/retention.js';
export type { VersionInfo } from './store/versions.js';

/** A version as versions() reports it: `current` for the one the target's name holds. */
export interface TargetVersion extends VersionInfo {
  readonly current: boolean;
}

/** The versions of the target at `location`, oldest first. NotFoundError if it has neither a manifest nor versions. */
export async function versions(location: LocationSpec, options: LocationOptions = {}): Promise<{ target: string; versions: TargetVersion[] }> {
  checkLocationOptions(options);
  return withTarget(location, 'the target whose versions to list', options, async (t) => {
    const list = await listVersions(t.list, t.name, { signal: options.signal });
    if (list.length === 0 && !(await manifestExists(t.manifests, t.name, { signal: options.signal }))) throw new NotFoundError(`${t.describe(t.name)}: no such target`);
    // The newest version is the current manifest (every commit stores both, version first):
    // unless a commit was cut between the two, when the current one is the one before.
    const current = await currentVersionId(t, list, options.signal);
    return { target: t.describe(t.name), versions: list.map((v) => ({ ...v, current: v.id === current })) };
  });
}

export interface ForgetOptions extends LocationOptions, RetentionPolicy {
  /** Decide and report, remove nothing. */
  readonly dryRun?: boolean;
}

export interface ForgetResult {
  readonly target: string;
  readonly dryRun: boolean;
  /** Oldest first, each with the rules that keep it. */
  readonly keep: readonly (TargetVersion & { readonly reasons: readonly string[] })[];
  /** Oldest first: removed, or (dry run) those that would be. */
  readonly remove: readonly TargetVersion[];
}

/**
 * Removes the versions of the target at `location` that the policy does not keep (restic's
 * rules, store/retention.ts); the current version is always kept. Only version manifests
 * go: chunks stay until gc. A policy that keeps nothing by rule is refused.
 */
export async function forget(location: LocationSpec, options: ForgetOptions): Promise<ForgetResult> {
  checkLocationOptions(options ?? {});
  checkBoolean(options, 'dryRun');
  for (const rule of ['last', 'daily', 'weekly', 'monthly'] as const) checkNonNegativeInteger(options, rule);
  if (isEmptyPolicy(options)) throw new InvalidArgumentError('forget needs a policy: --keep-last, --keep-daily, --keep-weekly or --keep-monthly (each N > 0)');
  const { signal } = options;
  return withTarget(location, 'the target whose versions to forget', options, async (t) => {
    const { versions: all } = await versionsOf(t, signal);
    const decisions = applyPolicy(all, options);
    const byAge = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : 1);
    const keep = decisions.filter((d) => d.keep || d.version.current).map((d) => ({ ...d.version, reasons: d.version.current && !d.reasons.includes('current') ? ['current', ...d.reasons] : d.reasons })).sort(byAge);
    const remove = decisions.filter((d) => !d.keep && !d.version.current).map((d) => d.version).sort(byAge);
    if (!options.dryRun) {
      for (const v of remove) await t.manifests.deleteManifest(v.manifest, { signal });
    }
    return { target: t.describe(t.name), dryRun: options.dryRun === true, keep, remove };
  });
}

export interface RemoveOptions extends LocationOptions {
  /** A folder of targets: remove every target in it (else refused). */
  readonly recursive?: boolean;
  /** Report what would go, remove nothing. */
  readonly dryRun?: boolean;
}

export interface RemoveResult {
  readonly dryRun: boolean;
  /** Each target removed (or that would be), with how many versions went with it. */
  readonly removed: readonly { readonly target: string; readonly versions: number }[];
}

/**
 * Removes the target at `location`: its versions, its manifest, and its copy where the
 * location rebuilds one (a local destination's `<dir>/<name>`, a server's files), in that
 * order (removeTargetManifests): a crash never leaves a manifest whose copy is gone. A
 * folder of targets only with `recursive`. Chunks stay until gc.
 */
export async function remove(location: LocationSpec, options: RemoveOptions = {}): Promise<RemoveResult> {
  checkLocationOptions(options);
  checkBoolean(options, 'recursive');
  checkBoolean(options, 'dryRun');
  const { signal } = options;
  const recursive = options.recursive === true;
  return withTarget(location, 'the target to remove', options, async (t) => {
    const names = await targetsToRemove(t.manifests, t.name, recursive, { signal, describe: t.describe(t.name) });
    if (options.dryRun) {
      const removed = [];
      for (const n of names) removed.push({ target: t.describe(n), versions: (await versionNames(t.manifests, n, { signal })).length });
      return { dryRun: true, removed };
    }
    if (t.remove) return { dryRun: false, removed: (await t.remove(t.name, { signal, recursive })).map((r) => ({ target: t.describe(r.path), versions: r.versions })) };
    const removed = [];
    for (const n of names) removed.push({ target: t.describe(n), versions: await removeTargetManifests(t.manifests, n, { signal }) });
    return { dryRun: false, removed };
  });
}

/** A target at a location, opened: its name and how to read and change its manifests. */
interface OpenTarget {
  readonly name: string;
  readonly manifests: ManifestStore;
  /** Lists manifests with their headers' facts (the versions' namespace when asked for it). */
  readonly list: HeaderLister;
  describe(name: string): string;
  /** Removes the target (and what the location rebuilt of it); absent: manifests only. */
  readonly remove?: StoreEndpoint['remove'];
}

async function withTarget<T>(location: LocationSpec, what: string, options: LocationOptions, run: (t: OpenTarget) => Promise<T>): Promise<T> {
  const parsed = parseLocation(location, what);
  if (parsed.kind === 'store') {
    if (!parsed.path) throw new InvalidArgumentError(`${parsed.text}: name a target`);
    const endpoint = await openStoreLocation(parsed, options);
    try {
      return await run({
        name: validateTargetName(parsed.path),
        manifests: endpoint.store,
        list: (prefix, o) => endpoint.list(prefix, o),
        describe: (n) => endpoint.describe(n),
        remove: endpoint.remove,
      });
    } finally {
      await endpoint.close();
    }
  }
  refuseWireOptions(parsed, options);
  if (await holdsStore(parsed.path).catch(() => false)) throw new InvalidArgumentError(`${parsed.path}: a destination directory (it holds .xfer/); name a target in it`);
  const t = localTargetOf(parsed.path);
  const manifests = localManifests(t.storeDir);
  return run({
    name: validateTargetName(t.name),
    manifests,
    list: (prefix, o) => listTargets(manifests, prefix, o),
    describe: (n) => join(t.dir, ...n.split('/')),
    // A local destination's copy of the target is `<dir>/<name>`: it goes with it, under the
    // target's lock (no push of it runs meanwhile), moved into the store's tmp/ at once and
    // deleted there. Removing a symlink there removes the link, never what it points to.
    remove: async (name, o) => {
      const lock = await acquireLock(join(t.storeDir, 'locks', ...name.split('/')), { signal: o.signal });
      try {
        const versionsRemoved = await removeTargetManifests(manifests, name, o);
        const copy = join(t.dir, ...name.split('/'));
        const aside = join(t.storeDir, 'tmp', `removed-${randomBytes(8).toString('hex')}`);
        try {
          await rename(copy, aside);
          await rm(aside, { recursive: true, force: true });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, resolve(copy), 'remove');
        }
        return [{ path: name, versions: versionsRemoved }];
      } finally {
        await lock.release();
      }
    },
  });
}

/** The target's versions, each marked current or not. */
async function versionsOf(t: OpenTarget, signal?: AbortSignal): Promise<{ versions: TargetVersion[] }> {
  const list = await listVersions(t.list, t.name, { signal });
  if (list.length === 0) throw new NotFoundError(`${t.describe(t.name)}: no versions stored`);
  const current = await currentVersionId(t, list, signal);
  return { versions: list.map((v) => ({ ...v, current: v.id === current })) };
}

/** The id of the version the target's name holds: the newest one whose digest is the current manifest's. */
async function currentVersionId(t: OpenTarget, list: readonly VersionInfo[], signal?: AbortSignal): Promise<string | undefined> {
  const [entry] = (await t.list(t.name, { signal } as OpOptions)).filter((e) => e.path === t.name);
  if (!entry) return undefined;
  for (let i = list.length - 1; i >= 0; i--) if (list[i]!.digest === entry.digest) return list[i]!.id;
  return undefined;
}

