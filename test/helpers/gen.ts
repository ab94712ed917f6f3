/**
 * The deterministic inputs of the FastCDC vectors (same generator as
 * shared/fastcdc-vectors/gen.mjs): SplitMix64, bytes little-endian from each output.
 * Kinds: random | text | zeros | repeat.
 */
const M = 0xffffffffffffffffn;

class SplitMix64 {
  private state: bigint;
  constructor(seed: number | bigint) {
    this.state = BigInt(seed) & M;
  }
  next(): bigint {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & M;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    return z ^ (z >> 31n);
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i += 8) {
      const v = this.next();
      if (i + 8 <= n) out.writeBigUInt64LE(v, i);
      else for (let j = 0; i + j < n; j++) out[i + j] = Number((v >> BigInt(8 * j)) & 0xffn);
    }
    return out;
  }
}

const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'patient', 'series', 'frame', 'volume', 'chunk', 'block', '\n'];

export type VectorKind = 'random' | 'text' | 'zeros' | 'repeat';

export function generate(kind: VectorKind, seed: number, size: number): Buffer {
  const rng = new SplitMix64(seed);
  if (kind === 'random') return rng.bytes(size);
  if (kind === 'text') {
    const parts: string[] = [];
    let n = 0;
    while (n < size) {
      const w = WORDS[Number(rng.next() % BigInt(WORDS.length))] + ' ';
      parts.push(w);
      n += w.length;
    }
    return Buffer.from(parts.join('')).subarray(0, size);
  }
  if (kind === 'zeros') {
    const out = Buffer.alloc(size);
    let p = 0;
    let zero = false;
    while (p < size) {
      const len = Math.min(size - p, 1 + Number(rng.next() % 300000n));
      if (!zero) rng.bytes(len).copy(out, p);
      p += len;
      zero = !zero;
    }
    return out;
  }
  const block = rng.bytes(100003);
  const out = Buffer.alloc(size);
  for (let p = 0; p < size; p += block.length) block.copy(out, p, 0, Math.min(block.length, size - p));
  return out;
}

/** Fast non-vector pseudo-random bytes for large test inputs (xorshift32, deterministic). */
export function pseudoRandom(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  const words = Math.floor(size / 4);
  const u32 = new Uint32Array(out.buffer, out.byteOffset, words);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    u32[i] = x;
  }
  for (let i = words * 4; i < size; i++) out[i] = i & 0xff;
  return out;
}
