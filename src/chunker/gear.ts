import { createHash } from 'node:crypto';

/**
 * The FastCDC Gear table: GEAR[i] is the first 8 bytes (big-endian) of MD5 over 64 bytes
 * all equal to i. GEAR_LS[i] = GEAR[i] << 1 (mod 2^64). Derived here rather than pasted,
 * so the table cannot be mistyped; test/chunker-vectors pins known entries, and
 * native/gear.h is generated from this definition by native/gen-gear.mjs.
 */
function buildGear(): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < 256; i++) {
    const d = createHash('md5').update(Buffer.alloc(64, i)).digest();
    out.push(d.readBigUInt64BE(0));
  }
  return out;
}

const MASK64 = (1n << 64n) - 1n;
export const GEAR: readonly bigint[] = buildGear();
export const GEAR_LS: readonly bigint[] = GEAR.map((g) => (g << 1n) & MASK64);
