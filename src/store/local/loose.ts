/**
 * Version 1's chunk files, `<dir>/chunks/<algorithm>/<hh>/<64 hex>`: still read, never
 * written. A store whose chunks/ holds none (every version 2 store) never looks there.
 */
import { access as accessCallback, readFile as readFileCallback } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { fromSystemError } from '../../core/errors.js';
import { DIGEST_ALGORITHMS, digestFromHex, digestToHex, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { mapBounded } from '../../core/window.js';
import { isMissing, readDirNames } from './fs.js';

/** Existence checks of version 1 chunk files in flight per has() call. */
const LOOSE_CONCURRENCY = 64;

/** Version 1 chunk files: the callback API costs far less per call than fs/promises. */
const access = promisify(accessCallback);
const readChunkFile = promisify(readFileCallback) as (path: string, options: { signal?: AbortSignal }) => Promise<Buffer>;

const FAN_OUT_RE = /^[0-9a-f]{2}$/;
const CHUNK_NAME_RE = /^[0-9a-f]{64}$/;

export class LooseChunks {
  private constructor(
    /** `<dir>/chunks`. */
    private readonly chunkDir: string,
    /** Whether chunks/ holds version 1 chunk files (looked for only then). */
    readonly present: boolean,
  ) {}

  /** Looks once whether chunks/ holds any version 1 chunk directory. */
  static async find(chunkDir: string): Promise<LooseChunks> {
    for (const alg of DIGEST_ALGORITHMS) {
      const fanOuts = await readDirNames(path.join(chunkDir, alg), undefined);
      if (fanOuts.some((f) => FAN_OUT_RE.test(f))) return new LooseChunks(chunkDir, true);
    }
    return new LooseChunks(chunkDir, false);
  }

  path(algorithm: DigestAlgorithm, hex: string): string {
    return `${this.chunkDir}${path.sep}${algorithm}${path.sep}${hex.slice(0, 2)}${path.sep}${hex}`;
  }

  /** The chunk file's size if it exists. */
  async size(id: ChunkId, hex: string): Promise<number | undefined> {
    if (!this.present) return undefined;
    const s = await stat(this.path(id.algorithm, hex)).catch(() => undefined);
    return s?.isFile() ? s.size : undefined;
  }

  /** Whether each of `ids` has a chunk file. */
  async has(ids: readonly ChunkId[], signal: AbortSignal | undefined): Promise<boolean[]> {
    if (!this.present) return ids.map(() => false);
    return mapBounded(ids, LOOSE_CONCURRENCY, signal, async (id) => {
      const file = this.path(id.algorithm, digestToHex(id.digest));
      try {
        await access(file);
        return true;
      } catch (err) {
        if (isMissing(err)) return false;
        throw fromSystemError(err, file, 'check chunk');
      }
    });
  }

  /** The chunk file's bytes (unverified) and its path, or undefined if there is none. */
  async read(id: ChunkId, hex: string): Promise<{ bytes: Buffer; file: string } | undefined> {
    if (!this.present) return undefined;
    const file = this.path(id.algorithm, hex);
    try {
      return { bytes: await readChunkFile(file, {}), file };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw fromSystemError(err, file, 'read chunk');
    }
  }

  /** Yields the digests of every chunk file of `algorithm` that `skip` does not rule out; unordered. */
  async *list(algorithm: DigestAlgorithm, skip: (digest: Uint8Array) => boolean, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    if (!this.present) return;
    const algDir = path.join(this.chunkDir, algorithm);
    for (const fanOut of await readDirNames(algDir, signal)) {
      if (!FAN_OUT_RE.test(fanOut)) continue;
      for (const name of await readDirNames(path.join(algDir, fanOut), signal)) {
        if (!CHUNK_NAME_RE.test(name) || !name.startsWith(fanOut)) continue;
        const digest = digestFromHex(name);
        if (!skip(digest)) yield digest;
      }
    }
  }
}
