import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromSystemError } from '../core/errors.js';

/** A new private directory under the system's temp directory (TMPDIR), failing with a one-line error. */
export async function makeTempDir(prefix: string): Promise<string> {
  try {
    return await mkdtemp(join(tmpdir(), prefix));
  } catch (err) {
    throw fromSystemError(err, tmpdir(), 'create a temporary directory');
  }
}
