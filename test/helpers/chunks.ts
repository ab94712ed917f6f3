import { strict as assert } from 'node:assert';
import type { Chunker } from '../../src/chunker/chunker.js';

/** Cuts a whole in-memory input with one chunker, in one buffer; returns chunk lengths. */
export function cutAll(chunker: Chunker, data: Uint8Array): number[] {
  const out = new Uint32Array(1024);
  const lengths: number[] = [];
  let pos = 0;
  while (pos < data.length) {
    const n = chunker.cut(data, pos, data.length, true, Infinity, out);
    assert.ok(n > 0, 'chunker made no progress');
    for (let i = 0; i < n; i++) {
      lengths.push(out[i]!);
      pos += out[i]!;
    }
  }
  return lengths;
}
