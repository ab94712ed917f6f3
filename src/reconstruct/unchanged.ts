/**
 * The no-op check of a tree pull (rsync's quick check, made before anything is staged): is
 * the existing target tree already, entry by entry, what the manifest describes? Then
 * reconstruct returns without creating a staging tree at all: a second pull of an unchanged
 * tree makes no directory, no link, no rename (measured on the bench tree of 7,643 files:
 * staging it cost mkdirs for 960 directories, 19,139 stats and their removal).
 *
 * It says "unchanged" only where Staging would find nothing changed and its commit would
 * keep the existing tree (see Staging.commit): every entry of the type it has, with the
 * attributes Staging applies (attributes.ts hasAttributes: mode, mtime to the nanosecond,
 * owner, xattrs), a symlink with its target, a file that passes the quick check against
 * the previous version (ReconstructOptions.previousFiles or previousIsManifest: same size, mode, mtime and
 * whole-file digest), further names of a file linked to it, and with --delete no extra
 * that would be removed. Anything else, or anything it cannot tell, is "maybe changed":
 * the caller stages as before, from the events it held.
 *
 * Reads only (lstat, readlink, readdir, llistxattr); never follows a symlink: each entry's
 * parent must have been found a real directory (parents come first in a manifest), and
 * the target itself a directory (the caller checks the way to it, confineTo).
 */
import { lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import type { EntryMeta, ManifestEvent } from '../manifest/types.js';
import { hasAttributes, type AttributePolicy } from './attributes.js';
import type { QuickCheckFile } from './reconstruct.js';
import type { SnapshotRecorder } from './snapshot.js';
import { deviceNumber } from './staging.js';

/**
 * Events held while checking (an entry or a batch of chunk records each counts its records):
 * past this the check gives up and the pull stages as before. About 150 bytes a record:
 * some 40 MiB, a tree of ~16 GiB at 64 KiB chunks.
 */
export const MAX_HELD_RECORDS = 262_144;

/** Entries checked between two turns of the event loop (the checks are synchronous calls). */
const ENTRIES_PER_TURN = 256;

export interface UnchangedCheckOptions {
  readonly policy: AttributePolicy;
  /** A file entry's previous version (ReconstructOptions.previousFiles or previousIsManifest). */
  readonly previousOf: (meta: EntryMeta) => QuickCheckFile | undefined;
  /** A file entry's mode as written to disk (ReconstructOptions.clearSetId). */
  readonly diskMode: (mode: number) => number;
  /** With --delete: which extras would go (Staging's mayDelete); undefined: extras are kept. */
  readonly deletable?: (path: string, isDir: boolean) => boolean;
  /** Told every entry's lstat, for a snapshot of the target (snapshot.ts); done set if unchanged. */
  readonly record?: SnapshotRecorder;
  readonly signal?: AbortSignal;
}

export type UnchangedCheck =
  /** The target is the manifest's tree; the manifest was read through (so verified). */
  | { readonly unchanged: true; readonly fileBytes: number }
  /** Maybe not: `held` are the events read so far, to be handled before the rest of `events`. */
  | { readonly unchanged: false; readonly held: ManifestEvent[] };

/**
 * Reads `events` (without closing it) and checks each entry against `target` (an existing
 * directory) as described above. Stops at the first difference.
 */
export async function checkUnchanged(events: AsyncIterator<ManifestEvent>, target: string, options: UnchangedCheckOptions): Promise<UnchangedCheck> {
  const held: ManifestEvent[] = [];
  let records = 0;
  const maybeChanged = (): UnchangedCheck => ({ unchanged: false, held });
  /** Directories of the target found real (lstat) and carrying their entry's attributes. */
  const dirs = new Set<string>(['']);
  /** Every path the manifest has Staging make (for --delete's extras). */
  const paths = options.deletable ? new Set<string>() : undefined;
  /** The file entry whose end (its digest) is awaited. */
  let file: { meta: EntryMeta; previous: QuickCheckFile } | undefined;
  let fileBytes = 0;
  let entries = 0;
  // Entry paths are validated relative paths ('/'-separated, no '', '.' or '..' segment:
  // manifest/rules.ts), so appending them is what path.join would make, at a tenth of its cost.
  const root = join(target, '/');
  const pathOf = (rel: string) => (rel === '' ? target : root + rel);
  const record = options.record;
  const stat = (rel: string): BigIntStats | undefined => {
    try {
      const st = lstatSync(pathOf(rel), { bigint: true });
      record?.add(rel, st);
      return st;
    } catch {
      return undefined;
    }
  };
  // Before the first lstat: a snapshot's times are judged against this start (snapshot.ts).
  record?.start(target);
  const parentOf = (rel: string) => {
    const slash = rel.lastIndexOf('/');
    return slash < 0 ? '' : rel.slice(0, slash);
  };
  for (;;) {
    const next = await events.next();
    if (next.done) break;
    const ev = next.value;
    held.push(ev);
    records += ev.kind === 'chunks' ? ev.records.length : 1;
    if (records > MAX_HELD_RECORDS) return maybeChanged();
    if (ev.kind === 'chunks') continue;
    if (ev.kind === 'entryEnd') {
      if (!file) return maybeChanged();
      const { previous } = file;
      file = undefined;
      if (previous.size !== ev.size || (previous.digest !== undefined && Buffer.compare(previous.digest, ev.digest) !== 0)) return maybeChanged();
      fileBytes += ev.size;
      continue;
    }
    const meta = ev.meta;
    if (++entries % ENTRIES_PER_TURN === 0) {
      await new Promise((resolve) => setImmediate(resolve));
      throwIfAborted(options.signal);
    }
    // Reached through directories found real: never through a symlink of the target.
    if (meta.path !== '' && !dirs.has(parentOf(meta.path))) return maybeChanged();
    const path = pathOf(meta.path);
    if (meta.type === 'dir') {
      const st = stat(meta.path);
      if (!st?.isDirectory()) return maybeChanged();
      // A tree without the root's own entry (version 1) gives the root no attributes.
      if (!hasAttributes(path, st, meta, options.policy)) return maybeChanged();
      dirs.add(meta.path);
    } else if (meta.type === 'symlink') {
      const st = stat(meta.path);
      if (!st?.isSymbolicLink() || !hasAttributes(path, st, meta, options.policy)) return maybeChanged();
      let to: string | undefined;
      try {
        to = readlinkSync(path);
      } catch {
        return maybeChanged();
      }
      if (to !== meta.linkTarget) return maybeChanged();
    } else if (meta.type === 'hardlink') {
      const a = stat(meta.path);
      const b = meta.linkTarget === undefined ? undefined : stat(meta.linkTarget);
      if (!(a?.isFile() && b?.isFile() && a.ino === b.ino && a.dev === b.dev)) return maybeChanged();
    } else if (meta.type === 'file') {
      const previous = options.previousOf(meta);
      if (!previous || previous.size !== meta.size || previous.mode !== meta.mode || previous.mtimeMs !== meta.mtimeMs || (previous.mtimeExtraNs ?? 0) !== (meta.mtimeExtraNs ?? 0)) return maybeChanged();
      const st = stat(meta.path);
      if (!st?.isFile() || st.size !== BigInt(previous.size) || !hasAttributes(path, st, meta, options.policy, options.diskMode(meta.mode))) return maybeChanged();
      file = { meta, previous };
    } else {
      // A FIFO or device node: devices only where the policy makes them (else never at the
      // target, and not made: an existing one is an extra, as Staging sees it).
      if (meta.type !== 'fifo' && !options.policy.devices) continue;
      const st = stat(meta.path);
      const kind = meta.type;
      const same = st !== undefined && (kind === 'fifo' ? st.isFIFO() : (kind === 'char' ? st.isCharacterDevice() : st.isBlockDevice()) && deviceNumber(st.rdev) === `${meta.devMajor},${meta.devMinor}`);
      if (!same || !hasAttributes(path, st, meta, options.policy)) return maybeChanged();
    }
    paths?.add(meta.path);
  }
  if (file) return maybeChanged();
  // --delete: an entry of the target's directories that the manifest lacks, and that is not
  // protected, would be removed (Staging.commit's carryOver): a change.
  if (paths && options.deletable) {
    for (const dir of dirs) {
      let names;
      try {
        names = readdirSync(pathOf(dir), { withFileTypes: true });
      } catch {
        return maybeChanged();
      }
      for (const e of names) {
        const rel = dir === '' ? e.name : `${dir}/${e.name}`;
        if (!paths.has(rel) && options.deletable(rel, e.isDirectory())) return maybeChanged();
      }
    }
  }
  if (record) record.done = true;
  return { unchanged: true, fileBytes };
}
