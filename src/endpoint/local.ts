import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { AlreadyExistsError, fromSystemError, InvalidArgumentError, isXferError, NotFoundError } from '../core/errors.js';
import type { EntryMeta, ManifestHeader, ManifestKind } from '../manifest/types.js';
import { sameFile, Staging, STAGING_PREFIX, type StagedFile } from '../reconstruct/staging.js';
import { LocalStore, localManifests } from '../store/local.js';
import { validateManifestName } from '../store/names.js';
import { commitManifest } from '../store/versions.js';
import type { HeldLock } from '../store/lock.js';
import type { OpOptions } from '../store/store.js';
import type { BeginOptions, EntryOptions, FileSink, KnownFile, PushDestination, PushSession } from '../transfer/destination.js';
import { resolveCopyTarget } from './copy-target.js';
import { KnownFiles, previousVersion } from '../transfer/known.js';

export { resolveCopyTarget };

/** The directory, inside the one holding a target, where a local destination keeps chunks and manifests. */
export const STORE_DIR_NAME = '.xfer';

/** A target in a local directory: <dir>/<name>, with its store at <dir>/.xfer. */
export interface LocalTarget {
  readonly target: string;
  readonly dir: string;
  readonly name: string;
  readonly storeDir: string;
}

export function localTargetOf(target: string): LocalTarget {
  const abs = resolve(target);
  const name = basename(abs);
  if (name === STORE_DIR_NAME || name === '' || abs === sep) throw new InvalidArgumentError(`${target}: not a valid target name`);
  const dir = dirname(abs);
  return { target: abs, dir, name, storeDir: join(dir, STORE_DIR_NAME) };
}

/**
 * resolveCopyTarget for a push. A destination that names a pushed tree, without a trailing
 * '/', is that target when the source is a tree: the push updates it. Running a push again
 * is how a copy is brought up to date (rsync), and `push ./tree backup/tree` made that
 * target the first time; cp's "into the existing directory" would now nest tree/tree.
 * Otherwise cp's rule holds, but a pushed tree cannot hold another pushed copy inside it
 * (with its own .xfer/): say so before anything is scanned or written, as a push to a
 * server does.
 */
export async function resolvePushTarget(sourceName: string, dest: string, sourceIsTree = false): Promise<string> {
  const slash = dest.endsWith('/') || dest.endsWith(sep);
  if (sourceIsTree && !slash && (await isPushedTree(resolve(dest)))) return dest;
  const target = await resolveCopyTarget(sourceName, dest);
  const into = dirname(resolve(target));
  if (await isPushedTree(into)) {
    throw new AlreadyExistsError(
      `${into} is a pushed tree: a copy cannot go inside it. To replace it, push a tree to ${into} (no trailing /), or push to a new path`,
    );
  }
  return target;
}

/** Whether `dir` is a tree a push rebuilt: a directory with a manifest of its name in the store beside it. */
async function isPushedTree(dir: string): Promise<boolean> {
  return (await isPushedTarget(dir)) && (await stat(dir).then((s) => s.isDirectory(), () => false));
}

/**
 * Whether `path` names a target a push made: the store beside it (`.xfer/`) has a manifest
 * of its name. Asked of the store's manifests (no chunk index is loaded).
 */
export async function isPushedTarget(path: string): Promise<boolean> {
  let t: LocalTarget;
  try {
    t = localTargetOf(path);
  } catch {
    return false;
  }
  let body: AsyncIterable<Uint8Array>;
  try {
    body = await localManifests(t.storeDir).getManifest(validateManifestName(t.name));
  } catch (err) {
    if (isXferError(err, 'XFER_NOT_FOUND') || isXferError(err, 'XFER_INVALID_ARGUMENT')) return false;
    throw err;
  }
  for await (const _ of body) break; // leaving the loop closes the manifest's file
  return true;
}

/**
 * Whether `path` is a destination directory that holds a store (`<path>/.xfer`), as
 * opposed to a target (or a folder of targets) in the store beside it. NotFoundError if
 * neither store exists.
 */
export async function holdsStore(path: string): Promise<boolean> {
  const isDir = (p: string) => stat(p).then((s) => s.isDirectory(), () => false);
  if ((await isDir(join(path, STORE_DIR_NAME))) && (await isDir(path))) return true;
  let beside: string | undefined;
  try {
    beside = localTargetOf(path).storeDir;
  } catch {
    // the root, or a name no target can have
  }
  if (beside !== undefined && (await stat(beside).then(() => true, () => false))) return false;
  throw new NotFoundError(`${path}: no xfer store here or beside it`);
}

/**
 * What a push to `t` writes in t's directory: the target, the store (.xfer) and staging
 * copies (`.xfer-<name>.*`, see reconstruct/staging.ts). A push whose destination is inside
 * the tree it reads (`xfer push . ./backup/`) leaves these out of its scan: they change
 * while it runs, so reading them failed every such push with "file changed while it was
 * being read". undefined if `t` is not inside `sourceTree` (nothing to leave out).
 */
export function destinationPathsIn(sourceTree: string, t: LocalTarget): ((absPath: string) => boolean) | undefined {
  const root = resolve(sourceTree);
  if (t.dir !== root && !t.dir.startsWith(root.endsWith(sep) ? root : root + sep)) return undefined;
  const staging = `${STAGING_PREFIX}${t.name}.`;
  return (absPath) => {
    if (dirname(absPath) !== t.dir) return false;
    const name = basename(absPath);
    return name === t.name || name === STORE_DIR_NAME || name.startsWith(staging);
  };
}

/** The base name a source is copied under (cp semantics); '.' and '/' resolve first. */
export function sourceBaseName(source: string): string {
  const name = basename(resolve(source));
  if (!name) throw new InvalidArgumentError(`${source}: cannot copy the root directory by name; name a destination`);
  return name;
}

/**
 * A push into a local directory: chunks and manifest go to <dir>/.xfer, and the target is
 * built from the scanned bytes in a staging copy beside it, swapped in at commit. A file
 * the target already holds as it is (the quick check: same size and mtime as the last
 * push recorded, in the manifest and on disk) is not read: its current copy is linked
 * into the staging copy.
 */
export class LocalDestination implements PushDestination {
  readonly description: string;
  private known: KnownFiles | undefined;

  private lock: HeldLock | undefined;

  private constructor(
    readonly chunks: LocalStore,
    private readonly t: LocalTarget,
    private readonly onLockWait?: (holder: string) => void,
    private readonly deleteExtra = false,
    private readonly protect?: (path: string, isDir: boolean) => boolean,
    private readonly numericIds = false,
  ) {
    this.description = t.target;
  }

  /**
   * `onLockWait` is told when another process is pushing to the same target, and this push
   * waits for it. `deleteExtra`: entries of the existing target tree that the pushed tree
   * lacks are removed (rsync --delete) and listed by commit; by default they are kept.
   * `protect`: extras kept all the same (the user's excluded entries, see Staging.create).
   */
  static async open(
    target: LocalTarget, options: OpOptions & { onLockWait?: (holder: string) => void; deleteExtra?: boolean; protect?: (path: string, isDir: boolean) => boolean; numericIds?: boolean } = {},
  ): Promise<LocalDestination> {
    const store = await LocalStore.open(target.storeDir, { create: true, signal: options.signal });
    return new LocalDestination(store, target, options.onLockWait, options.deleteExtra, options.protect, options.numericIds);
  }

  /**
   * Takes the target's lock (LocalStore.lockTarget) for the whole session, until commit or
   * abort: two pushes to one target run one after the other, from reading the current
   * version (which files to link instead of writing) to the swap and the manifest, so the
   * tree on disk and the stored manifest are always the same push's.
   */
  async begin(kind: ManifestKind, options: BeginOptions = {}): Promise<PushSession> {
    const lock = (this.lock = await this.chunks.lockTarget(this.t.name, { signal: options.signal, onWait: this.onLockWait }));
    let staging: Staging;
    let known: KnownFiles | undefined;
    const store = this.chunks;
    const name = this.t.name;
    try {
      staging = await Staging.create(this.t.target, kind, { ...options, deleteExtra: this.deleteExtra, protect: this.protect, attributes: { numericIds: this.numericIds } });
      try {
        known = this.known = KnownFiles.for(await previousVersion(store, name, kind, options), store, options);
      } catch (err) {
        await staging.abort().catch(() => {});
        throw err;
      }
    } catch (err) {
      await lock.release();
      throw err;
    }
    const current = (path: string) => this.currentCopy(path);
    return {
      async entry(meta: EntryMeta, o: EntryOptions = {}): Promise<FileSink | undefined> {
        if (meta.type === 'dir') await staging.mkdir(meta);
        else if (meta.type === 'symlink') await staging.symlink(meta);
        else if (meta.type === 'hardlink') await staging.hardlink(meta);
        else if (meta.type !== 'file') await staging.node(meta);
        else if (o.known) await staging.keepFile(meta, current(meta.path));
        else {
          const f: StagedFile = await staging.openFile(meta);
          const previous = known?.previousFile(meta.path);
          // Blocks equal to the current copy's at the same offsets are shared with it (a
          // reflink on XFS and btrfs) instead of written again.
          if (previous) await f.shareWithOlder(current(meta.path));
          return {
            write: (data, position) => f.write(data, position),
            finish: async (size, digest) => {
              // Read (--checksum, or a new mtime) and found to be the content the current copy
              // holds: the copy is linked if it also has the entry's size, mtime and mode, instead
              // of writing the file again. A small file is written only at finish, so nothing is
              // wasted; a larger one is already in the staging copy, the link fails, and it stays.
              if (previous && previous.size === size && Buffer.compare(previous.digest, digest) === 0) {
                const copy = current(meta.path);
                if ((await sameFile(copy, { size, mtimeMs: meta.mtimeMs, mtimeExtraNs: meta.mtimeExtraNs, mode: meta.mode })) && (await staging.linkFile(meta, copy))) return f.close();
              }
              await f.finish(size);
            },
          };
        }
        return undefined;
      },
      async commit(manifestPath: string, header: ManifestHeader, opts: OpOptions = {}): Promise<{ deleted: readonly string[] }> {
        try {
          await commitManifest(store, name, manifestPath, header, opts);
          return await staging.commit(opts);
        } finally {
          await lock.release();
        }
      },
      async abort() {
        try {
          await staging.abort();
        } finally {
          await lock.release();
        }
      },
    };
  }

  async knownFile(meta: EntryMeta, options: OpOptions = {}): Promise<KnownFile | undefined> {
    const f = await this.known?.find(meta, options);
    // The copy at the target must still be the one the manifest describes: it is linked.
    return f && (await sameFile(this.currentCopy(meta.path), { size: f.size, mtimeMs: meta.mtimeMs, mtimeExtraNs: meta.mtimeExtraNs })) ? f : undefined;
  }

  /** Where entry `path` of the target's current version is ('' is a file target itself). */
  private currentCopy(path: string): string {
    return path === '' ? this.t.target : join(this.t.target, ...path.split('/'));
  }

  previousFile(path: string): { readonly size: number; readonly digest: Uint8Array } | undefined {
    return this.known?.previousFile(path);
  }

  async close(): Promise<void> {
    await this.lock?.release();
    await this.chunks.close();
  }
}

/** Opens the store that holds a local target's manifest; NotFoundError if there is none. */
export async function openLocalSource(target: string, options: OpOptions = {}): Promise<{ store: LocalStore; name: string; t: LocalTarget }> {
  const t = localTargetOf(target);
  return { store: await openLocalStore(t.dir, options, target), name: t.name, t };
}

/** Opens the store of a destination directory (`<dir>/.xfer`); NotFoundError naming `what` if absent. */
export async function openLocalStore(dir: string, options: OpOptions = {}, what = dir): Promise<LocalStore> {
  const storeDir = join(resolve(dir), STORE_DIR_NAME);
  try {
    return await LocalStore.open(storeDir, { create: false, signal: options.signal });
  } catch (err) {
    if ((err as { code?: string }).code === 'XFER_NOT_FOUND') throw new NotFoundError(`${what}: no xfer store at ${storeDir} (was it pushed with xfer?)`);
    throw err;
  }
}
