/**
 * Answers of the server: JSON, streamed bodies under the send timeout, and the one place a
 * failure becomes a response (sendErrorAnswer), its message scrubbed of where the server
 * runs.
 */
import type { Http2ServerResponse } from 'node:http2';
import { hostname } from 'node:os';
import { AbortedError, isXferError, TimeoutError, XferError } from '../core/errors.js';
import { escapeRegExp } from '../core/regexp.js';
import { OWNER_HOST } from '../io/owner.js';
import { errorAnswer } from '../protocol/errors.js';

/**
 * Resolves when the response can take more. Rejects when its stream closes (the client went
 * away) or when the client takes nothing for `timeoutMs` (it stopped reading: its stream is
 * reset, so it holds no read-ahead and no stream for ever).
 */
export function drained(res: Http2ServerResponse, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = timeoutMs > 0 ? setTimeout(() => {
      settle();
      reject(new TimeoutError(`the client took none of the answer for ${timeoutMs / 1000} s`));
      res.stream?.close(0x8); // CANCEL
    }, timeoutMs) : undefined;
    const settle = () => {
      clearTimeout(timer);
      res.off('drain', onDrain);
      res.off('close', onClose);
    };
    const onDrain = () => {
      settle();
      resolve();
    };
    const onClose = () => {
      settle();
      reject(new AbortedError('the client went away'));
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

export function sendJson(res: Http2ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Staging names and store temp names hold `<host>~<pid>` (reconstruct/staging.ts,
 * store/local/temp.ts); temp names written before that held `<pid>-<hex>`. The host name is
 * matched only before `~`: a short one ("vm") may be part of any word.
 */
const IDENTITY_PATTERN = new RegExp(
  `(?:${[...new Set([hostname(), OWNER_HOST])].map(escapeRegExp).join('|')})~\\d+|~${process.pid}\\b|\\b${process.pid}-(?=[0-9a-f]{12})`,
  'g',
);

/**
 * A message without the server's host name or process id, which name its staging and temp
 * files: clients are not told which machine or process serves them.
 */
export function scrubIdentity(message: string): string {
  return message.replace(IDENTITY_PATTERN, (m) => (m.endsWith('-') ? '<pid>-' : m.startsWith('~') ? '~<pid>' : '<host>~<pid>'));
}

/** The error each failed request was answered with (for the request log). */
const failures = new WeakMap<Http2ServerResponse, XferError>();

export function failureOf(res: Http2ServerResponse): XferError | undefined {
  return failures.get(res);
}

/**
 * The one place a server-side error becomes a response: `{ code, message }` with the status
 * from HTTP_STATUS, or a reset if the answer had started. Never throws.
 */
export function sendErrorAnswer(res: Http2ServerResponse, err: unknown, headers: Record<string, string> = {}, hidePaths: (message: string) => string = (m) => m): void {
  const e = isXferError(err) ? err : new XferError('XFER_INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`);
  if (!failures.has(res)) failures.set(res, e);
  try {
    if (res.headersSent || res.stream?.destroyed || res.stream?.closed) {
      res.stream?.close?.(0x2); // INTERNAL_ERROR: the client sees a reset, never a truncated success
      return;
    }
    const answer = errorAnswer(e.code, scrubIdentity(hidePaths(e.message)));
    res.writeHead(answer.status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer.body) });
    res.end(answer.body);
  } catch {
    // The stream went away meanwhile: nobody is left to answer.
  }
}
