/**
 * ManifestWriter's contract for callers: misuse throws InvalidArgumentError before
 * anything of the offending call is written (the writer stays usable), abort() removes
 * the file, and an unfinished file is never a valid manifest.
 */
import { strict as assert } from 'node:assert';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AbortedError, InvalidArgumentError, ManifestCorruptError } from '../src/core/errors.js';
import type { ChunkerSpec } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import {
  ManifestWriter,
  decodeManifest,
  encodeManifestToFile,
  type EntryMeta,
  type ManifestInit,
} from '../src/manifest/index.js';
import { FILE_BLAKE3, TREE_SHA256, dirEntry, fileEntry, withTempDir } from './manifest-helpers.js';

const D = digestOf('sha256', Buffer.from('x'));
const dir = (path: string): EntryMeta => ({ type: 'dir', path, mode: 0o755, mtimeMs: 0, size: 0 });
const file = (path: string, size = -1): EntryMeta => ({ type: 'file', path, mode: 0o644, mtimeMs: 0, size });

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/** Runs `fn` with a fresh writer; aborts it afterwards. */
async function withWriter(init: ManifestInit, fn: (w: ManifestWriter, path: string) => Promise<void>): Promise<void> {
  await withTempDir(async (tmp) => {
    const path = join(tmp, 'm.xfm');
    const w = await ManifestWriter.create(path, init);
    try {
      await fn(w, path);
    } finally {
      await w.abort();
    }
  });
}

function misuse(message: RegExp): (err: unknown) => boolean {
  return (err) => err instanceof InvalidArgumentError && message.test(err.message);
}

describe('ManifestWriter', () => {
  it('rejects an invalid init before creating the file', async () => {
    await withTempDir(async (tmp) => {
      const path = join(tmp, 'm.xfm');
      const bad: [ManifestInit, RegExp][] = [
        [{ ...TREE_SHA256, kind: 'forest' as never }, /unknown manifest kind "forest"/],
        [{ ...TREE_SHA256, digestAlgorithm: 'md5' as never }, /unknown digest algorithm "md5"/],
        [{ ...TREE_SHA256, chunker: { algorithm: 'fixed', sizeBytes: 10 } }, /invalid fixed chunk size 10/],
        [{ ...TREE_SHA256, chunker: { algorithm: 'fastcdc2020', minBytes: 65536, avgBytes: 1024, maxBytes: 262144 } as ChunkerSpec }, /minimum 65536 is larger than average/],
      ];
      for (const [init, message] of bad) await assert.rejects(ManifestWriter.create(path, init), misuse(message));
      assert.equal(await exists(path), false);
    });
  });

  it('enforces the call protocol', async () => {
    await withWriter(TREE_SHA256, async (w) => {
      await assert.rejects(w.addChunks([{ length: 1, digest: D }]), misuse(/^addChunks\(\) outside a file entry$/));
      await assert.rejects(w.endEntry(0, D), misuse(/^endEntry\(\) outside a file entry/));
      await w.beginEntry(dir('d'));
      await assert.rejects(w.addChunks([]), misuse(/outside a file entry/)); // a dir is complete after beginEntry
      await w.beginEntry(file('d/f'));
      await assert.rejects(w.beginEntry(file('d/g')), misuse(/^beginEntry\(\) while a file entry is open/));
      await assert.rejects(w.finish(), misuse(/^finish\(\) while a file entry is open/));
      await w.endEntry(0, D);
      await w.finish();
      await assert.rejects(w.beginEntry(file('e')), misuse(/has finished/));
    });
  });

  it('rejects overlapping calls', async () => {
    await withWriter(TREE_SHA256, async (w) => {
      const first = w.beginEntry(dir('a'));
      await assert.rejects(w.beginEntry(dir('b')), misuse(/must not overlap/));
      await first;
    });
  });

  it('file manifests take exactly one file entry with path ""', async () => {
    await withWriter(FILE_BLAKE3, async (w) => {
      await assert.rejects(w.finish(), misuse(/needs its file entry/));
      await assert.rejects(w.beginEntry(dir('')), misuse(/must be a file, not a dir/));
      await assert.rejects(w.beginEntry(file('name')), misuse(/must have the path ""/));
      await w.beginEntry(file(''));
      await w.endEntry(0, D);
      await assert.rejects(w.beginEntry(file('')), misuse(/^a file manifest has exactly one entry$/));
    });
  });

  it('rejects bad paths, duplicates, wrong order and children before parents', async () => {
    await withWriter(TREE_SHA256, async (w) => {
      for (const [path, message] of [
        ['..', /'\.\.' segment/],
        ['a/./b', /'\.' segment/],
        ['/etc', /is absolute/],
        ['a\\b', /backslash/],
        ['a\0', /NUL/],
        ['a/', /ends with/],
        ['a//b', /empty segment/],
        ['\ud800', /not valid Unicode/],
        ['x'.repeat(4097), /longer than 4096 bytes/],
      ] as const) {
        await assert.rejects(w.beginEntry(dir(path)), misuse(message), path);
      }
      await assert.rejects(w.beginEntry(dir('a/b')), misuse(/^parent directory "a" of entry "a\/b" is not listed before it$/));
      await w.beginEntry(dir('b'));
      await assert.rejects(w.beginEntry(dir('b')), misuse(/^duplicate entry path "b"$/));
      await assert.rejects(w.beginEntry(dir('')), misuse(/^the root entry \(path ""\) must be the first entry$/));
      await assert.rejects(w.beginEntry(dir('a')), misuse(/^entry "a" is out of order after "b"/));
      await w.beginEntry({ type: 'symlink', path: 'c', mode: 0o777, mtimeMs: 0, size: 0, linkTarget: 'b' });
      await assert.rejects(w.beginEntry(dir('c/d')), misuse(/inside "c", which is not a directory/));
      await w.beginEntry(dir('x'.repeat(4096)));
    });
  });

  it('rejects bad metadata', async () => {
    await withWriter(TREE_SHA256, async (w) => {
      const bad: [EntryMeta, RegExp][] = [
        [{ ...dir('a'), type: 'socket' as never }, /unknown entry type "socket"/],
        [{ ...dir('a'), mtimeExtraNs: 1_000_000 }, /mtime nanoseconds 1000000 outside 0\.\.999999/],
        [{ ...dir('a'), uid: 0xffff_ffff }, /uid 4294967295 outside/],
        [{ ...dir('a'), gid: -1 }, /gid -1 outside/],
        [{ ...dir('a'), owner: 'x'.repeat(256) }, /owner name that is longer than 255 bytes/],
        [{ ...dir('a'), group: '' }, /group name that is empty/],
        [{ ...dir('a'), devMajor: 1, devMinor: 3 }, /dir and cannot have a device number/],
        [{ ...dir('a'), type: 'char' }, /char device without a valid device number/],
        [{ ...dir('a'), xattrs: [{ name: 'user.b', value: Buffer.alloc(0) }, { name: 'user.a', value: Buffer.alloc(0) }] }, /not sorted by name or repeated/],
        [{ ...dir('a'), xattrs: [{ name: 'user.a', value: Buffer.alloc(65_537) }] }, /of 65537 bytes \(at most 65536\)/],
        [{ ...dir('a'), xattrs: [{ name: 'user.\0', value: Buffer.alloc(1) }] }, /xattr name that contains a NUL/],
        [{ ...dir('a'), type: 'hardlink', linkTarget: 'b' }, /hardlink to "b", which is not listed before it/],
        [{ ...dir('a'), type: 'hardlink', linkTarget: '../etc/passwd' }, /hardlink to an invalid path/],
        [{ ...dir('a'), mode: 0o10000 }, /mode 4096 outside/],
        [{ ...dir('a'), mode: 1.5 }, /mode 1.5 outside/],
        [{ ...dir('a'), mtimeMs: 1.5 }, /modification time 1.5/],
        [{ ...dir('a'), size: 3 }, /is a dir with size 3 \(must be 0\)/],
        [{ ...dir('a'), linkTarget: 'x' }, /cannot have a link target/],
        [file('a', -2), /invalid declared size -2/],
        [file('a', 2 ** 53), /invalid declared size/],
        [{ type: 'symlink', path: 'a', mode: 0o777, mtimeMs: 0, size: 0 }, /symlink without a target/],
        [{ type: 'symlink', path: 'a', mode: 0o777, mtimeMs: 0, size: 0, linkTarget: 'y'.repeat(4097) }, /target longer than 4096 bytes/],
      ];
      for (const [meta, message] of bad) await assert.rejects(w.beginEntry(meta), misuse(message));
    });
  });

  it('checks chunk records and sizes; a rejected batch writes nothing', async () => {
    await withTempDir(async (tmp) => {
      const path = join(tmp, 'm.xfm');
      const w = await ManifestWriter.create(path, TREE_SHA256);
      await w.beginEntry(file('f', 10));
      const ok = { length: 4, digest: D };
      await assert.rejects(w.addChunks([ok, { length: 0, digest: D }]), misuse(/^chunk 1 of entry "f" has length 0 outside 1\.\.4096$/));
      await assert.rejects(w.addChunks([{ length: 4097, digest: D }]), misuse(/length 4097 outside/));
      await assert.rejects(w.addChunks([{ length: 2.5, digest: D }]), misuse(/length 2.5 outside/));
      await assert.rejects(w.addChunks([{ length: 1, digest: D.subarray(1) }]), misuse(/digest that is not 32 bytes/));
      await w.addChunks([ok]);
      await assert.rejects(w.endEntry(8, D), misuse(/^entry "f" ends with size 8 but its chunks add up to 4$/));
      await w.addChunks([{ length: 6, digest: D }]);
      await assert.rejects(w.endEntry(10, D.subarray(0, 31)), misuse(/whole-file digest that is not 32 bytes/));
      await w.endEntry(10, D);
      await w.beginEntry(file('g', 5));
      await w.addChunks([{ length: 3, digest: D }]);
      await assert.rejects(w.endEntry(3, D), misuse(/^entry "g" ends with size 3 but was declared with size 5$/));
      await w.addChunks([{ length: 2, digest: D }]);
      await w.endEntry(5, D);
      await w.finish();

      // Only the records of accepted calls were written.
      const { entries } = await decodeManifest(await readFile(path));
      assert.deepEqual(entries.map((e) => [e.path, e.size, e.chunks.map((c) => c.length)]), [['f', 10, [4, 6]], ['g', 5, [3, 2]]]);
    });
  });

  it('an unfinished manifest is not readable; abort() deletes it; abort() after finish() keeps it', async () => {
    await withTempDir(async (tmp) => {
      const path = join(tmp, 'm.xfm');
      const w = await ManifestWriter.create(path, TREE_SHA256);
      await w.beginEntry(dir('d'));
      await assert.rejects(decodeManifest(await readFile(path)), ManifestCorruptError);
      await w.abort();
      await w.abort();
      assert.equal(await exists(path), false);
      await assert.rejects(w.beginEntry(dir('e')), misuse(/was aborted/));

      const done = await ManifestWriter.create(path, TREE_SHA256);
      await done.finish();
      await done.abort();
      assert.equal((await decodeManifest(await readFile(path))).header.entryCount, 0);
    });
  });

  it('create() truncates an existing file', async () => {
    await withTempDir(async (tmp) => {
      const path = join(tmp, 'm.xfm');
      await writeFile(path, Buffer.alloc(10_000, 1));
      await encodeManifestToFile(path, TREE_SHA256, [dirEntry('d')]);
      assert.equal((await decodeManifest(await readFile(path))).entries.length, 1);
    });
  });

  it('honours an abort signal', async () => {
    await withTempDir(async (tmp) => {
      const path = join(tmp, 'm.xfm');
      const controller = new AbortController();
      const w = await ManifestWriter.create(path, TREE_SHA256, { signal: controller.signal });
      await w.beginEntry(dir('a'));
      controller.abort();
      await assert.rejects(w.beginEntry(dir('b')), AbortedError);
      await w.abort();
      assert.equal(await exists(path), false);
      await assert.rejects(ManifestWriter.create(path, TREE_SHA256, { signal: controller.signal }), AbortedError);
    });
  });

  it('encodeManifestToFile removes the file when an entry is rejected', async () => {
    await withTempDir(async (tmp) => {
      const path = join(tmp, 'm.xfm');
      const entries = [fileEntry('b', Buffer.from('b'), 'sha256'), dirEntry('a')];
      await assert.rejects(encodeManifestToFile(path, TREE_SHA256, entries), misuse(/out of order/));
      await assert.rejects(encodeManifestToFile(path, TREE_SHA256, [{ ...fileEntry('f', Buffer.from('f'), 'sha256'), digest: undefined }]), misuse(/has no digest/));
      await assert.rejects(encodeManifestToFile(path, TREE_SHA256, [{ ...dirEntry('d'), digest: D }]), misuse(/cannot have chunks or a digest/));
      assert.equal(await exists(path), false);
    });
  });
});
