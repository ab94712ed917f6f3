/**
 * Pulls onto block devices (issue 14, items 3 and 5): a device is written in place, only in
 * the ranges that changed (counted by the kernel: /sys/block/loopN/stat), refused before any
 * write when smaller than the content; and a real ext4 image, edited with debugfs and pushed
 * again, is pulled incrementally in place onto a device and onto a file, and checks clean.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { push } from '../src/api.js';
import { EXIT_CODES } from '../src/core/errors.js';
import { KiB, MiB } from '../src/core/sizes.js';
import { isOneLineError, runCli, writeRandomFile } from './helpers/cli.js';
import { requireTools } from './helpers/tools.js';

/** Attaches `file` to a free loop device; undefined (with the reason) where the kernel or container refuses. */
function attachLoop(file: string): { device?: string; reason?: string } {
  if (process.getuid?.() !== 0) return { reason: 'loop devices need root' };
  const r = spawnSync('losetup', ['-f', '--show', file], { encoding: 'utf8' });
  if (r.status !== 0) return { reason: `losetup refused: ${(r.stderr || r.error?.message || '').trim()}` };
  return { device: r.stdout.trim() };
}

function detachLoop(device: string): void {
  spawnSync('losetup', ['-d', device], { stdio: 'ignore' });
}

/** Bytes the kernel has written to a block device (field 7 of /sys/block/<dev>/stat: sectors written, 512 bytes each). */
async function bytesWrittenTo(device: string): Promise<number> {
  const fields = (await readFile(`/sys/block/${basename(device)}/stat`, 'utf8')).trim().split(/\s+/);
  return Number(fields[6]) * 512;
}

/** The first `bytes` bytes of a file or device. */
async function head(path: string, bytes: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Runs `test` with `file` on a loop device, detached afterwards; skipped, visibly, where there is none. */
async function withLoop(t: TestContext, file: string, test: (device: string) => Promise<void>): Promise<void> {
  const { device, reason } = attachLoop(file);
  if (!device) {
    t.skip(reason);
    return;
  }
  try {
    await test(device);
  } finally {
    detachLoop(device);
  }
}

describe('in-place pulls onto a block device', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-in-place-dev-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a 4 KiB edit writes at most about 1 MiB to the device, and the device holds the new content', async (t) => {
    const d = join(dir, 'edit');
    await mkdir(join(d, 'store'), { recursive: true });
    // Not a multiple of 4 KiB: the device is read with O_DIRECT up to the last whole block,
    // the rest through the page cache (scan/segment.ts readDevice).
    const size = 24 * MiB + 1000;
    const backing = join(d, 'backing');
    await writeRandomFile(backing, size, 14);
    await truncate(backing, 32 * MiB); // the device is larger than the content: its tail is kept
    const edited = (await head(backing, size));
    Buffer.alloc(4 * KiB, 0xab).copy(edited, 10 * MiB + 123);
    await writeFile(join(d, 'img'), edited);
    await push(join(d, 'img'), `${join(d, 'store')}/`);
    await withLoop(t, backing, async (device) => {
      const before = await bytesWrittenTo(device);
      const r = await runCli(['pull', join(d, 'store', 'img'), device, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /in place: it is inconsistent until this pull completes/);
      const written = (await bytesWrittenTo(device)) - before;
      t.diagnostic(`${written} bytes written to ${device} for a 4 KiB edit of ${size} bytes`);
      // One or two CDC chunks (at most 256 KiB each) changed; 1 MiB allows for page rounding.
      assert.ok(written > 0 && written <= 1 * MiB + 256 * KiB, `${written} bytes written to ${device}`);
      assert.ok(JSON.parse(r.stdout).bytesWritten <= 512 * KiB, r.stdout);
      // The check after the writes reads back the one or two 8 MiB segments written.
      assert.ok(JSON.parse(r.stdout).bytesReadBack <= 16 * MiB, r.stdout);
      assert.ok((await head(device, size)).equals(edited), 'the device holds the pushed content');
      assert.ok((await head(device, 32 * MiB)).subarray(size).equals(Buffer.alloc(32 * MiB - size)), 'past the content, the device is as it was');
    });
  });

  it('a device smaller than the content is refused before anything is written to it', async (t) => {
    const d = join(dir, 'small');
    await mkdir(join(d, 'store'), { recursive: true });
    await writeRandomFile(join(d, 'img'), 3 * MiB, 15);
    await push(join(d, 'img'), `${join(d, 'store')}/`);
    const backing = join(d, 'backing');
    await writeRandomFile(backing, 2 * MiB, 16);
    const was = await readFile(backing);
    await withLoop(t, backing, async (device) => {
      const before = await bytesWrittenTo(device);
      const r = await runCli(['pull', join(d, 'store', 'img'), device]);
      assert.equal(r.code, EXIT_CODES.XFER_TOO_LARGE, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, /device holds 2097152 bytes .* the content is 3145728 bytes/);
      assert.equal((await bytesWrittenTo(device)) - before, 0, 'nothing written');
      assert.ok((await head(device, 2 * MiB)).equals(was));
    });
  });

  it('a tree pulled onto a device is refused as any special file is, with nothing written', async (t) => {
    const d = join(dir, 'tree');
    await mkdir(join(d, 'src', 't'), { recursive: true });
    await writeFile(join(d, 'src', 't', 'f'), 'x');
    await mkdir(join(d, 'store'));
    await push(join(d, 'src', 't'), `${join(d, 'store')}/`);
    const backing = join(d, 'backing');
    await writeRandomFile(backing, 1 * MiB, 18);
    await withLoop(t, backing, async (device) => {
      const before = await bytesWrittenTo(device);
      const r = await runCli(['pull', join(d, 'store', 't'), device]);
      assert.equal(r.code, EXIT_CODES.XFER_SPECIAL_FILE, r.stderr);
      assert.match(r.stderr, /is a block device/);
      assert.equal((await bytesWrittenTo(device)) - before, 0, 'nothing written');
    });
  });

  it('a mounted device is refused (device busy) before anything is written', async (t) => {
    requireTools('mke2fs');
    const d = join(dir, 'mounted');
    await mkdir(join(d, 'store'), { recursive: true });
    await mkdir(join(d, 'mnt'));
    await writeRandomFile(join(d, 'img'), 1 * MiB, 17);
    await push(join(d, 'img'), `${join(d, 'store')}/`);
    const backing = join(d, 'backing');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', backing, '8M'], { stdio: 'pipe' });
    await withLoop(t, backing, async (device) => {
      const m = spawnSync('mount', [device, join(d, 'mnt')], { encoding: 'utf8' });
      if (m.status !== 0) {
        t.skip(`mount refused: ${(m.stderr || '').trim()}`);
        return;
      }
      try {
        const r = await runCli(['pull', join(d, 'store', 'img'), device]);
        assert.equal(r.code, EXIT_CODES.XFER_BUSY, r.stderr);
        assert.ok(isOneLineError(r.stderr), r.stderr);
        assert.match(r.stderr, /device is in use/);
        // The kernel's write count is no proof here (the mounted ext4 writes its own
        // superblock and journal); the open is refused before xfer writes anything.
      } finally {
        spawnSync('umount', [join(d, 'mnt')]);
      }
    });
  });

  it('an ext4 image edited with debugfs and pushed again is pulled in place onto a device and a file: e2fsck finds both clean, both equal the image', async (t) => {
    requireTools('mke2fs', 'debugfs', 'e2fsck');
    const d = join(dir, 'ext4');
    const tree = join(d, 'tree');
    await mkdir(join(tree, 'docs'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeRandomFile(join(tree, 'docs', `f${i}.bin`), 100 * KiB + i, 100 + i);
    await writeFile(join(tree, 'hello.txt'), 'hello\n');
    const img = join(d, 'image.img');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, img, '32M'], { stdio: 'pipe' });
    await mkdir(join(d, 'store'));
    await push(img, `${join(d, 'store')}/`, { chunker: { algorithm: 'fixed', sizeBytes: 64 * KiB } });
    // The first version, on a device and in a file.
    const backing = join(d, 'backing');
    const copy = join(d, 'copy.img');
    await copyFile(img, backing);
    await copyFile(img, copy);
    // Edit the image: new files, one removed, one directory made.
    await writeRandomFile(join(d, 'new.bin'), 300 * KiB, 200);
    await writeFile(join(d, 'cmds'), [`write ${join(d, 'new.bin')} new.bin`, 'mkdir added', `write ${join(tree, 'hello.txt')} added/hello2.txt`, 'rm docs/f3.bin', ''].join('\n'));
    execFileSync('debugfs', ['-w', '-f', join(d, 'cmds'), img], { stdio: 'pipe' });
    await push(img, `${join(d, 'store')}/`, { chunker: { algorithm: 'fixed', sizeBytes: 64 * KiB } });
    const want = await readFile(img);

    const onFile = await runCli(['pull', join(d, 'store', 'image.img'), copy, '--in-place', '--json']);
    assert.equal(onFile.code, 0, onFile.stderr);
    assert.ok(JSON.parse(onFile.stdout).bytesWritten < want.length / 4, `in place, not whole: ${onFile.stdout}`);
    assert.ok((await readFile(copy)).equals(want), 'the file equals the edited image');
    assert.equal(spawnSync('e2fsck', ['-fn', copy], { stdio: 'ignore' }).status, 0, 'e2fsck -fn on the file');

    await withLoop(t, backing, async (device) => {
      const r = await runCli(['pull', join(d, 'store', 'image.img'), device, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(JSON.parse(r.stdout).bytesWritten < want.length / 4, r.stdout);
      assert.ok((await head(device, want.length)).equals(want), 'the device equals the edited image');
      const fsck = spawnSync('e2fsck', ['-fn', device], { encoding: 'utf8' });
      assert.equal(fsck.status, 0, `e2fsck -fn ${device}: ${fsck.stdout}${fsck.stderr}`);
      const ls = spawnSync('debugfs', ['-R', 'ls -l added', device], { encoding: 'utf8' });
      assert.match(ls.stdout, /hello2\.txt/);
    });
  });
});
