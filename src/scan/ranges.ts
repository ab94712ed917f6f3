/**
 * Hashes a file or block device at given chunk boundaries, in parallel segments read by the
 * scan pool's workers: the chunks of a manifest, compared with what a target holds at the
 * same offsets (reconstruct/in-place.ts). Unlike a scan, nothing is cut: a target that is
 * mostly unchanged costs one read and the hashing, not the content-defined cutting too
 * (a quarter of a scan's time on a 4 GiB device).
 */
import { throwIfAborted } from '../core/abort.js';
import { XferError } from '../core/errors.js';
import { DIGEST_BYTES, type ChunkerSpec, type DigestAlgorithm } from '../core/ids.js';
import { CV_BYTES, isTreeSpan, treeBinding } from '../hash/tree.js';
import type { ScanPool } from './pool.js';
import { SEGMENT_BYTES } from './scanner.js';
import { SEGMENT_ALIGN_SLACK_BYTES, type SegmentResult } from './segment.js';

/** Chunks laid end to end from offset 0: chunk i is [offsets[i], offsets[i] + lengths[i]). */
export interface ChunkLayout {
  readonly count: number;
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
}

export interface RangeHashes {
  /** Digests of the chunks that end within the bytes hashed (the first `hashed` of the layout), DIGEST_BYTES each. */
  readonly digests: Uint8Array;
  readonly hashed: number;
  /**
   * With BLAKE3 and the addon: segment k is [k * segmentBytes, min(bytes, (k + 1) * segmentBytes))
   * and its CV (hash/tree.ts spanCv, non-root) is cvs[32k, 32k + 32).
   */
  readonly segmentCvs?: { readonly segmentBytes: number; readonly cvs: Uint8Array };
}

/**
 * The digests of the chunks of `layout` that end within [0, bytes) of `path` (a file or
 * block device of at least `bytes`; /proc/self/fd/N names one the caller holds), and the
 * CVs of its segments. `chunker` is only what the workers' task format carries.
 */
export async function hashAtBoundaries(
  path: string, bytes: number, layout: ChunkLayout, pool: ScanPool,
  options: { readonly chunker: ChunkerSpec; readonly digestAlgorithm: DigestAlgorithm; readonly signal?: AbortSignal },
): Promise<RangeHashes> {
  const { digestAlgorithm: algorithm, signal } = options;
  const segmentBytes = SEGMENT_BYTES;
  const segments = Math.ceil(bytes / segmentBytes);
  const tree = algorithm === 'blake3' && segments > 1 && isTreeSpan(segmentBytes) ? treeBinding() : null;
  // The chunks hashed: those that end within `bytes` (a prefix: the layout is in order).
  let hashed = 0;
  while (hashed < layout.count && layout.offsets[hashed]! + layout.lengths[hashed]! <= bytes) hashed++;
  const digests = new Uint8Array(hashed * DIGEST_BYTES);
  const cvs = tree ? new Uint8Array(segments * CV_BYTES) : undefined;
  // Segment k hashes the chunks that start in it; a chunk begun in an earlier segment that
  // reaches into it (or the bytes past the last chunk hashed) is read as a leading piece
  // whose digest is dropped, so that the segment's CV covers all of its bytes.
  const firstOf = new Uint32Array(segments + 1);
  for (let k = 0, i = 0; k <= segments; k++) {
    const start = Math.min(bytes, k * segmentBytes);
    while (i < hashed && layout.offsets[i]! < start) i++;
    firstOf[k] = k === segments ? hashed : i;
  }
  const leadOf = (k: number): number => {
    const start = k * segmentBytes;
    const end = Math.min(bytes, start + segmentBytes);
    return firstOf[k]! < firstOf[k + 1]! ? layout.offsets[firstOf[k]!]! - start : end - start;
  };
  const dispatch = (k: number): Promise<SegmentResult> => {
    const start = k * segmentBytes;
    const end = Math.min(bytes, start + segmentBytes);
    const chunks = layout.lengths.subarray(firstOf[k]!, firstOf[k + 1]!);
    const lead = leadOf(k);
    const cuts = new Uint32Array((lead > 0 ? 1 : 0) + chunks.length);
    if (lead > 0) cuts[0] = lead;
    cuts.set(chunks, lead > 0 ? 1 : 0);
    let reach = start;
    for (const n of cuts) reach += n;
    const p = pool.run(
      {
        kind: 'file', path, start, end, fileSize: bytes, chunker: options.chunker, implementation: 'auto', digestAlgorithm: algorithm,
        wholeFile: false, cuts, ...(tree ? { segmentCv: true } : {}),
      },
      signal,
      Math.max(end, reach) - start + SEGMENT_ALIGN_SLACK_BYTES,
    );
    p.catch(() => {}); // observed in order below
    return p;
  };
  const ahead = pool.threads + 1;
  const pending: Promise<SegmentResult>[] = [];
  let dispatched = 0;
  for (let k = 0; k < segments; k++) {
    throwIfAborted(signal);
    while (dispatched < segments && dispatched < k + ahead) pending[dispatched] = dispatch(dispatched++);
    const r = await pending[k]!;
    delete pending[k];
    const skip = leadOf(k) > 0 ? 1 : 0;
    const at = firstOf[k]!;
    if (r.count - skip !== firstOf[k + 1]! - at) throw new XferError('XFER_INTERNAL', `${path}: segment ${k} hashed ${r.count - skip} chunks, ${firstOf[k + 1]! - at} asked`);
    digests.set(r.digests.subarray(skip * DIGEST_BYTES, r.count * DIGEST_BYTES), at * DIGEST_BYTES);
    if (cvs) {
      if (!r.segmentCv) throw new XferError('XFER_INTERNAL', `${path}: segment ${k} came back without its CV`);
      cvs.set(r.segmentCv, k * CV_BYTES);
    }
    pool.recycle(r.data.buffer as ArrayBuffer);
  }
  return { digests, hashed, ...(cvs ? { segmentCvs: { segmentBytes, cvs } } : {}) };
}
