/**
 * Versions of a target, on any ManifestStore (local, server, S3, memory): every commit
 * stores the new manifest twice, first as a version (`.xfer/versions/<key>/<id>`, see
 * VERSIONS_PREFIX in names.ts), then under the target's name. The newest version is so
 * always the current manifest, and a crash between the two puts leaves a version the
 * current name does not have yet, never a current manifest without its version. Versions
 * are ordinary manifests: `listManifests('')` lists them with the targets (gc keeps their
 * chunks), and listings for users hide them (isReservedName).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { InvalidArgumentError, isXferError, NotFoundError } from '../core/errors.js';
import { digestToHex } from '../core/ids.js';
import { openManifest } from '../manifest/reader.js';
import type { ManifestHeader, ManifestKind } from '../manifest/types.js';
import { quoteName, validateTargetName, VERSION_ID_PATTERN, VERSIONS_PREFIX } from './names.js';
import type { ManifestStore, OpOptions } from './store.js';

/** Hex digits of the target's digest in a version id. */
export const VERSION_DIGEST_HEX_CHARS = 8;

/** One version of a target, as `ls --versions` shows it. */
export interface VersionInfo {
  /** `2026-12-06T15:04:05.123Z-1a2b3c4d`: the commit's time and the target's digest, abridged. */
  readonly id: string;
  /** The commit's time (ms since the epoch, UTC). */
  readonly timeMs: number;
  /** The manifest name it is stored under. */
  readonly manifest: string;
  readonly kind: ManifestKind | 'damaged';
  /** The content's bytes; 0 for a damaged one. */
  readonly bytes: number;
  /** The whole target's digest (hex), '' when damaged. */
  readonly digest: string;
  readonly error?: string;
}

/** The manifest name of version `id` of target `name`. */
export function versionName(name: string, id: string): string {
  return `${versionsPrefix(name)}${id}`;
}

/** The prefix listing every version of target `name`: `.xfer/versions/<key>/` (VERSION_KEY_PATTERN). */
export function versionsPrefix(name: string): string {
  const key = createHash('sha256').update(validateTargetName(name), 'utf8').digest('hex').slice(0, VERSION_KEY_HEX_CHARS);
  return `${VERSIONS_PREFIX}${key}/`;
}

/** Hex digits of a target's key in the versions' namespace. */
const VERSION_KEY_HEX_CHARS = 32;

/** The id of a version committed at `timeMs` with target digest `digest`. */
export function versionId(timeMs: number, digest: Uint8Array): string {
  return `${new Date(timeMs).toISOString()}-${digestToHex(digest).slice(0, VERSION_DIGEST_HEX_CHARS)}`;
}

/** The commit time of a version id (NaN if `id` is not one). */
export function versionTimeMs(id: string): number {
  return VERSION_ID_PATTERN.test(id) ? Date.parse(id.slice(0, id.lastIndexOf('-'))) : NaN;
}

/**
 * The commit of a manifest (the file at `manifestPath`, whose header is `header`) as target
 * `name`: stored as a new version, then as the current manifest. Every commit path calls
 * this (a local push, a server's commit, a push into any store), so every store keeps
 * versions the same way. `nowMs`: the commit's time (tests).
 */
export async function commitManifest(
  store: Pick<ManifestStore, 'putManifest'>, name: string, manifestPath: string, header: Pick<ManifestHeader, 'digest'>, options: OpOptions & { readonly nowMs?: number } = {},
): Promise<string> {
  const id = versionId(options.nowMs ?? Date.now(), header.digest);
  await store.putManifest(versionName(name, id), createReadStream(manifestPath), options);
  await store.putManifest(name, createReadStream(manifestPath), options);
  return id;
}

/**
 * A lister of manifests with their headers' facts: a StoreEndpoint's `list` (a server reads
 * the headers itself) or listTargets over a ManifestStore (endpoint/store.ts).
 */
export type HeaderLister = (prefix: string, options?: OpOptions) => Promise<readonly { path: string; kind: string; bytes: number; digest: string; error?: string }[]>;

/** The versions of target `name`, oldest first. */
export async function listVersions(list: HeaderLister, name: string, options: OpOptions = {}): Promise<VersionInfo[]> {
  const prefix = versionsPrefix(name);
  const out: VersionInfo[] = [];
  for (const e of await list(prefix, options)) {
    const id = e.path.slice(prefix.length);
    const timeMs = versionTimeMs(id);
    if (Number.isNaN(timeMs)) continue;
    out.push({ id, timeMs, manifest: e.path, kind: e.kind as VersionInfo['kind'], bytes: e.bytes, digest: e.digest, ...(e.error ? { error: e.error } : {}) });
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** The version names of target `name`, oldest first, from a plain ManifestStore listing (no headers read). */
export async function versionNames(store: Pick<ManifestStore, 'listManifests'>, name: string, options: OpOptions = {}): Promise<string[]> {
  const prefix = versionsPrefix(name);
  return (await store.listManifests(prefix, options))
    .map((m) => m.name)
    .filter((n) => !Number.isNaN(versionTimeMs(n.slice(prefix.length))))
    .sort();
}

/**
 * A version selector (what follows '@'): a version id, or a UTC time, `2026-12-06`,
 * `2026-12-06T15:04`, `2026-12-06T15:04:05`, `2026-12-06T15:04:05.123`, each with an
 * optional `Z`. A time given to the day or the minute means its end: `@2026-12-06` is the
 * day's last version. Returns undefined if `text` is neither.
 */
export type VersionSelector = { readonly id: string } | { readonly atOrBeforeMs: number };

const TIME_PATTERN = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?)?Z?$/;

export function parseVersionSelector(text: string): VersionSelector | undefined {
  if (VERSION_ID_PATTERN.test(text)) return { id: text };
  const m = TIME_PATTERN.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, ms] = m;
  const start = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h ?? 0), Number(mi ?? 0), Number(s ?? 0), ms === undefined ? 0 : Number(ms.padEnd(3, '0')));
  // Date.UTC rolls over out-of-range fields (month 13, day 32): such a date is not a date.
  const back = new Date(start);
  if (back.getUTCMonth() !== Number(mo) - 1 || back.getUTCDate() !== Number(d) || Number(h ?? 0) > 23 || Number(mi ?? 0) > 59 || Number(s ?? 0) > 59) return undefined;
  const span = h === undefined ? 86_400_000 : s === undefined ? 60_000 : ms === undefined ? 1000 : 1;
  return { atOrBeforeMs: start + span - 1 };
}

/**
 * The manifest name of the version of target `name` that `selector` picks: the version of
 * that id, or the newest committed at or before that time. NotFoundError naming what was
 * asked for, and the versions there are, if none.
 */
export async function resolveVersion(store: Pick<ManifestStore, 'listManifests'>, name: string, selector: VersionSelector, options: OpOptions & { readonly describe?: string } = {}): Promise<string> {
  const names = await versionNames(store, name, options);
  const prefix = versionsPrefix(name);
  const where = options.describe ?? quoteName(name);
  if (names.length === 0) throw new NotFoundError(`${where}: no versions stored`);
  if ('id' in selector) {
    const found = names.find((n) => n === prefix + selector.id);
    if (!found) throw new NotFoundError(`${where}: no version ${selector.id} (run xfer ls --versions to list them)`);
    return found;
  }
  let pick: string | undefined;
  for (const n of names) if (versionTimeMs(n.slice(prefix.length)) <= selector.atOrBeforeMs) pick = n;
  if (!pick) throw new NotFoundError(`${where}: no version at or before ${new Date(selector.atOrBeforeMs).toISOString()} (the oldest is ${names[0]!.slice(prefix.length)})`);
  return pick;
}

/**
 * Splits `<name>@<selector>` when the '@' is a version selector. The rule: the last '@'
 * selects a version only if what follows parses as a version id or a time and `exists(name)`
 * is false for the whole name; a target whose name has an '@' is so always reachable by
 * its name (and its versions as `<name>@<selector>`).
 */
export async function splitVersion(name: string, exists: (name: string) => Promise<boolean>): Promise<{ name: string; selector?: VersionSelector; selectorText?: string }> {
  const at = name.lastIndexOf('@');
  if (at <= 0) return { name };
  const selectorText = name.slice(at + 1);
  const selector = parseVersionSelector(selectorText);
  if (!selector || (await exists(name))) return { name };
  return { name: name.slice(0, at), selector, selectorText };
}

/** Whether a manifest `name` is stored (its body is not read). */
export async function manifestExists(store: Pick<ManifestStore, 'getManifest'>, name: string, options: OpOptions = {}): Promise<boolean> {
  try {
    const body = await store.getManifest(name, options);
    for await (const _ of body) break; // leaving the loop closes the stream
    return true;
  } catch (err) {
    if (isXferError(err, 'XFER_NOT_FOUND') || isXferError(err, 'XFER_INVALID_ARGUMENT')) return false;
    throw err;
  }
}

/** The header of a stored manifest (NotFoundError if absent), its body not read. */
export async function storedHeader(store: Pick<ManifestStore, 'getManifest'>, name: string, options: OpOptions = {}): Promise<ManifestHeader> {
  const reader = await openManifest(await store.getManifest(name, options), { signal: options.signal });
  await reader.close();
  return reader.header;
}

/** Checks a `--keep-*` count. */
export function checkKeepCount(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError(`${what} must be a whole number, 0 or more`);
  return value;
}

/**
 * The targets `xfer rm <name>` removes: `name` itself if it is a target (a file or a whole
 * tree) or has versions left (of a removal that was interrupted); the targets below it if
 * it is a folder of targets and `recursive`; else InvalidArgumentError (a folder without
 * `recursive`) or NotFoundError. `describe` names it in messages.
 */
export async function targetsToRemove(store: Pick<ManifestStore, 'getManifest' | 'listManifests'>, name: string, recursive: boolean, options: OpOptions & { readonly describe?: string } = {}): Promise<string[]> {
  validateTargetName(name);
  const where = options.describe ?? quoteName(name);
  if (await manifestExists(store, name, options)) return [name];
  const under = (await store.listManifests(`${name}/`, options)).map((m) => m.name);
  if (under.length > 0) {
    if (!recursive) throw new InvalidArgumentError(`${where} is a folder of ${under.length} target${under.length === 1 ? '' : 's'}: use rm -r to remove it and everything in it`);
    return under;
  }
  if ((await versionNames(store, name, options)).length > 0) return [name];
  throw new NotFoundError(`${where}: no such target`);
}

/**
 * Removes the manifests of target `name`: its versions, then its current manifest, so that
 * every state a crash can leave is one a push could have made (a target with fewer
 * versions, or, last, versions only, which rm removes when run again). Returns how many
 * versions went. What a target's copy is (a server's files, a local destination's) is the
 * caller's to remove, after this: a manifest never outlives its copy.
 */
export async function removeTargetManifests(store: Pick<ManifestStore, 'listManifests' | 'deleteManifest'>, name: string, options: OpOptions = {}): Promise<number> {
  const versions = await versionNames(store, name, options);
  for (const v of versions) await deleteIfPresent(store, v, options);
  await deleteIfPresent(store, name, options);
  return versions.length;
}

async function deleteIfPresent(store: Pick<ManifestStore, 'deleteManifest'>, name: string, options: OpOptions): Promise<void> {
  try {
    await store.deleteManifest(name, options);
  } catch (err) {
    if (!isXferError(err, 'XFER_NOT_FOUND')) throw err;
  }
}
