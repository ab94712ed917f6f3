import { Worker } from 'node:worker_threads';
import { isZeroBytesView, isZeroChunk } from '../chunker/zero.js';
import { XferError } from '../core/errors.js';
import type { DigestAlgorithm } from '../core/ids.js';
import { MiB } from '../core/sizes.js';
import { TreeHasher, treeBinding, type TreeHasherOptions } from '../hash/tree.js';
import type { DigestThreadMessage, DigestThreadReply } from './digest-worker.js';

/**
 * Files at least this large get their whole-content digest from a largeFileHasher() when
 * they are rebuilt, and from a DigestThread when a scan cannot merge its segments' BLAKE3
 * CVs (SHA-256, no addon). Below it the thread's start (tens of ms) costs more than
 * hashing on the scan's own thread saves.
 */
export const DIGEST_THREAD_MIN_BYTES = 64 * MiB;

/**
 * Data bytes posted to the thread and not yet hashed, at most: beyond it feed()'s caller
 * waits (ready()). Bounds the copies in memory when hashing is slower than scanning.
 */
const DIGEST_THREAD_QUEUE_BYTES = 16 * MiB;

/** Bytes are copied to the thread in buffers of this size, kept for reuse (at most SPARE_BUFFERS idle). */
const COPY_BUFFER_BYTES = 4 * MiB;
const SPARE_BUFFERS = 5;

/** The thread's V8 young generation, in MiB (as the scan pool's workers, pool.ts). */
const DIGEST_THREAD_YOUNG_GENERATION_MB = 4;

/** update(): zeros are gathered up to this many bytes per message (zero chunks are 256 KiB by default). */
const ZERO_MESSAGE_BYTES = 16 * MiB;

/**
 * The whole-content digest of one file (b3sum / sha256sum of its logical bytes),
 * computed on a thread of its own while the scan goes on.
 *
 * Why: the digest is one sequential hash of every byte, holes included (a 64 GiB sparse
 * image hashes 64 GiB of zeros). On the scan's own thread it ran one after another with
 * stitching, sending and writing; here it overlaps them, and the scan's critical path is
 * the slower of the two instead of their sum.
 *
 * Contract: feed() a scan's chunks (or update() a rebuilt file's bytes) in file order,
 * each once; zero chunks (chunker/zero.ts: known by length and digest, or as views of
 * zeroBytes()) are posted as a count of zero bytes, not copied, and hashed on the thread
 * from a buffer of zeros. Other bytes are copied (the caller keeps its buffer). Call
 * ready() between batches to bound the queue, digest() once at the end, and close()
 * always (it ends the thread). The thread holds the process only while it has work.
 */
export class DigestThread {
  private readonly worker: Worker;
  /** Data bytes copied to the thread and not yet hashed (the queue bound). */
  private queuedBytes = 0;
  /** Messages posted and not yet answered: the thread holds the process only while this is not 0. */
  private outstanding = 0;
  /** The copy buffer being filled (see bytes()), its bytes so far, and buffers the thread gave back. */
  private fill: Uint8Array | undefined;
  private filled = 0;
  private readonly spare: ArrayBuffer[] = [];
  /** Zero bytes fed and not yet posted (runs of zero chunks go as one message). */
  private pendingZeros = 0;
  private failure: Error | undefined;
  /** Callers waiting for the thread's next answer (ready(), digest()). */
  private waiters: Array<() => void> = [];
  private result: ((digest: Buffer) => void) | undefined;
  private closed = false;

  constructor(private readonly algorithm: DigestAlgorithm) {
    this.worker = new Worker(new URL('./digest-worker.js', import.meta.url), {
      workerData: { algorithm },
      // It allocates nothing but its messages: a small heap keeps the process's peak low.
      resourceLimits: { maxYoungGenerationSizeMb: DIGEST_THREAD_YOUNG_GENERATION_MB },
    });
    // Idle, the thread does not keep the process alive: one a caller failed to close is no hang.
    this.worker.unref();
    this.worker.on('message', (m: DigestThreadReply) => {
      if (--this.outstanding === 0) this.worker.unref();
      if ('hashed' in m) {
        this.queuedBytes -= m.hashed;
        if (m.buffer && this.spare.length < SPARE_BUFFERS) this.spare.push(m.buffer);
      }
      else if ('digest' in m) this.result?.(Buffer.from(m.digest, 'hex'));
      else this.fail(new XferError('XFER_INTERNAL', `digest thread: ${m.error}`));
      this.wakeAll();
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', () => this.fail(new XferError('XFER_INTERNAL', 'digest thread exited')));
  }

  /**
   * Feeds consecutive chunks of a scan: `data` holds them, `lengths` and `digests` (32
   * bytes each) describe them. Zero chunks are recognised by length and digest.
   */
  feed(data: Uint8Array, count: number, lengths: Uint32Array, digests: Uint8Array): void {
    let at = 0;
    let from = 0;
    for (let i = 0; i < count; i++) {
      const length = lengths[i]!;
      if (isZeroChunk(this.algorithm, length, digests.subarray(i * 32, i * 32 + 32))) {
        if (at > from) this.bytes(data.subarray(from, at));
        this.pendingZeros += length;
        from = at + length;
      }
      at += length;
    }
    if (at !== data.length) throw new XferError('XFER_INTERNAL', `digest thread: chunks of ${at} bytes fed with ${data.length} bytes`);
    if (at > from) this.bytes(data.subarray(from, at));
    this.postZeros();
  }

  /**
   * Feeds the next bytes of the content (a Hasher's update): a view of zeroBytes() counts
   * as zeros (isZeroBytesView), anything else is copied.
   */
  update(data: Uint8Array): void {
    if (!isZeroBytesView(data)) this.bytes(data);
    else if ((this.pendingZeros += data.length) >= ZERO_MESSAGE_BYTES) this.postZeros();
  }

  /** Resolves once the queue is short enough for the next feed(); rejects if the thread failed. */
  async ready(): Promise<void> {
    while (!this.failure && this.queuedBytes > DIGEST_THREAD_QUEUE_BYTES) await this.nextAnswer();
    if (this.failure) throw this.failure;
  }

  /** The digest of everything fed; once. */
  async digest(): Promise<Buffer> {
    this.postZeros();
    const got = new Promise<Buffer>((resolve) => (this.result = resolve));
    this.post({ end: true });
    while (!this.failure) {
      const d = await Promise.race([got, this.nextAnswer().then(() => undefined)]);
      if (d) return d;
    }
    throw this.failure;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker.terminate();
  }

  /**
   * Copies `data` into copy buffers (never transferring the caller's memory), which go to
   * the thread when full and come back to be reused: small pieces (a rebuild's chunks) go
   * as few messages, and the copies' memory stays bounded instead of waiting for the
   * thread's garbage collector.
   */
  private bytes(data: Uint8Array): void {
    if (this.pendingZeros > 0) this.postZeros();
    for (let done = 0; done < data.length; ) {
      this.fill ??= new Uint8Array(this.spare.pop() ?? new ArrayBuffer(COPY_BUFFER_BYTES));
      const n = Math.min(data.length - done, this.fill.length - this.filled);
      this.fill.set(data.subarray(done, done + n), this.filled);
      this.filled += n;
      done += n;
      if (this.filled === this.fill.length) this.postFill();
    }
  }

  private postFill(): void {
    if (!this.fill || this.filled === 0) return;
    const data = this.fill.subarray(0, this.filled);
    this.fill = undefined;
    this.filled = 0;
    this.queuedBytes += data.length;
    this.post({ data }, [data.buffer as ArrayBuffer]);
  }

  private postZeros(): void {
    this.postFill(); // the bytes before the zeros go first
    if (this.pendingZeros === 0) return;
    const zeros = this.pendingZeros;
    this.pendingZeros = 0;
    this.post({ zeros });
  }

  private post(m: DigestThreadMessage, transfer?: ArrayBuffer[]): void {
    if (this.failure) throw this.failure;
    if (this.outstanding++ === 0) this.worker.ref();
    this.worker.postMessage(m, transfer);
  }

  private nextAnswer(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wakeAll(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.failure ??= err;
    this.wakeAll();
  }
}

/** The whole-content hasher of a large file being rebuilt: fed in order, hashing alongside the writes. */
export type LargeFileHasher = Pick<DigestThread, 'update' | 'ready' | 'digest' | 'close'>;

/**
 * BLAKE3 with the native addon: a TreeHasher (aligned spans hashed on libuv's threads,
 * merged in order; no thread of its own, zeros hashed without a buffer). Otherwise (no
 * addon, or SHA-256, sequential by nature) a DigestThread. The same digest either way.
 * `spans`: a TreeHasher's span size and buffers (scan/file-digest.ts reads into them).
 */
export function largeFileHasher(algorithm: DigestAlgorithm, spans?: TreeHasherOptions): LargeFileHasher | TreeHasher {
  const tree = algorithm === 'blake3' ? treeBinding() : null;
  return tree ? new TreeHasher(tree, isZeroBytesView, spans) : new DigestThread(algorithm);
}
