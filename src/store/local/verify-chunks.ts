/**
 * Reading many committed chunks for a check (LocalStore.verifyChunks, `verify --read-data`)
 * in the order the packs hold them: sorted by pack and offset, neighbouring records read in
 * one window, windows read into two buffers reused for the whole run, the next window read
 * (on libuv's threads) while the chunks of this one are hashed (on the caller's).
 *
 * Reads go through the page cache, not O_DIRECT as the store's other reads may: a store
 * read again soon (a verify after a push, the next scheduled verify of a small store) is
 * then read at memory speed instead of the device's.
 *
 * Why (issue 16's bar: 1 GB/s on 2 GiB, page cache warm): through get() one chunk at a time,
 * each read-ahead window a new 4 MiB Buffer, a 2 GiB verify cost 3.4 s of CPU, more than
 * half of it allocation and garbage collection; BLAKE3 itself is ~0.45 s of one core. This
 * way the whole verify costs 1.0-1.2 s of CPU (the copies out of the page cache ~0.4 s of
 * it, on libuv's threads). Hashing on worker threads as well (the bytes in shared
 * buffers) measured no faster on 2 cores, for more CPU: reading and hashing already keep
 * both busy.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { throwIfAborted } from '../../core/abort.js';
import { KiB, MiB } from '../../core/sizes.js';
import { largeBuffer } from '../../io/sys.js';
import { readUpTo } from '../../io/direct.js';

/**
 * Bytes read at once, at most (unless one chunk is larger: its window is the chunk). Small,
 * so that the bytes a read copies are hashed while still in the CPU's caches: 2 GiB of 64
 * KiB chunks in the page cache cost about 1.0 s of CPU (user and system) in 8 MiB windows,
 * 0.7 s in 1 MiB ones (1 MiB of L2 per core here), reads and hashing included.
 */
export const PACK_CHECK_WINDOW_BYTES = 1 * MiB;
/**
 * Two records at most this far apart are read in one window, the bytes between them read
 * and skipped (a subset's sparse records): cheaper than another read.
 */
export const PACK_CHECK_GAP_BYTES = 128 * KiB;

/** A committed record to check: chunk `i` of the caller's list, at `offset` of pack `pack`. */
export interface PackPlace {
  readonly i: number;
  readonly pack: number;
  readonly offset: number;
  readonly length: number;
}

/** Records of one pack read in one go: bytes [start, end) of the pack. */
interface Window {
  readonly pack: number;
  readonly start: number;
  end: number;
  readonly places: PackPlace[];
}

export interface PackOrderOptions {
  readonly packPath: (pack: number) => string;
  readonly signal?: AbortSignal;
  /**
   * Told each record's bytes, a view valid only until the returned promise settles (or
   * this returns, if nothing is returned); undefined when the pack ends before the record does.
   */
  readonly onRecord: (place: PackPlace, bytes: Buffer | undefined) => void | Promise<void>;
  /** Told the records of a window that could not be read (`err`: the system error, as thrown); may throw. */
  readonly onUnreadable: (places: readonly PackPlace[], err: unknown) => void | Promise<void>;
}

/** Waits for every promise to settle, then throws the first rejection (Promise.all would throw while others still run). */
async function settleAll(promises: readonly Promise<void>[]): Promise<void> {
  const outcomes = await Promise.allSettled(promises);
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Cuts the places (sorted here, in place) into windows. */
function windowsOf(places: PackPlace[]): Window[] {
  places.sort((a, b) => a.pack - b.pack || a.offset - b.offset);
  const windows: Window[] = [];
  let w: Window | undefined;
  for (const p of places) {
    const end = p.offset + p.length;
    if (w !== undefined && w.pack === p.pack && p.offset - w.end <= PACK_CHECK_GAP_BYTES && end - w.start <= PACK_CHECK_WINDOW_BYTES) {
      w.places.push(p);
      w.end = Math.max(w.end, end);
      continue;
    }
    w = { pack: p.pack, start: p.offset, end, places: [p] };
    windows.push(w);
  }
  return windows;
}

/**
 * Reads every place's bytes in pack order and hands them to onRecord (see the top). Each
 * place is told to onRecord or onUnreadable exactly once, unless an abort or a throw from
 * them ends the run first. Pack files are opened here and closed before this settles.
 */
export async function readInPackOrder(places: PackPlace[], options: PackOrderOptions): Promise<void> {
  const { signal } = options;
  const windows = windowsOf(places);
  if (windows.length === 0) return;
  let bufferBytes = 0;
  for (const w of windows) bufferBytes = Math.max(bufferBytes, w.end - w.start);
  const buffers = [largeBuffer(bufferBytes), largeBuffer(bufferBytes)];
  /** Open packs: at most the one being checked and the one being read ahead. */
  const files = new Map<number, Promise<FileHandle>>();
  const close = async (pack: number) => {
    const f = files.get(pack);
    files.delete(pack);
    await f?.then((fh) => fh.close()).catch(() => {});
  };
  const read = async (w: Window, buf: Buffer): Promise<number> => {
    let f = files.get(w.pack);
    if (f === undefined) {
      f = open(options.packPath(w.pack), 'r');
      files.set(w.pack, f);
    }
    return readUpTo(await f, buf, w.end - w.start, w.start);
  };
  /** The read in flight of each window (settled: bytes read, or the error). */
  const reading = (k: number) => read(windows[k]!, buffers[k % 2]!).then((n) => ({ n }), (err: unknown) => ({ err }));
  let next = reading(0);
  try {
    for (let k = 0; k < windows.length; k++) {
      throwIfAborted(signal);
      const w = windows[k]!;
      const got = await next;
      // The next window is read into the other buffer while this one's chunks are hashed.
      next = k + 1 < windows.length ? reading(k + 1) : Promise.resolve({ n: 0 });
      if ('err' in got) await options.onUnreadable(w.places, got.err);
      else {
        const buf = buffers[k % 2]!;
        // The window's records are told at once and their promises awaited together (the
        // buffer is read into again only two windows on): a damaged pack's chunks are set
        // aside with one durable append, not one each.
        const told: Promise<void>[] = [];
        for (const p of w.places) {
          const rel = p.offset - w.start;
          const r = options.onRecord(p, rel + p.length <= got.n ? buf.subarray(rel, rel + p.length) : undefined);
          if (r !== undefined) told.push(r);
        }
        await settleAll(told);
      }
      if (k + 1 === windows.length || windows[k + 1]!.pack !== w.pack) await close(w.pack);
    }
  } finally {
    await next; // never rejects; its buffer and file are not used after this
    for (const pack of [...files.keys()]) await close(pack);
  }
}
