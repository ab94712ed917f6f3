/**
 * Durable writes through O_DIRECT.
 *
 * Why: on the project's machine (ext4 on a virtio disk) page-cache writeback is the
 * bottleneck of every durable write: `dd bs=4M conv=fdatasync` of 2 GiB runs at 313-457
 * MB/s, the same with `oflag=direct` at 1.4-1.5 GB/s. A push or pull must make what it
 * writes durable, so big sequential files are written in aligned blocks with O_DIRECT
 * (and still fdatasync'ed, which then only flushes the device cache and the metadata).
 *
 * O_DIRECT needs buffers, file offsets and lengths aligned to the device's logical block
 * size; DIRECT_ALIGN_BYTES (4 KiB) satisfies every common device. JavaScript cannot see a
 * buffer's address, so the native addon tells it (addressMod) and alignedBuffer takes an
 * aligned view of a slightly larger allocation. Without the addon, off Linux, on a
 * filesystem that refuses O_DIRECT (tmpfs), or with XFER_NO_DIRECT_IO=1, callers fall back
 * to ordinary buffered writes: same results, slower to make durable.
 */
import { isZeroBytesView, nonZeroRuns } from '../chunker/zero.js';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { VerifyFailedError, XferError } from '../core/errors.js';
import { MiB } from '../core/sizes.js';
import { loadAddon } from '../native/addon.js';
import { hugeMapping, keepsLargeBuffers, LARGE_BUFFER_MIN_BYTES, largeBuffer, recycleLargeBuffer, type KeepsLargeBuffers } from './sys.js';

/** Alignment of O_DIRECT buffers, offsets and lengths. */
export const DIRECT_ALIGN_BYTES = 4096;
/** Size of one O_DIRECT write of a DirectBlockWriter. */
export const DIRECT_BLOCK_BYTES = 4 * MiB;
/** Files smaller than this are written buffered: O_DIRECT only pays off for bulk data. */
export const DIRECT_MIN_FILE_BYTES = 8 * MiB;

/** Whether O_DIRECT writes can be used here (the filesystem may still refuse: see openDirect). */
export function directIoAvailable(): boolean {
  return (
    process.platform === 'linux' &&
    constants.O_DIRECT !== undefined &&
    process.env.XFER_NO_DIRECT_IO !== '1' &&
    typeof loadAddon()?.addressMod === 'function'
  );
}

export function alignUp(n: number): number {
  return Math.ceil(n / DIRECT_ALIGN_BYTES) * DIRECT_ALIGN_BYTES;
}

/**
 * A Buffer of `bytes` (a multiple of DIRECT_ALIGN_BYTES) whose first byte is aligned. One
 * of LARGE_BUFFER_MIN_BYTES or more is a huge-page mapping of its own (io/sys.ts
 * largeBuffer: fresh pages cost far less to fault in), which starts on a 2 MiB boundary.
 */
export function alignedBuffer(bytes: number): Buffer {
  const addon = loadAddon();
  const addressMod = addon?.addressMod;
  if (!addressMod) throw new XferError('XFER_INTERNAL', 'alignedBuffer needs the native addon');
  const huge = bytes >= LARGE_BUFFER_MIN_BYTES ? hugeMapping(bytes, addon) : undefined;
  if (huge) return huge;
  const raw = Buffer.allocUnsafeSlow(bytes + DIRECT_ALIGN_BYTES);
  const mod = addressMod(raw, DIRECT_ALIGN_BYTES);
  const start = mod === 0 ? 0 : DIRECT_ALIGN_BYTES - mod;
  return raw.subarray(start, start + bytes);
}

/**
 * Opens an existing file with O_DIRECT, for writing ('w') or reading ('r'); undefined when
 * direct I/O is unavailable or the filesystem refuses O_DIRECT (EINVAL). Other errors are
 * thrown as they are. (Cold reads on the project's VM: 556 MB/s through the page cache,
 * 1.8 GB/s with O_DIRECT; a file already cached reads faster buffered, ~9 GB/s.)
 */
export async function openDirect(path: string, mode: 'r' | 'w'): Promise<FileHandle | undefined> {
  if (!directIoAvailable()) return undefined;
  try {
    return await open(path, (mode === 'w' ? constants.O_WRONLY : constants.O_RDONLY) | constants.O_DIRECT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
    throw err;
  }
}

/**
 * Reads into buf[0, length) from file offset `position` until it is full or the file ends;
 * returns the bytes read (fewer than `length` only at the end of the file).
 */
export async function readUpTo(fh: FileHandle, buf: Uint8Array, length: number, position: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/**
 * Reads [offset, offset + length) of a file through `fh` into a new Buffer; with O_DIRECT
 * (`direct`: fh was opened with it), through an aligned buffer covering the range, of which
 * the bytes asked are a view. Returns fewer bytes if the file ends first.
 */
export async function readRange(fh: FileHandle, direct: boolean, offset: number, length: number): Promise<Buffer> {
  if (!direct) {
    const out = length >= LARGE_BUFFER_MIN_BYTES ? largeBuffer(length) : Buffer.allocUnsafe(length);
    return out.subarray(0, await readUpTo(fh, out, length, offset));
  }
  const start = offset - (offset % DIRECT_ALIGN_BYTES);
  const span = alignUp(offset + length) - start;
  const buf = alignedBuffer(span);
  const got = await readUpTo(fh, buf, span, start);
  const skip = offset - start;
  return buf.subarray(skip, Math.max(skip, Math.min(got, skip + length)));
}

interface Block {
  /**
   * Its bytes, taken at the first write of anything but known zeros: a block written with
   * known zeros only needs none (a sparse image's holes, rebuilt as runs of zero chunks
   * far ahead of its data, would otherwise hold a 4 MiB buffer each while they wait).
   */
  buf?: Buffer;
  /**
   * Bytes of the block that belong to the file (DIRECT_BLOCK_BYTES but for the last one;
   * of a file of unknown size, set when finish() learns it).
   */
  length: number;
  filled: number;
  /** Ranges [from, to) of the block (offsets in it) whose bytes an older file holds at the same offsets (see CloneRange). */
  shared?: Array<[number, number]>;
  /** Ranges [from, to) of the block written as known zeros (isZeroBytesView): not copied into buf. */
  zeros?: Array<[number, number]>;
  /** Bytes of the block in `zeros`. */
  zeroBytes: number;
}

/**
 * Shares the bytes of [offset, offset + length) of the file (a range an older file holds
 * identically at the same offsets) instead of writing them: a reflink. Returns the part it
 * shared, as [from, to) file offsets (aligned to the file system's blocks, within the
 * range), or undefined when it shared nothing; the writer writes the rest.
 */
export type CloneRange = (offset: number, length: number) => readonly [number, number] | undefined;

/**
 * Writes a file of known size through O_DIRECT from positional writes that arrive in any
 * order (chunks completing out of order). Each write is copied into its
 * DIRECT_BLOCK_BYTES block; a block goes to disk, in one aligned write, once every byte of
 * it has been written. The contract that makes this safe: every byte of [0, size) is
 * written exactly once (callers write chunks they found already in place, too), so a
 * block never reaches the disk with a hole. The last block is padded with zeros to the
 * alignment; the caller truncates the file to its size afterwards. Memory: one block per
 * block with writes in progress (the writes in flight bound that), buffers are reused.
 * A stream's size is not known until it ends: made with size Infinity, the writer learns
 * it at finish().
 */
export class DirectBlockWriter {
  private readonly blocks = new Map<number, Block>();
  private readonly free: Buffer[] = [];

  constructor(
    private readonly fh: FileHandle,
    private readonly sizeBytes: number,
    /**
     * From this file offset on the file is a hole (nothing written there yet: a new file,
     * or beyond what an interrupted run left): all-zero 4 KiB pieces of blocks there are
     * not written, so zeros stay holes (a sparse result; the caller truncates to the size).
     */
    private readonly sparseFrom = Infinity,
    /** Where set, ranges written as `shared` are reflinked from an older file, not written. */
    private readonly clone?: CloneRange,
  ) {}

  /**
   * Copies `data` into its blocks; resolves once the blocks it completed are on disk.
   * `shared`: an older file holds these bytes at the same offsets (see CloneRange).
   * Known zeros (a view of zeroBytes(), see isZeroBytesView) are not copied, only noted: a
   * block that is nothing else is not written at all where the file is a hole (sparseFrom).
   */
  async write(data: Uint8Array, position: number, shared = false): Promise<void> {
    if (position + data.length > this.sizeBytes) {
      throw new VerifyFailedError(`${data.length} bytes at offset ${position} are beyond the file's declared size ${this.sizeBytes}`);
    }
    const knownZeros = isZeroBytesView(data);
    const full: number[] = [];
    for (let done = 0; done < data.length; ) {
      const pos = position + done;
      const index = Math.floor(pos / DIRECT_BLOCK_BYTES);
      const block = this.blockAt(index);
      const at = pos - index * DIRECT_BLOCK_BYTES;
      const n = Math.min(data.length - done, block.length - at);
      if (knownZeros) {
        (block.zeros ??= []).push([at, at + n]);
        block.zeroBytes += n;
      } else this.bufferOf(block).set(data.subarray(done, done + n), at);
      block.filled += n;
      if (shared && this.clone) {
        block.shared ??= [];
        block.shared.push([at, at + n]);
      }
      done += n;
      if (block.filled === block.length) full.push(index);
    }
    for (const index of full) await this.flush(index);
  }

  /**
   * Checks that every block went to disk (the write-once contract held) and closes. A
   * writer made for a size not known in advance (Infinity: a stream) learns it here
   * (`finalSize`) and writes its last, partial block.
   */
  async finish(finalSize?: number): Promise<void> {
    if (finalSize !== undefined && this.sizeBytes === Infinity) {
      const last = Math.floor(finalSize / DIRECT_BLOCK_BYTES);
      const tail = this.blocks.get(last);
      const tailBytes = finalSize - last * DIRECT_BLOCK_BYTES;
      if (tail && tail.filled === tailBytes) {
        tail.length = tailBytes;
        try {
          await this.flush(last);
        } catch (err) {
          await this.close();
          throw err;
        }
      }
    }
    const holes = [...this.blocks.keys()];
    await this.close();
    if (holes.length > 0) throw new XferError('XFER_INTERNAL', `direct writer: block ${holes[0]} was never completely written`);
  }

  async close(): Promise<void> {
    // Blocks still in the map may have a write in flight: only the free ones are given back.
    this.blocks.clear();
    for (const b of this.free.splice(0)) recycleLargeBuffer(b);
    await this.fh.close().catch(() => {});
  }

  private blockAt(index: number): Block {
    let block = this.blocks.get(index);
    if (!block) {
      const length = Math.min(DIRECT_BLOCK_BYTES, this.sizeBytes - index * DIRECT_BLOCK_BYTES);
      block = { length, filled: 0, zeroBytes: 0 };
      this.blocks.set(index, block);
    }
    return block;
  }

  private async flush(index: number): Promise<void> {
    const block = this.blocks.get(index)!;
    this.blocks.delete(index);
    const at = index * DIRECT_BLOCK_BYTES;
    // Nothing but known zeros where the file is a hole: it stays one (the caller truncates
    // the file to its size), without filling or comparing the buffer.
    if (block.zeroBytes === block.length && at >= this.sparseFrom) {
      if (block.buf) this.free.push(block.buf);
      return;
    }
    const buf = this.bufferOf(block);
    for (const [from, to] of block.zeros ?? []) buf.fill(0, from, to);
    const padded = alignUp(block.length);
    buf.fill(0, block.length, padded);
    // Runs start and end on 4 KiB file offsets (block starts are aligned): still O_DIRECT-aligned.
    let runs: Array<[number, number]> = at >= this.sparseFrom ? nonZeroRuns(buf.subarray(0, padded), at) : [[0, padded]];
    // What an older file holds at the same offsets is shared with it (one reflink per run of
    // the block, not per chunk), and only the rest written. Shared ranges are file system
    // blocks (multiples of 4 KiB): the rest stays O_DIRECT-aligned.
    if (block.shared && this.clone) {
      const cloned: Array<[number, number]> = [];
      for (const [from, to] of mergeRanges(block.shared)) {
        const got = this.clone(at + from, Math.min(to, block.length) - from);
        if (got) cloned.push([got[0] - at, got[1] - at]);
      }
      runs = subtractRanges(runs, cloned);
    }
    for (const [from, to] of runs) {
      for (let done = from; done < to; ) {
        const { bytesWritten } = await this.fh.write(buf, done, to - done, at + done);
        if (bytesWritten === 0) throw new XferError('XFER_IO', `direct write made no progress at ${at + done}`);
        done += bytesWritten;
      }
    }
    this.free.push(buf);
  }

  private bufferOf(block: Block): Buffer {
    return (block.buf ??= this.free.pop() ?? alignedBuffer(DIRECT_BLOCK_BYTES));
  }
}

/** Sorted, overlapping and touching ranges joined. */
function mergeRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [from, to] of ranges.sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1];
    if (last && from <= last[1]) last[1] = Math.max(last[1], to);
    else out.push([from, to]);
  }
  return out;
}

/** `runs` (sorted, disjoint) less the sorted, disjoint `holes`. */
function subtractRanges(runs: Array<[number, number]>, holes: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [from, to] of runs) {
    let at = from;
    for (const [hf, ht] of holes) {
      if (ht <= at || hf >= to) continue;
      if (hf > at) out.push([at, hf]);
      at = Math.max(at, ht);
    }
    if (at < to) out.push([at, to]);
  }
  return out;
}

/** Windows a DirectRangeReader keeps (the one being read, the next, and a few behind). */
const RANGE_READER_WINDOWS = 6;

interface RangeWindow {
  readonly buf: Buffer;
  /** Resolves to the bytes read (fewer than the window at the end of the file). */
  readonly data: Promise<Buffer>;
  /** Reads copying out of it right now; an evicted window is reused only at zero. */
  users: number;
  evicted: boolean;
  /**
   * Views of it handed out and not given back (windowViews.release): recycled only at
   * zero. A view its holder never gives back keeps its window out of the free list, to be
   * collected with the last view.
   */
  lent: number;
  /** The reader it belongs to (windowViews finds the window of a view by its buffer). */
  readonly reader: DirectRangeReader;
}

/** The window each buffer in use as one is, by the buffer's memory. */
const windowsByBuffer = new WeakMap<ArrayBufferLike, RangeWindow>();

/**
 * Views of DirectRangeReader windows given back by their holders, so a window's buffer is
 * read into again instead of a fresh one (each fresh 4 MiB costs its pages' zeroing: an
 * incremental push's rebuild spent 24% of the server's CPU there). The shape of
 * reconstruct's Lender: hold() counts one more holder of a view read() handed out,
 * release() one fewer; a holder must not touch the bytes after its release. Buffers that
 * are not windows' views are ignored by both.
 */
export const windowViews = {
  hold(data: Uint8Array): boolean {
    const win = windowsByBuffer.get(data.buffer);
    if (!win) return false;
    win.lent++;
    return true;
  },
  release(data: Uint8Array): void {
    const win = windowsByBuffer.get(data.buffer);
    if (!win || win.lent === 0) return;
    win.lent--;
    win.reader.recycle(win);
  },
};

/**
 * Positional reads of a file that is mostly read in order (an old version of a target,
 * compared chunk by chunk with the new one): reads DIRECT_BLOCK_BYTES windows with O_DIRECT
 * where possible (a file written with O_DIRECT is not in the page cache, and cold reads run
 * 3x faster direct), starts reading the next window as soon as one is used, and hands out
 * views of it (see read()). Window buffers no view was taken of are recycled. Out-of-order
 * reads work too, at the cost of a window each.
 */
export class DirectRangeReader implements KeepsLargeBuffers {
  private readonly windows = new Map<number, RangeWindow>();
  private readonly free: Buffer[] = [];
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    private readonly direct: boolean,
    readonly size: number,
    /** close() closes fh: it was opened by open(). */
    private readonly owned = true,
  ) {
    // A server's held files keep their readers between commands: idle, the windows go.
    this.unkeep = keepsLargeBuffers(this);
  }

  /** Ends the registration with keepsLargeBuffers (at close). */
  private readonly unkeep: () => void;

  /** Lets go of the windows kept for reads to come; those in use go once given back. */
  relinquish(): void {
    for (const [k, win] of this.windows) {
      this.windows.delete(k);
      win.evicted = true;
      this.recycle(win);
    }
    for (const b of this.free.splice(0)) recycleLargeBuffer(b);
  }

  /**
   * Reads through `fh`, which stays the caller's: close() ends the reader, not the
   * descriptor. For a file the caller opened with checks of its own (a server's held file:
   * no symlink followed, identity checked); `direct`: fh was opened with O_DIRECT.
   */
  static over(fh: FileHandle, size: number, direct = false): DirectRangeReader {
    return new DirectRangeReader(fh, direct, size, false);
  }

  /** Opens `path` (a regular file; its size is taken now). Errors are thrown as they are. */
  static async open(path: string, size: number): Promise<DirectRangeReader> {
    const direct = await openDirect(path, 'r');
    return new DirectRangeReader(direct ?? (await open(path, 'r')), direct !== undefined, size);
  }

  /**
   * Up to `length` bytes at `position` (fewer at the end of the file). Bytes within one
   * window come as a view of it, which its window is not recycled under until the caller
   * gives it back (windowViews.release; never giving it back is allowed: the window is then
   * collected with the view); bytes spanning windows are copied into a new Buffer. Copying
   * every read cost a 2 GiB in-place rebuild 0.6 s of CPU on the server.
   */
  async read(length: number, position: number): Promise<Buffer> {
    const end = Math.min(this.size, position + length);
    if (end <= position) return Buffer.alloc(0);
    const first = Math.floor(position / DIRECT_BLOCK_BYTES);
    const last = Math.floor((end - 1) / DIRECT_BLOCK_BYTES);
    if (last + 1 < Math.ceil(this.size / DIRECT_BLOCK_BYTES)) this.window(last + 1); // read ahead
    if (first === last) {
      const win = this.window(first);
      win.lent++;
      let data: Buffer;
      try {
        data = await win.data;
      } catch (err) {
        win.lent--;
        this.recycle(win);
        throw err;
      }
      const from = position - first * DIRECT_BLOCK_BYTES;
      return data.subarray(from, Math.min(data.length, end - first * DIRECT_BLOCK_BYTES));
    }
    const out = Buffer.allocUnsafe(end - position);
    for (let w = first; w <= last; w++) {
      const win = this.window(w);
      win.users++;
      try {
        const data = await win.data;
        const from = Math.max(position, w * DIRECT_BLOCK_BYTES);
        const to = Math.min(end, (w + 1) * DIRECT_BLOCK_BYTES);
        if (data.length < to - w * DIRECT_BLOCK_BYTES) return out.subarray(0, from - position); // the file shrank
        data.copy(out, from - position, from - w * DIRECT_BLOCK_BYTES, to - w * DIRECT_BLOCK_BYTES);
      } finally {
        win.users--;
        this.recycle(win);
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.windows.values()].map((w) => w.data));
    this.windows.clear();
    // Windows still in the map may be lent: only the free ones are given back.
    for (const b of this.free.splice(0)) recycleLargeBuffer(b);
    this.unkeep();
    if (this.owned) await this.fh.close().catch(() => {});
  }

  private window(w: number): RangeWindow {
    const known = this.windows.get(w);
    if (known) return known;
    const buf = this.free.pop() ?? (this.direct ? alignedBuffer(DIRECT_BLOCK_BYTES) : largeBuffer(DIRECT_BLOCK_BYTES));
    const data = readUpTo(this.fh, buf, DIRECT_BLOCK_BYTES, w * DIRECT_BLOCK_BYTES).then((got) => buf.subarray(0, got));
    data.catch(() => {}); // the reader that needs it sees the error
    const win: RangeWindow = { buf, data, users: 0, evicted: false, lent: 0, reader: this };
    windowsByBuffer.set(buf.buffer, win);
    this.windows.set(w, win);
    for (const [k, old] of this.windows) {
      if (this.windows.size <= RANGE_READER_WINDOWS) break;
      if (k === w) continue;
      this.windows.delete(k);
      old.evicted = true;
      this.recycle(old);
    }
    return win;
  }

  /**
   * An evicted window's buffer goes back to the free list once its read is done, nobody
   * copies from it and every view of it was given back. (For windowViews: not part of the
   * reader's API.)
   */
  recycle(win: RangeWindow): void {
    if (!win.evicted || win.users > 0 || win.lent > 0) return;
    win.evicted = false; // recycled once
    void win.data.then(
      () => {
        if (win.users !== 0 || win.lent !== 0) return;
        // To the process's recycled buffers, which any reader or writer takes next and the
        // idle trim gives back (a server's held files keep their readers); else this
        // reader's own free list (the twin's buffers).
        windowsByBuffer.delete(win.buf.buffer);
        if (!recycleLargeBuffer(win.buf) && !this.closed) this.free.push(win.buf);
      },
      () => {},
    );
  }
}
