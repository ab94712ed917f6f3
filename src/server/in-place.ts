/**
 * The server's in-place commit (issue 14): a push that asks for it (`in-place=1` on the
 * manifest commit, docs/PROTOCOL.md) has a large file target rewritten where it is, only in
 * the chunks that changed, instead of rebuilt whole beside it and swapped in. Large means
 * over the server's threshold (`xfer serve --in-place-above`, IN_PLACE_ABOVE_BYTES): below
 * it the atomic rebuild costs little and keeps readers safe, and it stays the rule.
 *
 * What a client gives up by asking: between the first write and the end of the commit the
 * server's copy is inconsistent (a reader of `files/<name>` sees part old, part new), and a
 * commit cut short (a crash) leaves it so until the next push completes it (that push
 * compares the copy as it is, so it finishes the job). The manifest is stored only after
 * the copy is written, fsynced and verified against the whole-file digest.
 */
import { lstat } from 'node:fs/promises';
import { GiB } from '../core/sizes.js';
import { openManifestFile } from '../manifest/reader.js';
import { inPlaceRebuild, type InPlaceResult } from '../reconstruct/in-place.js';
import { ScanPool } from '../scan/pool.js';
import type { ChunkStore } from '../store/store.js';

/** Default threshold of `xfer serve --in-place-above`: targets of more bytes than this may be rewritten in place. */
export const IN_PLACE_ABOVE_BYTES = 1 * GiB;

export interface InPlaceCommitOptions {
  readonly signal: AbortSignal;
  /** `<root>/files`: the target is reached below it without following symlinks. */
  readonly confineTo: string;
  /** The server's threshold: only a current copy of more bytes than this is written in place. */
  readonly aboveBytes: number;
  /** Stores the manifest (after the chunks are durable): run once the copy is verified. */
  readonly beforeCommit: () => Promise<void>;
  /** Runs once the in-place write applies, before anything of the target is written (the held index lets go of it, server/held.ts). */
  readonly beforeWrite?: () => Promise<void>;
  /**
   * The digest of the manifest committed at the target now (none with checksum=1). The same
   * as the new one: not applicable; the atomic path's quick check keeps an unchanged copy
   * without reading it, where this would chunk all of it.
   */
  readonly committedDigest?: Uint8Array;
}

/**
 * Commits the manifest at `manifestFile` by rewriting `target` in place, if that applies:
 * the manifest is a single file's and the target is now a regular file (not a symlink, not
 * a device) of more than `aboveBytes` bytes, and not the version committed now. Undefined when it does not apply (the caller
 * rebuilds atomically, as without the flag).
 */
export async function commitInPlace(manifestFile: string, store: ChunkStore, target: string, options: InPlaceCommitOptions): Promise<InPlaceResult | undefined> {
  const { signal } = options;
  const reader = await openManifestFile(manifestFile, { signal });
  const st = await lstat(target).catch(() => undefined);
  const same = options.committedDigest !== undefined && Buffer.compare(options.committedDigest, reader.header.digest) === 0;
  if (reader.header.kind !== 'file' || !st?.isFile() || st.size <= options.aboveBytes || same) {
    await reader.close();
    return undefined;
  }
  try {
    await options.beforeWrite?.();
  } catch (err) {
    await reader.close();
    throw err;
  }
  const pool = new ScanPool({ startOnFirstTask: true });
  try {
    const result = await inPlaceRebuild(reader, store, target, {
      signal, pool, confineTo: options.confineTo, clearSetId: true, attributes: { untrusted: true },
    });
    await options.beforeCommit();
    return result;
  } finally {
    await pool.close();
  }
}
