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

  /**
   * Removes and returns the first `n` bytes (n <= length): a view of a piece, or, when
   * they span pieces, a copy, made in `scratch` if it is large enough (the caller then
   * owns reuse: the result is valid until it next passes the same scratch).
   */
  take(n: number, scratch?: Buffer): Buffer {
    const first = this.pieces[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.skipInFirst(n);
      return out;
    }
    return this.copyOut(n, true, scratch !== undefined && scratch.length >= n ? scratch : undefined);
  }

  private skipInFirst(n: number): void {
    this.head += n;
    this.size -= n;
    if (this.head === this.pieces[0]!.length) {
      this.pieces.shift();
      this.head = 0;
    }
  }

  private copyOut(n: number, consume: boolean, into?: Buffer): Buffer {
    const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
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

/**
 * Hands out buffers carved from larger slabs: one allocation per slab instead of one per
 * buffer. Each received chunk used to be its own ArrayBuffer, and at 64 KiB apiece their
 * allocation and collection cost a pull ~1.5 s of GC per 2 GiB. The price: a slab stays
 * allocated while any buffer carved from it is alive, so holders of long-lived buffers
 * (caches) should keep copies.
 */
export class SlabAllocator {
  private slab = Buffer.allocUnsafeSlow(0);
  private used = 0;

  /** `allocate` makes slabs and large buffers (io/sys.ts largeBuffer, whose fresh pages cost less to fault in). */
  constructor(
    private readonly slabBytes: number,
    private readonly allocate: (bytes: number) => Buffer<ArrayBuffer> = (bytes) => Buffer.allocUnsafeSlow(bytes),
  ) {}

  alloc(n: number): Buffer {
    // Large requests get their own buffer: they would waste most of a slab.
    if (n > this.slabBytes / 4) return this.allocate(n);
    if (this.used + n > this.slab.length) {
      this.slab = this.allocate(this.slabBytes);
      this.used = 0;
    }
    const out = this.slab.subarray(this.used, this.used + n);
    this.used += (n + 7) & ~7; // keep 8-byte alignment
    return out;
  }
}
