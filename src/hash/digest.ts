import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Blake3Hasher } from '@napi-rs/blake-hash';
import { DIGEST_BYTES, type DigestAlgorithm } from '../core/ids.js';
import { usableAddon } from '../native/addon.js';

/** A Buffer view of the same memory (no copy): the BLAKE3 binding's typings ask for Buffers. */
function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

let blake3Class: typeof Blake3Hasher | undefined;

/**
 * A new BLAKE3 hasher of @napi-rs/blake-hash, whose binding is loaded on the first call,
 * not with this module: loading it costs 5-40 ms of CPU in every thread that does (its
 * loader's musl check calls process.report.getReport()), and most threads that import
 * this module never hash here (the digest thread hashes in the native addon; a local
 * push's main thread digests nothing itself). Synchronous, as digestOf is: the package is
 * CommonJS, so require() loads it.
 */
export function newBlake3Hasher(): Blake3Hasher {
  blake3Class ??= (createRequire(import.meta.url)('@napi-rs/blake-hash') as typeof import('@napi-rs/blake-hash')).Blake3Hasher;
  return new blake3Class();
}

/**
 * One reused BLAKE3 hasher, reset per digest (made on first use, see newBlake3Hasher). The binding's Buffer results (`blake3()`,
 * `digestBuffer()`) leak about 330 bytes of native memory each in @napi-rs/blake-hash
 * 1.3.4 (gc() does not reclaim it: about 5 MiB per GiB of 64 KiB chunks, 5 GB over a 1 TB
 * stream); its hex digest does not, so digests travel as hex and are decoded here.
 */
let oneShot: Blake3Hasher | undefined;

function blake3Digest(h: Blake3Hasher): Buffer {
  return Buffer.from(h.digest('hex'), 'hex');
}

/** One-shot digest of `data` (32 bytes). */
export function digestOf(algorithm: DigestAlgorithm, data: Uint8Array): Buffer {
  if (algorithm !== 'blake3') return createHash('sha256').update(data).digest();
  const out = Buffer.allocUnsafe(DIGEST_BYTES);
  digestInto(algorithm, data, out, 0);
  return out;
}

/**
 * Writes the digest of `data` into out[offset, offset + DIGEST_BYTES): digestOf without a
 * Buffer per digest (a scan's digest column). BLAKE3 with the addon's own (native
 * blake3Hash, the vendored BLAKE3 C) where it is loaded, in place: a thread that hashes
 * only that way never loads @napi-rs/blake-hash (see newBlake3Hasher); the package's
 * reused hasher and hex digest otherwise (see oneShot).
 */
export function digestInto(algorithm: DigestAlgorithm, data: Uint8Array, out: Uint8Array, offset: number): void {
  if (algorithm !== 'blake3') {
    out.set(createHash('sha256').update(data).digest(), offset);
    return;
  }
  const native = usableAddon()?.blake3Hash;
  if (native) {
    native(data, offset === 0 ? out : out.subarray(offset, offset + DIGEST_BYTES));
    return;
  }
  const h = (oneShot ??= newBlake3Hasher());
  h.reset();
  h.update(asBuffer(data));
  if (asBuffer(out).write(h.digest('hex'), offset, DIGEST_BYTES, 'hex') !== DIGEST_BYTES) throw new Error('BLAKE3 digest of unexpected length');
}

/**
 * The digests of `list` (digestOf of each, in order), computed off the calling thread
 * where the native addon can: BLAKE3 on libuv's thread pool, the whole list in one task
 * (native/blake3_tree.c blake3HashManyAsync). One task per chunk would not pay: handing a
 * 64 KiB chunk to the pool and taking its answer back costs the caller about as much as
 * hashing it (measured: 13,310 chunks, 0.15-0.36 CPU-s of the main thread either way), so
 * callers pass many at once (a server's upload: the chunk records received so far).
 * Contract: each buffer is read until the promise settles; the caller must not write to
 * them (or reuse their memory) before then. The twin (no addon, XFER_NO_NATIVE=1, or
 * SHA-256) is digestOf of each on this thread: same digests.
 */
export async function digestsOfAsync(algorithm: DigestAlgorithm, list: readonly Uint8Array[]): Promise<Buffer[]> {
  const hashMany = algorithm === 'blake3' && list.length > 0 ? usableAddon()?.blake3HashManyAsync : undefined;
  if (!hashMany) return list.map((data) => digestOf(algorithm, data));
  const out = Buffer.allocUnsafeSlow(32 * list.length);
  // A copy of the list: the task holds it (and through it the buffers) until it ends.
  await hashMany([...list], out);
  return list.map((_, i) => out.subarray(32 * i, 32 * i + 32));
}

/** Incremental digest; `digest()` may be called once. */
export interface Hasher {
  update(data: Uint8Array): void;
  digest(): Buffer;
}

export function createHasher(algorithm: DigestAlgorithm): Hasher {
  if (algorithm === 'blake3') {
    const h = newBlake3Hasher();
    return {
      update(data) {
        h.update(asBuffer(data));
      },
      digest: () => blake3Digest(h),
    };
  }
  const h = createHash('sha256');
  return {
    update(data) {
      h.update(data);
    },
    digest: () => h.digest(),
  };
}

/** Equality of two digests; not constant-time, as digests are not secrets. */
export function digestEquals(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
