import { execFile } from 'node:child_process';

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
