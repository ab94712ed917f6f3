/**
 * Pack files on a local disk: LocalStore's writer and reads, with O_DIRECT where the
 * filesystem allows it (io/direct.ts). The format, and why packs and O_DIRECT, are in
 * ../pack.ts.
 */
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { fromSystemError, IoError } from '../../core/errors.js';
import type { DigestAlgorithm } from '../../core/ids.js';
import { alignedBuffer, alignUp, openDirect } from '../../io/direct.js';
import { fsyncPath } from '../../io/sync.js';
import { largeBuffer, recycleLargeBuffer } from '../../io/sys.js';
import { encodeIndexRecords, encodeRecordHeader, IDX_MAGIC, newPackName, PACK_BLOCK_BYTES, PACK_MAGIC, type PackEntry } from '../pack.js';

/** Full blocks being written at once per pack; appends wait beyond it (the disk is behind). */
export const PACK_WRITES_IN_FLIGHT = 4;

/** Writes all of buf[0, length) at `position`. */
async function writeFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const { bytesWritten } = await fh.write(buf, done, length - done, position + done);
    if (bytesWritten === 0) throw new IoError(`write made no progress at offset ${position + done}`);
    done += bytesWritten;
  }
}

/** Opens a pack for reading, with O_DIRECT where possible (see io/direct.ts). */
export async function openPackForReading(file: string, directIo = true): Promise<{ fh: FileHandle; direct: boolean }> {
  const direct = directIo ? await openDirect(file, 'r') : undefined;
  return direct ? { fh: direct, direct: true } : { fh: await open(file, 'r'), direct: false };
}

interface BlockWrite {
  readonly buf: Buffer;
  readonly done: Promise<void>;
}

/**
 * Appends chunk records to one new pack and writes its index. Appends copy into a
 * PACK_BLOCK_BYTES block; a full block goes to disk in one write (O_DIRECT when the
 * filesystem allows it) while the next fills. commit() writes the partial last block
 * (padded to the alignment; later appends rewrite that block whole, so the pack never has
 * gaps), fdatasyncs the pack, then appends the index records of everything appended before
 * it and fdatasyncs the index. Chunks not yet on disk are read from memory (read()).
 *
 * Not safe for concurrent commits: the caller serializes them. After any write failure
 * the writer is broken: every later call rejects with the first error.
 */
export class PackWriter {
  private end: number;
  private block: Buffer;
  private blockStart = 0;
  /** Full blocks being written, by their offset. */
  private readonly writing = new Map<number, BlockWrite>();
  /** The padded partial block a commit wrote last, which a later full write of that block must follow. */
  private tailWrite: { start: number; done: Promise<void> } | undefined;
  private readonly free: Buffer[] = [];
  private readonly roomWaiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private unindexed: PackEntry[] = [];
  private indexBytes = IDX_MAGIC.length;
  private failure: { error: unknown } | undefined;
  private closed = false;

  private constructor(
    readonly name: string,
    readonly packPath: string,
    readonly indexPath: string,
    private readonly fh: FileHandle,
    private readonly direct: boolean,
    private readonly indexFh: FileHandle,
  ) {
    this.block = this.newBlock();
    PACK_MAGIC.copy(this.block, 0);
    this.end = PACK_MAGIC.length;
  }

  /** Creates `<dir>/<name>.pack` and `.idx` and makes their names durable; O_DIRECT if `directIo` and possible. */
  static async create(dir: string, directIo = true, name = newPackName()): Promise<PackWriter> {
    const packPath = path.join(dir, `${name}.pack`);
    const indexPath = path.join(dir, `${name}.idx`);
    let fh: FileHandle | undefined;
    let indexFh: FileHandle | undefined;
    try {
      fh = await open(packPath, 'wx');
      const d = directIo ? await openDirect(packPath, 'w') : undefined;
      if (d) {
        await fh.close();
        fh = d;
      }
      const direct = d !== undefined;
      indexFh = await open(indexPath, 'wx');
      await writeFully(indexFh, Buffer.from(IDX_MAGIC), IDX_MAGIC.length, 0);
      await indexFh.datasync();
      await fsyncPath(dir);
      return new PackWriter(name, packPath, indexPath, fh, direct, indexFh);
    } catch (err) {
      await fh?.close().catch(() => {});
      await indexFh?.close().catch(() => {});
      throw fromSystemError(err, packPath, 'create pack');
    }
  }

  /** Bytes appended so far (the pack's logical size). */
  get bytes(): number {
    return this.end;
  }

  /** Bytes of chunk data appended since the last commit took its entries. */
  get uncommittedEntries(): number {
    return this.unindexed.length;
  }

  /**
   * Bytes below this offset are on disk and never change again (later appends and the
   * tail rewrite only touch the block being filled and blocks being written).
   */
  get settledBytes(): number {
    let settled = this.blockStart;
    for (const start of this.writing.keys()) settled = Math.min(settled, start);
    return settled;
  }

  get broken(): boolean {
    return this.failure !== undefined;
  }

  /** Whether fewer than PACK_WRITES_IN_FLIGHT full blocks are being written (see room()). */
  get hasRoom(): boolean {
    return this.writing.size < PACK_WRITES_IN_FLIGHT || this.failure !== undefined;
  }

  /**
   * Resolves once hasRoom (or rejects once the writer failed). Callers wait here before
   * appending, so that a burst of appends holds at most a few blocks in memory.
   */
  room(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.hasRoom) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
  }

  /**
   * Appends a record synchronously and returns the offset of its data. Appending more than
   * a block's worth without waiting for room() is allowed, but holds the blocks in memory.
   */
  append(algorithm: DigestAlgorithm, digest: Uint8Array, data: Uint8Array): number {
    if (this.failure) throw this.failure.error;
    this.copyIn(encodeRecordHeader(algorithm, digest, data.length));
    const offset = this.end;
    this.copyIn(data);
    this.unindexed.push({ algorithm, digest: Buffer.from(digest), offset, length: data.length });
    return offset;
  }

  /** The bytes [offset, offset + length) of this pack, from memory where not yet written. */
  async read(offset: number, length: number, fromDisk: (offset: number, length: number) => Promise<Buffer>): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    const onDisk: [number, number][] = [];
    for (let pos = offset; pos < offset + length; ) {
      const start = pos - (pos % PACK_BLOCK_BYTES);
      const n = Math.min(offset + length - pos, start + PACK_BLOCK_BYTES - pos);
      const mem = start === this.blockStart ? this.block : this.writing.get(start)?.buf;
      if (mem) mem.copy(out, pos - offset, pos - start, pos - start + n);
      else onDisk.push([pos, n]);
      pos += n;
    }
    for (const [pos, n] of onDisk) {
      const part = await fromDisk(pos, n);
      if (part.length !== n) throw new IoError(`pack ${this.packPath} is shorter than its own appends`);
      part.copy(out, pos - offset);
    }
    return out;
  }

  /**
   * Makes everything appended before this call durable and indexed, and returns those
   * entries. Appends may continue meanwhile.
   */
  async commit(): Promise<PackEntry[]> {
    if (this.failure) throw this.failure.error;
    const entries = this.unindexed;
    this.unindexed = [];
    try {
      const waits = [...this.writing.values()].map((w) => w.done);
      const tail = this.end - this.blockStart;
      if (tail > 0) {
        const padded = alignUp(tail);
        const copy = this.direct ? alignedBuffer(padded) : Buffer.allocUnsafe(padded);
        this.block.copy(copy, 0, 0, tail);
        copy.fill(0, tail, padded);
        const start = this.blockStart;
        const previous = this.tailWrite?.start === start ? this.tailWrite.done : Promise.resolve();
        const done = previous.catch(() => {}).then(() => writeFully(this.fh, copy, padded, start));
        this.tailWrite = { start, done };
        waits.push(done);
      }
      await Promise.all(waits);
      await this.fh.datasync();
      if (entries.length > 0) {
        const records = encodeIndexRecords(entries);
        // At an explicit position: a failed attempt's partial record is overwritten by the next.
        await writeFully(this.indexFh, records, records.length, this.indexBytes);
        await this.indexFh.datasync();
        this.indexBytes += records.length;
      }
      return entries;
    } catch (err) {
      this.fail(err);
      throw this.failure!.error;
    }
  }

  /** Closes the files; appends and commits are refused from now on. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.writing.values()].map((w) => w.done));
    await this.tailWrite?.done.catch(() => {});
    this.failure ??= { error: new IoError(`pack ${this.packPath} is closed`) };
    // Written blocks are read from disk now, never from these (read() looks only at the
    // current block and those being written).
    for (const b of this.free.splice(0)) recycleLargeBuffer(b);
    await this.fh.close().catch(() => {});
    await this.indexFh.close().catch(() => {});
  }

  private copyIn(src: Uint8Array): void {
    for (let done = 0; done < src.length; ) {
      const at = this.end - this.blockStart;
      const n = Math.min(src.length - done, PACK_BLOCK_BYTES - at);
      this.block.set(src.subarray(done, done + n), at);
      done += n;
      this.end += n;
      if (at + n === PACK_BLOCK_BYTES) this.submitBlock();
    }
  }

  private submitBlock(): void {
    const buf = this.block;
    const start = this.blockStart;
    const previous = this.tailWrite?.start === start ? this.tailWrite.done.catch(() => {}) : Promise.resolve();
    const done = previous.then(() => writeFully(this.fh, buf, PACK_BLOCK_BYTES, start));
    this.writing.set(start, { buf, done });
    done.then(
      () => {
        this.writing.delete(start);
        this.free.push(buf);
        this.wakeRoomWaiters();
      },
      (err: unknown) => {
        this.fail(err);
        this.wakeRoomWaiters();
      },
    );
    this.block = this.newBlock();
    this.blockStart = start + PACK_BLOCK_BYTES;
  }

  /**
   * Wakes every waiter of room() once there is room (with the error once failed). Each
   * re-checks when it resumes, and waits again if the puts before it filled the room: no
   * waiter can be left behind by one that was woken and did not append.
   */
  private wakeRoomWaiters(): void {
    if (!this.hasRoom) return;
    for (const w of this.roomWaiters.splice(0)) {
      if (this.failure) w.reject(this.failure.error);
      else w.resolve();
    }
  }

  private newBlock(): Buffer {
    return this.free.pop() ?? (this.direct ? alignedBuffer(PACK_BLOCK_BYTES) : largeBuffer(PACK_BLOCK_BYTES));
  }

  private fail(err: unknown): void {
    this.failure ??= { error: fromSystemError(err, this.packPath, 'write pack') };
  }
}
