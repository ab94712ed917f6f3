/**
 * File-system helpers of the local store: what each of its parts needs, with errors made
 * XferErrors that name the path (core/errors.ts fromSystemError).
 */
import type { ReadStream } from 'node:fs';
import { lstat, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { throwIfAborted } from '../../core/abort.js';
import { fromSystemError } from '../../core/errors.js';
import { readUpTo } from '../../io/direct.js';

/** Stats and unlinks in flight while listing or cleaning up. */
export const FS_CONCURRENCY = 16;

/** The bytes of `file` from `position` to its end. */
export async function readFrom(file: string, position: number): Promise<Buffer> {
  if (position === 0) return readFile(file);
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const out = Buffer.allocUnsafe(Math.max(0, size - position));
    return out.subarray(0, await readUpTo(fh, out, out.length, position));
  } finally {
    await fh.close();
  }
}

export function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** ENOENT, or ENOTDIR (a path component is a file): either way, nothing is there. */
export function isMissing(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The errors of making a manifest where a file is a folder or the other way round. */
export function isNameClash(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST' || code === 'ENOTEMPTY';
}

export async function isDirectory(p: string): Promise<boolean> {
  return lstat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/**
 * Writes `source` to a new file at `filePath` (never an existing one: 'wx', created with
 * permission bits `mode` less the umask) and fsyncs it, for a file then linked or renamed
 * into place (manifests, store records, lock drafts, the serve mode record). Errors of
 * `source` pass through as they are; AbortedError once `signal` fires.
 */
export async function writeDurably(
  filePath: string,
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  signal: AbortSignal | undefined,
  mode = 0o666,
): Promise<void> {
  let file: FileHandle;
  try {
    file = await open(filePath, 'wx', mode);
  } catch (err) {
    throw fromSystemError(err, filePath, 'create file');
  }
  try {
    for await (const piece of source) {
      throwIfAborted(signal);
      await writeAll(file, piece, filePath);
    }
    throwIfAborted(signal);
    await file.sync().catch((err: unknown) => {
      throw fromSystemError(err, filePath, 'sync to disk');
    });
  } finally {
    await file.close();
  }
}

export async function writeAll(file: FileHandle, bytes: Uint8Array, filePath: string): Promise<void> {
  try {
    for (let offset = 0; offset < bytes.length; ) {
      offset += (await file.write(bytes, offset, bytes.length - offset)).bytesWritten;
    }
  } catch (err) {
    throw fromSystemError(err, filePath, 'write');
  }
}

export async function* readStream(
  stream: ReadStream,
  filePath: string,
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array> {
  try {
    for await (const piece of stream) {
      throwIfAborted(signal);
      yield piece;
    }
  } catch (err) {
    throw fromSystemError(err, filePath, 'read manifest');
  } finally {
    stream.destroy();
  }
}

/** Names in `dir`, or none if it does not exist. */
export async function readDirNames(dir: string, signal: AbortSignal | undefined): Promise<string[]> {
  throwIfAborted(signal);
  try {
    return await readdir(dir);
  } catch (err) {
    if (isMissing(err)) return [];
    throw fromSystemError(err, dir, 'list directory');
  }
}
