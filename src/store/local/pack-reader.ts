/**
 * Reads of committed pack bytes: a cache of open pack files (least recently used closed
 * past MAX_OPEN_PACKS) and read-ahead for readers that go through a pack in order.
 */
import type { FileHandle } from 'node:fs/promises';
import { fromSystemError } from '../../core/errors.js';
import { MiB } from '../../core/sizes.js';
import { DIRECT_ALIGN_BYTES, readRange } from '../../io/direct.js';
import { keepsLargeBuffers, type KeepsLargeBuffers } from '../../io/sys.js';
import { PACK_RECORD_HEADER_BYTES } from '../pack.js';
import { openPackForReading } from './pack-file.js';
import type { PackIndex } from './pack-index.js';

/**
 * Reads that go through a pack in order (a rebuild of what was pushed in one go, a pull)
 * read this much at once and serve the following chunks from it: measured on 2 GiB of 64
 * KiB chunks, chunk-sized O_DIRECT reads gave 920 MB/s, ... Windows lie on a grid of this
 * size (a window never crosses a multiple of it), so that readers going through the same
 * part of a pack, in whatever order, share the windows instead of each reading its own.
 */
const PACK_READ_AHEAD_BYTES = 4 * MiB;
/**
 * Read-ahead windows kept (over all packs), the least recently used dropped first: room
 * for the part of a pack that uploads side by side interleave (six 4 MiB batches at once
 * by default, more over several connections) while two fetches go through it.
 */
const READ_AHEAD_WINDOWS = 16;
/**
 * A window not read from for this long is dropped, though fewer than READ_AHEAD_WINDOWS are
 * kept: a reader going through it reads it within milliseconds, so it is one read ahead
 * for a reader that stopped, or for a few scattered reads (a server's stage taking chunks
 * uploaded ahead of it read 17 MB from a first push's packs and kept 57 MiB of windows,
 * up to 64 MiB while idle, when only their count bounded them).
 */
export const PACK_WINDOW_IDLE_MS = 1000;
/** Readers going through one pack in order at once that are told apart. */
const READ_STREAMS = 16;
/** A read this close after the previous one's end still counts as in order (a record header). */
const READ_AHEAD_GAP_BYTES = PACK_RECORD_HEADER_BYTES;
/**
 * A read that starts at most this far past where one of the last NEAR_STREAMS reads of the
 * pack ended, though not right after it, also reads the rest of its grid cell ahead: the
 * reader goes forward through records interleaved with others'. So a pack is when uploads
 * side by side interleaved their records (a push over HTTP/2, six 4 MiB batches at once):
 * the file's chunks lie five records apart, and a pull reading them in the file's order
 * made one small read each (measured: 1,000 reads and 458 MB read to serve 268 MB,
 * against 64 reads of 4 MiB for a pack in the file's order). Only the latest few ends
 * count: a reader of scattered chunks (the bases of a delta push) seldom lands this close
 * after its own last read, and a window read for one chunk costs 4 MiB.
 */
const NEAR_GAP_BYTES = 512 * 1024;
const NEAR_STREAMS = 4;
/** Packs kept open for reading at once (least recently used ones are closed). */
const MAX_OPEN_PACKS = 64;

/** A window of a pack read ahead: [start, end), within one grid cell. */
interface Window {
  readonly pack: number;
  readonly start: number;
  readonly end: number;
  readonly data: Promise<Buffer>;
  /** When it was started or last read from (Date.now()). */
  usedMs: number;
}

/** A pack open for reading. */
interface OpenPack {
  readonly fh: FileHandle;
  readonly direct: boolean;
  users: number;
  closing: boolean;
}

export class PackReader implements KeepsLargeBuffers {
  private readonly openPacks = new Map<number, OpenPack>();
  /** Windows read ahead, least recently used first. */
  private readonly readAhead: Window[] = [];
  /** Where the latest reads of each pack ended (oldest first), to tell reads in order. */
  private readonly recentReadEnds = new Map<number, number[]>();

  constructor(
    private readonly packs: PackIndex,
    private readonly directIo: boolean,
    /**
     * Bytes of pack `pack` that never change again (PackWriter.settledBytes while a writer
     * of this store still appends to it, else Infinity): reads ahead stop there.
     */
    private readonly settledBytes: (pack: number) => number,
  ) {
    this.unkeep = keepsLargeBuffers(this);
  }

  private readonly unkeep: () => void;

  /** The process's large buffers fell idle: the windows read ahead go (a later read reads again). */
  relinquish(): void {
    this.readAhead.length = 0;
  }

  /** Drops the windows unused for PACK_WINDOW_IDLE_MS (readAhead is in order of use, oldest first). */
  private dropIdleWindows(now: number): void {
    let n = 0;
    while (n < this.readAhead.length && now - this.readAhead[n]!.usedMs >= PACK_WINDOW_IDLE_MS) n++;
    if (n > 0) this.readAhead.splice(0, n);
  }

  /**
   * Reads from a committed pack through a cached read handle. A read inside a read-ahead
   * window returns a view of the window, not a copy: windows are never reused, and copying
   * every chunk out cost a server's 2 GiB rebuild 0.4 s of allocation and as much again in
   * garbage collection. The view keeps its window (PACK_READ_AHEAD_BYTES) alive for as long
   * as the caller holds it.
   */
  async read(pack: number, offset: number, length: number): Promise<Buffer> {
    const end = offset + length;
    const now = Date.now();
    this.dropIdleWindows(now);
    const follows = this.followsRecentRead(pack, offset, end);
    const inOrder = follows === 'next';
    const i = this.readAhead.findIndex((w) => w.pack === pack && w.start <= offset && end <= w.end);
    if (i >= 0) {
      const w = this.readAhead[i]!;
      // Most recently used last.
      this.readAhead.splice(i, 1);
      this.readAhead.push(w);
      w.usedMs = now;
      const data = await w.data;
      if (data.length >= end - w.start) {
        // A read in order inside a whole window: the reader goes on through the pack, so the
        // next window is read while this one is used (reading and hashing overlap).
        if (inOrder && data.length === w.end - w.start) this.startWindow(pack, w.end);
        return data.subarray(offset - w.start, end - w.start);
      }
      // The pack ends early: the exact read below says so.
    } else {
      const cell = offset - (offset % PACK_READ_AHEAD_BYTES);
      if (end > cell + PACK_READ_AHEAD_BYTES) {
        // A record across the end of a cell: the next window starts at that end (started
        // already by the reads before, or now), and this record alone is read exactly. A
        // window from the record's own aligned start would cover nearly all of the next one
        // again: with records of 64 KiB almost every window ends inside one, so every byte of
        // a pack read in order was read twice (measured: 555 MB read to serve 268 MB).
        if (inOrder) this.startWindow(pack, cell + PACK_READ_AHEAD_BYTES);
      } else {
        // In order (the next record right after the last one read), or a little past it:
        // read the rest of the cell ahead from here in one big read.
        if (follows !== undefined) {
          const w = this.startWindow(pack, offset - (offset % DIRECT_ALIGN_BYTES));
          if (w !== undefined && w.start <= offset && end <= w.end) {
            const data = await w.data;
            if (data.length >= end - w.start) return data.subarray(offset - w.start, end - w.start);
          }
        }
      }
    }
    return this.readExactly(pack, offset, length);
  }

  /**
   * The read-ahead window of `pack` from `start` (aligned), started unless one covers it:
   * up to the end of its grid cell or the next window in it, never past the pack's settled
   * bytes; undefined if none is left.
   */
  private startWindow(pack: number, start: number): Window | undefined {
    const cellEnd = start - (start % PACK_READ_AHEAD_BYTES) + PACK_READ_AHEAD_BYTES;
    let end = cellEnd;
    for (const w of this.readAhead) {
      if (w.pack !== pack) continue;
      if (w.start <= start && start < w.end) return w;
      if (w.start > start && w.start < end) end = w.start; // not read twice
    }
    // A committed pack's settled bytes are Infinity (Infinity % n is NaN: kept apart, as a
    // NaN end once turned every read ahead of a committed pack off). Its window may run past
    // the pack's end: it comes back short, and reads past it are read exactly.
    const settled = this.settledBytes(pack);
    const limit = settled === Infinity ? Infinity : settled - (settled % DIRECT_ALIGN_BYTES);
    const windowEnd = Math.min(end, limit);
    if (windowEnd <= start) return undefined;
    const w: Window = { pack, start, end: windowEnd, data: this.readExactly(pack, start, windowEnd - start), usedMs: Date.now() };
    w.data.catch(() => {}); // awaited by the reads it covers
    this.readAhead.push(w);
    if (this.readAhead.length > READ_AHEAD_WINDOWS) this.readAhead.shift();
    return w;
  }

  /**
   * Whether [offset, end) starts where a recent read of the pack ended (give or take a
   * record header: 'next'), or a little past where one of the latest did (NEAR_GAP_BYTES:
   * 'near'), remembering where this one ends. Several readers may go through a pack in
   * order at once (a pull's concurrent fetch batches), so READ_STREAMS ends are kept per
   * pack, the latest last.
   */
  private followsRecentRead(pack: number, offset: number, end: number): 'next' | 'near' | undefined {
    let ends = this.recentReadEnds.get(pack);
    if (ends === undefined) {
      ends = [];
      this.recentReadEnds.set(pack, ends);
    }
    let follows: 'next' | 'near' | undefined;
    let i = ends.findIndex((e) => offset >= e && offset - e <= READ_AHEAD_GAP_BYTES);
    if (i >= 0) follows = 'next';
    else {
      for (let k = Math.max(0, ends.length - NEAR_STREAMS); k < ends.length; k++) {
        const gap = offset - ends[k]!;
        if (gap >= 0 && gap <= NEAR_GAP_BYTES && (i < 0 || gap < offset - ends[i]!)) i = k;
      }
      if (i >= 0) follows = 'near';
    }
    if (i >= 0) ends.splice(i, 1);
    else if (ends.length >= READ_STREAMS) ends.shift();
    ends.push(end);
    return follows;
  }

  private async readExactly(pack: number, offset: number, length: number): Promise<Buffer> {
    let p = this.openPacks.get(pack);
    if (p === undefined) {
      const file = this.packs.packPath(pack);
      let opened: { fh: FileHandle; direct: boolean };
      try {
        opened = await openPackForReading(file, this.directIo);
      } catch (err) {
        throw fromSystemError(err, file, 'open pack');
      }
      p = this.openPacks.get(pack); // opened by a concurrent read meanwhile
      if (p) await opened.fh.close().catch(() => {});
      else {
        p = { ...opened, users: 0, closing: false };
        this.openPacks.set(pack, p);
        this.closeIdlePacks();
      }
    } else {
      // Most recently used last.
      this.openPacks.delete(pack);
      this.openPacks.set(pack, p);
    }
    p.users++;
    try {
      return await readRange(p.fh, p.direct, offset, length);
    } catch (err) {
      throw fromSystemError(err, this.packs.packPath(pack), 'read pack');
    } finally {
      p.users--;
      if (p.closing && p.users === 0) await p.fh.close().catch(() => {});
    }
  }

  private closeIdlePacks(): void {
    for (const [n, p] of this.openPacks) {
      if (this.openPacks.size <= MAX_OPEN_PACKS) break;
      this.openPacks.delete(n);
      p.closing = true;
      if (p.users === 0) void p.fh.close().catch(() => {});
    }
  }

  /** Closes pack `pack`'s file (once no read uses it) and drops what was read ahead of it: a gc deleted it. */
  forget(pack: number): void {
    const p = this.openPacks.get(pack);
    if (p !== undefined) {
      this.openPacks.delete(pack);
      p.closing = true;
      if (p.users === 0) void p.fh.close().catch(() => {});
    }
    for (let i = this.readAhead.length - 1; i >= 0; i--) if (this.readAhead[i]!.pack === pack) this.readAhead.splice(i, 1);
    this.recentReadEnds.delete(pack);
  }

  /** Closes every pack file (each once no read uses it). */
  async close(): Promise<void> {
    this.unkeep();
    this.readAhead.length = 0;
    for (const p of this.openPacks.values()) {
      p.closing = true;
      if (p.users === 0) await p.fh.close().catch(() => {});
    }
    this.openPacks.clear();
  }
}
