import type { ChunkerSpec } from '../core/ids.js';
import { usableAddon, usableAddonError, type NativeAddon, type NativeCut } from '../native/addon.js';
import type { Chunker } from './chunker.js';

type NativeBinding = Pick<NativeAddon, 'cut'>;

/**
 * The native chunker, or null when the addon was not built or XFER_NO_NATIVE=1 is set;
 * callers then use FastCdcTs.
 */
export function loadNativeBinding(): NativeBinding | null {
  return usableAddon();
}

/** Why the native chunker is unavailable, if it is. */
export function nativeLoadError(): string | undefined {
  return usableAddonError();
}

export class FastCdcNative implements Chunker {
  readonly spec: ChunkerSpec;
  readonly maxChunkBytes: number;
  readonly implementation = 'native' as const;
  private readonly fn: NativeCut;
  private readonly min: number;
  private readonly avg: number;

  constructor(spec: Extract<ChunkerSpec, { algorithm: 'fastcdc2020' }>, b: NativeBinding) {
    this.spec = spec;
    this.fn = b.cut;
    this.min = spec.minBytes;
    this.avg = spec.avgBytes;
    this.maxChunkBytes = spec.maxBytes;
  }

  cut(buf: Uint8Array, pos: number, end: number, eof: boolean, startLimit: number, out: Uint32Array): number {
    return this.fn(buf, pos, end, eof, startLimit, this.min, this.avg, this.maxChunkBytes, out);
  }
}
