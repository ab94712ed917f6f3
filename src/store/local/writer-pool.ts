/**
 * The local store's pack writers: the one puts append to, a new one per opener and after
 * packTargetBytes, and the full ones (retired) whose last chunks still wait for a commit.
 * Each writes a pack of its own, so several openers, in one process or many, can share a
 * directory.
 */
import { mkdir } from 'node:fs/promises';
import { untilAborted } from '../../core/abort.js';
import { fromSystemError } from '../../core/errors.js';
import { PackWriter } from './pack-file.js';
import type { PackIndex } from './pack-index.js';

export class PackWriterPool {
  /** The writer puts append to. */
  private writer: PackWriter | undefined;
  private creatingWriter: Promise<PackWriter> | undefined;
  /** Writers with uncommitted chunks that take no more appends (full packs). */
  private readonly retired: PackWriter[] = [];
  /** Writers not yet closed, by pack number: reads ahead stop where their bytes are still changing. */
  private readonly liveWriters = new Map<number, PackWriter>();

  constructor(
    private readonly packDir: string,
    private readonly directIo: boolean,
    private readonly packTargetBytes: number,
    private readonly packs: PackIndex,
    /** Directories known to exist (shared with the store). */
    private readonly knownDirs: Set<string>,
    /** Runs before each new pack (a version 1 store's store.json becomes version 2 first). */
    private readonly beforeNewPack: () => Promise<void>,
  ) {}

  /**
   * Calls `use` with a writer with room, in the same turn as it was found so (nothing
   * else runs in between), and returns what it returns. The writer is made if there is
   * none, a new one past packTargetBytes, and waited for while the disk is behind
   * (bounding the memory of many concurrent puts). Undefined if, after a wait,
   * `stillWanted` says the append is no longer needed (another put of the same chunk got
   * in first).
   */
  async withRoom<T>(signal: AbortSignal | undefined, stillWanted: () => boolean, use: (w: PackWriter) => T): Promise<T | undefined> {
    for (;;) {
      const current = this.writer;
      if (current === undefined || current.broken) await this.newWriter();
      else if (current.bytes >= this.packTargetBytes) {
        this.retired.push(current);
        this.writer = undefined;
        await this.newWriter();
      } else if (!current.hasRoom) await untilAborted(current.room(), signal);
      else return use(current);
      if (!stillWanted()) return undefined;
    }
  }

  /** Whether `w` is the writer puts append to. */
  isCurrent(w: PackWriter): boolean {
    return w === this.writer;
  }

  /** Every writer that may hold uncommitted chunks: the retired ones, then the current one. */
  withChunks(): PackWriter[] {
    return [...this.retired, ...(this.writer ? [this.writer] : [])];
  }

  /** The next put starts a new pack (a gc is about to judge the current one, which then takes no more). */
  rollOver(): void {
    if (this.writer === undefined) return;
    if (!this.writer.broken) this.retired.push(this.writer);
    this.writer = undefined;
  }

  /** Names of the packs this pool's writers still write (or commit) to. */
  liveNames(): string[] {
    return this.withChunks().map((w) => w.name);
  }

  /** Bytes of pack `pack` that never change again (see PackReader). */
  settledBytes(pack: number): number {
    return this.liveWriters.get(pack)?.settledBytes ?? Infinity;
  }

  /** Retires and closes a writer that takes no more appends and has nothing left to commit. */
  async finish(w: PackWriter): Promise<void> {
    this.retire(w);
    await this.closeWriter(w);
  }

  /** Forgets a failed writer (its chunks are the caller's to drop) and closes it. */
  drop(w: PackWriter): void {
    this.retire(w);
    if (this.writer === w) this.writer = undefined;
    void this.closeWriter(w);
  }

  /** Closes every writer; appends are refused from then on. */
  async closeAll(): Promise<void> {
    for (const w of this.withChunks()) await this.closeWriter(w);
    this.retired.length = 0;
    this.writer = undefined;
  }

  private async newWriter(): Promise<PackWriter> {
    this.creatingWriter ??= (async () => {
      try {
        await this.beforeNewPack();
        if (!this.knownDirs.has(this.packDir)) {
          await mkdir(this.packDir, { recursive: true }).catch((err: unknown) => {
            throw fromSystemError(err, this.packDir, 'create store');
          });
          this.knownDirs.add(this.packDir);
        }
        const w = await PackWriter.create(this.packDir, this.directIo);
        this.packs.addOwnPack(w.name);
        this.liveWriters.set(this.packs.packNumber(w.name), w);
        if (this.writer?.broken === false) this.retired.push(this.writer);
        this.writer = w;
        return w;
      } finally {
        this.creatingWriter = undefined;
      }
    })();
    return this.creatingWriter;
  }

  private retire(w: PackWriter): void {
    const i = this.retired.indexOf(w);
    if (i >= 0) this.retired.splice(i, 1);
  }

  /** Closes a writer; only then do reads of its pack read ahead freely. */
  private async closeWriter(w: PackWriter): Promise<void> {
    await w.close();
    this.liveWriters.delete(this.packs.packNumber(w.name));
  }
}
