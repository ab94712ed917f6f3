import { InvalidArgumentError } from '../core/errors.js';
import type { ChunkerSpec } from '../core/ids.js';
import { KiB, MiB } from '../core/sizes.js';

// Limits of canonical FastCDC 2020 (the same as the reference `fastcdc` crate, v2020).
export const FASTCDC_MIN_BYTES_LOWER = 64;
export const FASTCDC_MIN_BYTES_UPPER = 1 * MiB;
export const FASTCDC_AVG_BYTES_LOWER = 256;
export const FASTCDC_AVG_BYTES_UPPER = 4 * MiB;
export const FASTCDC_MAX_BYTES_LOWER = 1 * KiB;
export const FASTCDC_MAX_BYTES_UPPER = 16 * MiB;

/** Fixed-size chunks (disk images) may be 4 KiB .. 16 MiB. */
export const FIXED_BYTES_LOWER = 4 * KiB;
export const FIXED_BYTES_UPPER = 16 * MiB;

export const DEFAULT_MIN_BYTES = 16 * KiB;
export const DEFAULT_AVG_BYTES = 64 * KiB;
export const DEFAULT_MAX_BYTES = 256 * KiB;

export const DEFAULT_CHUNKER: ChunkerSpec = {
  algorithm: 'fastcdc2020',
  minBytes: DEFAULT_MIN_BYTES,
  avgBytes: DEFAULT_AVG_BYTES,
  maxBytes: DEFAULT_MAX_BYTES,
};

/**
 * Spread-bit masks by number of bits (index), from the FastCDC C reference (destor) and
 * restic's table, as in the reference crate. Entries 0..4 are padding.
 */
export const MASKS: readonly bigint[] = [
  0n, 0n, 0n, 0n, 0n,
  0x0000000001804110n, 0x0000000001803110n, 0x0000000018035100n, 0x0000001800035300n,
  0x0000019000353000n, 0x0000590003530000n, 0x0000d90003530000n, 0x0000d90103530000n,
  0x0000d90303530000n, 0x0000d90313530000n, 0x0000d90f03530000n, 0x0000d90303537000n,
  0x0000d90703537000n, 0x0000d90707537000n, 0x0000d91707537000n, 0x0000d91747537000n,
  0x0000d91767537000n, 0x0000d93767537000n, 0x0000d93777537000n, 0x0000d93777577000n,
  0x0000db3777577000n,
];

/** Normalization level 1: small mask has one bit more, large mask one bit fewer. */
export const NORMALIZATION_LEVEL = 1;

/** round(log2(avg)), as the reference computes it (f64 log2, then round). */
export function maskBits(avgBytes: number): number {
  return Math.round(Math.log2(avgBytes));
}

export interface FastCdcMasks {
  readonly maskS: bigint;
  readonly maskL: bigint;
}

export function fastCdcMasks(avgBytes: number): FastCdcMasks {
  const bits = maskBits(avgBytes);
  return { maskS: MASKS[bits + NORMALIZATION_LEVEL]!, maskL: MASKS[bits - NORMALIZATION_LEVEL]! };
}

function checkRange(name: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new InvalidArgumentError(`invalid ${name} chunk size ${v}: must be between ${lo} and ${hi} bytes`);
  }
}

/** Checks a spec and returns it; every chunker and manifest reader goes through here. */
export function validateChunkerSpec(spec: ChunkerSpec): ChunkerSpec {
  if (spec.algorithm === 'fixed') {
    checkRange('fixed', spec.sizeBytes, FIXED_BYTES_LOWER, FIXED_BYTES_UPPER);
    return spec;
  }
  if (spec.algorithm !== 'fastcdc2020') {
    throw new InvalidArgumentError(`unknown chunker algorithm "${(spec as { algorithm: string }).algorithm}"`);
  }
  checkRange('minimum', spec.minBytes, FASTCDC_MIN_BYTES_LOWER, FASTCDC_MIN_BYTES_UPPER);
  checkRange('average', spec.avgBytes, FASTCDC_AVG_BYTES_LOWER, FASTCDC_AVG_BYTES_UPPER);
  checkRange('maximum', spec.maxBytes, FASTCDC_MAX_BYTES_LOWER, FASTCDC_MAX_BYTES_UPPER);
  if (spec.minBytes > spec.avgBytes) {
    throw new InvalidArgumentError(`invalid chunk sizes: minimum ${spec.minBytes} is larger than average ${spec.avgBytes}`);
  }
  if (spec.avgBytes > spec.maxBytes) {
    throw new InvalidArgumentError(`invalid chunk sizes: average ${spec.avgBytes} is larger than maximum ${spec.maxBytes}`);
  }
  return spec;
}
