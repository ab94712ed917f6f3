import { InvalidArgumentError } from '../core/errors.js';

/*
 * Remote specs (`http(s)://host:port/<remote-path>`) are told apart and parsed here, apart
 * from the HTTP client (endpoint/http.ts): commands that touch no server never load undici,
 * which costs about 90 ms of start-up.
 */

export function isRemote(spec: string): boolean {
  return /^https?:\/\//i.test(spec);
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
