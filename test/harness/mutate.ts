/**
 * Mutations of valid inputs for the fuzzer: bit flips, interesting bytes, truncation,
 * extension, splices with another input, repeated and deleted ranges, and edits of the
 * integer fields a format declares (lengths, counts, sizes) to edge and huge values.
 * Every choice comes from the seeded generator: the same seed gives the same inputs.
 */
import type { Rng } from './rng.js';

/** An integer field of an input, so that length and count edits hit it exactly. */
export interface Field {
  readonly offset: number;
  readonly bytes: 1 | 2 | 4 | 8;
  readonly endian: 'le' | 'be';
}

/** A valid input and where its integer fields are. */
export interface SeedInput {
  readonly bytes: Buffer;
  readonly fields?: readonly Field[];
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
/** Edge values for integer fields: zero, one, signed and unsigned limits, and huge counts. */
const INTERESTING_U32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 2048, 2049, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_U64 = [0n, 1n, 0xffffffffn, 0x100000000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];

export type MutationName = 'flip' | 'byte' | 'truncate' | 'extend' | 'splice' | 'repeat' | 'delete' | 'field' | 'int';

/**
 * One to four mutations of `input` (a copy); `others` are inputs to splice with. Returns the
 * bytes and the names of the mutations applied (for a finding's description).
 */
export function mutate(rng: Rng, input: SeedInput, others: readonly SeedInput[]): { bytes: Buffer; applied: MutationName[] } {
  let b = Buffer.from(input.bytes);
  const applied: MutationName[] = [];
  const rounds = 1 + (rng.bool(0.6) ? 0 : rng.int(4));
  for (let r = 0; r < rounds; r++) {
    const kinds: MutationName[] = ['flip', 'byte', 'truncate', 'extend', 'splice', 'repeat', 'delete', 'int'];
    if (input.fields?.length) kinds.push('field', 'field', 'field');
    const kind = rng.pick(kinds);
    applied.push(kind);
    switch (kind) {
      case 'flip': {
        if (!b.length) break;
        for (let n = rng.range(1, 8); n > 0; n--) {
          const at = rng.int(b.length);
          b[at]! ^= 1 << rng.int(8);
        }
        break;
      }
      case 'byte':
        if (b.length) b[rng.int(b.length)] = rng.pick(INTERESTING_BYTES);
        break;
      case 'truncate':
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 'extend':
        b = Buffer.concat([b, rng.bytes(rng.bool(0.9) ? rng.range(1, 64) : rng.range(65, 8192))]);
        break;
      case 'splice': {
        const other = others.length ? rng.pick(others).bytes : rng.bytes(64);
        b = Buffer.concat([b.subarray(0, rng.int(b.length + 1)), other.subarray(rng.int(other.length + 1))]);
        break;
      }
      case 'repeat': {
        if (!b.length) break;
        const from = rng.int(b.length);
        const to = Math.min(b.length, from + rng.range(1, 256));
        const times = rng.range(1, 16);
        const piece = b.subarray(from, to);
        b = Buffer.concat([b.subarray(0, to), ...Array.from({ length: times }, () => piece), b.subarray(to)]);
        break;
      }
      case 'delete': {
        if (!b.length) break;
        const from = rng.int(b.length);
        const to = Math.min(b.length, from + rng.range(1, 256));
        b = Buffer.concat([b.subarray(0, from), b.subarray(to)]);
        break;
      }
      case 'field': {
        const f = rng.pick(input.fields!);
        if (f.offset + f.bytes > b.length) break;
        writeInteresting(rng, b, f);
        break;
      }
      case 'int': {
        // Anywhere, as if it were a field: catches length fields the seed did not declare.
        const bytes = rng.pick([2, 4, 8] as const);
        if (b.length < bytes) break;
        writeInteresting(rng, b, { offset: rng.int(b.length - bytes + 1), bytes, endian: rng.bool() ? 'le' : 'be' });
        break;
      }
    }
  }
  return { bytes: b, applied };
}

function writeInteresting(rng: Rng, b: Buffer, f: Field): void {
  const current = readField(b, f);
  const choices: bigint[] = [
    ...INTERESTING_U32.map(BigInt),
    ...(f.bytes === 8 ? INTERESTING_U64 : []),
    current + 1n,
    current - 1n,
    current * 2n,
    current + BigInt(rng.range(2, 4096)),
  ];
  const bits = BigInt(f.bytes * 8);
  const value = ((rng.pick(choices) % (1n << bits)) + (1n << bits)) % (1n << bits);
  for (let i = 0; i < f.bytes; i++) {
    const byte = Number((value >> BigInt(8 * i)) & 0xffn);
    b[f.endian === 'le' ? f.offset + i : f.offset + f.bytes - 1 - i] = byte;
  }
}

function readField(b: Buffer, f: Field): bigint {
  let v = 0n;
  for (let i = 0; i < f.bytes; i++) {
    const byte = BigInt(b[f.endian === 'le' ? f.offset + i : f.offset + f.bytes - 1 - i]!);
    v |= byte << BigInt(8 * i);
  }
  return v;
}

/** Random bytes of a random length: mostly short, sometimes long. */
export function randomBytes(rng: Rng): Buffer {
  const r = rng.float();
  const n = r < 0.1 ? 0 : r < 0.7 ? rng.range(1, 128) : r < 0.95 ? rng.range(129, 4096) : rng.range(4097, 256 * 1024);
  return rng.bytes(n);
}
