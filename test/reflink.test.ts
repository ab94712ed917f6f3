/**
 * Atomic rebuilds share unchanged blocks (issue 14, item 3): on XFS and btrfs, a file
 * rebuilt beside its old version (a pull onto it, a local push, the server's commit of a
 * push) reflinks the ranges whose chunks did not change instead of writing them again. The
 * file systems are real: an image made with mkfs, on a loop device, mounted by the test;
 * the kernel's count of bytes written to that device (/sys/block/loopN/stat, field 7) is
 * what is compared: a 4 KiB edit of a 32 MiB file writes about a chunk and the file
 * system's metadata, not 32 MiB.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { link, mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { KiB, MiB } from '../src/core/sizes.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { writeRandomFile } from './helpers/cli.js';
import { requireTools } from './helpers/tools.js';

const FILE_BYTES = 32 * MiB;
const EDIT_AT = 13 * MiB + 777;
/** A changed chunk (at most 256 KiB, two if the edit spans a boundary), the file system's log and metadata. */
const MAX_WRITTEN_BYTES = 4 * MiB;

/** A mounted file system of `type` on a loop device over an image file, or why there is none. */
interface Mounted {
  readonly device: string;
  readonly mnt: string;
}

function mountLoop(type: 'xfs' | 'btrfs', dir: string): Mounted | string {
  if (process.getuid?.() !== 0) return 'loop devices and mounts need root';
  const img = join(dir, `${type}.img`);
  const mnt = join(dir, `${type}-mnt`);
  execFileSync('truncate', ['-s', '512M', img]);
  execFileSync(`mkfs.${type}`, ['-q', '-f', img], { stdio: 'pipe' });
  const l = spawnSync('losetup', ['-f', '--show', img], { encoding: 'utf8' });
  if (l.status !== 0) return `losetup refused: ${(l.stderr || l.error?.message || '').trim()}`;
  const device = l.stdout.trim();
  execFileSync('mkdir', ['-p', mnt]);
  const m = spawnSync('mount', ['-t', type, device, mnt], { encoding: 'utf8' });
  if (m.status !== 0) {
    spawnSync('losetup', ['-d', device]);
    return `mount -t ${type} refused: ${(m.stderr || '').trim()}`;
  }
  return { device, mnt };
}

function unmountLoop(m: Mounted): void {
  spawnSync('umount', [m.mnt]);
  spawnSync('losetup', ['-d', m.device]);
}

/** Bytes the kernel has written to the device, after the file system's dirty data went out. */
async function bytesWrittenTo(m: Mounted): Promise<number> {
  execFileSync('sync', ['-f', m.mnt]);
  const fields = (await readFile(`/sys/block/${basename(m.device)}/stat`, 'utf8')).trim().split(/\s+/);
  return Number(fields[6]) * 512;
}

/** The file at `path` with 4 KiB overwritten at EDIT_AT. */
async function edit(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(Buffer.alloc(4 * KiB, 0x5a), 0, 4 * KiB, EDIT_AT);
  await fh.close();
}

for (const type of ['xfs', 'btrfs'] as const) {
  describe(`atomic rebuilds on ${type} share the blocks of unchanged chunks with the old version`, () => {
    let dir = '';
    let fs: Mounted | string = '';
    let server: XferServer | undefined;
    before(async () => {
      requireTools(`mkfs.${type}`, 'losetup');
      dir = await mkdtemp(join(tmpdir(), `xfer-reflink-${type}-`));
      fs = mountLoop(type, dir);
      if (typeof fs !== 'string') server = await createServer({ root: join(fs.mnt, 'root'), port: 0 });
    });
    after(async () => {
      try {
        await server?.close();
      } finally {
        // Always detached, even when the server's close fails (a full file system).
        if (typeof fs !== 'string') unmountLoop(fs);
        await rm(dir, { recursive: true, force: true });
      }
    });

    /** Runs `rebuild` (which rewrites `target`, on the mounted file system) and checks what it wrote. */
    async function check(t: { skip(reason?: string): void; diagnostic(m: string): void }, name: string, rebuild: (src: string, target: string) => Promise<unknown>, target: (m: Mounted) => string): Promise<void> {
      if (typeof fs === 'string') {
        t.skip(fs);
        return;
      }
      const src = join(dir, name);
      await writeRandomFile(src, FILE_BYTES, 41);
      await rebuild(src, target(fs));
      // The old version stays (a hard link): its blocks are the ones the new one must share.
      const old = join(fs.mnt, `${name}.old`);
      await link(target(fs), old);
      await edit(src);
      const before = await bytesWrittenTo(fs);
      await rebuild(src, target(fs));
      const written = (await bytesWrittenTo(fs)) - before;
      t.diagnostic(`${type}, ${name}: ${written} bytes written to ${fs.device} to rebuild a ${FILE_BYTES}-byte file after a 4 KiB edit`);
      assert.ok((await readFile(target(fs))).equals(await readFile(src)), 'the rebuilt file is the edited one');
      assert.notEqual((await stat(target(fs))).ino, (await stat(old)).ino, 'rebuilt beside the old version and swapped in');
      assert.ok(written <= MAX_WRITTEN_BYTES, `${written} bytes written, at most ${MAX_WRITTEN_BYTES} expected`);
      const frag = spawnSync('filefrag', ['-v', target(fs)], { encoding: 'utf8' });
      if (frag.status === 0) assert.match(frag.stdout, /shared/, 'the new version shares extents with the old');
    }

    it('a pull onto the existing file writes only the changed chunk', async (t) => {
      await check(t, 'pulled', async (src, target) => {
        const store = join(dir, 'store-pull');
        await mkdir(store, { recursive: true });
        await push(src, `${store}/`);
        const r = await pull(join(store, 'pulled'), target);
        if (r.bytesReused > 0) assert.ok((r.bytesShared ?? 0) >= FILE_BYTES - 1 * MiB, `bytesShared ${r.bytesShared}`);
      }, (m) => join(m.mnt, 'pulled'));
    });

    it('a local push onto the existing file writes only the changed chunk', async (t) => {
      await check(t, 'pushed', async (src) => {
        await push(src, `${(fs as Mounted).mnt}/`);
      }, (m) => join(m.mnt, 'pushed'));
    });

    it("the server's commit of a push writes only the changed chunk", async (t) => {
      await check(t, 'served', async (src) => {
        await push(src, `${server!.url}/`);
      }, (m) => join(m.mnt, 'root', 'files', 'served'));
    });
  });
}
