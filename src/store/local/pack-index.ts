/**
 * What the local store knows is in its packs: the index of every pack, loaded at open into
 * a DigestIndex per algorithm (56 bytes per chunk in memory), and refreshed from the index
 * files other openers append to (only what was added since the last read).
 *
 * Packs a gc marked for deletion (or deleted) are dead (setDead): their chunks do not count
 * as present (findLive), and an entry naming a dead pack moves to another copy of its
 * chunk when one is found (add); setDead re-reads every index file to find such copies.
 * A place set aside (setAside: its chunk was found corrupt) does not count either, and its
 * entry moves the same way when the chunk is stored again.
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
  /** Packs marked for deletion or deleted, by number. */
  private dead = new Set<number>();
  /** Places set aside (placeKey: pack name and offset): they do not count. */
  private readonly asidePlaces = new Set<string>();
  /** Chunks set aside (`<algorithm>:<digest bytes>`): a get that misses them says why. */
  private readonly asideChunks = new Set<string>();

  /** `packDir`: `<dir>/packs`, the pack and index files. */
  constructor(private readonly packDir: string) {}

  /** The committed chunks of `algorithm`. */
  of(algorithm: DigestAlgorithm): DigestIndex {
    return this.index.get(algorithm)!;
  }

  /**
   * Adds a committed chunk unless a copy that counts is known; an entry whose place does
   * not count (a dead pack, a place set aside) is pointed at this copy instead, if it counts.
   * This is the one way an entry moves: a copy stored anew, or found by setDead.
   */
  add(algorithm: DigestAlgorithm, digest: Uint8Array, pack: number, offset: number, length: number): void {
    const index = this.of(algorithm);
    const e = index.find(digest);
    if (e < 0) index.add(digest, pack, offset, length);
    else if (!this.counts(index.pack(e), index.offset(e)) && this.counts(pack, offset)) index.relocate(e, pack, offset, length);
  }

  /** The entry of a chunk whose place counts (its pack not dead, the place not set aside), or -1. */
  findLive(algorithm: DigestAlgorithm, digest: Uint8Array): number {
    const index = this.of(algorithm);
    const e = index.find(digest);
    return e >= 0 && this.counts(index.pack(e), index.offset(e)) ? e : -1;
  }

  /** Whether entry `e` of `algorithm`'s index names a place that counts (listings skip the others). */
  isLive(algorithm: DigestAlgorithm, e: number): boolean {
    const index = this.of(algorithm);
    return this.counts(index.pack(e), index.offset(e));
  }

  /** Whether entry `e` of `algorithm`'s index names a place set aside (its bytes are known bad: never read them). */
  isSetAside(algorithm: DigestAlgorithm, e: number): boolean {
    const index = this.of(algorithm);
    return this.asidePlaces.size > 0 && this.asidePlaces.has(placeKey(this.packNames[index.pack(e)]!, index.offset(e)));
  }

  /** Whether a chunk at `offset` of pack number `pack` counts as present. */
  private counts(pack: number, offset: number): boolean {
    if (this.dead.has(pack)) return false;
    return this.asidePlaces.size === 0 || !this.asidePlaces.has(placeKey(this.packNames[pack]!, offset));
  }

  isDead(pack: number): boolean {
    return this.dead.has(pack);
  }

  /** The names of every pack seen so far. */
  knownNames(): readonly string[] {
    return this.packNames;
  }

  nameOf(pack: number): string {
    return this.packNames[pack]!;
  }

  /**
   * Makes exactly the packs `names` dead. When one more is dead than before, every index
   * file is read again, so that entries naming it move to other copies of their chunks.
   */
  async setDead(names: Iterable<string>): Promise<void> {
    const dead = new Set<number>();
    for (const name of names) dead.add(this.packNumber(name));
    const grew = [...dead].some((n) => !this.dead.has(n));
    this.dead = dead;
    if (!grew) return;
    await this.refreshing?.catch(() => undefined);
    for (const file of await readDirNames(this.packDir, undefined)) {
      if (!file.endsWith('.idx')) continue;
      const name = file.slice(0, -'.idx'.length);
      if (!PACK_NAME_RE.test(name)) continue;
      const pack = this.packNumber(name);
      if (this.dead.has(pack)) continue;
      let bytes: Buffer;
      try {
        bytes = await readFrom(path.join(this.packDir, file), 0);
      } catch (err) {
        if (isMissing(err)) continue;
        throw fromSystemError(err, path.join(this.packDir, file), 'read pack index');
      }
      if (!bytes.subarray(0, IDX_MAGIC.length).equals(IDX_MAGIC)) continue;
      const { entries, usedBytes } = decodeIndexRecords(bytes.subarray(IDX_MAGIC.length));
      if (!this.ownPacks.has(name)) this.indexRead.set(name, Math.max(this.indexRead.get(name) ?? 0, IDX_MAGIC.length + usedBytes));
      for (const e of entries) this.add(e.algorithm, e.digest, pack, e.offset, e.length);
    }
  }

  /** Marks pack `name` as this store's own: refresh never reads its index file. */
  addOwnPack(name: string): void {
    this.ownPacks.add(name);
  }

  /** The packs this store wrote (addOwnPack), dead or not. */
  ownNames(): readonly string[] {
    return [...this.ownPacks];
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

  /**
   * The chunk `digest` at `offset` of pack `packName` is set aside (set-aside.ts): that place
   * stops counting, so the chunk is absent unless (or until) a copy elsewhere is added. A
   * copy stored elsewhere is not affected.
   */
  setAside(algorithm: DigestAlgorithm, digest: Uint8Array, packName: string, offset: number): void {
    this.asidePlaces.add(placeKey(packName, offset));
    this.asideChunks.add(`${algorithm}:${digestKey(digest)}`);
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
          for (const e of entries) this.add(e.algorithm, e.digest, pack, e.offset, e.length);
        }
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }
}
