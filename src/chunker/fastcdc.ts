import type { ChunkerSpec } from '../core/ids.js';
import type { Chunker } from './chunker.js';
import { GEAR, GEAR_LS } from './gear.js';
import { fastCdcMasks } from './params.js';

/**
 * Every FastCDC mask (and its left-shifted twin) lies within bits 0..48, and the Gear update
 * (shift left, add) only carries upward, so the low 49 bits of the 64-bit hash decide every
 * cut. They are kept as two small integers, bits 0..23 and 24..48, which V8 holds as Smis:
 * no doubles, no unsigned conversions, no 64-bit emulation in the hot loop.
 */
const LO_BITS = 24;
const LO_MASK = (1 << LO_BITS) - 1;
const HI_MASK = (1 << 25) - 1;
const HASH_BITS = 49;

function split49(table: readonly bigint[]): { hi: Int32Array; lo: Int32Array } {
  const hi = new Int32Array(256);
  const lo = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    lo[i] = Number(table[i]! & BigInt(LO_MASK));
    hi[i] = Number((table[i]! >> BigInt(LO_BITS)) & BigInt(HI_MASK));
  }
  return { hi, lo };
}

function maskParts(m: bigint): [hi: number, lo: number] {
  if (m >> BigInt(HASH_BITS) !== 0n) throw new Error('FastCDC mask beyond bit 48');
  return [Number((m >> BigInt(LO_BITS)) & BigInt(HI_MASK)), Number(m & BigInt(LO_MASK))];
}

const G = split49(GEAR);
const GLS = split49(GEAR_LS);
const G_HI = G.hi;
const G_LO = G.lo;
const GLS_HI = GLS.hi;
const GLS_LO = GLS.lo;

/**
 * Canonical FastCDC 2020 in TypeScript: the fallback when the native addon is absent, and
 * the executable specification the addon is tested against.
 *
 * Per chunk, exactly as the reference: skip the first min bytes, hash two bytes per step
 * with GEAR_LS then GEAR, test the small-mask until `center` (avg, or the remaining length
 * if shorter), then the large mask until max; a hit on the GEAR_LS byte at index a cuts
 * at a (that byte starts the next chunk), a hit on the GEAR byte cuts at a + 1.
 */
export class FastCdcTs implements Chunker {
  readonly spec: ChunkerSpec;
  readonly maxChunkBytes: number;
  readonly implementation = 'typescript' as const;
  private readonly min: number;
  private readonly avg: number;
  private readonly sHi: number;
  private readonly sLo: number;
  private readonly lHi: number;
  private readonly lLo: number;
  private readonly sLsHi: number;
  private readonly sLsLo: number;
  private readonly lLsHi: number;
  private readonly lLsLo: number;

  constructor(spec: Extract<ChunkerSpec, { algorithm: 'fastcdc2020' }>) {
    this.spec = spec;
    this.min = spec.minBytes;
    this.avg = spec.avgBytes;
    this.maxChunkBytes = spec.maxBytes;
    const { maskS, maskL } = fastCdcMasks(spec.avgBytes);
    [this.sHi, this.sLo] = maskParts(maskS);
    [this.lHi, this.lLo] = maskParts(maskL);
    [this.sLsHi, this.sLsLo] = maskParts(maskS << 1n);
    [this.lLsHi, this.lLsLo] = maskParts(maskL << 1n);
  }

  cut(buf: Uint8Array, pos: number, end: number, eof: boolean, startLimit: number, out: Uint32Array): number {
    const max = this.maxChunkBytes;
    let n = 0;
    while (n < out.length && pos < end && pos < startLimit) {
      const avail = end - pos;
      if (avail < max && !eof) break;
      const len = this.cutOne(buf, pos, avail);
      out[n++] = len;
      pos += len;
    }
    return n;
  }

  /** Length of the chunk starting at buf[pos], given `avail` bytes up to the stream's end or beyond max. */
  private cutOne(buf: Uint8Array, pos: number, avail: number): number {
    const min = this.min;
    let remaining = avail;
    if (remaining <= min) return remaining;
    let center = this.avg;
    if (remaining > this.maxChunkBytes) remaining = this.maxChunkBytes;
    else if (remaining < center) center = remaining;
    let index = min >>> 1;
    let hi = 0;
    let lo = 0;
    const centerHalf = center >>> 1;
    const sHi = this.sHi, sLo = this.sLo, sLsHi = this.sLsHi, sLsLo = this.sLsLo;
    for (; index < centerHalf; index++) {
      const a = index * 2;
      let b = buf[pos + a]!;
      // hash = (hash << 2) + GEAR_LS[b], on 24 + 25 bits
      lo = (lo << 2) + GLS_LO[b]!;
      hi = ((hi << 2) + GLS_HI[b]! + (lo >> LO_BITS)) & HI_MASK;
      lo &= LO_MASK;
      if ((lo & sLsLo) === 0 && (hi & sLsHi) === 0) return a;
      b = buf[pos + a + 1]!;
      // hash += GEAR[b]
      lo += G_LO[b]!;
      hi = (hi + G_HI[b]! + (lo >> LO_BITS)) & HI_MASK;
      lo &= LO_MASK;
      if ((lo & sLo) === 0 && (hi & sHi) === 0) return a + 1;
    }
    const remainingHalf = remaining >>> 1;
    const lHi = this.lHi, lLo = this.lLo, lLsHi = this.lLsHi, lLsLo = this.lLsLo;
    for (; index < remainingHalf; index++) {
      const a = index * 2;
      let b = buf[pos + a]!;
      lo = (lo << 2) + GLS_LO[b]!;
      hi = ((hi << 2) + GLS_HI[b]! + (lo >> LO_BITS)) & HI_MASK;
      lo &= LO_MASK;
      if ((lo & lLsLo) === 0 && (hi & lLsHi) === 0) return a;
      b = buf[pos + a + 1]!;
      lo += G_LO[b]!;
      hi = (hi + G_HI[b]! + (lo >> LO_BITS)) & HI_MASK;
      lo &= LO_MASK;
      if ((lo & lLo) === 0 && (hi & lHi) === 0) return a + 1;
    }
    return remaining;
  }
}
