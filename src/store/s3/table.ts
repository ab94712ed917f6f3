/**
 * ChunkTable: where each chunk of an S3 store lives (pack number, offset, length), kept
 * small at any store size: a sorted binary table of TABLE_ENTRY_BYTES (45) bytes per
 * chunk, searched by bisection, plus a Map of the entries added since the last merge,
 * merged into the table once it holds an eighth as many entries (so each entry is copied
 * O(log) times in all, and the Map never holds more than ~1/8 of the entries).
 *
 * Entry: algorithm code (u8), digest (32 bytes), pack number (u32), offset (u32), length
 * (u32); sorted by the first 33 bytes. Offsets fit in 32 bits: packs are about
 * S3_PACK_TARGET_BYTES (16 MiB) plus at most one chunk.
 */
import type { DigestAlgorithm } from '../../core/ids.js';
import { DIGEST_BYTES } from '../../core/ids.js';

export const TABLE_ENTRY_BYTES = 1 + DIGEST_BYTES + 12;
const KEY_BYTES = 1 + DIGEST_BYTES;
/** The Map of recent entries is merged into the table at this size at least. */
const MERGE_MIN_ENTRIES = 4096;
const ALGORITHM_CODES: Record<DigestAlgorithm, number> = { blake3: 1, sha256: 2 };
const MAX_U32 = 0xffff_ffff;

export interface ChunkPlace {
  readonly pack: number;
  readonly offset: number;
  readonly length: number;
}

export class ChunkTable {
  private table = Buffer.alloc(0);
  private count = 0;
  private readonly recent = new Map<string, ChunkPlace>();

  get size(): number {
    return this.count + this.recent.size;
  }

  /** Bytes held by the sorted table (the Map of recent entries aside). */
  get tableBytes(): number {
    return this.table.length;
  }

  find(algorithm: DigestAlgorithm, digest: Uint8Array): ChunkPlace | undefined {
    const key = keyOf(algorithm, digest);
    const recent = this.recent.get(key.toString('latin1'));
    if (recent !== undefined) return recent;
    const at = this.offsetOf(key);
    if (at < 0) return undefined;
    return { pack: this.table.readUInt32LE(at + KEY_BYTES), offset: this.table.readUInt32LE(at + KEY_BYTES + 4), length: this.table.readUInt32LE(at + KEY_BYTES + 8) };
  }

  /** The byte offset of `key`'s entry in the sorted table (binary search), -1 if absent. */
  private offsetOf(key: Buffer): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = mid * TABLE_ENTRY_BYTES;
      const c = this.table.compare(key, 0, KEY_BYTES, at, at + KEY_BYTES);
      if (c === 0) return at;
      // c > 0: the entry sorts after the key.
      if (c > 0) hi = mid - 1;
      else lo = mid + 1;
    }
    return -1;
  }

  /** Adds a chunk unless present (the first place found for a chunk stays its place). */
  add(algorithm: DigestAlgorithm, digest: Uint8Array, place: ChunkPlace): void {
    if (place.offset > MAX_U32 || place.length > MAX_U32 || place.pack > MAX_U32) throw new RangeError('chunk place out of range');
    if (this.find(algorithm, digest) !== undefined) return;
    this.recent.set(keyOf(algorithm, digest).toString('latin1'), place);
    if (this.recent.size >= Math.max(MERGE_MIN_ENTRIES, this.count >>> 3)) this.merge();
  }

  /** Points a chunk already in the table at another place (a copy elsewhere: its pack was marked for deletion). */
  relocate(algorithm: DigestAlgorithm, digest: Uint8Array, place: ChunkPlace): void {
    if (place.offset > MAX_U32 || place.length > MAX_U32 || place.pack > MAX_U32) throw new RangeError('chunk place out of range');
    const key = keyOf(algorithm, digest);
    const recentKey = key.toString('latin1');
    if (this.recent.has(recentKey)) {
      this.recent.set(recentKey, place);
      return;
    }
    const at = this.offsetOf(key);
    if (at < 0) return this.add(algorithm, digest, place);
    this.table.writeUInt32LE(place.pack, at + KEY_BYTES);
    this.table.writeUInt32LE(place.offset, at + KEY_BYTES + 4);
    this.table.writeUInt32LE(place.length, at + KEY_BYTES + 8);
  }

  private merge(): void {
    const added = [...this.recent.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const keys = added.map(([key]) => Buffer.from(key, 'latin1'));
    const out = Buffer.allocUnsafe((this.count + added.length) * TABLE_ENTRY_BYTES);
    let i = 0;
    let j = 0;
    let o = 0;
    while (i < this.count || j < added.length) {
      const takeOld =
        j >= added.length ||
        (i < this.count && this.table.compare(keys[j]!, 0, KEY_BYTES, i * TABLE_ENTRY_BYTES, i * TABLE_ENTRY_BYTES + KEY_BYTES) < 0);
      if (takeOld) {
        this.table.copy(out, o, i * TABLE_ENTRY_BYTES, (i + 1) * TABLE_ENTRY_BYTES);
        i++;
      } else {
        const place = added[j]![1];
        keys[j]!.copy(out, o);
        out.writeUInt32LE(place.pack, o + KEY_BYTES);
        out.writeUInt32LE(place.offset, o + KEY_BYTES + 4);
        out.writeUInt32LE(place.length, o + KEY_BYTES + 8);
        j++;
      }
      o += TABLE_ENTRY_BYTES;
    }
    this.table = out;
    this.count += added.length;
    this.recent.clear();
  }
}

function keyOf(algorithm: DigestAlgorithm, digest: Uint8Array): Buffer {
  const key = Buffer.allocUnsafe(KEY_BYTES);
  key[0] = ALGORITHM_CODES[algorithm];
  key.set(digest, 1);
  return key;
}
