/**
 * Stages of a push to a server (docs/PROTOCOL.md, POST /v1/stage/<path>): the server
 * rebuilds the target from what is streamed here while the chunks are uploaded, and
 * swaps it in at the manifest commit. A push-side concern, apart from the chunk store.
 */
import { END_MARKER } from '../manifest/format.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import type { EntryMeta } from '../manifest/types.js';
import { STAGE_END_BYTES, STAGE_RECORD_BYTES, stageQuery } from '../protocol/stage-format.js';
import type { XferClient } from '../store/http/client.js';

export interface StageUpload {
  readonly list: StageList;
  /** The stage's answer; rejects if the server refused or discarded it. */
  readonly done: Promise<void>;
}

/**
 * Opens a stage of `name`. For a file (`meta`), the stream is its chunk list
 * (StageList.add, end); for a tree, the body of its manifest as it is written
 * (StageList.addBytes, endBody). `done` settles with the stage's answer, after the commit.
 * The stage only saves the server work: callers ignore its failures.
 */
export function openStage(
  client: XferClient, name: string, algorithm: DigestAlgorithm, what: EntryMeta | { readonly tree: ChunkerSpec }, signal?: AbortSignal, options: { readonly checksum?: boolean } = {},
): StageUpload {
  const list = new StageList(signal);
  const done = client.stage(name, stageQuery(algorithm, what, options.checksum === true), list.body(), list.signal);
  done.catch(() => list.stop()); // refused (an older server) or reset: stop queueing
  return { list, done };
}

/**
 * A stage's request body. A file's: chunk records (u32 length BE + digest) as the scan
 * produces them, then the end record (u32 0 + u64 size BE + whole-file digest). A tree's:
 * its manifest's body bytes as they are written, then the end marker.
 */
export class StageList {
  private readonly queue: Buffer[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private stopped = false;
  private readonly controller = new AbortController();

  constructor(signal?: AbortSignal) {
    if (signal) {
      if (signal.aborted) this.stop();
      else signal.addEventListener('abort', () => this.stop(), { once: true });
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  add(records: readonly { readonly length: number; readonly digest: Uint8Array }[]): void {
    if (this.stopped || this.ended || records.length === 0) return;
    const out = Buffer.allocUnsafe(records.length * STAGE_RECORD_BYTES);
    records.forEach((r, i) => {
      out.writeUInt32BE(r.length, i * STAGE_RECORD_BYTES);
      out.set(r.digest, i * STAGE_RECORD_BYTES + 4);
    });
    this.push(out);
  }

  /** A tree's manifest body bytes (copied: the caller may reuse its buffer). */
  addBytes(bytes: Uint8Array): void {
    if (this.stopped || this.ended || bytes.length === 0) return;
    this.push(Buffer.from(bytes));
  }

  /** Ends a tree's body with the end marker, as the manifest ends it. */
  endBody(): void {
    if (this.stopped || this.ended) return;
    this.push(Buffer.from([END_MARKER]));
    this.ended = true;
    this.wake?.();
  }

  end(size: number, digest: Uint8Array): void {
    if (this.stopped || this.ended) return;
    const out = Buffer.alloc(STAGE_END_BYTES);
    out.writeBigUInt64BE(BigInt(size), 4);
    out.set(digest, 12);
    this.push(out);
    this.ended = true;
    this.wake?.();
  }

  /** Abandons the stage: the request is reset, and the server discards what it staged. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.queue.length = 0;
    this.controller.abort();
    this.wake?.();
  }

  /**
   * The body: what was queued since the last piece, in one piece. A tree's manifest body
   * comes a few dozen bytes at a time (an entry's begin, chunks and end are each a write),
   * and a piece each cost the push's main thread an HTTP/2 stream write: 23,000 for a
   * 7,643-file tree.
   */
  async *body(): AsyncGenerator<Buffer> {
    for (;;) {
      if (this.queue.length) {
        // What the rest of this turn of the event loop queues goes along.
        if (!this.ended && !this.stopped) await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.stopped) return;
        const pieces = this.queue.splice(0);
        yield pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
        continue;
      }
      if (this.stopped) return;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  private push(piece: Buffer): void {
    this.queue.push(piece);
    this.wake?.();
  }
}
