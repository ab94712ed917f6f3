/**
 * xxh64 (seed 0), the format's corruption check for the header and the body. It detects
 * accidental damage only; the header digest is what binds a manifest to its content.
 */
import xxhash from 'xxhash-wasm';

/** One-shot and streaming xxh64; values are unsigned 64-bit. */
export interface Xxh64 {
  hash(data: Uint8Array): bigint;
  create(): { update(data: Uint8Array): unknown; digest(): bigint };
}

let loaded: Promise<Xxh64> | undefined;

/** Instantiates the WebAssembly module once per process; later calls share it. */
export function loadXxh64(): Promise<Xxh64> {
  loaded ??= xxhash().then((api) => ({
    hash: (data) => api.h64Raw(data, 0n),
    create: () => api.create64(0n),
  }));
  return loaded;
}
