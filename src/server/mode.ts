/**
 * A server root's mode, recorded in the root: `files` (the default: pushed targets are
 * rebuilt under `<root>/files/`) or `store-only` (`xfer serve --no-files`: chunks,
 * manifests and versions only; pulls rebuild at the client).
 *
 * The mode is the root's, not the process's: a root is served in the mode it was first
 * served in, and a start in the other is refused with one line saying why (InvalidArgumentError).
 * Either switch would surprise: a store-only root served with files would have every
 * target it holds missing from `files/` (verify reports each as damage), and a files root
 * served store-only would leave `files/` stale at the first push.
 *
 * Contract: the record is `<root>/mode`, one line (`files` or `store-only`), written once
 * atomically (temp file, fsync, link, fsync of the root: never replaced) before the server listens. A
 * root without it that has `files/` was served before the mode was recorded: `files`. A
 * record of anything else is refused (never guessed).
 */
import { randomBytes } from 'node:crypto';
import { link, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fromSystemError, InvalidArgumentError } from '../core/errors.js';
import { fsyncPath } from '../io/sync.js';
import { writeDurably } from '../store/local/fs.js';

export type ServeMode = 'files' | 'store-only';

/** The record's file name under the root. */
export const MODE_FILE = 'mode';

/** The mode recorded in `root`, or undefined for a root never served. */
export async function recordedMode(root: string): Promise<ServeMode | undefined> {
  const file = join(root, MODE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, file, 'read');
    // Served before the mode was recorded: files/ is what such a server made.
    const files = await stat(join(root, 'files')).catch(() => undefined);
    return files?.isDirectory() ? 'files' : undefined;
  }
  const mode = text.trim();
  if (mode === 'files' || mode === 'store-only') return mode;
  throw new InvalidArgumentError(`${file} records an unknown serve mode "${mode.slice(0, 40)}" (files or store-only)`);
}

/**
 * Checks that `root` may be served in `mode` and records it if the root has no mode yet.
 * InvalidArgumentError, naming the flag that matches the root, if it was served in the other.
 */
export async function claimMode(root: string, mode: ServeMode): Promise<void> {
  const recorded = await recordedMode(root);
  if (recorded === mode) {
    // A root from before the record: record it now, so that files/ going later changes nothing.
    if (!(await stat(join(root, MODE_FILE)).then(() => true, () => false))) await writeMode(root, mode);
    return;
  }
  if (recorded === 'store-only') {
    throw new InvalidArgumentError(`${root} is a store-only root (first served with --no-files; no files are rebuilt in it): serve it with --no-files, or use a new --root to have pushed files rebuilt`);
  }
  if (recorded === 'files') {
    throw new InvalidArgumentError(`${root} holds rebuilt files under files/ (first served without --no-files): serve it without --no-files, or use a new --root for a store-only server`);
  }
  // Two servers starting on a new root at once: the first record made wins, the other
  // start is checked against it as any later start is.
  if (!(await writeMode(root, mode))) return claimMode(root, mode);
}

/** Records `mode` unless a record exists (then false): link(2) of a durable temp file, never a replace. */
async function writeMode(root: string, mode: ServeMode): Promise<boolean> {
  const file = join(root, MODE_FILE);
  // A name of its own ('wx': never an existing file), or a second writer in this process
  // would rewrite the inode the first one linked as the record.
  const tmp = `${file}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeDurably(tmp, [Buffer.from(`${mode}\n`)], undefined, 0o644);
    try {
      await link(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
    await fsyncPath(root);
    return true;
  } catch (err) {
    throw fromSystemError(err, file, 'write');
  } finally {
    await rm(tmp, { force: true });
  }
}
