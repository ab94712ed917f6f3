import { createHash } from 'node:crypto';
import b from 'benny';
import { blake3 } from '@napi-rs/blake-hash';
import { createChunker } from '../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { loadNativeBinding } from '../src/chunker/native.js';
import { pseudoRandom } from '../test/helpers/gen.js';

export interface MicroResult {
  readonly suite: string;
  readonly name: string;
  readonly mbPerSecond: number;
}

const CHUNKER_INPUT_BYTES = 64 * 1024 * 1024;

/** benny suites: chunker (native, TypeScript) and hashers by chunk size; results in MB/s (10^6). */
export async function runMicro(log: (s: string) => void): Promise<MicroResult[]> {
  const results: MicroResult[] = [];
  const data = pseudoRandom(CHUNKER_INPUT_BYTES, 11);
  const out = new Uint32Array(4096);
  const cutAll = (impl: 'native' | 'typescript') => {
    const c = createChunker(DEFAULT_CHUNKER, { implementation: impl });
    return () => {
      let pos = 0;
      while (pos < data.length) {
        const n = c.cut(data, pos, data.length, true, Infinity, out);
        for (let i = 0; i < n; i++) pos += out[i]!;
      }
    };
  };
  const collect = (suite: string, bytesPerOp: (name: string) => number) =>
    b.complete((summary) => {
      for (const r of summary.results) {
        const mbs = (r.ops * bytesPerOp(r.name)) / 1e6;
        results.push({ suite, name: r.name, mbPerSecond: mbs });
        log(`  ${suite.padEnd(24)} ${r.name.padEnd(24)} ${mbs.toFixed(0).padStart(7)} MB/s`);
      }
    });

  const chunkerCases = [b.add('typescript', cutAll('typescript'))];
  if (loadNativeBinding()) chunkerCases.unshift(b.add('native', cutAll('native')));
  await b.suite('chunker (FastCDC 16/64/256K, one core)', ...chunkerCases, collect('chunker', () => CHUNKER_INPUT_BYTES));

  const sizes = [4096, 16384, 65536, 262144, 1048576];
  const hashCases = sizes.flatMap((size) => {
    const buf = data.subarray(0, size);
    return [
      b.add(`blake3 ${size / 1024}K`, () => blake3(buf)),
      b.add(`sha256 ${size / 1024}K`, () => createHash('sha256').update(buf).digest()),
    ];
  });
  await b.suite('hashers by chunk size (one core)', ...hashCases, collect('hash', (name) => Number(name.split(' ')[1]!.replace('K', '')) * 1024));
  return results;
}
