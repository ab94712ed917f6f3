import { sep } from 'node:path';
import type { PullOptions } from './api.js';
import { pullTarget } from './endpoint/copy-target.js';
import { checkLocalPath } from './endpoint/registry.js';
import { parseRemote } from './endpoint/remote.js';
import type { PullResult } from './reconstruct/reconstruct.js';
import type { PullPlan } from './transfer/dry-run.js';
import { parentAsRecorded, readSnapshot, snapshotConditions, stillAsRecorded, type SnapshotKey } from './reconstruct/snapshot.js';

/*
 * A tree pull onto the target it already is, known without the manifest (see
 * reconstruct/snapshot.ts). Kept apart from api.ts, with only light imports: the CLI tries it
 * before it loads the library (about 0.1 s of start-up, most of a no-op pull's time), and
 * api.ts's pull tries it first for library callers.
 */

/** What api.ts's pull resolves with (no plan: a pull with one never uses a snapshot). */
export type SnapshotPull = PullResult & { target: string; plan?: PullPlan; bytesWritten?: number; bytesReadBack?: number };

/** Options objects whose pull the CLI already tried from the snapshot (see tryPullFromSnapshot). */
const tried = new WeakSet<object>();

/** Whether a pull with these options may use a snapshot, or leave one: not when it needs the manifest or reads everything. */
export function snapshotApplies(source: string, options: PullOptions): boolean {
  return !options.checksum && !options.dryRun && !options.plan && !options.excludes && options.version === undefined && /^https?:\/\//i.test(source);
}

/** What a snapshot of a pull of `path` from `base` is valid for (but the tag). */
export function snapshotKey(base: URL, path: string, options: PullOptions): Omit<SnapshotKey, 'tag'> {
  return { source: `${base.origin}/${path}`, conditions: snapshotConditions({ delete: options.delete === true, numericIds: options.numericIds === true }) };
}

/**
 * The result of a pull of `source` (a server's tree) to `destination` that has nothing to
 * do: the target's snapshot was taken under the same conditions for the same source, every
 * entry it records is still as recorded, no leftover of an interrupted pull lies beside it,
 * and the server says the tree's tag is still current (endpoint/probe.ts). Undefined
 * whenever any of that is not so, or cannot be told: the pull then goes the full way, as
 * if there were no snapshot, and reports any error itself.
 */
export async function pullFromSnapshot(source: string, destination: string, options: PullOptions): Promise<SnapshotPull | undefined> {
  const started = performance.now();
  if (!snapshotApplies(source, options) || options.signal?.aborted) return undefined;
  let target: string;
  let r: ReturnType<typeof parseRemote>;
  try {
    checkLocalPath(destination, 'the destination of a pull');
    r = parseRemote(source);
    if (!r.path) return undefined;
    // Where a tree from `source` goes (as pull finds it once it knows the kind): rsync's
    // trailing '/', its contents to the destination itself; else cp's rule.
    target = await pullTarget(r.path, source.endsWith('/') || source.endsWith(sep), destination);
  } catch {
    return undefined;
  }
  const key = snapshotKey(r.base, r.path, options);
  const snap = await readSnapshot(target);
  if (!snap || snap.source !== key.source || snap.conditions !== key.conditions) return undefined;
  if (!stillAsRecorded(target, snap)) return undefined;
  // Leftovers of an interrupted pull beside the target: the full way takes them over. The
  // staging code (and its imports) is loaded only if the directory holding the target changed.
  if (!parentAsRecorded(target, snap)) {
    const { Staging } = await import('./reconstruct/staging.js');
    if (await Staging.hasLeftovers(target).catch(() => true)) return undefined;
  }
  const { manifestTagCurrent } = await import('./endpoint/probe.js');
  if (!(await manifestTagCurrent(r.base, r.path, snap.tag, { token: options.token, caFile: options.caFile, insecure: options.insecure, signal: options.signal }))) return undefined;
  const { bytesTotal, chunksTotal, fileBytes, digest } = snap.result;
  options.onProgress?.({ bytesTotal, bytesDone: fileBytes, bytesReceived: 0, bytesReused: fileBytes, bytesZero: 0 });
  return { kind: 'tree', bytesTotal, bytesReceived: 0, bytesReused: fileBytes, bytesZero: 0, bytesAllocated: fileBytes, chunksTotal, seconds: (performance.now() - started) / 1000, digest, deleted: [], target };
}

/**
 * pullFromSnapshot for a caller that, when it returns undefined, hands the very same
 * options object to api.ts's pull (the CLI): that pull does not try again.
 */
export async function tryPullFromSnapshot(source: string, destination: string, options: PullOptions): Promise<SnapshotPull | undefined> {
  const done = await pullFromSnapshot(source, destination, options);
  if (!done) tried.add(options);
  return done;
}

/** Whether tryPullFromSnapshot already tried (and missed) with these options; told once. */
export function triedSnapshot(options: PullOptions): boolean {
  return tried.delete(options);
}
