import { InvalidArgumentError } from '../core/errors.js';
import type { ChunkerSpec } from '../core/ids.js';
import type { Chunker } from './chunker.js';
import { FixedChunker } from './chunker.js';
import { FastCdcTs } from './fastcdc.js';
import { FastCdcNative, loadNativeBinding } from './native.js';
import { validateChunkerSpec } from './params.js';

export type { Chunker } from './chunker.js';

export interface CreateChunkerOptions {
  /** 'auto' (default): native if built, else TypeScript. */
  readonly implementation?: 'auto' | 'native' | 'typescript';
}

/** The one place a Chunker is made from a spec. */
export function createChunker(spec: ChunkerSpec, options: CreateChunkerOptions = {}): Chunker {
  validateChunkerSpec(spec);
  if (spec.algorithm === 'fixed') return new FixedChunker(spec.sizeBytes);
  const want = options.implementation ?? 'auto';
  if (want !== 'typescript') {
    const b = loadNativeBinding();
    if (b) return new FastCdcNative(spec, b);
    if (want === 'native') throw new InvalidArgumentError('the native chunker is not available (run npm install with a C compiler)');
  }
  return new FastCdcTs(spec);
}
