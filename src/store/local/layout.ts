/**
 * The local store's layout and versioning: where each part lives under the store's
 * directory, and store.json, which says what the directory is and which version of the
 * format it holds (the layout is described in ../local.ts).
 */
import { mkdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { fromSystemError, InvalidArgumentError } from '../../core/errors.js';
import { fsyncPath } from '../../io/sync.js';
import { isMissing, writeDurably } from './fs.js';
import { newTempPath } from './temp.js';

export const STORE_FORMAT = 'xfer-local-store';
export const STORE_VERSION = 2;
/** Versions this code opens: 1 (chunk files only) and 2 (packs). */
const READABLE_VERSIONS = [1, 2];
const STORE_FILE = 'store.json';

/** The parts of a store in directory `dir`. */
export interface StorePaths {
  readonly dir: string;
  /** `<dir>/packs`: pack and index files. */
  readonly packDir: string;
  /** `<dir>/chunks`: version 1 chunk files, `<algorithm>/<hh>/<64 hex>` below it. */
  readonly chunkDir: string;
  readonly manifestDir: string;
  readonly tempDir: string;
}

export function storePaths(dir: string): StorePaths {
  return { dir, packDir: path.join(dir, 'packs'), chunkDir: path.join(dir, 'chunks'), manifestDir: path.join(dir, 'manifests'), tempDir: path.join(dir, 'tmp') };
}

/** store.json's version, or undefined if there is none; throws if it is someone else's or unknown. */
export async function readStoreFile(dir: string): Promise<number | undefined> {
  const file = path.join(dir, STORE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw fromSystemError(err, file, 'read store description');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new InvalidArgumentError(`${file}: not an xfer store description (invalid JSON)`);
  }
  const { format, version } = (parsed ?? {}) as { format?: unknown; version?: unknown };
  if (format !== STORE_FORMAT) {
    throw new InvalidArgumentError(`${file}: not an xfer local store (format ${JSON.stringify(format)})`);
  }
  if (typeof version !== 'number' || !READABLE_VERSIONS.includes(version)) {
    throw new InvalidArgumentError(
      `${file}: store version ${JSON.stringify(version)} is not supported (this xfer reads versions ${READABLE_VERSIONS.join(' and ')})`,
    );
  }
  return version;
}

/** Makes the directories, then store.json last: a store without it is not a store yet. */
export async function createLayout(paths: StorePaths, knownDirs: Set<string>): Promise<void> {
  const firstCreated = await mkdir(paths.dir, { recursive: true }).catch((err: unknown) => {
    throw fromSystemError(err, paths.dir, 'create store');
  });
  for (const d of [paths.packDir, paths.manifestDir, paths.tempDir]) {
    await mkdir(d, { recursive: true }).catch((err: unknown) => {
      throw fromSystemError(err, d, 'create store');
    });
    knownDirs.add(d);
  }
  // Concurrent creators write identical descriptions; either rename wins.
  await writeStoreFile(paths);
  for (let d = paths.dir; firstCreated !== undefined && d !== path.dirname(firstCreated); d = path.dirname(d)) {
    await fsyncPath(path.dirname(d));
  }
}

/** Replaces store.json, durably, with this version's description. */
export async function writeStoreFile(paths: StorePaths): Promise<void> {
  const description = `${JSON.stringify({ format: STORE_FORMAT, version: STORE_VERSION })}\n`;
  const tempPath = newTempPath(paths.tempDir);
  const file = path.join(paths.dir, STORE_FILE);
  try {
    await writeDurably(tempPath, [Buffer.from(description)], undefined);
    await rename(tempPath, file).catch((err: unknown) => {
      throw fromSystemError(err, file, 'write store description');
    });
  } catch (err) {
    await unlink(tempPath).catch(() => undefined); // renamed, or never created
    throw err;
  }
  await fsyncPath(paths.dir);
}
