import { stat } from 'node:fs/promises';
import { chunkerForImage } from '../chunker/image.js';
import type { ChunkerSpec } from '../core/ids.js';
import { scannableSize } from './scanner.js';

/**
 * The chunker a push or chunk of the file or block device at `path` gets when its caller
 * named none: the image chunker for an ext2/3/4 file system (chunker/image.ts), else
 * `fallback`. The CLI and the library apply this one rule, so a push from either
 * deduplicates against the other's. A path that is not a regular file or block device (a
 * tree, a missing path) gets `fallback`: the scan that follows says what is wrong with it.
 */
export async function chunkerForSource(path: string, fallback: ChunkerSpec): Promise<ChunkerSpec> {
  const st = await stat(path).catch(() => undefined);
  if (!st || !(st.isFile() || st.isBlockDevice())) return fallback;
  const size = await scannableSize(path, st).catch(() => 0);
  return chunkerForImage(path, size, fallback);
}
