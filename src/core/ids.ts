import { InvalidArgumentError } from './errors.js';

/** Digest algorithms a manifest may declare. Both produce 32-byte digests. */
export type DigestAlgorithm = 'blake3' | 'sha256';
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = ['blake3', 'sha256'];
export const DIGEST_BYTES = 32;

export function parseDigestAlgorithm(text: string): DigestAlgorithm {
  const t = String(text).toLowerCase();
  if (t === 'blake3' || t === 'sha256') return t;
  throw new InvalidArgumentError(`unknown digest "${text}": expected blake3 or sha256`);
}

/**
 * Names a chunk: its digest under an algorithm. Stores key chunks by both, so data hashed
 * with SHA-256 is never mistaken for BLAKE3 data that happens to share a hex string.
 */
export interface ChunkId {
  readonly algorithm: DigestAlgorithm;
  /** DIGEST_BYTES bytes. */
  readonly digest: Uint8Array;
}

export function digestToHex(digest: Uint8Array): string {
  return Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('hex');
}

const HEX_RE = /^[0-9a-f]{64}$/;

export function digestFromHex(hex: string): Buffer {
  if (!HEX_RE.test(hex)) throw new InvalidArgumentError(`invalid digest "${hex}": expected 64 lowercase hex digits`);
  return Buffer.from(hex, 'hex');
}

/** A digest as a Map/Set key (its bytes as a latin1 string; no copy of the digest). */
export function digestKey(digest: Uint8Array): string {
  return Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('latin1');
}

export function chunkIdKey(id: ChunkId): string {
  return `${id.algorithm}:${digestToHex(id.digest)}`;
}

/**
 * How a stream is cut into chunks. Recorded in every manifest: data chunked with other
 * parameters is never treated as the same.
 * - fastcdc2020: canonical FastCDC 2020, normalization level 1, rolling two bytes each time.
 * - fixed: every chunk is `sizeBytes` long but the last.
 */
export type ChunkerSpec =
  | { readonly algorithm: 'fastcdc2020'; readonly minBytes: number; readonly avgBytes: number; readonly maxBytes: number }
  | { readonly algorithm: 'fixed'; readonly sizeBytes: number };

export function chunkerSpecEquals(a: ChunkerSpec, b: ChunkerSpec): boolean {
  if (a.algorithm === 'fixed' || b.algorithm === 'fixed') {
    return a.algorithm === b.algorithm && (a as { sizeBytes: number }).sizeBytes === (b as { sizeBytes: number }).sizeBytes;
  }
  return a.minBytes === b.minBytes && a.avgBytes === b.avgBytes && a.maxBytes === b.maxBytes;
}

export function describeChunkerSpec(s: ChunkerSpec): string {
  return s.algorithm === 'fixed'
    ? `fixed ${s.sizeBytes}`
    : `fastcdc2020 min=${s.minBytes} avg=${s.avgBytes} max=${s.maxBytes}`;
}

/** The largest chunk a spec can produce. */
export function maxChunkBytes(s: ChunkerSpec): number {
  return s.algorithm === 'fixed' ? s.sizeBytes : s.maxBytes;
}
