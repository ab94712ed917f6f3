import { InvalidArgumentError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

const SIZE_RE = /^(\d+)\s*([kmgt]?)(i?b)?$/i;
const MULTIPLIERS: Record<string, number> = { '': 1, k: KiB, m: MiB, g: GiB, t: 1024 * GiB };

/**
 * Parses "65536", "64K", "64KiB", "1M", "2G" (powers of 1024) into bytes.
 * `what` names the option in the error message.
 */
export function parseSize(text: string, what: string): number {
  const m = SIZE_RE.exec(String(text).trim());
  if (!m) throw new InvalidArgumentError(`invalid ${what} "${text}": expected bytes or a size like 64K, 1M, 2G`);
  const value = Number(m[1]) * MULTIPLIERS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value)) throw new InvalidArgumentError(`invalid ${what} "${text}": too large`);
  return value;
}

/** "1.50 GiB" style, for people. */
export function formatBytes(n: number): string {
  if (n < KiB) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / KiB;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(2)} ${units[i]}`;
}
