/**
 * Request bodies, read within a byte limit: the one place the server bounds what a client
 * sends. Over the limit (declared in content-length, or counted as it arrives) is
 * 413 XFER_TOO_LARGE, before any more of it is read.
 */
import type { Http2ServerRequest } from 'node:http2';
import { TooLargeError } from '../core/errors.js';

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
