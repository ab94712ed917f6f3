import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AlreadyExistsError, fromSystemError, InvalidArgumentError, isXferError } from '../core/errors.js';
import { byteLength, checkConfined, PATH_MAX_BYTES } from '../io/safe-path.js';
import { maxStagingNameBytes } from '../reconstruct/staging.js';
import { quoteName } from '../store/names.js';
import type { ManifestStore } from '../store/store.js';

export { nameToRemotePath, remotePathToName } from '../protocol/routes.js';

/**
 * Where the server materializes the target `name` (a valid manifest name): `<filesDir>/<name>`,
 * checked before anything is created for it.
 *
 * - Its path, and the path of its staging copy beside it, must fit PATH_MAX (each segment
 *   is at most NAME_MAX already, and staging names are too), else InvalidArgumentError.
 * - It must not lie inside another committed target (a pushed tree `t` holds `t/x` as one
 *   of its entries, not as a target of its own; the store would refuse the manifest at
 *   commit anyway): AlreadyExistsError.
 * - No existing component may be a symlink, and none before the last a non-directory
 *   (io/safe-path.ts): the server never follows a symlink on the way to a target, not even
 *   one of a tree it materialized itself, nor one a local user planted.
 *
 * The rebuild checks the way again, creating the missing directories one at a time, and
 * once more before its final rename (Staging, `confineTo`).
 */
export async function materializedPath(filesDir: string, name: string, manifests: Pick<ManifestStore, 'getManifest'>, signal?: AbortSignal): Promise<string> {
  const segments = name.split('/');
  const last = segments[segments.length - 1]!;
  // The longer of the two paths: the target's, or its staging copy's in its place.
  const onDisk = byteLength(join(filesDir, name)) + Math.max(0, maxStagingNameBytes(last) - byteLength(last));
  if (onDisk > PATH_MAX_BYTES - 1) {
    const limit = byteLength(name) - (onDisk - (PATH_MAX_BYTES - 1));
    throw new InvalidArgumentError(`remote path of ${byteLength(name)} bytes is too long for this server (at most ${limit} bytes with this last segment)`);
  }
  await checkNotInsideTarget(name, manifests, signal);
  await checkConfined(filesDir, segments);
  return join(filesDir, ...segments);
}

/**
 * AlreadyExistsError if `name` lies inside another committed target (see materializedPath):
 * checked by a store-only server too, which materializes nothing but keeps the same names.
 */
export async function checkNotInsideTarget(name: string, manifests: Pick<ManifestStore, 'getManifest'>, signal?: AbortSignal): Promise<void> {
  const segments = name.split('/');
  for (let i = 1; i < segments.length; i++) {
    const outer = segments.slice(0, i).join('/');
    if (await isCommitted(manifests, outer, signal)) {
      throw new AlreadyExistsError(`${quoteName(name)} lies inside the pushed target ${quoteName(outer)}: push ${quoteName(outer)} itself to change it`);
    }
  }
}

async function isCommitted(manifests: Pick<ManifestStore, 'getManifest'>, name: string, signal?: AbortSignal): Promise<boolean> {
  let body: AsyncIterable<Uint8Array>;
  try {
    body = await manifests.getManifest(name, { signal });
  } catch (err) {
    if (isXferError(err, 'XFER_NOT_FOUND') || isXferError(err, 'XFER_INVALID_ARGUMENT')) return false;
    throw err;
  }
  // Leaving the loop closes the manifest file.
  for await (const _ of body) break;
  return true;
}

/**
 * Empties the server's own temporary directory (`<root>/tmp`) at start: what a server
 * killed mid-request left there (uploaded manifests being checked) is of no use to anyone.
 */
export async function clearServerTemp(tmpDir: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(tmpDir);
  } catch (err) {
    throw fromSystemError(err, tmpDir, 'list');
  }
  for (const e of entries) await rm(join(tmpDir, e), { recursive: true, force: true });
}
