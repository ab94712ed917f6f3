/**
 * Files a later quick check could be wrong about (git's "racily clean" files).
 *
 * The quick check (known.ts) takes a file as unchanged when its size and mtime, in whole
 * milliseconds, are what the last push recorded. A file written again right after a push
 * read it can keep both: Linux stamps files from a clock that advances once per jiffy (1-10
 * ms), and some filesystems keep only whole or even seconds. Such a write would never be
 * pushed until the file's mtime moved on.
 *
 * So a file whose mtime is within a window of the moment its read began is noted, and
 * before the commit, once the clock has left the window, checked again: same size, same
 * mtime (at full precision) and the same content digest (it is read once more). A file that
 * fails is SourceChangedError: run again. Any later write gets a later mtime. Files are
 * rarely this fresh when read (being written meanwhile, mostly), so this usually costs
 * nothing; otherwise a wait of at most the window and a second read of those files.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { sleepUnlessAborted, throwIfAborted } from '../core/abort.js';
import { fromSystemError, SourceChangedError } from '../core/errors.js';
import type { DigestAlgorithm } from '../core/ids.js';
import { createHasher } from '../hash/digest.js';

/** A file's timestamps may lag real time by up to a jiffy (10 ms at HZ=100); twice that, to be safe. */
export const RACY_WINDOW_MS = 20;
/**
 * An mtime in whole seconds suggests a filesystem that keeps no finer ones (FAT keeps even
 * seconds): the window is then two seconds.
 */
export const RACY_COARSE_WINDOW_MS = 2000;

interface RacyFile {
  readonly path: string;
  readonly size: number;
  /** The mtime as stat gave it before the read, at full precision. */
  readonly mtimeMs: number;
  readonly digest: Uint8Array;
}

function windowOf(mtimeMs: number): number {
  return mtimeMs % 1000 === 0 ? RACY_COARSE_WINDOW_MS : RACY_WINDOW_MS;
}

export class RacyFiles {
  private readonly files: RacyFile[] = [];
  /** When it is safe to look at every noted file again: the clock has left their windows. */
  private settledAtMs = 0;

  constructor(private readonly algorithm: DigestAlgorithm) {}

  /**
   * A file was read, beginning no earlier than `readFromMs` (Date.now() before its scan
   * started), with the size, mtime and digest the push records for it: noted if its mtime
   * falls within its window of that moment.
   */
  note(path: string, size: number, mtimeMs: number, digest: Uint8Array, readFromMs: number): void {
    const window = windowOf(mtimeMs);
    if (mtimeMs < readFromMs - window) return;
    this.files.push({ path, size, mtimeMs, digest });
    this.settledAtMs = Math.max(this.settledAtMs, Math.trunc(mtimeMs) + window + 1);
  }

  get count(): number {
    return this.files.length;
  }

  /**
   * Waits until every noted file's window has passed, then checks each once more; throws
   * SourceChangedError for one that changed since it was read. A file stamped in the future
   * (another machine's clock) is waited for at most RACY_COARSE_WINDOW_MS.
   */
  async settle(signal?: AbortSignal): Promise<void> {
    if (this.files.length === 0) return;
    const wait = Math.min(this.settledAtMs - Date.now(), RACY_COARSE_WINDOW_MS);
    if (wait > 0) await sleepUnlessAborted(wait, signal);
    for (const f of this.files) {
      throwIfAborted(signal);
      let st;
      try {
        st = await stat(f.path, { bigint: true });
      } catch (err) {
        throw fromSystemError(err, f.path, 'stat');
      }
      // The mtime in the walk's form (walk.ts mtimeExactMs: nanoseconds over 1e6). Node's own
      // stat().mtimeMs is computed another way and differs from it in the last bit for about
      // a quarter of timestamps: compared with that, an unchanged file failed the push.
      if (Number(st.size) !== f.size || Number(st.mtimeNs) / 1e6 !== f.mtimeMs || !(await this.digestOf(f.path)).equals(f.digest)) {
        throw new SourceChangedError(`${f.path}: file changed right after it was read; run again`);
      }
    }
  }

  private async digestOf(path: string): Promise<Buffer> {
    const hasher = createHasher(this.algorithm);
    try {
      for await (const piece of createReadStream(path, { highWaterMark: 1 << 20 })) hasher.update(piece as Buffer);
    } catch (err) {
      throw fromSystemError(err, path, 'read');
    }
    return hasher.digest();
  }
}
