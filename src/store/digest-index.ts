/**
 * DigestIndex: where each chunk of a pack store lives, by digest, in compact typed arrays.
 *
 * Why not a Map: a Map keyed by digest strings costs ~150 bytes per entry and holds at
 * most 2^24 entries, about 1 TiB of 64 KiB chunks. This table costs 56 bytes per entry
 * (the 32-byte digest, pack number, offset, length, and two 32-bit slots at a load factor
 * of at most one half) and holds up to 2^30 entries.
 *
 * Open addressing with linear probing over `slots` (entry number + 1; 0 = empty). Digests
 * are cryptographic hashes, so their first four bytes are already a uniform hash.
 * Entries are never removed; an entry's place may be changed (relocate), which a pack
 * store does when the pack it named is marked for deletion and another copy is found.
 */
import { InvalidArgumentError } from '../core/errors.js';
import { DIGEST_BYTES } from '../core/ids.js';

/** Entries an index holds at most (slots are a power of two >= twice the entries, in an Int32Array). */
export const MAX_INDEX_ENTRIES = 2 ** 30;
const INITIAL_CAPACITY = 1024;

export class DigestIndex {
  private capacity = 0;
  private count = 0;
  private digests = new Uint8Array(0);
  private packs = new Uint32Array(0);
  private offsets = new Float64Array(0);
  private lengths = new Uint32Array(0);
  private slots = new Int32Array(0);
  private mask = 0;

  constructor(initialCapacity = INITIAL_CAPACITY) {
    this.grow(Math.max(16, initialCapacity));
  }

  get size(): number {
    return this.count;
  }

  /** The entry number of `digest`, or -1. */
  find(digest: Uint8Array): number {
    const d = this.digests;
    for (let s = hashOf(digest) & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.slots[s]!;
      if (e === 0) return -1;
      const base = (e - 1) * DIGEST_BYTES;
      let i = 0;
      while (i < DIGEST_BYTES && d[base + i] === digest[i]) i++;
      if (i === DIGEST_BYTES) return e - 1;
    }
  }

  /** Adds `digest` unless present; returns its entry number either way. */
  add(digest: Uint8Array, pack: number, offset: number, length: number): number {
    if (digest.length !== DIGEST_BYTES) throw new InvalidArgumentError(`a digest has ${DIGEST_BYTES} bytes, not ${digest.length}`);
    const found = this.find(digest);
    if (found >= 0) return found;
    if (this.count === this.capacity) this.grow(this.capacity * 2);
    const e = this.count++;
    this.digests.set(digest, e * DIGEST_BYTES);
    this.packs[e] = pack;
    this.offsets[e] = offset;
    this.lengths[e] = length;
    this.place(e);
    return e;
  }

  /** Points entry `entry` at another copy of its chunk. */
  relocate(entry: number, pack: number, offset: number, length: number): void {
    this.packs[entry] = pack;
    this.offsets[entry] = offset;
    this.lengths[entry] = length;
  }

  pack(entry: number): number {
    return this.packs[entry]!;
  }

  offset(entry: number): number {
    return this.offsets[entry]!;
  }

  length(entry: number): number {
    return this.lengths[entry]!;
  }

  /** A copy of the entry's digest. */
  digest(entry: number): Buffer {
    return Buffer.from(this.digests.subarray(entry * DIGEST_BYTES, (entry + 1) * DIGEST_BYTES));
  }

  private place(entry: number): void {
    const view = this.digests.subarray(entry * DIGEST_BYTES, (entry + 1) * DIGEST_BYTES);
    let s = hashOf(view) & this.mask;
    while (this.slots[s] !== 0) s = (s + 1) & this.mask;
    this.slots[s] = entry + 1;
  }

  private grow(capacity: number): void {
    if (capacity > MAX_INDEX_ENTRIES) throw new InvalidArgumentError(`a store index holds at most ${MAX_INDEX_ENTRIES} chunks`);
    const digests = new Uint8Array(capacity * DIGEST_BYTES);
    digests.set(this.digests);
    this.digests = digests;
    const packs = new Uint32Array(capacity);
    packs.set(this.packs);
    this.packs = packs;
    const offsets = new Float64Array(capacity);
    offsets.set(this.offsets);
    this.offsets = offsets;
    const lengths = new Uint32Array(capacity);
    lengths.set(this.lengths);
    this.lengths = lengths;
    this.capacity = capacity;
    this.slots = new Int32Array(capacity * 2);
    this.mask = capacity * 2 - 1;
    for (let e = 0; e < this.count; e++) this.place(e);
  }
}

function hashOf(digest: Uint8Array): number {
  return (digest[0]! | (digest[1]! << 8) | (digest[2]! << 16) | (digest[3]! << 24)) >>> 0;
}
