import type { ChunkerSpec } from '../core/ids.js';

/**
 * Finds chunk boundaries in a buffer, batch-wise (one call cuts many chunks, so a native
 * implementation crosses the JS boundary once per batch, not once per chunk).
 *
 * Contract of cut(buf, pos, end, eof, startLimit, out):
 * - bytes buf[pos, end) are the stream from the current chunk start on; `eof` says the
 *   stream ends at `end`;
 * - writes the lengths of consecutive chunks starting at pos into `out`, returns the count;
 * - stops when `out` is full, when the next chunk would start at or after `startLimit`,
 *   when pos reaches end, or when fewer than maxChunkBytes bytes remain and !eof (the cut
 *   could depend on bytes not yet seen).
 * Results depend only on the bytes from each chunk start, never on how the stream was
 * split into calls: that is what makes parallel segments and streams boundary-identical.
 */
export interface Chunker {
  readonly spec: ChunkerSpec;
  readonly maxChunkBytes: number;
  readonly implementation: 'native' | 'typescript';
  cut(buf: Uint8Array, pos: number, end: number, eof: boolean, startLimit: number, out: Uint32Array): number;
}

/** Fixed-size chunks: every chunk is sizeBytes long but the stream's last. */
export class FixedChunker implements Chunker {
  readonly spec: ChunkerSpec;
  readonly maxChunkBytes: number;
  readonly implementation = 'typescript' as const;
  constructor(sizeBytes: number) {
    this.spec = { algorithm: 'fixed', sizeBytes };
    this.maxChunkBytes = sizeBytes;
  }
  cut(_buf: Uint8Array, pos: number, end: number, eof: boolean, startLimit: number, out: Uint32Array): number {
    const size = this.maxChunkBytes;
    let n = 0;
    while (n < out.length && pos < end && pos < startLimit) {
      const avail = end - pos;
      if (avail < size && !eof) break;
      const len = avail < size ? avail : size;
      out[n++] = len;
      pos += len;
    }
    return n;
  }
}
