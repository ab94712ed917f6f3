import { InvalidArgumentError } from '../core/errors.js';

/*
 * Remote specs (`http(s)://host:port/<remote-path>`) are told apart and parsed here, apart
 * from the HTTP client (endpoint/http.ts): commands that touch no server never load undici,
 * which costs about 90 ms of start-up.
 */

/** What a location may be, for messages that refuse another kind. */
export const SUPPORTED_LOCATIONS = 'local paths, http:// and https://';

/**
 * True for `http(s)://...`, false for a local path. Anything that reads as another kind of
 * remote location is refused (InvalidArgumentError) rather than taken as a local path: a
 * push to `s3://bucket/x` or `host:/path` would otherwise create a directory named `s3:`
 * or `host:`. rsync's rule tells them apart: a colon before any slash means remote
 * (`host:path`, `scheme://`); `./a:b` or `/x/a:b` is a local path.
 */
export function isRemote(spec: string): boolean {
  if (/^https?:\/\//i.test(spec)) return true;
  refuseForeignRemote(spec);
  return false;
}

/**
 * Checks that `spec` is a local path (`what` names its role in the message): not a server
 * URL, not another scheme, not `host:path`.
 */
export function checkLocalPath(spec: string, what: string): void {
  if (/^https?:\/\//i.test(spec)) throw new InvalidArgumentError(`${spec}: ${what} must be a local path, not a server URL`);
  refuseForeignRemote(spec);
}

function refuseForeignRemote(spec: string): void {
  const colon = spec.indexOf(':');
  if (colon < 0) return;
  const slash = spec.indexOf('/');
  if (slash >= 0 && slash < colon) return;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec);
  if (scheme) throw new InvalidArgumentError(`${spec}: xfer does not support ${scheme[1]!.toLowerCase()}:// locations; it copies between ${SUPPORTED_LOCATIONS}`);
  throw new InvalidArgumentError(
    `${spec}: a colon before any slash means host:path, which xfer does not reach; it copies between ${SUPPORTED_LOCATIONS} (write ./${spec} for a local name with a colon)`,
  );
}

/** Splits `http(s)://host:port/<remote-path>` into the server URL and the (decoded) remote path. */
export function parseRemote(spec: string): { base: URL; path: string; trailingSlash: boolean } {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new InvalidArgumentError(`invalid URL "${spec}"`);
  }
  const raw = url.pathname.replace(/^\/+/, '');
  const trailingSlash = raw.endsWith('/') || raw === '';
  const segments = raw.split('/').filter((s) => s !== '');
  let path: string;
  try {
    path = segments.map((s) => decodeURIComponent(s)).join('/');
  } catch {
    throw new InvalidArgumentError(`invalid percent-encoding in "${spec}"`);
  }
  return { base: new URL(url.origin), path, trailingSlash };
}
