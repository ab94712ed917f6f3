/**
 * A hardlink entry of a manifest is hostile input like any other: it may only link to a
 * regular file the same rebuild made, reached without following a symlink. A manifest
 * naming a path through one of its own symlinks (`l -> /etc`, `x => l/passwd`), or a
 * directory, is refused and leaves nothing behind; the file outside gains no link.
 */
import { strict as assert } from 'node:assert';
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isXferError } from '../src/core/errors.js';
import { digestOf } from '../src/hash/digest.js';
import { encodeManifestToFile, openManifestFile, type ManifestEntry } from '../src/manifest/index.js';
import { reconstruct } from '../src/reconstruct/reconstruct.js';
import { MemoryStore } from '../src/store/memory.js';
import { TREE_SHA256 } from './manifest-helpers.js';

const T = 1_700_000_000_000;

async function rebuild(dir: string, entries: ManifestEntry[]): Promise<string> {
  const manifest = join(dir, 'm.xfm');
  await encodeManifestToFile(manifest, TREE_SHA256, entries);
  const target = join(dir, 'files', 'tree');
  await mkdir(join(dir, 'files'), { recursive: true });
  await reconstruct(await openManifestFile(manifest), new MemoryStore(), target, { confineTo: join(dir, 'files'), attributes: { untrusted: true }, resumable: false });
  return target;
}

describe('hard links of a manifest stay inside the tree it rebuilds', () => {
  it('a hardlink through a symlink of the tree, or to a directory, is refused; nothing outside gains a link and nothing is left', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-hardlink-'));
    try {
      const outside = join(dir, 'outside');
      await mkdir(outside);
      await writeFile(join(outside, 'secret'), 'not yours\n');
      const empty = digestOf('sha256', Buffer.alloc(0));
      const hostile: ManifestEntry[][] = [
        [
          { type: 'symlink', path: 'l', mode: 0o777, mtimeMs: T, size: 0, linkTarget: outside, chunks: [] },
          { type: 'hardlink', path: 'x', mode: 0o644, mtimeMs: T, size: 0, linkTarget: 'l/secret', chunks: [] },
        ],
        [
          { type: 'dir', path: 'd', mode: 0o755, mtimeMs: T, size: 0, chunks: [] },
          { type: 'hardlink', path: 'x', mode: 0o644, mtimeMs: T, size: 0, linkTarget: 'd', chunks: [] },
        ],
      ];
      for (const entries of hostile) {
        await assert.rejects(rebuild(dir, entries), (err: unknown) => isXferError(err), JSON.stringify(entries.map((e) => e.path)));
        assert.equal((await lstat(join(outside, 'secret'))).nlink, 1);
        assert.deepEqual(await readdir(join(dir, 'files')), [], 'nothing left behind');
      }
      // The same shape to a file of the tree is a link.
      const ok = await rebuild(dir, [
        { type: 'file', path: 'a', mode: 0o644, mtimeMs: T, size: 0, chunks: [], digest: empty },
        { type: 'hardlink', path: 'b', mode: 0o644, mtimeMs: T, size: 0, linkTarget: 'a', chunks: [] },
      ]);
      assert.equal((await lstat(join(ok, 'a'))).ino, (await lstat(join(ok, 'b'))).ino);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
