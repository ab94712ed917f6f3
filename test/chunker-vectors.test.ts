import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createChunker } from '../src/chunker/index.js';
import type { Chunker } from '../src/chunker/chunker.js';
import { GEAR, GEAR_LS } from '../src/chunker/gear.js';
import { loadNativeBinding, nativeLoadError } from '../src/chunker/native.js';
import { cutAll } from './helpers/chunks.js';
import { generate, type VectorKind } from './helpers/gen.js';

interface Vector {
  kind: VectorKind;
  seed: number;
  size: number;
  min: number;
  avg: number;
  max: number;
  inputSha256: string;
  lengths: number[];
}

const vectors: Vector[] = JSON.parse(
  readFileSync(new URL('../../test/fixtures/fastcdc-vectors.json', import.meta.url), 'utf8'),
);

/** Feeds the input in small pieces, as a stream would, to prove calls do not change cuts. */
function cutStreamed(chunker: Chunker, data: Uint8Array, piece: number): number[] {
  const out = new Uint32Array(7);
  const lengths: number[] = [];
  let pos = 0;
  let end = 0;
  while (pos < data.length) {
    end = Math.min(data.length, end + piece);
    const eof = end === data.length;
    for (;;) {
      const n = chunker.cut(data, pos, end, eof, Infinity, out);
      if (n === 0) break;
      for (let i = 0; i < n; i++) {
        lengths.push(out[i]!);
        pos += out[i]!;
      }
    }
  }
  return lengths;
}

const inputs = new Map<Vector, Buffer>();
function input(v: Vector): Buffer {
  let b = inputs.get(v);
  if (!b) {
    b = generate(v.kind, v.seed, v.size);
    assert.equal(createHash('sha256').update(b).digest('hex'), v.inputSha256, 'generated input differs from the vector');
    inputs.set(v, b);
  }
  return b;
}

describe('Gear table', () => {
  it('is MD5-derived as the reference defines it', () => {
    assert.equal(GEAR[0], 0x3b5d3c7d207e37dcn);
    assert.equal(GEAR[1], 0x784d68ba91123086n);
    assert.equal(GEAR[255], 0xaabd2b2a451504e1n);
    assert.equal(GEAR_LS[0], 0x76ba78fa40fc6fb8n);
    assert.equal(GEAR_LS[255], 0x557a56548a2a09c2n);
  });
});

for (const impl of ['typescript', 'native'] as const) {
  describe(`FastCDC 2020 (${impl}) matches the reference vectors`, () => {
    it('is available', () => {
      if (impl === 'native' && process.env.XFER_ALLOW_NO_NATIVE !== '1') {
        assert.ok(loadNativeBinding(), `native chunker must be built for the tests: ${nativeLoadError()}`);
      }
    });
    for (const v of vectors) {
      const name = `${v.kind} seed=${v.seed} size=${v.size} min/avg/max=${v.min}/${v.avg}/${v.max}`;
      it(name, (t) => {
        if (impl === 'native' && !loadNativeBinding()) return t.skip('native chunker not built');
        const chunker = createChunker({ algorithm: 'fastcdc2020', minBytes: v.min, avgBytes: v.avg, maxBytes: v.max }, { implementation: impl });
        assert.equal(chunker.implementation, impl);
        const data = input(v);
        assert.deepEqual(cutAll(chunker, data), v.lengths);
        assert.deepEqual(cutStreamed(chunker, data, 65537), v.lengths, 'streamed cuts differ');
      });
    }
  });
}

describe('native and TypeScript chunkers agree', () => {
  it('on many parameter sets, sizes and offsets', (t) => {
    if (!loadNativeBinding()) return t.skip('native chunker not built');
    const data = Buffer.concat([generate('random', 11, 300_000), Buffer.alloc(70_000), generate('text', 12, 200_000)]);
    const specs = [
      [64, 256, 1024], [64, 300, 1024], [100, 1000, 5000], [4096, 16384, 65535], [2048, 8192, 8192],
      [16384, 65536, 262144], [8191, 8193, 70000], [1 << 20, 1 << 20, 4 << 20],
    ];
    for (const [min, avg, max] of specs) {
      const spec = { algorithm: 'fastcdc2020' as const, minBytes: min!, avgBytes: avg!, maxBytes: max! };
      const ts = createChunker(spec, { implementation: 'typescript' });
      const nat = createChunker(spec, { implementation: 'native' });
      for (const off of [0, 1, 3, 4099]) {
        for (const len of [0, 1, 63, 64, 65, min!, min! + 1, max!, max! + 1, 123_457, data.length - off]) {
          const view = data.subarray(off, off + Math.min(len, data.length - off));
          assert.deepEqual(cutAll(nat, view), cutAll(ts, view), `spec ${min}/${avg}/${max} off ${off} len ${len}`);
        }
      }
    }
  });
});
