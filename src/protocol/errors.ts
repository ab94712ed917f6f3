/**
 * Errors on the wire (docs/PROTOCOL.md, "Errors"): a failed request is answered with the
 * status HTTP_STATUS gives its code (core/errors.ts holds the one table) and a JSON body
 * `{ "code", "message" }`, written by the server and read by the client here.
 */
import { HTTP_STATUS, type ErrorCode } from '../core/errors.js';

export { HTTP_STATUS };

export interface ErrorAnswer {
  readonly code: ErrorCode;
  readonly message: string;
}

/** The status and body of the answer to a failure of `code`. */
export function errorAnswer(code: ErrorCode, message: string): { status: number; body: string } {
  return { status: HTTP_STATUS[code] ?? 500, body: JSON.stringify({ code, message }) };
}

/** The code and message of a parsed error body, or undefined if it is not one. */
export function readErrorAnswer(body: unknown): ErrorAnswer | undefined {
  const b = body as { code?: unknown; message?: unknown } | null;
  return b && typeof b.code === 'string' && typeof b.message === 'string' ? { code: b.code as ErrorCode, message: b.message } : undefined;
}
