/**
 * The native addon (native/, built by node-gyp at `npm install`): the FastCDC hot loop
 * (fastcdc.c), the one thing JavaScript cannot do for O_DIRECT I/O, telling a buffer's
 * alignment, BLAKE3 subtrees for computing a whole-file digest in parallel pieces
 * (blake3_tree.c over the vendored BLAKE3 C code; contract in src/hash/tree.ts), and the
 * system calls Node lacks (sys.c: xattrs, mknod, nanosecond times of a symlink,
 * RENAME_EXCHANGE, user/group names, SEEK_DATA/SEEK_HOLE, block device sizes,
 * FICLONERANGE reflinks, hole punching), whose contract and TypeScript twin are
 * src/io/sys.ts (NativeSys). Loaded at most once; every user has a pure TypeScript
 * fallback for when it is absent.
 */
import { createRequire } from 'node:module';

export type NativeCut = (
  buf: Uint8Array, pos: number, end: number, eof: boolean, startLimit: number,
  min: number, avg: number, max: number, out: Uint32Array,
) => number;

export interface NativeAddon {
  readonly cut: NativeCut;
  /** The address of buf[0] modulo `align` (a power of two). */
  readonly addressMod?: (buf: Uint8Array, align: number) => number;
  /** native/sys.c: an ArrayBuffer over a 2 MiB-aligned mapping of its own advised for huge pages (io/sys.ts largeBuffer). */
  readonly hugeBuffer?: (bytes: number) => ArrayBuffer;
  /** BLAKE3 subtrees and parents (native/blake3_tree.c); contract in src/hash/tree.ts. */
  readonly blake3Cv?: (data: Uint8Array | null, length: number, chunkCounter: number, out: Uint8Array) => void;
  readonly blake3CvAsync?: (data: Uint8Array | null, length: number, chunkCounter: number, out: Uint8Array) => Promise<void>;
  readonly blake3Parent?: (left: Uint8Array, right: Uint8Array, root: boolean, out: Uint8Array) => void;
  /** The digest of each of `list` into out[32 i, 32 i + 32), on libuv's thread pool (hash/digest.ts digestsOfAsync). */
  readonly blake3HashManyAsync?: (list: readonly Uint8Array[], out: Uint8Array) => Promise<void>;
  /** The digest of data into out (32 bytes), on this thread (hash/digest.ts digestOf). */
  readonly blake3Hash?: (data: Uint8Array, out: Uint8Array) => void;
}

let addon: NativeAddon | null | undefined;
let loadError: string | undefined;

/** native/build/Release/xfer_native.node, or null (and addonLoadError() says why). */
export function loadAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  try {
    const require = createRequire(import.meta.url);
    addon = require('../../../native/build/Release/xfer_native.node') as NativeAddon;
  } catch (err) {
    loadError = `not built: ${(err as Error).message.split('\n')[0]}`;
    addon = null;
  }
  return addon;
}

export function addonLoadError(): string | undefined {
  loadAddon();
  return loadError;
}

/**
 * The addon as the native implementations use it: null when it was not built or when
 * XFER_NO_NATIVE=1 forces the TypeScript twins (tests compare the two). The one place that
 * reads XFER_NO_NATIVE.
 */
export function usableAddon(): NativeAddon | null {
  return process.env.XFER_NO_NATIVE === '1' ? null : loadAddon();
}

/** Why usableAddon() is null, if it is. */
export function usableAddonError(): string | undefined {
  return process.env.XFER_NO_NATIVE === '1' ? 'disabled by XFER_NO_NATIVE=1' : addonLoadError();
}
