import { strict as assert } from 'node:assert';
import { chmod, lstat, lutimes, mkdir, readlink, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { utimeArg } from '../src/reconstruct/staging.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

/**
 * Millisecond times whose `ms / 1000` is not exact in binary: written that way, each landed
 * 1 µs early on disk (libuv truncates to whole microseconds).
 */
const TIMES_MS = [1_700_000_000_123, 1_700_000_000_457, 1_700_000_000_999, 1_700_000_001_001, 1_700_000_002_314, 1_700_000_003_777];

/** Paths of the test tree: its root (a version 2 manifest records the root's own time), a large file (written with O_DIRECT), a small one, subdirectories, a symlink. */
const ALL = ['', 'big.bin', 'sub', 'sub/small.bin', 'sub/deeper', 'sub/deeper/tiny.txt', 'link'];

async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'sub', 'deeper'), { recursive: true });
  await writeFile(join(root, 'big.bin'), pseudoRandom(3 * 1024 * 1024, 1));
  await writeFile(join(root, 'sub/small.bin'), pseudoRandom(20_000, 2));
  await writeFile(join(root, 'sub/deeper/tiny.txt'), 'tiny\n');
  await symlink('sub/small.bin', join(root, 'link'));
  // Deepest first, so setting a child's time does not move its directory's.
  await lutimes(join(root, 'link'), new Date(TIMES_MS[0]!), new Date(TIMES_MS[0]!));
  for (const [i, rel] of ['sub/deeper/tiny.txt', 'sub/small.bin', 'big.bin', 'sub/deeper', 'sub', ''].entries()) {
    await utimes(join(root, rel), new Date(TIMES_MS[i]!), new Date(TIMES_MS[i]!));
  }
}

/** The time a manifest records for the source entry: its mtime to the nanosecond (format version 2). */
async function manifestTimeNs(path: string): Promise<bigint> {
  return (await lstat(path, { bigint: true })).mtimeNs;
}

/** Every entry of `copy` has exactly the mtime the manifest of `source` gives it. */
async function assertExactTimes(source: string, copy: string): Promise<void> {
  for (const rel of ALL) {
    const got = (await lstat(join(copy, rel), { bigint: true })).mtimeNs;
    assert.equal(got, await manifestTimeNs(join(source, rel)), `${rel || '.'} of ${copy}: mtime to the nanosecond`);
  }
}

/** The inodes of the tree's root and every entry: unchanged when nothing was rewritten. */
async function inodes(root: string): Promise<number[]> {
  return Promise.all(ALL.map(async (rel) => (await lstat(join(root, rel))).ino));
}

/** A pull that fetches nothing (its --json bytesReceived is 0). */
async function pullNothingNew(source: string, dest: string): Promise<void> {
  const r = await runCli(['pull', source, dest, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).bytesReceived, 0);
}

describe('a pulled or pushed copy has its manifest\'s mtimes exactly, so nothing unchanged is fetched, read or rewritten again', () => {
  const fx = useServer('xfer-mtime-');

  it('local: a second pull receives nothing and keeps every file; the pulled tree pushed back over its backup reads and rewrites nothing', async () => {
    const src = join(fx.dir, 'local', 'tree');
    await makeTree(src);
    const backup = join(fx.dir, 'local', 'backup');
    assert.equal((await runCli(['push', src, `${backup}/`, '-q'])).code, 0);
    await assertExactTimes(src, join(backup, 'tree'));

    const out = join(fx.dir, 'local', 'out');
    const first = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--json']);
    assert.equal(first.code, 0, first.stderr);
    await assertExactTimes(src, join(out, 'tree'));
    const pulled = await inodes(join(out, 'tree'));
    const second = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--json']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(JSON.parse(second.stdout).bytesReceived, 0);
    assert.deepEqual(await inodes(join(out, 'tree')), pulled, 'every file and directory kept as it was');

    // A directory's mode or a symlink's target changed at the destination (times kept
    // exactly) is not "unchanged": the next pull puts the manifest's back. One at a time.
    const sub = join(out, 'tree', 'sub');
    const subTime = utimeArg((await lstat(sub)).mtimeMs);
    await chmod(sub, 0o700);
    await utimes(sub, subTime, subTime);
    assert.equal((await lstat(sub, { bigint: true })).mtimeNs, await manifestTimeNs(join(src, 'sub')), 'time kept exactly');
    await pullNothingNew(join(backup, 'tree'), `${out}/`);
    assert.equal((await lstat(sub)).mode & 0o7777, (await lstat(join(src, 'sub'))).mode & 0o7777);

    const link = join(out, 'tree', 'link');
    const linkTime = utimeArg((await lstat(link)).mtimeMs);
    await unlink(link);
    await symlink('big.bin', link);
    await lutimes(link, linkTime, linkTime);
    await pullNothingNew(join(backup, 'tree'), `${out}/`);
    assert.equal(await readlink(link), 'sub/small.bin');
    await assertExactTimes(src, join(out, 'tree'));

    // The pulled copy is the backup's tree, times and all: pushing it back changes nothing.
    const kept = await inodes(join(backup, 'tree'));
    const back = await runCli(['push', join(out, 'tree'), `${backup}/`, '--json']);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(JSON.parse(back.stdout).chunksSent, 0);
    assert.deepEqual(await inodes(join(backup, 'tree')), kept, 'the backup\'s files and directories were not written again');
    await assertExactTimes(src, join(backup, 'tree'));
  });

  it('remote: the server\'s copy and pulled files and trees have exact times; second pulls receive nothing and keep every file', async () => {
    const src = join(fx.dir, 'remote', 'tree');
    await makeTree(src);
    assert.equal((await runCli(['push', src, `${fx.server.url}/`, '-q'])).code, 0);
    await assertExactTimes(src, join(fx.root, 'files', 'tree'));
    assert.equal((await runCli(['push', join(src, 'big.bin'), `${fx.server.url}/big.bin`, '-q'])).code, 0);

    const out = join(fx.dir, 'remote', 'out');
    assert.equal((await runCli(['pull', `${fx.server.url}/tree`, `${out}/`, '-q'])).code, 0);
    assert.equal((await runCli(['pull', `${fx.server.url}/big.bin`, `${out}/`, '-q'])).code, 0);
    await assertExactTimes(src, join(out, 'tree'));
    assert.equal((await lstat(join(out, 'big.bin'), { bigint: true })).mtimeNs, await manifestTimeNs(join(src, 'big.bin')));

    const treeInodes = await inodes(join(out, 'tree'));
    const fileInode = (await lstat(join(out, 'big.bin'))).ino;
    const tree2 = await runCli(['pull', `${fx.server.url}/tree`, `${out}/`, '--json']);
    assert.equal(tree2.code, 0, tree2.stderr);
    assert.equal(JSON.parse(tree2.stdout).bytesReceived, 0);
    const file2 = await runCli(['pull', `${fx.server.url}/big.bin`, `${out}/`, '--json']);
    assert.equal(file2.code, 0, file2.stderr);
    assert.equal(JSON.parse(file2.stdout).bytesReceived, 0);
    assert.deepEqual(await inodes(join(out, 'tree')), treeInodes);
    assert.equal((await lstat(join(out, 'big.bin'))).ino, fileInode);

    // Pushed back from the pulled copy: the server's copy is not rebuilt.
    const served = await inodes(join(fx.root, 'files', 'tree'));
    const back = await runCli(['push', join(out, 'tree'), `${fx.server.url}/`, '--json']);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(JSON.parse(back.stdout).chunksSent, 0);
    assert.deepEqual(await inodes(join(fx.root, 'files', 'tree')), served);
  });
});
