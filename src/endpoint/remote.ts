import { InvalidArgumentError } from '../core/errors.js';

/*
 * Server URLs (`http(s)://host:port/<remote-path>`) are parsed here, apart from the HTTP
 * client (endpoint/http.ts): parsing a location (the registry, open.ts) never loads
 * undici, which costs about 90 ms of start-up.
 */

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
