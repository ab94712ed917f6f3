/**
 * Every error xfer raises on purpose is an XferError with a stable `code`.
 * Codes are part of the public contract: the CLI maps them to exit codes and the
 * server maps them to HTTP statuses, each in exactly one table (EXIT_CODES, HTTP_STATUS).
 * Messages are single lines meant for people; they name the thing that is wrong.
 */

export type ErrorCode =
  | 'XFER_INVALID_ARGUMENT'
  | 'XFER_INVALID_OPTION'
  | 'XFER_NOT_FOUND'
  | 'XFER_PERMISSION_DENIED'
  | 'XFER_ALREADY_EXISTS'
  | 'XFER_SPECIAL_FILE'
  | 'XFER_CHUNK_MISSING'
  | 'XFER_CHUNK_CORRUPT'
  | 'XFER_MANIFEST_CORRUPT'
  | 'XFER_MANIFEST_MISMATCH'
  | 'XFER_MANIFEST_INCOMPLETE'
  | 'XFER_VERIFY_FAILED'
  | 'XFER_SOURCE_CHANGED'
  | 'XFER_IO'
  | 'XFER_UNAUTHORIZED'
  | 'XFER_TOO_LARGE'
  | 'XFER_PROTOCOL'
  | 'XFER_ABORTED'
  | 'XFER_TIMEOUT'
  | 'XFER_BUSY'
  | 'XFER_INTERNAL';

export class XferError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'XferError';
  }
}

/** A caller passed something that can never work (bad size, min > avg, unknown digest). */
export class InvalidArgumentError extends XferError {
  constructor(message: string) {
    super('XFER_INVALID_ARGUMENT', message);
    this.name = 'InvalidArgumentError';
  }
}

/**
 * A library caller passed an option outside its domain (`options.concurrency must be a
 * positive integer`): checked at the public edge (core/options.ts), before any work, so
 * that no bad value reaches a loop it would never let end. `option` names it.
 */
export class InvalidOptionError extends XferError {
  readonly option: string;
  constructor(option: string, rule: string) {
    super('XFER_INVALID_OPTION', `options.${option} must be ${rule}`);
    this.name = 'InvalidOptionError';
    this.option = option;
  }
}

export class NotFoundError extends XferError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('XFER_NOT_FOUND', message, options);
    this.name = 'NotFoundError';
  }
}

export class PermissionDeniedError extends XferError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('XFER_PERMISSION_DENIED', message, options);
    this.name = 'PermissionDeniedError';
  }
}

export class AlreadyExistsError extends XferError {
  constructor(message: string) {
    super('XFER_ALREADY_EXISTS', message);
    this.name = 'AlreadyExistsError';
  }
}

/**
 * The destination is a block or character device, a FIFO or a socket: xfer replaces only
 * regular files and directories (a rename over a device node would silently swap the node
 * for a file, and the device would never be written).
 */
export class SpecialFileError extends XferError {
  constructor(message: string) {
    super('XFER_SPECIAL_FILE', message);
    this.name = 'SpecialFileError';
  }
}

/** A store was asked for a chunk it does not hold. Routers and retries switch on this. */
export class ChunkMissingError extends XferError {
  readonly digest: string;
  constructor(digest: string, where?: string) {
    super('XFER_CHUNK_MISSING', `chunk ${digest} is missing${where ? ` from ${where}` : ''}`);
    this.name = 'ChunkMissingError';
    this.digest = digest;
  }
}

/** Chunk bytes do not hash to the digest they are stored or sent under. Never retried silently. */
export class ChunkCorruptError extends XferError {
  readonly digest: string;
  constructor(digest: string, detail: string) {
    super('XFER_CHUNK_CORRUPT', `chunk ${digest} is corrupt: ${detail}`);
    this.name = 'ChunkCorruptError';
    this.digest = digest;
  }
}

export class ManifestCorruptError extends XferError {
  constructor(message: string) {
    super('XFER_MANIFEST_CORRUPT', message);
    this.name = 'ManifestCorruptError';
  }
}

/** Data chunked or hashed with other parameters than a manifest declares. */
export class ManifestMismatchError extends XferError {
  constructor(message: string) {
    super('XFER_MANIFEST_MISMATCH', message);
    this.name = 'ManifestMismatchError';
  }
}

/** A manifest refers to chunks the store does not hold, so it cannot be committed. */
export class ManifestIncompleteError extends XferError {
  constructor(message: string) {
    super('XFER_MANIFEST_INCOMPLETE', message);
    this.name = 'ManifestIncompleteError';
  }
}

/** A reconstructed file or tree does not match its manifest. */
export class VerifyFailedError extends XferError {
  constructor(message: string) {
    super('XFER_VERIFY_FAILED', message);
    this.name = 'VerifyFailedError';
  }
}

/** The source file changed size or content while it was being read. */
export class SourceChangedError extends XferError {
  constructor(message: string) {
    super('XFER_SOURCE_CHANGED', message);
    this.name = 'SourceChangedError';
  }
}

export class IoError extends XferError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('XFER_IO', message, options);
    this.name = 'IoError';
  }
}

/** The server requires a token and none or a wrong one was given. */
export class UnauthorizedError extends XferError {
  constructor(message = 'missing or wrong token') {
    super('XFER_UNAUTHORIZED', message);
    this.name = 'UnauthorizedError';
  }
}

/** A request body or header over the server's limits. */
export class TooLargeError extends XferError {
  constructor(message: string) {
    super('XFER_TOO_LARGE', message);
    this.name = 'TooLargeError';
  }
}

/** The other side broke the protocol (unexpected status, malformed answer, dropped connection). */
export class ProtocolError extends XferError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('XFER_PROTOCOL', message, options);
    this.name = 'ProtocolError';
  }
}

export class AbortedError extends XferError {
  constructor(message = 'operation aborted') {
    super('XFER_ABORTED', message);
    this.name = 'AbortedError';
  }
}

/**
 * A peer was too slow for the server's timeouts: no request came on a connection, a request
 * body stalled, or a stage stopped making progress (a chunk it waits for never came).
 */
export class TimeoutError extends XferError {
  constructor(message: string) {
    super('XFER_TIMEOUT', message);
    this.name = 'TimeoutError';
  }
}

/** The server is at one of its limits (connections, concurrent requests): try again later. */
export class BusyError extends XferError {
  constructor(message: string) {
    super('XFER_BUSY', message);
    this.name = 'BusyError';
  }
}

/** Process exit codes by error code; documented in README "Exit codes". */
export const EXIT_CODES: Readonly<Record<ErrorCode, number>> = {
  XFER_INVALID_ARGUMENT: 2,
  XFER_INVALID_OPTION: 2,
  XFER_NOT_FOUND: 3,
  XFER_PERMISSION_DENIED: 4,
  XFER_ALREADY_EXISTS: 5,
  XFER_SPECIAL_FILE: 15,
  XFER_CHUNK_MISSING: 6,
  XFER_CHUNK_CORRUPT: 7,
  XFER_MANIFEST_CORRUPT: 8,
  XFER_MANIFEST_MISMATCH: 8,
  XFER_MANIFEST_INCOMPLETE: 6,
  XFER_VERIFY_FAILED: 9,
  XFER_SOURCE_CHANGED: 10,
  XFER_IO: 11,
  XFER_UNAUTHORIZED: 12,
  XFER_TOO_LARGE: 13,
  XFER_PROTOCOL: 14,
  XFER_ABORTED: 130,
  XFER_TIMEOUT: 14,
  XFER_BUSY: 14,
  XFER_INTERNAL: 70,
};

/** HTTP status by error code, used by the server and reversed by the HTTP client. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  XFER_INVALID_ARGUMENT: 400,
  XFER_INVALID_OPTION: 400, // a client-side code: the server takes no options
  XFER_NOT_FOUND: 404,
  XFER_PERMISSION_DENIED: 403,
  XFER_ALREADY_EXISTS: 409,
  XFER_SPECIAL_FILE: 409,
  XFER_CHUNK_MISSING: 404,
  XFER_CHUNK_CORRUPT: 422,
  XFER_MANIFEST_CORRUPT: 400,
  XFER_MANIFEST_MISMATCH: 409,
  XFER_MANIFEST_INCOMPLETE: 409,
  XFER_VERIFY_FAILED: 422, // what the client sent does not rebuild into what it announced
  XFER_SOURCE_CHANGED: 409,
  XFER_IO: 500,
  XFER_UNAUTHORIZED: 401,
  XFER_TOO_LARGE: 413,
  XFER_PROTOCOL: 502,
  XFER_ABORTED: 499,
  XFER_TIMEOUT: 408,
  XFER_BUSY: 503, // sent with Retry-After; clients retry it
  XFER_INTERNAL: 500,
};

/**
 * Turns a Node.js system error into an XferError naming `path`, so that no errno text
 * or stack trace reaches a user. Anything already an XferError passes through.
 */
export function fromSystemError(err: unknown, path: string, action: string): XferError {
  if (err instanceof XferError) return err;
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return new NotFoundError(`${path}: no such file or directory`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new PermissionDeniedError(`${path}: permission denied (${action})`, { cause: err });
    case 'ENOTDIR':
      return new NotFoundError(`${path}: a component of the path is not a directory`, { cause: err });
    case 'EISDIR':
      return new InvalidArgumentError(`${path}: is a directory`);
    case 'ENAMETOOLONG':
      return new InvalidArgumentError(`${path}: file name too long (${action})`);
    case 'ENOSPC':
      return new IoError(`${path}: no space left on device (${action})`, { cause: err });
    case 'ABORT_ERR': {
      // Node's AbortError carries the signal's reason as its cause ("aborted: interrupted").
      const cause = (err as { cause?: unknown }).cause;
      return cause instanceof Error && cause.name !== 'AbortError' ? new AbortedError(`aborted: ${cause.message}`) : new AbortedError();
    }
    default:
      return new IoError(`${path}: ${action} failed: ${e?.message ?? String(err)}`, { cause: err });
  }
}

export function isXferError(err: unknown, code?: ErrorCode): err is XferError {
  return err instanceof XferError && (code === undefined || err.code === code);
}
