import type { Readable } from 'node:stream';
import { stat } from 'node:fs/promises';
import { DEFAULT_CHUNKER, validateChunkerSpec } from '../chunker/params.js';
import { fromSystemError, InvalidArgumentError } from '../core/errors.js';
import type { ChunkerSpec, DigestAlgorithm } from '../core/ids.js';
import { digestToHex } from '../core/ids.js';
import { createHasher } from '../hash/digest.js';
import { walkTree } from './walk.js';
import { DigestSet } from './digest-set.js';
import { ScanPool } from './pool.js';
import { chunkDigest, FileScan, scannableSize, StreamScan } from './scanner.js';

/** Distinct chunks are counted exactly up to this many (64 MiB of table); see DigestSet. */
export const DISTINCT_TRACK_MAX_CHUNKS = 4 * 1024 * 1024;

export interface AnalyzeOptions {
  readonly chunker?: ChunkerSpec;
  readonly digestAlgorithm?: DigestAlgorithm;
  readonly implementation?: 'auto' | 'native' | 'typescript';
  readonly signal?: AbortSignal;
  readonly pool?: ScanPool;
  /** Called for every chunk in order (offset within its file). */
  readonly onChunk?: (path: string, offset: number, length: number, digest: Uint8Array) => void;
}

export interface AnalyzeResult {
  readonly size: number;
  readonly files: number;
  readonly chunks: number;
  /** null when there were more chunks than DISTINCT_TRACK_MAX_CHUNKS. */
  readonly distinctChunks: number | null;
  readonly distinctBytes: number | null;
  /** Whole-content digest of a file or stream; for a tree, the digest of its files' digests in order. */
  readonly digest: string;
  readonly seconds: number;
}

/**
 * Chunks and hashes a file, a tree or a stream without storing anything: what
 * `xfer chunk` reports (sizes, dedup potential, throughput).
 */
export async function analyze(source: string | Readable, options: AnalyzeOptions = {}): Promise<AnalyzeResult> {
  const started = performance.now();
  const chunker = validateChunkerSpec(options.chunker ?? DEFAULT_CHUNKER);
  const digestAlgorithm = options.digestAlgorithm ?? 'blake3';
  const scanOpts = { chunker, digestAlgorithm, implementation: options.implementation, signal: options.signal };
  const ownPool = !options.pool;
  const pool = options.pool ?? new ScanPool();
  const distinct = new DigestSet(DISTINCT_TRACK_MAX_CHUNKS);
  let size = 0;
  let chunks = 0;
  let files = 0;
  let distinctBytes = 0;
  const consume = async (path: string, scan: FileScan | StreamScan) => {
    files++;
    for await (const b of scan.batches()) {
      let o = b.offset;
      for (let i = 0; i < b.count; i++) {
        const d = chunkDigest(b, i);
        const len = b.lengths[i]!;
        if (distinct.add(d)) distinctBytes += len;
        options.onChunk?.(path, o, len, d);
        o += len;
      }
      chunks += b.count;
      size += b.data.length;
      b.release();
    }
    return scan.result.digest;
  };
  try {
    let digest: Uint8Array;
    if (typeof source !== 'string') digest = await consume('-', new StreamScan(source, { ...scanOpts, pool }));
    else {
      let st;
      try {
        st = await stat(source);
      } catch (err) {
        throw fromSystemError(err, source, 'stat');
      }
      if (st.isFile() || st.isBlockDevice()) {
        const bytes = await scannableSize(source, st);
        pool.expect(bytes); // more than the pool scans inline: its threads start now
        digest = await consume(source, new FileScan(source, bytes, st.mtimeMs, pool, scanOpts));
      }
      else if (st.isDirectory()) {
        const tree = createHasher(digestAlgorithm);
        for await (const e of walkTree(source, { signal: options.signal })) {
          if (e.meta.type !== 'file') continue;
          tree.update(await consume(e.meta.path, new FileScan(e.absPath, e.meta.size, e.meta.mtimeMs, pool, scanOpts)));
        }
        digest = tree.digest();
      } else throw new InvalidArgumentError(`${source}: not a regular file, block device or directory`);
    }
    return {
      size,
      files,
      chunks,
      distinctChunks: distinct.exact ? distinct.size : null,
      distinctBytes: distinct.exact ? distinctBytes : null,
      digest: digestToHex(digest),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    if (ownPool) await pool.close();
  }
}
