/**
 * The BLAKE3 digest of a large file computed in pieces (native/blake3_tree.c).
 *
 * BLAKE3 hashes 1 KiB chunks into a binary tree. A span of at most 2^k chunks that starts
 * at a chunk index divisible by 2^k is one subtree: its chaining value (CV) depends only on
 * its bytes and its position, so spans can be hashed on any thread, in any order, and
 * their CVs merged in file order into the same digest a sequential hasher gives (b3sum's).
 * The merge is the hasher's CV-stack rule; only the last parent node gets the ROOT flag.
 *
 * Used where the file is already cut into aligned spans: the scan's segments (each worker
 * returns its segment's CV, computed in the pass that chunks it) and a rebuilt file's
 * bytes (TreeHasher, on libuv's threads). Runs of zeros (holes) are hashed without input:
 * the native routine reads one static zero chunk, so no zero buffer is filled or moved.
 *
 * Needs the native addon; without it (not built, or XFER_NO_NATIVE=1) treeBinding() is
 * null and callers use the sequential hashers of hash/digest.ts (same digests).
 */
import { loadAddon, usableAddon, type NativeAddon } from '../native/addon.js';
import { XferError } from '../core/errors.js';
import { KiB } from '../core/sizes.js';
import { Slots } from '../core/window.js';
import { largeBuffer, recycleLargeBuffer } from '../io/sys.js';
import { digestOf } from './digest.js';
import { knownZeroCv, rememberZeroCv, ZERO_CV_SPAN_BYTES } from './zero-cvs.js';

/** BLAKE3's chunk: spans are multiples of it, and their positions are counted in it. */
export const BLAKE3_CHUNK_BYTES = KiB;
/** Bytes of a BLAKE3 chaining value. */
export const CV_BYTES = 32;

export type TreeBinding = Required<Pick<NativeAddon, 'blake3Cv' | 'blake3CvAsync' | 'blake3Parent'>>;

/** The native subtree functions, or null without the addon (or with XFER_NO_NATIVE=1). */
export function treeBinding(): TreeBinding | null {
  return treeOf(usableAddon());
}

/**
 * The native subtree functions whatever XFER_NO_NATIVE says: for a scan worker asked for
 * a CV by a scan that chose the tree (its environment is a copy taken when it started).
 */
export function nativeTree(): TreeBinding | null {
  return treeOf(loadAddon());
}

function treeOf(a: NativeAddon | null): TreeBinding | null {
  return a?.blake3Cv && a.blake3CvAsync && a.blake3Parent ? (a as TreeBinding) : null;
}

/**
 * Whether spans of `spanBytes` can be hashed as subtrees: a power of two number of
 * BLAKE3 chunks (so every span starts at a chunk index divisible by its size).
 */
export function isTreeSpan(spanBytes: number): boolean {
  const chunks = spanBytes / BLAKE3_CHUNK_BYTES;
  return Number.isInteger(chunks) && chunks >= 1 && (chunks & (chunks - 1)) === 0;
}

/**
 * The non-root CV of the span at byte `offset` holding data[0, length), or `length` zero
 * bytes when data is null. `offset` must be a multiple of the span's size rounded up to a
 * power of two chunks (the native side checks).
 */
export function spanCv(b: TreeBinding, data: Uint8Array | null, length: number, offset: number): Uint8Array {
  const out = new Uint8Array(CV_BYTES);
  b.blake3Cv(data, length, offset / BLAKE3_CHUNK_BYTES, out);
  return out;
}

/**
 * How [from, to) meets `holes` (sorted, disjoint [from, to) pairs, flat; adjacent holes
 * reported as one range, as a reader that seeks them does): inside one hole, clear of
 * them all, or partly in one.
 */
export function holeCover(holes: readonly number[], from: number, to: number): 'hole' | 'data' | 'mixed' {
  // The first hole that ends after `from` (binary search over the pairs).
  let lo = 0;
  let hi = holes.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (holes[2 * mid + 1]! <= from) lo = mid + 1;
    else hi = mid;
  }
  if (lo === holes.length / 2 || holes[2 * lo]! >= to) return 'data';
  return holes[2 * lo]! <= from && holes[2 * lo + 1]! >= to ? 'hole' : 'mixed';
}

/** A copy of data[from, to) with the parts in `holes` zeroed (one BLAKE3 chunk at most: cheap). */
function zeroedCopy(data: Uint8Array, from: number, to: number, holes: readonly number[]): Uint8Array {
  const copy = data.slice(from, to);
  for (let k = 0; k < holes.length; k += 2) {
    const a = Math.max(from, holes[k]!);
    const z = Math.min(to, holes[k + 1]!);
    if (a < z) copy.fill(0, a - from, z - from);
  }
  return copy;
}

/** BLAKE3's left subtree of `bytes` (> 1 chunk): the largest power of two chunks that leaves at least one byte (blake3.c left_subtree_len). */
function leftSubtreeBytes(bytes: number): number {
  const fullChunks = Math.floor((bytes - 1) / BLAKE3_CHUNK_BYTES);
  return 2 ** Math.floor(Math.log2(fullChunks)) * BLAKE3_CHUNK_BYTES;
}

/**
 * spanCv of data[0, length) at byte `offset`, where `holes` (as holeCover's, relative to
 * data) are known zeros: every subtree of the span's BLAKE3 tree that lies inside a hole
 * is hashed by the zero routine, without reading its bytes in data; the rest from data.
 * The same CV as spanCv of the bytes with the holes zeroed, wherever the holes start and
 * end: a BLAKE3 chunk that is partly hole is hashed from a copy with its hole part zeroed.
 */
export function spanCvWithHoles(b: TreeBinding, data: Uint8Array, length: number, offset: number, holes: readonly number[]): Uint8Array {
  const cv = (from: number, bytes: number): Uint8Array => {
    const cover = holeCover(holes, from, from + bytes);
    if (cover === 'hole') return spanCv(b, null, bytes, offset + from);
    if (cover === 'data') return spanCv(b, data.subarray(from, from + bytes), bytes, offset + from);
    if (bytes <= BLAKE3_CHUNK_BYTES) return spanCv(b, zeroedCopy(data, from, from + bytes, holes), bytes, offset + from);
    const left = leftSubtreeBytes(bytes);
    const out = new Uint8Array(CV_BYTES);
    b.blake3Parent(cv(from, left), cv(from + left, bytes - left), false, out);
    return out;
  };
  return cv(0, length);
}

function popcount(n: number): number {
  let c = 0;
  for (; n > 0; n = Math.floor(n / 2)) c += n % 2;
  return c;
}

/**
 * Merges the CVs of consecutive equal spans (the last may be shorter), pushed in file
 * order, into the digest of their concatenation. At least two spans: the digest of one
 * span is its ordinary hash (the caller has it).
 */
export class CvStack {
  private readonly stack: Uint8Array[] = [];
  private count = 0;

  constructor(private readonly b: TreeBinding) {}

  /** The CV of the next span. */
  push(cv: Uint8Array): void {
    this.pushSubtree(cv, 1);
  }

  /**
   * The CV of the next `spans` spans, one subtree (a power of two spans, starting at a
   * multiple of it: the span count so far is one). Equal to pushing their CVs one by one.
   */
  pushSubtree(cv: Uint8Array, spans: number): void {
    if ((spans & (spans - 1)) !== 0 || this.count % spans !== 0) throw new XferError('XFER_INTERNAL', `BLAKE3 subtree of ${spans} spans after ${this.count}`);
    // Lazy merging (blake3.c hasher_merge_cv_stack): complete subtrees merge only once a
    // later span shows they are not the right edge of the tree.
    const keep = popcount(this.count);
    while (this.stack.length > keep) {
      const right = this.stack.pop()!;
      const left = this.stack.pop()!;
      this.stack.push(this.parent(left, right, false));
    }
    this.stack.push(cv);
    this.count += spans;
  }

  get spans(): number {
    return this.count;
  }

  /** The digest: the right edge rolled up, the last parent with the ROOT flag. */
  digest(): Buffer {
    if (this.stack.length < 2) throw new XferError('XFER_INTERNAL', `BLAKE3 tree digest of ${this.count} span(s) in one subtree: at least 2 subtrees expected`);
    let right = this.stack.pop()!;
    while (this.stack.length > 0) {
      const left = this.stack.pop()!;
      right = this.parent(left, right, this.stack.length === 0);
    }
    return Buffer.from(right.buffer, right.byteOffset, CV_BYTES);
  }

  private parent(left: Uint8Array, right: Uint8Array, root: boolean): Uint8Array {
    const out = new Uint8Array(CV_BYTES);
    this.b.blake3Parent(left, right, root, out);
    return out;
  }
}

/** Spans of a rebuilt file hashed at once on libuv's threads, at most (bounds the memory held). */
export const TREE_SPANS_IN_FLIGHT = 4;
/**
 * Buffers of hashed spans TreeHasher keeps for the next ones; the others go back to the
 * process's pool (recycleLargeBuffer), where the next span of a burst finds them too. More
 * than one: update() cannot wait, and a rebuild's chunk jobs complete in bursts (a slow
 * fetch releases the chunks queued behind it), so spans are dispatched several at a time,
 * and each fresh buffer is page-faulted in again as it fills.
 */
export const TREE_SPARE_SPANS = 4;
/**
 * The span size TreeHasher hashes data in: 2048 BLAKE3 chunks. It was the scan's 8 MiB
 * segment; with spans of 2 MiB a server's check of a rebuild holds a quarter of the buffers
 * (its spans were 48 of the server's ~300 MiB peak during a 512 MiB push). Zeros still go
 * in the zero-CV cache's 8 MiB spans where they fill one (TreeHasherOptions.zeroSpanBytes).
 */
export const TREE_SPAN_BYTES = 2 * 1024 * KiB;

export interface TreeHasherOptions {
  /** Bytes per span (a power of two BLAKE3 chunks; default TREE_SPAN_BYTES). */
  readonly spanBytes?: number;
  /**
   * A span of known zeros only (no buffer) that starts at a multiple of this grows to this
   * size, one subtree whose CV the zero-CV cache holds (hash/zero-cvs.ts; default
   * ZERO_CV_SPAN_BYTES): a 64 GiB hole is 8,192 lookups, not 32,768 spans hashed. A
   * multiple of spanBytes by a power of two.
   */
  readonly zeroSpanBytes?: number;
  /** Spans hashed at once, at most (default TREE_SPANS_IN_FLIGHT). */
  readonly spansInFlight?: number;
  /** Makes span buffers: a caller that reads into room() with O_DIRECT passes an aligned allocator (io/direct.ts alignedBuffer). */
  readonly allocate?: (bytes: number) => Uint8Array;
}

/**
 * The BLAKE3 digest of bytes fed in order (a rebuilt file's chunks), hashed in spans of
 * TREE_SPAN_BYTES (or options.spanBytes) on libuv's thread pool while the caller goes on: the same interface as
 * scan/digest-thread.ts's DigestThread (update, ready, digest, close), without a thread
 * of its own, its messages or a second pass.
 *
 * Contract: update() copies the bytes into the current span's buffer (the caller keeps
 * its own), except views of zeroBytes() (chunker/zero.ts), counted instead; a span that
 * is all such zeros is hashed with no buffer at all (or not at all: knownZeroCv), and
 * grows to zeroSpanBytes where it starts on a multiple of it. A span goes to the pool once
 * the next byte after it arrives (the last span may be the root). ready() waits while
 * TREE_SPANS_IN_FLIGHT (options.spansInFlight) spans are being hashed; digest() once at
 * the end; close() always.
 */
export class TreeHasher {
  /** CVs of the spans hashed so far, in order. */
  private readonly stack: CvStack;
  /**
   * The spans handed to the pool and not yet merged: each holds a slot from dispatch()
   * (admitted at once: update() cannot wait) until its CV is pushed on the stack, which
   * happens in file order (`lastMerged` chains them) however many callers wait in ready().
   */
  private readonly slots: Slots;
  private lastMerged: Promise<void> = Promise.resolve();
  /** The first span that failed to hash: ready() and digest() report it. */
  private failure: { readonly error: unknown } | undefined;
  /** Merged spans' buffers, for the next spans (at most TREE_SPARE_SPANS). */
  private readonly spare: Uint8Array[] = [];
  /** The current span: its buffer (none while it holds only known zeros) and its bytes so far. */
  private span: Uint8Array | undefined;
  private filled = 0;
  /** Bytes of the spans before the current one. */
  private offset = 0;

  private readonly spanBytes: number;
  private readonly zeroSpanBytes: number;
  private readonly allocate: (bytes: number) => Uint8Array;

  constructor(
    private readonly b: TreeBinding,
    private readonly isKnownZeros: (data: Uint8Array) => boolean,
    options: TreeHasherOptions = {},
  ) {
    this.spanBytes = options.spanBytes ?? TREE_SPAN_BYTES;
    if (!isTreeSpan(this.spanBytes)) throw new XferError('XFER_INTERNAL', `TreeHasher span of ${this.spanBytes} bytes: not a power of two BLAKE3 chunks`);
    this.zeroSpanBytes = Math.max(this.spanBytes, options.zeroSpanBytes ?? ZERO_CV_SPAN_BYTES);
    if (!isTreeSpan(this.zeroSpanBytes)) throw new XferError('XFER_INTERNAL', `TreeHasher zero span of ${this.zeroSpanBytes} bytes: not a power of two BLAKE3 chunks`);
    this.slots = new Slots(options.spansInFlight ?? TREE_SPANS_IN_FLIGHT);
    this.allocate = options.allocate ?? largeBuffer;
    this.stack = new CvStack(b);
  }

  /**
   * The rest of the current span's buffer, for a caller that reads the next bytes itself:
   * it writes them at its start and then calls advance() with their count. Saves update()'s
   * copy (a whole-file check of a cached 256 MiB file spent as long copying into spans as
   * hashing them). Never empty; its start is the next byte's offset within the span.
   */
  room(): Uint8Array {
    this.makeRoom();
    return this.buffer().subarray(this.filled);
  }

  /** `n` bytes were written at the start of the last room(). */
  advance(n: number): void {
    if (!this.span || n < 0 || this.filled + n > this.spanBytes) throw new XferError('XFER_INTERNAL', `TreeHasher.advance(${n}) past its room`);
    this.filled += n;
  }

  update(data: Uint8Array): void {
    const zeros = this.isKnownZeros(data);
    for (let done = 0; done < data.length; ) {
      if (this.filled === this.limit()) this.dispatch();
      if (zeros && !this.span) {
        // Zeros into a span with no data yet: only counted, up to the zero span's size.
        const n = Math.min(data.length - done, this.limit() - this.filled);
        this.filled += n;
        done += n;
        continue;
      }
      this.makeRoom();
      const n = Math.min(data.length - done, this.spanBytes - this.filled);
      const span = this.buffer();
      if (zeros) span.fill(0, this.filled, this.filled + n);
      else span.set(data.subarray(done, done + n), this.filled);
      this.filled += n;
      done += n;
    }
  }

  /** What the current span may grow to: a zero span (no buffer) starting on the zero grid may grow to zeroSpanBytes. */
  private limit(): number {
    return !this.span && this.offset % this.zeroSpanBytes === 0 ? this.zeroSpanBytes : this.spanBytes;
  }

  /**
   * Makes the current span able to take data: a full one is dispatched; zeros counted past
   * spanBytes (a zero span cut short of the grid by data) go out in spans of spanBytes,
   * the rest staying in the current span.
   */
  private makeRoom(): void {
    if (this.filled === this.limit()) this.dispatch();
    while (!this.span && this.filled >= this.spanBytes) this.dispatch(this.spanBytes);
  }

  /** Resolves once fewer than spansInFlight spans are being hashed; rejects once one failed. */
  async ready(): Promise<void> {
    await this.slots.untilRoom();
    if (this.failure) throw this.failure.error;
  }

  /** The digest of everything fed; once. */
  async digest(): Promise<Buffer> {
    if (this.offset === 0) {
      // One span at most: its ordinary hash is the digest (a CV is never a root).
      return digestOf('blake3', this.span ? this.span.subarray(0, this.filled) : new Uint8Array(this.filled));
    }
    // Zeros at the end: one subtree if they fill the zero span, else spans and a rest.
    if (this.filled !== this.limit()) while (!this.span && this.filled > this.spanBytes) this.dispatch(this.spanBytes);
    if (this.filled > 0) this.dispatch();
    await this.lastMerged;
    return this.stack.digest();
  }

  async close(): Promise<void> {
    // Spans in flight hold their buffers until hashed; nothing to end here but the wait.
    await this.lastMerged.catch(() => {});
    for (const b of this.spare.splice(0)) recycleLargeBuffer(b);
  }

  /** The current span's buffer: zeros counted so far are written first (a reused buffer is dirty). */
  private buffer(): Uint8Array {
    if (this.span) return this.span;
    const span = this.spare.pop() ?? this.allocate(this.spanBytes);
    span.fill(0, 0, this.filled);
    return (this.span = span);
  }

  /**
   * Hands the current span to the pool: all of it, or (a zero span with no buffer) its
   * first `part` bytes, a whole span, the rest staying current.
   */
  private dispatch(part?: number): void {
    const buffer = this.span;
    const offset = this.offset;
    const length = part ?? this.filled;
    // A zero span of the grid's size is one subtree of that many spans.
    const spans = !buffer && length === this.zeroSpanBytes ? this.zeroSpanBytes / this.spanBytes : 1;
    const known = buffer ? undefined : knownZeroCv(offset, length);
    const cv = known ?? new Uint8Array(CV_BYTES);
    this.slots.admit();
    const hashed = known ? Promise.resolve() : this.b.blake3CvAsync(buffer ?? null, length, offset / BLAKE3_CHUNK_BYTES, cv);
    const merged = Promise.all([this.lastMerged, hashed]).then(() => {
      if (!buffer && !known) rememberZeroCv(offset, length, cv);
      this.stack.pushSubtree(cv, spans);
      if (buffer && this.spare.length < TREE_SPARE_SPANS) this.spare.push(buffer);
      else if (buffer) recycleLargeBuffer(buffer);
    });
    // The slot is given back once this span and every one before it are merged (or one
    // failed): a caller woken in ready() then sees the failure.
    merged.then(
      () => this.slots.release(),
      (error: unknown) => {
        this.failure ??= { error };
        this.slots.release();
      },
    );
    this.lastMerged = merged;
    this.offset += length;
    this.filled -= length;
    if (buffer) this.span = undefined;
  }
}
