import { ProtocolError } from '../core/errors.js';

/*
 * Network and TLS failures in words. undici and Node report a failed or broken connection
 * by a raw code (ENOTFOUND, UND_ERR_SOCKET, DEPTH_ZERO_SELF_SIGNED_CERT); a user needs what
 * happened and what to do about it. The HTTP client (http.ts) asks here for the sentence and
 * for whether trying again can help. Kept apart from http.ts so that the table is the one
 * place to read, and testable without a network.
 */

export interface NetFailure {
  /** One line, without the server's name: "connection refused (is xfer serve running there?)". */
  readonly text: string;
  /** No connection was made (as opposed to one that broke). */
  readonly reaching: boolean;
  /** Trying again cannot help (a certificate not trusted, a wrong scheme): not retried. */
  readonly permanent: boolean;
}

/** Certificate checks that fail because the client does not trust the issuer (self-signed, private CA). */
const UNTRUSTED_CERT = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE',
]);

/**
 * Describes a transport failure of a request to `base`. An error without a known code keeps
 * its own message (or code), so nothing is hidden; it counts as a broken connection.
 */
export function describeNetFailure(err: unknown, base: URL): NetFailure {
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code;
  const host = base.hostname;
  const reach = (text: string, permanent = false): NetFailure => ({ text, reaching: true, permanent });
  const broke = (text: string): NetFailure => ({ text, reaching: false, permanent: false });
  if (code !== undefined && UNTRUSTED_CERT.has(code)) {
    return reach('certificate not trusted: pass --ca FILE with the certificate of its CA (or --insecure for tests)', true);
  }
  switch (code) {
    case 'ENOTFOUND':
      return reach(`cannot resolve host ${host}`);
    case 'EAI_AGAIN':
      return reach(`cannot resolve host ${host} (name server not answering)`);
    case 'ECONNREFUSED':
      return reach('connection refused (is xfer serve running there, on that port?)');
    case 'EHOSTUNREACH':
      return reach('no route to host');
    case 'ENETUNREACH':
      return reach('network unreachable');
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return reach('connection timed out');
    case 'CERT_HAS_EXPIRED':
      return reach('its certificate has expired', true);
    case 'CERT_NOT_YET_VALID':
      return reach('its certificate is not valid yet (check the clocks)', true);
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return reach(`its certificate is not for ${host}: use a host name the certificate names`, true);
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_PACKET_LENGTH_TOO_LONG':
      return reach('it does not speak TLS: use http://', true);
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return broke('no answer within the --timeout');
    case 'ECONNRESET':
      return broke('connection reset');
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return broke('the server closed the connection');
    default:
      return broke(code ?? e?.message ?? String(err));
  }
}

/**
 * Codes of undici errors that say the request itself was wrong, never the network: a bug
 * of the caller, which another attempt repeats.
 */
const CALLER_ERROR_CODES = new Set([
  'UND_ERR_INVALID_ARG', 'UND_ERR_INVALID_RETURN_VALUE', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
]);

/**
 * Whether `err` is a failure of the connection or of the server's end of it (a system
 * error, an undici or HTTP/2 error, a TLS failure), as opposed to an error of our own
 * code: only the former is described by describeNetFailure and may be retried. An error
 * without such a code (a TypeError, a request body's source that threw) is not.
 */
export function isNetworkFailure(err: unknown): boolean {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  const code = typeof e?.code === 'string' ? e.code : typeof e?.cause?.code === 'string' ? e.cause.code : undefined;
  if (code === undefined || CALLER_ERROR_CODES.has(code)) return false;
  return /^(E[A-Z0-9_]+|UND_ERR_[A-Z_]+|ERR_HTTP2_[A-Z_]+|ERR_STREAM_PREMATURE_CLOSE|ERR_SSL_[A-Z0-9_]+|ERR_TLS_[A-Z_]+|CERT_[A-Z_]+)$/.test(code) || UNTRUSTED_CERT.has(code);
}

/**
 * Whether `err` is an HTTP/2 stream reset (RST_STREAM: the peer refused or dropped one
 * request, e.g. ENHANCE_YOUR_CALM from a Node server at its stream limit), which leaves
 * the connection and its other requests as they were.
 */
export function isStreamReset(err: unknown): boolean {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  return e?.code === 'ERR_HTTP2_STREAM_ERROR' || e?.cause?.code === 'ERR_HTTP2_STREAM_ERROR';
}

/** The reset's HTTP/2 error code, as Node names it ("NGHTTP2_REFUSED_STREAM"), if the error says. */
export function streamResetCode(err: unknown): string | undefined {
  const e = err as { message?: unknown; cause?: { message?: unknown } };
  for (const m of [e?.message, e?.cause?.message]) {
    const found = typeof m === 'string' ? /\bNGHTTP2_[A-Z_]+/.exec(m) : null;
    if (found) return found[0];
  }
  return undefined;
}

/**
 * A failure another attempt may not meet: the connection broke, or the server was
 * stopping or could not answer for now (502, 503, 504). Same code as any protocol error
 * (XFER_PROTOCOL): the class only tells the retry apart.
 */
export class TransientError extends ProtocolError {}

/**
 * The HTTP store's classification of its errors (restic's IsPermanentError): every error
 * is permanent but a TransientError, which the protocol client (http/client.ts) makes of
 * connection failures (isNetworkFailure, unless describeNetFailure calls them permanent)
 * and of answers that say "for now". Errors the server described (a 4xx, 500), protocol
 * violations, aborts and our own bugs are never retried as "the connection broke".
 */
export function isPermanentHttpError(err: unknown): boolean {
  return !(err instanceof TransientError);
}
