import { KiB, MiB } from '../../core/sizes.js';

/** Two reads of one pack with at most this many bytes between them are made one ranged GET. */
export const S3_COALESCE_GAP_BYTES = 256 * KiB;
/** A coalesced ranged GET spans at most this many bytes (a single larger chunk is read alone). */
export const S3_MAX_COALESCED_READ_BYTES = 8 * MiB;

/** One chunk to read: `length` bytes at `offset` of pack `pack`. */
export interface RangeRead {
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
}

/** Reads that one ranged GET answers: bytes [start, end) of `pack`. */
export interface ReadGroup<R extends RangeRead> {
  readonly pack: string;
  readonly start: number;
  readonly end: number;
  readonly reads: R[];
}

/**
 * Groups reads into ranged GETs: by pack, in offset order, a read joining the group before
 * it when the gap is at most S3_COALESCE_GAP_BYTES and the group stays within
 * S3_MAX_COALESCED_READ_BYTES. Overlapping and repeated reads share a group.
 */
export function coalesceReads<R extends RangeRead>(reads: readonly R[]): ReadGroup<R>[] {
  const sorted = [...reads].sort((a, b) => (a.pack < b.pack ? -1 : a.pack > b.pack ? 1 : a.offset - b.offset));
  const groups: { pack: string; start: number; end: number; reads: R[] }[] = [];
  for (const read of sorted) {
    const last = groups[groups.length - 1];
    const end = read.offset + read.length;
    if (
      last !== undefined &&
      last.pack === read.pack &&
      read.offset - last.end <= S3_COALESCE_GAP_BYTES &&
      Math.max(last.end, end) - last.start <= S3_MAX_COALESCED_READ_BYTES
    ) {
      last.end = Math.max(last.end, end);
      last.reads.push(read);
    } else {
      groups.push({ pack: read.pack, start: read.offset, end, reads: [read] });
    }
  }
  return groups;
}

interface QueuedRead extends RangeRead {
  readonly resolve: (data: Buffer) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Collects the chunk reads asked for in one turn of the event loop (a pull asks for many
 * at once) and makes them as few ranged GETs as coalesceReads allows; each read gets its
 * view of the group's bytes. `fetchRange` returns exactly the bytes [start, end) or throws.
 */
export class CoalescingReader {
  private queue: QueuedRead[] = [];
  private scheduled = false;

  constructor(private readonly fetchRange: (pack: string, start: number, end: number) => Promise<Buffer>) {}

  read(pack: string, offset: number, length: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.queue.push({ pack, offset, length, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.dispatch());
      }
    });
  }

  private dispatch(): void {
    this.scheduled = false;
    const reads = this.queue;
    this.queue = [];
    for (const group of coalesceReads(reads)) {
      this.fetchRange(group.pack, group.start, group.end).then(
        (bytes) => {
          for (const r of group.reads) r.resolve(bytes.subarray(r.offset - group.start, r.offset - group.start + r.length));
        },
        (error) => {
          for (const r of group.reads) r.reject(error);
        },
      );
    }
  }
}
