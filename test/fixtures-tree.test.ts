import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isXferError } from '../src/core/errors.js';
import { KiB, MiB } from '../src/core/sizes.js';
import { BLOCK_BYTES, readAll, tree, writeTree, type Tree, type TreeFile } from '../fixtures/index.js';

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const SIZE_BYTES = 6 * MiB;
/** Depth of a relative path: 'a' is 1, 'a/b' is 2. */
const depth = (path: string) => path.split('/').length;

const filesOf = (t: Tree) => t.entries.filter((e): e is TreeFile => e.type === 'file');
const byPath = (t: Tree) => new Map(filesOf(t).map((f) => [f.path, f]));

/** Every entry as "d path" or "f path size sha256": one string that pins a whole tree. */
function fingerprint(t: Tree): string {
  return t.entries.map((e) => (e.type === 'dir' ? `d ${e.path}` : `f ${e.path} ${e.sizeBytes} ${sha256(readAll(e.stream()))}`)).join('\n');
}

/** Files and directories under `root`, as relative paths with '/', files with their bytes. */
async function walk(root: string): Promise<{ dirs: string[]; files: Map<string, Buffer> }> {
  const dirs: string[] = [];
  const files = new Map<string, Buffer>();
  for (const d of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = relative(root, join(d.parentPath, d.name)).split('\\').join('/');
    if (d.isDirectory()) dirs.push(path);
    else files.set(path, await readFile(join(root, path)));
  }
  return { dirs: dirs.sort(), files };
}

describe('tree (base)', () => {
  const base = tree({ sizeBytes: SIZE_BYTES, seed: 1 });
  const files = filesOf(base);

  it('is deterministic: seed 1 hashes to its pinned value; another seed gives another tree', () => {
    assert.equal(sha256(Buffer.from(fingerprint(base))), '4159fb46117908d5f75d60ec3d77cb56f38fea8e525a9794b6ab84ea96fa328e');
    assert.equal(fingerprint(tree({ sizeBytes: SIZE_BYTES, seed: 1 })), fingerprint(base));
    assert.notEqual(fingerprint(tree({ sizeBytes: SIZE_BYTES, seed: 2 })), fingerprint(base));
  });

  it('file sizes add up to exactly the requested size', () => {
    assert.equal(base.totalBytes, SIZE_BYTES);
    assert.equal(files.reduce((n, f) => n + f.sizeBytes, 0), SIZE_BYTES);
    for (const f of files) assert.equal(readAll(f.stream()).length, f.sizeBytes, f.path);
  });

  it('holds many small files (1-64 KiB) of config, text and binary, a few large ones (MiBs), empty files and an empty directory', () => {
    const kinds = new Set(files.map((f) => f.kind));
    assert.deepEqual([...kinds].sort(), ['binary', 'config', 'empty', 'large', 'text']);
    for (const f of files) {
      if (f.kind === 'empty') assert.equal(f.sizeBytes, 0);
      else if (f.kind === 'large') assert.ok(f.sizeBytes >= MiB && f.sizeBytes <= 8 * MiB, `${f.path} ${f.sizeBytes}`);
      else assert.ok(f.sizeBytes > 0 && f.sizeBytes < 64 * KiB, `${f.path} ${f.sizeBytes}`);
    }
    assert.ok(files.filter((f) => f.kind !== 'large').length > 100, 'many small files');
    assert.ok(base.entries.some((e) => e.type === 'dir' && e.path === 'lost+found'));
    assert.ok(!base.entries.some((e) => e.path.startsWith('lost+found/')), 'lost+found stays empty');
  });

  it('nests directories a few levels deep, and lists each directory before its contents', () => {
    const dirs = new Set(base.entries.filter((e) => e.type === 'dir').map((e) => e.path));
    const deepest = Math.max(...[...dirs].map(depth));
    assert.ok(deepest >= 3 && deepest <= 4, `deepest directory at depth ${deepest}`);
    const seen = new Set<string>();
    for (const e of base.entries) {
      const parent = e.path.split('/').slice(0, -1).join('/');
      assert.ok(parent === '' || (dirs.has(parent) && seen.has(parent)), `${e.path} after its directory`);
      seen.add(e.path);
    }
    assert.equal(seen.size, base.entries.length, 'paths are unique');
  });

  it('config and text files are lines of printable text; binaries are not', () => {
    const printable = (b: Buffer) => b.every((c) => c === 0x0a || (c >= 0x20 && c < 0x7f));
    for (const f of files.filter((x) => x.sizeBytes >= 1000)) {
      const bytes = readAll(f.stream());
      if (f.kind === 'config' || f.kind === 'text') assert.ok(printable(bytes), f.path);
      if (f.kind === 'binary') assert.ok(!printable(bytes), f.path);
    }
  });

  it('rejects bad options with XFER_INVALID_ARGUMENT', () => {
    const invalid = (e: unknown) => isXferError(e, 'XFER_INVALID_ARGUMENT');
    assert.throws(() => tree({ sizeBytes: -1, seed: 1 }), invalid);
    assert.throws(() => tree({ sizeBytes: MiB, seed: 1, version: 'nope' as 'base' }), invalid);
    assert.throws(() => tree({ sizeBytes: 2 * KiB, seed: 1, version: 'changed' }), invalid);
  });
});

describe('tree (changed)', () => {
  const base = tree({ sizeBytes: SIZE_BYTES, seed: 1 });
  const changed = tree({ sizeBytes: SIZE_BYTES, seed: 1, version: 'changed' });
  const before = byPath(base);
  const after = byPath(changed);
  const { added, removed, modified } = changed.changes;

  it('is deterministic: seed 1 hashes to its pinned value', () => {
    assert.equal(sha256(Buffer.from(fingerprint(changed))), '351cef044c7acf6a30e4eb22d6958e07c9e83bcf52baddcaca77818bf3572804');
    assert.deepEqual(base.changes, { added: [], removed: [], modified: [] });
  });

  it('modifies, adds and removes a few files each, in disjoint sets', () => {
    for (const list of [added, removed, modified]) {
      assert.ok(list.length >= 2 && list.length <= 10, `${list.length} changes`);
      assert.deepEqual(list, [...list].sort());
    }
    assert.equal(new Set([...added, ...removed, ...modified]).size, added.length + removed.length + modified.length);
  });

  it('added files are new, removed files are gone, modified files differ; every other file is byte-identical', () => {
    for (const path of added) assert.ok(after.has(path) && !before.has(path), path);
    for (const path of removed) assert.ok(before.has(path) && !after.has(path), path);
    for (const path of modified) assert.ok(!readAll(before.get(path)!.stream()).equals(readAll(after.get(path)!.stream())), path);
    const touched = new Set([...added, ...removed, ...modified]);
    for (const [path, f] of before) {
      if (!touched.has(path)) assert.ok(readAll(f.stream()).equals(readAll(after.get(path)!.stream())), path);
    }
    assert.equal(after.size, before.size + added.length - removed.length);
    assert.equal(changed.totalBytes, filesOf(changed).reduce((n, f) => n + f.sizeBytes, 0));
  });

  it('modifications are what each kind of file undergoes in life; a large file is always among them', () => {
    assert.ok(modified.some((path) => after.get(path)!.kind === 'large'));
    for (const path of modified) {
      const old = readAll(before.get(path)!.stream());
      const file = after.get(path)!;
      const now = readAll(file.stream());
      assert.equal(now.length, file.sizeBytes);
      switch (file.kind) {
        case 'text':
          // A log grows: the old file is a prefix of the new one.
          assert.ok(now.length > old.length && now.subarray(0, old.length).equals(old), path);
          break;
        case 'config': {
          // Lines inserted at a line start, everything around them unchanged. The insertion
          // point is at most `inserted` bytes before the first difference (the new lines
          // may begin like the old line they precede).
          const inserted = now.length - old.length;
          let prefix = 0;
          while (old[prefix] === now[prefix]) prefix++;
          const insertedAt = (at: number) =>
            (at === 0 || old[at - 1] === 0x0a) && now.subarray(at + inserted).equals(old.subarray(at)) && /^# .*\n.* = .*\n$/.test(now.toString('latin1', at, at + inserted));
          assert.ok(Array.from({ length: Math.min(prefix, inserted) + 1 }, (_, i) => prefix - i).some(insertedAt), path);
          break;
        }
        case 'binary': {
          // Overwritten in place: same size, one contiguous changed range of at most 1 KiB.
          assert.equal(now.length, old.length);
          const diffs = [...now.keys()].filter((i) => now[i] !== old[i]);
          assert.ok(diffs.at(-1)! - diffs[0]! < KiB, path);
          break;
        }
        case 'large': {
          // A few scattered 4 KiB blocks rewritten, as a database or image file is.
          assert.equal(now.length, old.length);
          let blocks = 0;
          for (let p = 0; p < old.length; p += BLOCK_BYTES) {
            if (!now.subarray(p, p + BLOCK_BYTES).equals(old.subarray(p, p + BLOCK_BYTES))) blocks++;
          }
          assert.ok(blocks >= 1 && blocks <= 8, `${path}: ${blocks} blocks`);
          break;
        }
        default:
          assert.fail(`${path}: ${file.kind} files are never modified`);
      }
    }
  });
});

describe('writeTree', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-fixtures-tree-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const version of ['base', 'changed'] as const) {
    it(`writes exactly the entries of the ${version} tree, with their bytes`, async () => {
      const out = join(dir, version);
      const t = await writeTree(out, { sizeBytes: SIZE_BYTES, seed: 1, version });
      const onDisk = await walk(out);
      assert.deepEqual(onDisk.dirs, t.entries.filter((e) => e.type === 'dir').map((e) => e.path).sort());
      const files = filesOf(t);
      assert.equal(onDisk.files.size, files.length);
      for (const f of files) assert.ok(onDisk.files.get(f.path)?.equals(readAll(f.stream())), f.path);
    });
  }

  it('refuses a directory that is not empty', async () => {
    const out = join(dir, 'busy');
    await mkdir(out);
    await writeFile(join(out, 'stale'), 'x');
    await assert.rejects(writeTree(out, { sizeBytes: 64 * KiB, seed: 1 }), (e) => isXferError(e, 'XFER_INVALID_ARGUMENT'));
  });
});
