/**
 * BLAKE3 chaining values of zero spans, kept in the user's cache (core/cache-dir.ts) across
 * processes.
 *
 * Why: a file's digest is that of its logical content, holes included, and BLAKE3 mixes
 * each 1 KiB chunk's position into its hash, so zeros at different offsets hash
 * differently and a hole cannot be skipped: a 64 GiB sparse image costs 64 GiB of hashing
 * (7.4 s on two cores here) at every scan, at the server that checks its rebuild, and at
 * every pull. But the CV of ZERO_CV_SPAN_BYTES zero bytes at a given offset is a pure
 * function of that offset: computed once on a machine, it serves every later scan, rebuild
 * and pull of any sparse file, whoever's. A re-push of the image then hashes its data only.
 *
 * The file holds one entry per aligned span, at index offset / ZERO_CV_SPAN_BYTES: the CV
 * and a tag (BLAKE3 of a label, the index and the CV). An entry is used only if its tag
 * matches, so a torn or damaged entry, or one never written (zeros), is a miss, never a
 * wrong CV. Anything wrong with the file or its directory only turns the cache off for
 * the process. Two processes writing an entry write the same bytes.
 *
 * In front of the file, a memo of the process's own (any span, not only aligned 8 MiB ones):
 * a local push scans and rebuilds the same holes in one process. Behind it, the table the
 * package ships (native/blake3-zero-cv-8MiB.bin, made by native/gen-zero-cv-table.mjs):
 * the spans of the first 256 GiB, so that even a first scan of a sparse image on a new
 * machine hashes its data only. It is used only if its digest is ZERO_CV_TABLE_DIGEST.
 *
 * Used on the main thread (synchronous 64-byte reads and writes: a scan looks up one per
 * 8 MiB segment); scan workers get a span's CV in their task.
 */
import { closeSync, constants, mkdirSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { userCacheDir } from '../core/cache-dir.js';
import { GiB, MiB } from '../core/sizes.js';
import { digestOf } from './digest.js';

/** The span cached: the scan's segment and TreeHasher's span (8192 BLAKE3 chunks). */
export const ZERO_CV_SPAN_BYTES = 8 * MiB;
/** Offsets cached, at most: 2 Mi entries, a file of 128 MiB at most. */
export const ZERO_CV_CACHE_MAX_OFFSET_BYTES = 16 * 1024 * GiB;
const CV_BYTES = 32;
const ENTRY_BYTES = 2 * CV_BYTES;
/** Spans the shipped table holds: offsets below 256 GiB (1 MiB of CVs). */
export const ZERO_CV_TABLE_ENTRIES = 32768;
/** BLAKE3 of the shipped table: anything else (damaged, another version's) is not used. */
const ZERO_CV_TABLE_DIGEST = '288917423816728da3991126491b7d7fd186dda67f73950489f86340d8c37fd9';
const ZERO_CV_TABLE_URL = new URL('../../../native/blake3-zero-cv-8MiB.bin', import.meta.url);
const TAG_LABEL = Buffer.from('xfer blake3 zero-span CV v1\0');
/** The file's name says its format and span, so another version's file is never read. */
const FILE_NAME = 'blake3-zero-cv-8MiB-v1.bin';

interface CacheFile {
  readonly path: string;
  /** Open for reading and writing; undefined until the file exists (created by the first keep). */
  fd: number | undefined;
  /**
   * Not there when last looked for: lookups do not try again (one failed open per lookup
   * was 8,192 per 64 GiB scanned) until a keep creates it. One another process creates
   * meanwhile is found by the next process.
   */
  absent?: boolean;
}

/** undefined: not opened yet; null: off for this process. */
let cache: CacheFile | null | undefined;

/**
 * Zero spans' CVs remembered in this process, at most (4096 cover 32 GiB of 8 MiB holes).
 * The oldest goes first: the rebuild that may reuse them trails the scan by a window.
 */
const ZERO_CV_MEMO_ENTRIES = 4096;
const memo = new Map<string, Uint8Array>();

function memoize(key: string, cv: Uint8Array): void {
  memo.delete(key);
  if (memo.size >= ZERO_CV_MEMO_ENTRIES) memo.delete(memo.keys().next().value!);
  memo.set(key, cv);
}

/**
 * Remembers the CV of `length` zero bytes at `offset`, computed by the caller, in this
 * process and in the user's cache (written once: not again when the process had it).
 */
export function rememberZeroCv(offset: number, length: number, cv: Uint8Array): void {
  const key = `${offset}:${length}`;
  const had = memo.get(key);
  memoize(key, cv);
  if (!had || !Buffer.from(had).equals(cv)) keepZeroCv(offset, length, cv);
}

/** The CV of `length` zero bytes at `offset` if this process, the user's cache or the shipped table has it. */
export function knownZeroCv(offset: number, length: number): Uint8Array | undefined {
  const key = `${offset}:${length}`;
  const remembered = memo.get(key);
  if (remembered) return remembered;
  const found = cachedZeroCv(offset, length) ?? shippedZeroCv(offset, length);
  if (found) memoize(key, found);
  return found;
}

/** undefined: not read yet; null: missing, damaged, or turned off. */
let table: Uint8Array | null | undefined;

/** The CV of `length` zero bytes at `offset` from the table the package ships, if it holds it. */
export function shippedZeroCv(offset: number, length: number): Uint8Array | undefined {
  const index = indexOf(offset, length);
  if (index < 0 || index >= ZERO_CV_TABLE_ENTRIES) return undefined;
  if (table === undefined) {
    table = null;
    if (process.env.XFER_NO_ZERO_CV_TABLE !== '1') {
      try {
        const bytes = readFileSync(ZERO_CV_TABLE_URL);
        if (bytes.length === ZERO_CV_TABLE_ENTRIES * CV_BYTES && digestOf('blake3', bytes).toString('hex') === ZERO_CV_TABLE_DIGEST) table = bytes;
      } catch {
        // not shipped (a partial install): every span is hashed, as before
      }
    }
  }
  return table ? Uint8Array.from(table.subarray(index * CV_BYTES, (index + 1) * CV_BYTES)) : undefined;
}

/** Turns the shipped table off (false) or lets it be read again (true) in this process. For tests. */
export function useShippedZeroCvs(on: boolean): void {
  table = on ? undefined : null;
  memo.clear();
}

/**
 * Points the cache at `dir` (a file in it), or turns it off (null) for this process; by
 * default it is in the user's cache directory, as found at first use. Forgets the
 * process's memo too. For tests.
 */
export function setZeroCvCacheDir(dir: string | null): void {
  closeCache();
  memo.clear();
  cache = dir === null ? null : { path: join(dir, FILE_NAME), fd: undefined };
}

function cacheFile(): CacheFile | null {
  if (cache === undefined) {
    const dir = userCacheDir();
    cache = dir ? { path: join(dir, 'zero-cv', FILE_NAME), fd: undefined } : null;
  }
  return cache;
}

/** The entry's index, or -1 for a span the cache does not hold (unaligned, partial, too far). */
function indexOf(offset: number, length: number): number {
  if (length !== ZERO_CV_SPAN_BYTES || offset % ZERO_CV_SPAN_BYTES !== 0 || offset < 0 || offset >= ZERO_CV_CACHE_MAX_OFFSET_BYTES) return -1;
  return offset / ZERO_CV_SPAN_BYTES;
}

function tagOf(index: number, cv: Uint8Array): Buffer {
  const input = Buffer.alloc(TAG_LABEL.length + 8 + CV_BYTES);
  TAG_LABEL.copy(input);
  input.writeBigUInt64LE(BigInt(index), TAG_LABEL.length);
  input.set(cv, TAG_LABEL.length + 8);
  return digestOf('blake3', input);
}

/** Closes the cache file if it is open (a failure to close changes nothing here). */
function closeCache(): void {
  if (cache?.fd === undefined) return;
  try {
    closeSync(cache.fd);
  } catch {
    // nothing to do
  }
}

/** Turns the cache off for this process (something was wrong with it). */
function off(): void {
  closeCache();
  cache = null;
}

function openFor(file: CacheFile, create: boolean): number | undefined {
  if (file.fd !== undefined) return file.fd;
  if (!create && file.absent) return undefined;
  try {
    if (create) mkdirSync(join(file.path, '..'), { recursive: true, mode: 0o700 });
    file.fd = openSync(file.path, constants.O_RDWR | (create ? constants.O_CREAT : 0), 0o600);
    file.absent = false;
    return file.fd;
  } catch (err) {
    if (!create && (err as NodeJS.ErrnoException).code === 'ENOENT') {
      file.absent = true;
      return undefined;
    }
    off();
    return undefined;
  }
}

/** The CV of `length` zero bytes at `offset`, if the file holds it. */
export function cachedZeroCv(offset: number, length: number): Uint8Array | undefined {
  const index = indexOf(offset, length);
  const file = index < 0 ? null : cacheFile();
  if (!file) return undefined;
  const fd = openFor(file, false);
  if (fd === undefined) return undefined;
  const entry = Buffer.alloc(ENTRY_BYTES);
  try {
    if (readSync(fd, entry, 0, ENTRY_BYTES, index * ENTRY_BYTES) !== ENTRY_BYTES) return undefined;
  } catch {
    off();
    return undefined;
  }
  const cv = entry.subarray(0, CV_BYTES);
  return tagOf(index, cv).equals(entry.subarray(CV_BYTES)) ? new Uint8Array(cv) : undefined;
}

/** Keeps the CV of `length` zero bytes at `offset`, computed by the caller, in the file (best effort). */
export function keepZeroCv(offset: number, length: number, cv: Uint8Array): void {
  const index = indexOf(offset, length);
  const file = index < 0 || cv.length !== CV_BYTES ? null : cacheFile();
  if (!file) return;
  const fd = openFor(file, true);
  if (fd === undefined) return;
  const entry = Buffer.alloc(ENTRY_BYTES);
  entry.set(cv);
  tagOf(index, cv).copy(entry, CV_BYTES);
  try {
    writeSync(fd, entry, 0, ENTRY_BYTES, index * ENTRY_BYTES);
  } catch {
    off();
  }
}
