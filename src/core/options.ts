/**
 * Checks of the options the library's public functions take, at the public edge and before
 * any work, in piscina's style: the option named, its rule stated
 * (`options.concurrency must be a positive integer`), thrown as InvalidOptionError. An
 * option left undefined takes its default and is not checked. Unchecked, a bad value can
 * hang (a concurrency of 0 never starts a job) or never end (retries: NaN never runs out).
 */
import { InvalidOptionError } from './errors.js';

/** A whole number of at least 1 (a count of things in flight, of attempts). */
export function checkPositiveInteger(options: object, name: string): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 1)) throw new InvalidOptionError(name, 'a positive integer');
}

/** A whole number from `min` to `max` (a count with a bound: connections). */
export function checkIntegerInRange(options: object, name: string, min: number, max: number): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max)) throw new InvalidOptionError(name, `an integer from ${min} to ${max}`);
}

/** A whole number of at least 0 (retries: 0 tries once). */
export function checkNonNegativeInteger(options: object, name: string): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 0)) throw new InvalidOptionError(name, 'a non-negative integer');
}

/** A finite number above 0 (a duration, a rate), at least `min` when given. */
export function checkPositiveNumber(options: object, name: string, min?: number): void {
  const v = (options as Record<string, unknown>)[name];
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (min !== undefined && v < min)) {
    throw new InvalidOptionError(name, min === undefined ? 'a positive number' : `a number of at least ${min}`);
  }
}

/** One of `allowed`. */
export function checkOneOf(options: object, name: string, allowed: readonly string[]): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && !allowed.includes(v as string)) throw new InvalidOptionError(name, `one of ${allowed.map((a) => `"${a}"`).join(', ')}`);
}

/** true or false. */
export function checkBoolean(options: object, name: string): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && typeof v !== 'boolean') throw new InvalidOptionError(name, 'a boolean');
}

/** An AbortSignal. */
export function checkSignal(options: object, name = 'signal'): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && !(v instanceof AbortSignal)) throw new InvalidOptionError(name, 'an AbortSignal');
}

/** A function (a callback). */
export function checkFunction(options: object, name: string): void {
  const v = (options as Record<string, unknown>)[name];
  if (v !== undefined && typeof v !== 'function') throw new InvalidOptionError(name, 'a function');
}
