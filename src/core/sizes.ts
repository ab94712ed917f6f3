import { InvalidArgumentError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i;
const MULTIPLIERS: Record<string, number> = { '': 1, k: KiB, m: MiB, g: GiB, t: 1024 * GiB };

/**
 * Parses "65536", "64K", "64KiB", "1M", "1.5M", "2G" (powers of 1024) into bytes; a
 * fraction with a unit is rounded to the nearest byte, a fraction of a byte is refused.
 * `what` names the option in the error message.
 */
export function parseSize(text: string, what: string): number {
  const m = SIZE_RE.exec(String(text).trim());
  if (!m) throw new InvalidArgumentError(`invalid ${what} "${text}": expected bytes or a size like 64K, 1.5M, 2G`);
  const unit = m[2]!.toLowerCase();
  if (unit === '' && m[1]!.includes('.')) throw new InvalidArgumentError(`invalid ${what} "${text}": expected a whole number of bytes`);
  const value = Math.round(Number(m[1]) * MULTIPLIERS[unit]!);
  if (!Number.isSafeInteger(value)) throw new InvalidArgumentError(`invalid ${what} "${text}": too large`);
  return value;
}

/** "1.50 GiB" style, for people; a figure below 1 KiB (a rate, say) in whole bytes. */
export function formatBytes(n: number): string {
  if (n < KiB) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / KiB;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(2)} ${units[i]}`;
}
