import { createRequire } from 'node:module';
import type { ChunkerSpec } from '../core/ids.js';
import type { Chunker } from './chunker.js';

type NativeCut = (
  buf: Uint8Array, pos: number, end: number, eof: boolean, startLimit: number,
  min: number, avg: number, max: number, out: Uint32Array,
) => number;

interface NativeBinding {
  cut: NativeCut;
}

let binding: NativeBinding | null | undefined;
let loadError: string | undefined;

/**
 * Loads native/build/Release/xfer_native.node once. Returns null (and remembers why) when
 * the addon was not built or XFER_NO_NATIVE=1 is set; callers then use FastCdcTs.
 */
export function loadNativeBinding(): NativeBinding | null {
  if (binding !== undefined) return binding;
  if (process.env.XFER_NO_NATIVE === '1') {
    loadError = 'disabled by XFER_NO_NATIVE=1';
    return (binding = null);
  }
  try {
    const require = createRequire(import.meta.url);
    binding = require('../../../native/build/Release/xfer_native.node') as NativeBinding;
  } catch (err) {
    loadError = `not built: ${(err as Error).message.split('\n')[0]}`;
    binding = null;
  }
  return binding;
}

/** Why the native chunker is unavailable, if it is. */
export function nativeLoadError(): string | undefined {
  loadNativeBinding();
  return loadError;
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
