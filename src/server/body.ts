/**
 * Request bodies, read within a byte limit: the one place the server bounds what a client
 * sends. Over the limit (declared in content-length, or counted as it arrives) is
 * 413 XFER_TOO_LARGE, before any more of it is read.
 */
import type { Http2ServerRequest } from 'node:http2';
import { TooLargeError } from '../core/errors.js';
import { MiB } from '../core/sizes.js';

/**
 * What consumeBody keeps of a body while its consumer is busy before it pauses the body:
 * about one group of an upload's records (routes/chunks.ts UPLOAD_HASH_GROUP_BYTES).
 */
export const BODY_BACKLOG_BYTES = 1 * MiB;

/**
 * The body's pieces as they arrive, at most `limitBytes` in all; `what` names the body in
 * the message ("chunk batch", "manifest").
 */
export async function* limitedBody(req: Http2ServerRequest, limitBytes: number, what = 'request body'): AsyncGenerator<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limitBytes) throw new TooLargeError(`${what} of ${declared} bytes is over the limit of ${limitBytes}`);
  let total = 0;
  for await (const piece of req as AsyncIterable<Buffer>) {
    total += piece.length;
    if (total > limitBytes) throw new TooLargeError(`${what} is over the limit of ${limitBytes} bytes`);
    yield piece;
  }
}

/** The whole body, at most `limitBytes` (see limitedBody). */
export async function readBody(req: Http2ServerRequest, limitBytes: number, what = 'request body'): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of limitedBody(req, limitBytes, what)) pieces.push(piece);
  return Buffer.concat(pieces);
}

/**
 * Hands the body's pieces to `take` in order as they arrive, at most `limitBytes` in all
 * (as limitedBody), without an async iteration per piece: node:http2 delivers a body in
 * DATA frames of at most 16 KiB whatever the peer's SETTINGS allow (65,536 per GiB), and
 * each `for await` step through limitedBody cost two promise round trips per frame on the
 * server's main thread. `take` gets one piece as it arrives, or, after a promise it
 * returned settles, every piece that came meanwhile in one call: the caller then works on
 * all of them at once (an upload hashes the records they complete as one group). `take`
 * is never called while a promise it returned is pending; the pieces arriving meanwhile
 * are kept, up to BODY_BACKLOG_BYTES, beyond which the body is paused, so that its buffer
 * fills and HTTP/2 flow control holds the client. (Paused at once, the body would hand
 * over one piece per resume: a stream in flow emits its buffered pieces one by one and
 * stops at the first that makes `take` wait.) Resolves once the body has ended and
 * `take`'s last promise has settled. Rejects with the first failure (`take`'s, the
 * limit's, a body cut short) and destroys the request then, as an abandoned `for await`
 * does.
 */
export function consumeBody(req: Http2ServerRequest, limitBytes: number, what: string, take: (pieces: readonly Buffer[]) => Promise<void> | undefined): Promise<void> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limitBytes) return Promise.reject(new TooLargeError(`${what} of ${declared} bytes is over the limit of ${limitBytes}`));
  return new Promise<void>((resolve, reject) => {
    let total = 0;
    let settled = false;
    let ended = false;
    let pending = false;
    /** Pieces that came while a promise of `take` was pending, and their bytes. */
    let backlog: Buffer[] = [];
    let backlogBytes = 0;
    const settle = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', settle);
      req.off('close', onClose);
      if (err === undefined) return resolve();
      req.destroy();
      reject(err);
    };
    /** Hands `pieces` on; once a promise it returned settles, the backlog, and so on. */
    const feed = (pieces: Buffer[]): void => {
      if (settled) return;
      let waiting: Promise<void> | undefined;
      try {
        waiting = take(pieces);
      } catch (err) {
        return settle(err);
      }
      if (!waiting) return;
      pending = true;
      waiting.then(() => {
        pending = false;
        if (backlog.length > 0) {
          const next = backlog;
          backlog = [];
          backlogBytes = 0;
          feed(next);
        }
        if (settled || pending) return;
        if (ended) settle();
        else req.resume();
      }, settle);
    };
    const onData = (piece: Buffer): void => {
      total += piece.length;
      if (total > limitBytes) return settle(new TooLargeError(`${what} is over the limit of ${limitBytes} bytes`));
      if (!pending) return feed([piece]);
      backlog.push(piece);
      backlogBytes += piece.length;
      if (backlogBytes > BODY_BACKLOG_BYTES) req.pause();
    };
    const onEnd = (): void => {
      ended = true;
      if (!pending) settle();
    };
    // Closed before its end: the client reset the stream or the connection broke.
    const onClose = (): void => {
      if (!ended) settle(Object.assign(new Error('the request body was cut short'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', settle);
    req.on('close', onClose);
  });
}
