/**
 * The local store's manifests: one file per manifest under `<dir>/manifests/`, a '/' in a
 * name making subdirectories; written to a temp file, fsynced and renamed into place.
 */
import { mkdir, open, readdir, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { throwIfAborted } from '../../core/abort.js';
import { AlreadyExistsError, fromSystemError, NotFoundError } from '../../core/errors.js';
import { mapBounded } from '../../core/window.js';
import { fsyncPath } from '../../io/sync.js';
import { compareManifestNames, quoteName, validateManifestName, validateManifestPrefix } from '../names.js';
import type { ManifestInfo, ManifestStore, OpOptions } from '../store.js';
import { errorCode, FS_CONCURRENCY, isDirectory, isMissing, isNameClash, readStream, writeDurably } from './fs.js';
import { newTempPath } from './temp.js';

/** A rename whose target directory vanished (removed as empty meanwhile) is retried. */
const RENAME_ATTEMPTS = 3;

export class LocalManifests implements ManifestStore {
  constructor(
    /** The store's directory, as errors name it. */
    private readonly dir: string,
    private readonly manifestDir: string,
    private readonly tempDir: string,
    /** Directories known to exist (shared with the store), so that puts do not mkdir each time. */
    private readonly knownDirs: Set<string>,
  ) {}

  async putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    const finalPath = this.path(name);
    const parent = path.dirname(finalPath);
    const tempPath = newTempPath(this.tempDir);
    try {
      await writeDurably(tempPath, source, signal);
      let created: string | undefined;
      try {
        created = await this.renameIntoPlace(tempPath, finalPath, parent);
      } catch (err) {
        throw isNameClash(err)
          ? new AlreadyExistsError(
              `manifest name ${quoteName(name)} clashes with existing manifests in ${this.dir}: ` +
                'a name cannot be both a manifest and a folder of manifests',
            )
          : fromSystemError(err, finalPath, 'store manifest');
      }
      // The new name, and the names of any folders made for it, must reach the disk too.
      const dirsToSync = [parent];
      for (let d = parent; created !== undefined && d !== path.dirname(created); d = path.dirname(d)) {
        dirsToSync.push(path.dirname(d));
      }
      for (const d of dirsToSync) await fsyncPath(d);
    } catch (err) {
      await unlink(tempPath).catch(() => undefined); // already renamed, or never created
      throw err;
    }
  }

  /**
   * The manifest's bytes as a stream. The file is opened before this resolves, so the
   * caller reads this version even if it is replaced meanwhile; it stays open until the
   * stream is read to its end or the loop reading it exits.
   */
  async getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    const filePath = this.path(name);
    let file: FileHandle;
    try {
      file = await open(filePath, 'r');
    } catch (err) {
      if (isMissing(err)) throw this.noManifest(name);
      throw fromSystemError(err, filePath, 'open manifest');
    }
    let isFile: boolean;
    try {
      isFile = (await file.stat()).isFile();
    } catch (err) {
      await file.close();
      throw fromSystemError(err, filePath, 'open manifest');
    }
    if (!isFile) {
      // A folder of manifests, not a manifest.
      await file.close();
      throw this.noManifest(name);
    }
    return readStream(file.createReadStream(), filePath, signal);
  }

  async listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    validateManifestPrefix(prefix);
    const signal = options?.signal;
    throwIfAborted(signal);
    // Walk only the folder the prefix names for sure, then filter by the whole prefix.
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const names: string[] = [];
    const walk = async (relative: string): Promise<void> => {
      const absolute = relative === '' ? this.manifestDir : this.path(relative);
      throwIfAborted(signal);
      let entries;
      try {
        entries = await readdir(absolute, { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) return; // no such folder, or removed while listing
        throw fromSystemError(err, absolute, 'list manifests');
      }
      for (const entry of entries) {
        const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) {
          if (name.startsWith(prefix)) await walk(name);
        } else if (entry.isFile() && name.startsWith(prefix)) {
          names.push(name);
        }
      }
    };
    await walk(folder);
    const infos = await mapBounded(names, FS_CONCURRENCY, signal, async (name) => {
      const filePath = this.path(name);
      try {
        const s = await stat(filePath);
        return { name, bytes: s.size, mtimeMs: s.mtimeMs };
      } catch (err) {
        if (isMissing(err)) return undefined; // deleted while listing
        throw fromSystemError(err, filePath, 'list manifests');
      }
    });
    return infos.filter((i): i is ManifestInfo => i !== undefined).sort((a, b) => compareManifestNames(a.name, b.name));
  }

  async deleteManifest(name: string, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    throwIfAborted(options?.signal);
    const filePath = this.path(name);
    try {
      await unlink(filePath);
    } catch (err) {
      // unlink of a folder of manifests fails with EISDIR (Linux) or EPERM (macOS).
      const folder = errorCode(err) === 'EISDIR' || (errorCode(err) === 'EPERM' && (await isDirectory(filePath)));
      if (isMissing(err) || folder) throw this.noManifest(name);
      throw fromSystemError(err, filePath, 'delete manifest');
    }
    await fsyncPath(path.dirname(filePath));
    // Remove folders left empty, so that their names can become manifests. Failing (not
    // empty, refilled meanwhile) just stops: renameIntoPlace copes with a folder removed
    // under it, and an empty folder left behind is harmless.
    for (let d = path.dirname(filePath); d !== this.manifestDir; d = path.dirname(d)) {
      this.knownDirs.delete(d);
      if (!(await rmdir(d).then(() => true, () => false))) break;
    }
  }

  /**
   * Renames `from` to `to`, making `dir` (the parent of `to`) first unless known to
   * exist. Returns the top-most directory it created, if any. Raw fs errors escape.
   */
  private async renameIntoPlace(from: string, to: string, dir: string): Promise<string | undefined> {
    let created: string | undefined;
    for (let attempt = 1; ; attempt++) {
      if (!this.knownDirs.has(dir)) {
        created = (await mkdir(dir, { recursive: true })) ?? created;
        this.knownDirs.add(dir);
      }
      try {
        await rename(from, to);
        return created;
      } catch (err) {
        if (errorCode(err) !== 'ENOENT' || attempt === RENAME_ATTEMPTS) throw err;
        this.knownDirs.delete(dir); // removed meanwhile, or `from` is gone (fails again)
      }
    }
  }

  /** The file of manifest `name` (a valid manifest name). */
  path(name: string): string {
    return path.join(this.manifestDir, ...name.split('/'));
  }

  private noManifest(name: string): NotFoundError {
    return new NotFoundError(`no manifest named ${quoteName(name)} in ${this.dir}`);
  }
}
