/**
 * What the local store knows is in its packs: the index of every pack, loaded at open into
 * a DigestIndex per algorithm (56 bytes per chunk in memory), and refreshed from the index
 * files other openers append to (only what was added since the last read).
 */
import path from 'node:path';
import { fromSystemError } from '../../core/errors.js';
import { DIGEST_ALGORITHMS, digestKey, type DigestAlgorithm } from '../../core/ids.js';
import { DigestIndex } from '../digest-index.js';
import { decodeIndexRecords, IDX_MAGIC, PACK_NAME_RE } from '../pack.js';
import { isMissing, readDirNames, readFrom } from './fs.js';
import { placeKey } from './set-aside.js';

export class PackIndex {
  /** Committed chunks of every pack, per algorithm. */
  private readonly index = new Map<DigestAlgorithm, DigestIndex>(DIGEST_ALGORITHMS.map((a) => [a, new DigestIndex()]));
  /** Pack names by number (the number is what the index stores). */
  private readonly packNames: string[] = [];
  private readonly packNumbers = new Map<string, number>();
  /** Bytes of each index file read so far (refresh reads only what was added since). */
  private readonly indexRead = new Map<string, number>();
  /** Packs this store wrote: their entries are added as they commit, never re-read. */
  private readonly ownPacks = new Set<string>();
  private refreshing: Promise<void> | undefined;
  /** Places set aside (placeKey: pack name and offset): index records there are not loaded. */
  private readonly asidePlaces = new Set<string>();
  /** Chunks set aside (`<algorithm>:<digest bytes>`): a get that misses them says why. */
  private readonly asideChunks = new Set<string>();

  /** `packDir`: `<dir>/packs`, the pack and index files. */
  constructor(private readonly packDir: string) {}

  /** The committed chunks of `algorithm`. */
  of(algorithm: DigestAlgorithm): DigestIndex {
    return this.index.get(algorithm)!;
  }

  /** Marks pack `name` as this store's own: refresh never reads its index file. */
  addOwnPack(name: string): void {
    this.ownPacks.add(name);
  }

  /** The number of pack `name` (what the index stores), given on first sight. */
  packNumber(name: string): number {
    let n = this.packNumbers.get(name);
    if (n === undefined) {
      n = this.packNames.length;
      this.packNames.push(name);
      this.packNumbers.set(name, n);
    }
    return n;
  }

  packName(pack: number): string {
    return this.packNames[pack]!;
  }

  /**
   * The chunk `digest` at `offset` of pack `packName` is set aside (set-aside.ts): it stops
   * counting as present if that is where the index has it, and an index record of that
   * place read later is skipped. A copy stored elsewhere is not affected.
   */
  setAside(algorithm: DigestAlgorithm, digest: Uint8Array, packName: string, offset: number): void {
    this.asidePlaces.add(placeKey(packName, offset));
    this.asideChunks.add(`${algorithm}:${digestKey(digest)}`);
    const index = this.of(algorithm);
    const e = index.find(digest);
    if (e >= 0 && this.packNames[index.pack(e)] === packName && index.offset(e) === offset) index.setAside(e);
  }

  /** Whether a copy of the chunk was set aside (it may have been stored again since). */
  wasSetAside(algorithm: DigestAlgorithm, digest: Uint8Array): boolean {
    return this.asideChunks.size > 0 && this.asideChunks.has(`${algorithm}:${digestKey(digest)}`);
  }

  packPath(pack: number): string {
    return path.join(this.packDir, `${this.packNames[pack]!}.pack`);
  }

  /**
   * Reads what was added to the index files since the last call (all of them at open).
   * Our own packs' indexes are skipped: their entries are added as they commit. A
   * damaged or torn record ends what is read of that file.
   */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        for (const file of await readDirNames(this.packDir, undefined)) {
          if (!file.endsWith('.idx')) continue;
          const name = file.slice(0, -'.idx'.length);
          if (!PACK_NAME_RE.test(name) || this.ownPacks.has(name)) continue;
          const done = this.indexRead.get(name) ?? 0;
          const idxPath = path.join(this.packDir, file);
          // Only what was appended since the last read (all of it the first time).
          let bytes: Buffer;
          try {
            bytes = await readFrom(idxPath, done);
          } catch (err) {
            if (isMissing(err)) continue;
            throw fromSystemError(err, idxPath, 'read pack index');
          }
          if (done === 0 && !bytes.subarray(0, IDX_MAGIC.length).equals(IDX_MAGIC)) continue; // not (yet) an index
          const skip = done === 0 ? IDX_MAGIC.length : 0;
          if (bytes.length <= skip) continue;
          const { entries, usedBytes } = decodeIndexRecords(bytes.subarray(skip));
          this.indexRead.set(name, Math.max(done, IDX_MAGIC.length) + usedBytes);
          const pack = this.packNumber(name);
          for (const e of entries) {
            if (this.asidePlaces.size > 0 && this.asidePlaces.has(placeKey(name, e.offset))) continue;
            this.of(e.algorithm).add(e.digest, pack, e.offset, e.length);
          }
        }
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }
}
