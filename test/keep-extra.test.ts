import { strict as assert } from 'node:assert';
import { chmod, lstat, mkdir, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { EXIT_CODES } from '../src/core/errors.js';
import { isOneLineError, runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

/** A source tree: a.txt, sub/b.txt, sub/deep/c.txt, and `kind` which is a directory here. */
async function makeSource(root: string): Promise<void> {
  await mkdir(join(root, 'sub', 'deep'), { recursive: true });
  await mkdir(join(root, 'kind'));
  await writeFile(join(root, 'a.txt'), 'a v1\n');
  await writeFile(join(root, 'sub', 'b.txt'), 'b v1\n');
  await writeFile(join(root, 'sub', 'deep', 'c.txt'), 'c v1\n');
  await writeFile(join(root, 'kind', 'k.txt'), 'k\n');
}

/**
 * Puts entries the source lacks into an existing copy: a file at the top, a directory with
 * a file in it (mode 0750, an old mtime), a file and a symlink inside a directory the source
 * has; and a file `kind` where the source has a directory (a type change, replaced).
 */
async function addExtras(copy: string): Promise<{ ino: number }> {
  await writeFile(join(copy, 'extra.txt'), 'mine\n');
  await mkdir(join(copy, 'notes'));
  await writeFile(join(copy, 'notes', 'n.txt'), 'note\n');
  await chmod(join(copy, 'notes'), 0o750);
  await utimes(join(copy, 'notes'), 1_600_000_000, 1_600_000_000);
  await writeFile(join(copy, 'sub', 'deep', 'local.cfg'), 'cfg\n');
  await symlink('../a.txt', join(copy, 'sub', 'link'));
  await rm(join(copy, 'kind'), { recursive: true });
  await writeFile(join(copy, 'kind'), 'a file where the source has a directory\n');
  return { ino: (await stat(join(copy, 'extra.txt'))).ino };
}

const EXTRAS = ['extra.txt', 'notes', 'notes/n.txt', 'sub/deep/local.cfg', 'sub/link'];

async function assertExtrasKept(copy: string, extraIno: number): Promise<void> {
  assert.equal(await readFile(join(copy, 'extra.txt'), 'utf8'), 'mine\n');
  assert.equal((await stat(join(copy, 'extra.txt'))).ino, extraIno, 'kept as it was, not copied');
  assert.equal(await readFile(join(copy, 'notes', 'n.txt'), 'utf8'), 'note\n');
  const notes = await stat(join(copy, 'notes'));
  assert.equal(notes.mode & 0o7777, 0o750, 'a kept directory keeps its mode');
  assert.equal(notes.mtimeMs, 1_600_000_000_000, 'and its mtime');
  assert.equal(await readFile(join(copy, 'sub', 'deep', 'local.cfg'), 'utf8'), 'cfg\n');
  assert.equal(await readlink(join(copy, 'sub', 'link')), '../a.txt');
}

/** The source's changes since the copy was made: every file is the source's. */
async function assertSourceVersion(copy: string): Promise<void> {
  assert.equal(await readFile(join(copy, 'a.txt'), 'utf8'), 'a v2\n');
  assert.equal(await readFile(join(copy, 'sub', 'b.txt'), 'utf8'), 'b v1\n');
  assert.equal(await readFile(join(copy, 'sub', 'deep', 'c.txt'), 'utf8'), 'c v1\n');
  assert.ok((await lstat(join(copy, 'kind'))).isDirectory(), 'a changed type is replaced');
  assert.equal(await readFile(join(copy, 'kind', 'k.txt'), 'utf8'), 'k\n');
}

function noStagingLeft(names: string[]): string[] {
  return names.filter((n) => n.startsWith('.xfer-'));
}

describe('entries at the destination that the source lacks are kept unless --delete is given (rsync\'s default)', () => {
  const fx = useServer('xfer-keep-');

  it('pull into an existing tree keeps them; --delete removes and lists them', async () => {
    const src = join(fx.dir, 'pull', 'tree');
    await makeSource(src);
    const backup = join(fx.dir, 'pull', 'backup');
    assert.equal((await runCli(['push', src, `${backup}/`, '-q'])).code, 0);
    const out = join(fx.dir, 'pull', 'out');
    assert.equal((await runCli(['pull', join(backup, 'tree'), `${out}/`, '-q'])).code, 0);
    const { ino } = await addExtras(join(out, 'tree'));
    await writeFile(join(src, 'a.txt'), 'a v2\n');
    assert.equal((await runCli(['push', src, `${backup}/`, '-q'])).code, 0);

    const kept = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--json']);
    assert.equal(kept.code, 0, kept.stderr);
    assert.deepEqual(JSON.parse(kept.stdout).deleted, []);
    await assertSourceVersion(join(out, 'tree'));
    await assertExtrasKept(join(out, 'tree'), ino);
    assert.deepEqual(noStagingLeft(await readdir(out)), []);

    const del = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--json', '--delete']);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual([...JSON.parse(del.stdout).deleted].sort(), EXTRAS);
    await assertSourceVersion(join(out, 'tree'));
    for (const e of EXTRAS) await assert.rejects(lstat(join(out, 'tree', e)), /ENOENT/, e);
  });

  it('a local push into an existing tree keeps them; --delete removes and lists them', async () => {
    const src = join(fx.dir, 'push', 'tree');
    await makeSource(src);
    const backup = join(fx.dir, 'push', 'backup');
    assert.equal((await runCli(['push', src, `${backup}/`, '-q'])).code, 0);
    const { ino } = await addExtras(join(backup, 'tree'));
    await writeFile(join(src, 'a.txt'), 'a v2\n');

    const kept = await runCli(['push', src, `${backup}/`, '--json']);
    assert.equal(kept.code, 0, kept.stderr);
    assert.deepEqual(JSON.parse(kept.stdout).deleted, []);
    await assertSourceVersion(join(backup, 'tree'));
    await assertExtrasKept(join(backup, 'tree'), ino);
    const v = await runCli(['verify', backup]);
    assert.equal(v.code, 0, v.stdout + v.stderr);

    const del = await runCli(['push', src, `${backup}/`, '--json', '--delete']);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual([...JSON.parse(del.stdout).deleted].sort(), EXTRAS);
    for (const e of EXTRAS) await assert.rejects(lstat(join(backup, 'tree', e)), /ENOENT/, e);
  });

  it('the server\'s copy of a pushed tree mirrors it: entries the new version lacks go; push --delete to a server is refused as needless', async () => {
    const src = join(fx.dir, 'remote', 'tree');
    await makeSource(src);
    assert.equal((await runCli(['push', src, `${fx.server.url}/`, '-q'])).code, 0);
    const served = join(fx.root, 'files', 'tree');
    const { ino } = await addExtras(served);
    await writeFile(join(src, 'a.txt'), 'a v2\n');

    const r = await runCli(['push', src, `${fx.server.url}/`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    await assertSourceVersion(served);
    for (const e of EXTRAS) await assert.rejects(lstat(join(served, e)), /ENOENT/, e);
    void ino;

    const del = await runCli(['push', src, `${fx.server.url}/`, '--delete']);
    assert.equal(del.code, EXIT_CODES.XFER_INVALID_ARGUMENT, del.stderr);
    assert.ok(isOneLineError(del.stderr), del.stderr);
  });
});
