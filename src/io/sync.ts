import { execFile } from 'node:child_process';
import { open, type FileHandle } from 'node:fs/promises';
import { fromSystemError } from '../core/errors.js';

/**
 * fsync of a file or directory by path (a directory's: makes names inside it durable).
 * Errors name `shown` (default `p`): a staging copy is reported as the target it becomes.
 */
export async function fsyncPath(p: string, shown = p): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(p, 'r');
    await fh.sync();
  } catch (err) {
    throw fromSystemError(err, shown, 'sync to disk');
  } finally {
    await fh?.close();
  }
}

/**
 * syncfs(2) of the filesystem holding `dir`, by running `sync -f <dir>` (coreutils >= 8.24,
 * busybox): one call makes every dirty page and name on it durable, far cheaper than an
 * fsync per file when there are many small ones. Resolves true on success; false when it
 * is unavailable or fails (an I/O error then shows again in the caller's fsync fallback).
 */
export function syncFilesystem(dir: string): Promise<boolean> {
  if (process.platform !== 'linux') return Promise.resolve(false);
  return new Promise((resolve) => {
    execFile('sync', ['-f', dir], (err) => resolve(!err));
  });
}
