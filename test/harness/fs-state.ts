/**
 * What the consistency checks compare: the digests of every file of a target (a file or a
 * tree), and the temporary names a run may leave behind.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A target's content as one map: relative path -> `file:<sha256>:<mode>`, `dir`,
 * `link:<target>`; a single file is the path ''. Undefined if the target does not exist.
 */
export async function snapshot(target: string): Promise<Map<string, string> | undefined> {
  // A tree is swapped in by renaming its directory: a walk that straddles the swap reads
  // some files of each version. Such a walk is taken again (the target's inode changed
  // under it); what is compared is what one path resolution at a time could see.
  for (let attempt = 0; ; attempt++) {
    const before = await lstat(target).catch(() => undefined);
    if (!before) return undefined;
    const snap = await walk(target).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' && attempt < 10) return undefined; // moved aside mid-walk
      throw err;
    });
    const after = await lstat(target).catch(() => undefined);
    if (snap && after && after.ino === before.ino && after.dev === before.dev) return snap;
    if (attempt >= 10) return snap;
  }
}

async function walk(target: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (path: string, rel: string): Promise<void> => {
    const s = await lstat(path);
    if (s.isSymbolicLink()) out.set(rel, `link:${await readlink(path)}`);
    else if (s.isDirectory()) {
      out.set(rel, 'dir');
      for (const name of (await readdir(path)).sort()) await visit(join(path, name), rel ? `${rel}/${name}` : name);
    } else if (s.isFile()) out.set(rel, `file:${await sha256(path)}`);
    else out.set(rel, 'other');
  };
  await visit(target, '');
  return out;
}

export function sameSnapshot(a: Map<string, string> | undefined, b: Map<string, string> | undefined): boolean {
  if (!a || !b) return a === b;
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** How two snapshots differ, briefly (for a finding's message). */
export function describeDifference(actual: Map<string, string> | undefined, expected: Map<string, string> | undefined): string {
  if (!actual) return 'target missing';
  if (!expected) return 'target present';
  const diffs: string[] = [];
  for (const [k, v] of expected) if (actual.get(k) !== v) diffs.push(`${k || '.'} ${actual.has(k) ? 'differs' : 'missing'}`);
  for (const k of actual.keys()) if (!expected.has(k)) diffs.push(`${k || '.'} extra`);
  return diffs.slice(0, 4).join(', ') + (diffs.length > 4 ? `, ... (${diffs.length})` : '');
}

export async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return h.digest('hex');
}

/**
 * Names under `dir` (all depths when `recursive`) that are xfer's temporary names:
 * `.xfer-*` staging copies and partial files. `.xfer` itself (a local store) is not one.
 */
export async function stagingNames(dir: string, recursive = false): Promise<string[]> {
  const found: string[] = [];
  const visit = async (d: string, rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.name.startsWith('.xfer-')) found.push(r);
      else if (recursive && e.isDirectory() && e.name !== '.xfer') await visit(join(d, e.name), r);
    }
  };
  await visit(dir, '');
  return found;
}

/** Everything in `dir` (one level), or [] if it does not exist. */
export async function entriesOf(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}
