/**
 * A FIFO of received byte pieces (HTTP/2 DATA frames) from which whole records are taken.
 * take() returns a view when the bytes lie in one piece and copies only when a record spans
 * pieces, so parsing a stream of records costs about one copy at most, never one per frame.
 */
export class ByteQueue {
  private pieces: Buffer[] = [];
  private head = 0; // offset into pieces[0]
  private size = 0;

  get length(): number {
    return this.size;
  }

  push(piece: Buffer): void {
    if (piece.length === 0) return;
    this.pieces.push(piece);
    this.size += piece.length;
  }

  /** Reads a u32 (little-endian) at `offset` without consuming; the caller checks length first. */
  readUInt32LE(offset = 0): number {
    const b = this.peek(offset + 4);
    return b.readUInt32LE(offset);
  }

  /** The first `n` bytes without consuming them (a view if contiguous). */
  peek(n: number): Buffer {
    const first = this.pieces[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    return this.copyOut(n, false);
  }

  /** Removes and returns the first `n` bytes (n <= length). */
  take(n: number): Buffer {
    const first = this.pieces[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.skipInFirst(n);
      return out;
    }
    return this.copyOut(n, true);
  }

  private skipInFirst(n: number): void {
    this.head += n;
    this.size -= n;
    if (this.head === this.pieces[0]!.length) {
      this.pieces.shift();
      this.head = 0;
    }
  }

  private copyOut(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let i = 0;
    let head = this.head;
    while (filled < n) {
      const p = this.pieces[i]!;
      const k = Math.min(p.length - head, n - filled);
      p.copy(out, filled, head, head + k);
      filled += k;
      if (head + k === p.length) {
        i++;
        head = 0;
      } else head += k;
    }
    if (consume) {
      this.pieces.splice(0, i);
      this.head = head;
      this.size -= n;
    }
    return out;
  }
}
