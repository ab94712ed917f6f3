import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { chmod, lstat, lutimes, mkdir, open, rename, rm, symlink, utimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { AlreadyExistsError, fromSystemError, InvalidArgumentError, VerifyFailedError } from '../core/errors.js';
import type { EntryMeta, ManifestKind } from '../manifest/types.js';

/** Temp names beside the target start with this, so they are recognisable and ignorable. */
export const STAGING_PREFIX = '.xfer-';

/**
 * Builds a new version of a target (a file or a whole tree) beside it, then swaps it in.
 *
 * Contract: until commit() resolves, the target is untouched; after it resolves, the target
 * is the complete new version, fsynced. A file replaces a file with one rename (atomic).
 * A tree replaces a tree with two renames (old aside, new in), then the old one is removed;
 * a crash between the renames leaves both versions complete beside the target, never a
 * mix. abort() removes everything staged.
 */
export class Staging {
  readonly target: string;
  readonly kind: ManifestKind;
  private readonly root: string;
  private readonly dirs: EntryMeta[] = [];
  private committed = false;

  private constructor(target: string, kind: ManifestKind, root: string) {
    this.target = target;
    this.kind = kind;
    this.root = root;
  }

  static async create(target: string, kind: ManifestKind, options: { signal?: AbortSignal } = {}): Promise<Staging> {
    throwIfAborted(options.signal);
    await checkReplaceable(target, kind);
    const parent = dirname(target);
    try {
      await mkdir(parent, { recursive: true });
    } catch (err) {
      throw fromSystemError(err, parent, 'create directory');
    }
    const root = join(parent, `${STAGING_PREFIX}${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
    if (kind === 'tree') {
      try {
        await mkdir(root, { mode: 0o700 });
      } catch (err) {
        throw fromSystemError(err, root, 'create directory');
      }
    }
    return new Staging(target, kind, root);
  }

  /** Where an entry's staged copy lives ('' is the file of a file manifest). */
  pathOf(rel: string): string {
    return rel === '' ? this.root : join(this.root, ...rel.split('/'));
  }

  async mkdir(meta: EntryMeta): Promise<void> {
    const p = this.pathOf(meta.path);
    try {
      await mkdir(p, { mode: 0o700 });
    } catch (err) {
      throw fromSystemError(err, p, 'create directory');
    }
    this.dirs.push(meta);
  }

  async symlink(meta: EntryMeta): Promise<void> {
    const p = this.pathOf(meta.path);
    try {
      await symlink(meta.linkTarget ?? '', p);
      await lutimes(p, meta.mtimeMs / 1000, meta.mtimeMs / 1000);
    } catch (err) {
      throw fromSystemError(err, p, 'create symlink');
    }
  }

  async openFile(meta: EntryMeta): Promise<StagedFile> {
    const p = this.pathOf(meta.path);
    let fh: FileHandle;
    try {
      fh = await open(p, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
    } catch (err) {
      throw fromSystemError(err, p, 'create file');
    }
    return new StagedFile(fh, p, meta);
  }

  /** Swaps the staged version in (see the class contract). */
  async commit(options: { signal?: AbortSignal } = {}): Promise<void> {
    throwIfAborted(options.signal);
    // Directory modes and times last, deepest first, so writing children does not disturb them.
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const d = this.dirs[i]!;
      const p = this.pathOf(d.path);
      try {
        await utimes(p, d.mtimeMs / 1000, d.mtimeMs / 1000);
        await chmod(p, d.mode);
      } catch (err) {
        throw fromSystemError(err, p, 'set directory attributes');
      }
    }
    if (this.kind === 'tree') await fsyncPath(this.root, true);
    await checkReplaceable(this.target, this.kind);
    const parent = dirname(this.target);
    if (this.kind === 'file') {
      try {
        await rename(this.root, this.target);
      } catch (err) {
        throw fromSystemError(err, this.target, 'replace');
      }
    } else {
      const old = await exists(this.target);
      const aside = `${this.root}.old`;
      try {
        if (old) await rename(this.target, aside);
        await rename(this.root, this.target);
      } catch (err) {
        throw fromSystemError(err, this.target, 'replace');
      }
      await fsyncPath(parent, true);
      if (old) await rm(aside, { recursive: true, force: true });
    }
    await fsyncPath(parent, true);
    this.committed = true;
  }

  async abort(): Promise<void> {
    if (this.committed) return;
    await rm(this.root, { recursive: true, force: true }).catch(() => {});
  }
}

/** A file being written into the staging area; positional writes in any order. */
export class StagedFile {
  readonly path: string;
  private readonly fh: FileHandle;
  private readonly meta: EntryMeta;

  constructor(fh: FileHandle, path: string, meta: EntryMeta) {
    this.fh = fh;
    this.path = path;
    this.meta = meta;
  }

  async write(data: Uint8Array, position: number): Promise<void> {
    let done = 0;
    try {
      while (done < data.length) {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, position + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw fromSystemError(err, this.path, 'write');
    }
  }

  /** Sets the final size, mode and mtime, fsyncs and closes. */
  async finish(size: number): Promise<void> {
    try {
      const st = await this.fh.stat();
      if (st.size !== size) {
        // Only a trailing sparse region can be short (never written); anything else is a bug.
        if (st.size > size) throw new VerifyFailedError(`${this.path}: staged file is larger than its manifest says`);
        await this.fh.truncate(size);
      }
      await this.fh.chmod(this.meta.mode);
      await this.fh.utimes(this.meta.mtimeMs / 1000, this.meta.mtimeMs / 1000);
      await this.fh.datasync();
    } catch (err) {
      throw fromSystemError(err, this.path, 'finish');
    } finally {
      await this.fh.close().catch(() => {});
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fromSystemError(err, p, 'stat');
  }
}

/** cp's rules: a file never replaces a directory, a tree never replaces a non-directory. */
async function checkReplaceable(target: string, kind: ManifestKind): Promise<void> {
  let st;
  try {
    st = await lstat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fromSystemError(err, target, 'stat');
  }
  if (kind === 'file' && st.isDirectory()) throw new AlreadyExistsError(`${target}: cannot overwrite a directory with a file`);
  if (kind === 'tree' && !st.isDirectory()) throw new AlreadyExistsError(`${target}: cannot overwrite a non-directory with a directory`);
}

/** fsync a file or directory by path (directories: makes renames inside them durable). */
export async function fsyncPath(p: string, isDir: boolean): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(p, isDir ? constants.O_RDONLY | constants.O_DIRECTORY : constants.O_RDONLY);
    await fh.sync();
  } catch (err) {
    throw fromSystemError(err, p, 'fsync');
  } finally {
    await fh?.close();
  }
}

export function assertRelative(rel: string): void {
  if (rel.startsWith('/') || rel.split('/').includes('..')) throw new InvalidArgumentError(`unsafe path in manifest: ${rel}`);
}
