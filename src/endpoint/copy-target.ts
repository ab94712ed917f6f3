import { stat } from 'node:fs/promises';
import { join, posix, sep } from 'node:path';
import { fromSystemError } from '../core/errors.js';

/*
 * Apart from local.ts (which loads the local store and staging): a pull that ends at its
 * snapshot (pull-snapshot.ts) needs only this.
 */

/**
 * cp's rule for where a copy goes: into `dest` under the source's base name if `dest` is an
 * existing directory or ends with '/', else `dest` itself.
 */
export async function resolveCopyTarget(sourceName: string, dest: string): Promise<string> {
  if (dest.endsWith('/') || dest.endsWith(sep)) return join(dest, sourceName);
  try {
    const st = await stat(dest);
    if (st.isDirectory()) return join(dest, sourceName);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, dest, 'stat');
  }
  return dest;
}

/**
 * Where a pull of target `name` to `dest` goes: with rsync's trailing '/' on a tree
 * (`contents`), `dest` itself (less trailing separators); else cp's rule (resolveCopyTarget).
 */
export async function pullTarget(name: string, contents: boolean, dest: string): Promise<string> {
  return contents ? dest.replace(/(?<=.)[/\\]+$/, '') : resolveCopyTarget(posix.basename(name), dest);
}
