import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Staging } from '../../src/reconstruct/staging.js';

/** Stages a small tree, version `version`: `d/` with file `v` holding the version's name. */
export async function stageTreeVersion(staging: Staging, version: string): Promise<void> {
  const mtimeMs = 1_700_000_000_000;
  await staging.mkdir({ type: 'dir', path: 'd', mode: 0o755, mtimeMs, size: 0 });
  const data = Buffer.from(version);
  const f = await staging.openFile({ type: 'file', path: 'd/v', mode: 0o644, mtimeMs, size: data.length });
  await f.write(data, 0);
  await f.finish(data.length);
}

/** Which version the tree at `dir` is ('' when it is not a complete tree of this shape). */
export async function treeVersion(dir: string): Promise<string> {
  try {
    if ((await readdir(dir)).join() !== 'd' || (await readdir(join(dir, 'd'))).join() !== 'v') return '';
    return await readFile(join(dir, 'd', 'v'), 'utf8');
  } catch {
    return '';
  }
}
