/*
 * The small edits the WAN bench and its round-trip trace make between a first copy and a
 * re-sync, and the file list they choose edited files from: one definition, so both measure
 * the same change.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pseudoRandom } from '../test/helpers/gen.js';

/** Bytes of one edit: a 4 KiB overwrite, a block's worth. */
export const EDIT_BYTES = 4096;

/** `edits` overwrites of EDIT_BYTES pseudo-random bytes spread evenly over a file of `size` bytes. */
export async function editFile(path: string, size: number, seed: number, edits: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (let i = 0; i < edits; i++) {
      const at = Math.floor(((i + 0.5) / edits) * (size - EDIT_BYTES));
      await fh.write(pseudoRandom(EDIT_BYTES, seed + i), 0, EDIT_BYTES, at);
    }
  } finally {
    await fh.close();
  }
}

/** Every regular file under `dir` with its size, sorted by path. */
export async function filesUnder(dir: string, base = ''): Promise<{ path: string; bytes: number }[]> {
  const out: { path: string; bytes: number }[] = [];
  for (const e of (await readdir(join(dir, base), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = join(base, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(dir, rel)));
    else if (e.isFile()) out.push({ path: rel, bytes: (await stat(join(dir, rel))).size });
  }
  return out;
}
