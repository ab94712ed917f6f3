import { InvalidArgumentError } from '../core/errors.js';
import { validateManifestName } from '../store/names.js';

/**
 * Turns the remote-path part of a request path into a manifest name, or throws
 * InvalidArgumentError. Each segment is percent-decoded exactly once; a segment that
 * decodes to something containing '/', '\', NUL, or that is empty, '.' or '..' is refused,
 * so `%2e%2e`, `%2f` and friends cannot smuggle traversal past the check. The result is
 * then held to the store's manifest-name rules. Nothing here touches the file system.
 */
export function remotePathToName(raw: string): string {
  if (raw === '') throw new InvalidArgumentError('a remote path is required');
  const segments = raw.split('/');
  const decoded = segments.map((s) => {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      throw new InvalidArgumentError(`invalid percent-encoding in remote path segment "${s}"`);
    }
    if (d === '' || d === '.' || d === '..') throw new InvalidArgumentError(`invalid remote path: empty, "." or ".." segment`);
    if (d.includes('/') || d.includes('\\') || d.includes('\0')) throw new InvalidArgumentError('invalid remote path: a segment contains "/", "\\" or NUL');
    return d;
  });
  return validateManifestName(decoded.join('/'));
}

/** Percent-encodes a name for use in a request path (each segment, '/' kept). */
export function nameToRemotePath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}
