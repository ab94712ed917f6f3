import type { ChunkerSpec } from '../core/ids.js';
import type { Chunker } from './chunker.js';
import { GEAR, GEAR_LS, splitTable } from './gear.js';
import { fastCdcMasks } from './params.js';

const G = splitTable(GEAR);
const GLS = splitTable(GEAR_LS);
const G_HI = G.hi;
const G_LO = G.lo;
const GLS_HI = GLS.hi;
const GLS_LO = GLS.lo;
const TWO_32 = 4294967296;

/**
 * Canonical FastCDC 2020 in TypeScript: the fallback when the native addon is absent, and
 * the executable specification the addon is tested against. The 64-bit Gear hash is kept
 * as two uint32 halves (BigInt would be ~50x slower).
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
    const hi = (m: bigint) => Number((m >> 32n) & 0xffffffffn) | 0;
    const lo = (m: bigint) => Number(m & 0xffffffffn) | 0;
    const mask64 = (1n << 64n) - 1n;
    this.sHi = hi(maskS);
    this.sLo = lo(maskS);
    this.lHi = hi(maskL);
    this.lLo = lo(maskL);
    this.sLsHi = hi((maskS << 1n) & mask64);
    this.sLsLo = lo((maskS << 1n) & mask64);
    this.lLsHi = hi((maskL << 1n) & mask64);
    this.lLsLo = lo((maskL << 1n) & mask64);
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
    let lo = 0; // uint32 value held in a double
    const centerHalf = center >>> 1;
    const sHi = this.sHi, sLo = this.sLo, sLsHi = this.sLsHi, sLsLo = this.sLsLo;
    for (; index < centerHalf; index++) {
      const a = index * 2;
      // hash = (hash << 2) + GEAR_LS[b0]
      hi = (hi << 2) | (lo >>> 30);
      let s = ((lo << 2) >>> 0) + GLS_LO[buf[pos + a]!]!;
      hi = (hi + GLS_HI[buf[pos + a]!]! + (s >= TWO_32 ? 1 : 0)) | 0;
      lo = s >>> 0;
      if ((hi & sLsHi) === 0 && (lo & sLsLo) === 0) return a;
      // hash += GEAR[b1]
      s = lo + G_LO[buf[pos + a + 1]!]!;
      hi = (hi + G_HI[buf[pos + a + 1]!]! + (s >= TWO_32 ? 1 : 0)) | 0;
      lo = s >>> 0;
      if ((hi & sHi) === 0 && (lo & sLo) === 0) return a + 1;
    }
    const remainingHalf = remaining >>> 1;
    const lHi = this.lHi, lLo = this.lLo, lLsHi = this.lLsHi, lLsLo = this.lLsLo;
    for (; index < remainingHalf; index++) {
      const a = index * 2;
      hi = (hi << 2) | (lo >>> 30);
      let s = ((lo << 2) >>> 0) + GLS_LO[buf[pos + a]!]!;
      hi = (hi + GLS_HI[buf[pos + a]!]! + (s >= TWO_32 ? 1 : 0)) | 0;
      lo = s >>> 0;
      if ((hi & lLsHi) === 0 && (lo & lLsLo) === 0) return a;
      s = lo + G_LO[buf[pos + a + 1]!]!;
      hi = (hi + G_HI[buf[pos + a + 1]!]! + (s >= TWO_32 ? 1 : 0)) | 0;
      lo = s >>> 0;
      if ((hi & lHi) === 0 && (lo & lLo) === 0) return a + 1;
    }
    return remaining;
  }
}
