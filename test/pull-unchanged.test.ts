/**
 * A second pull of an unchanged tree is a no-op (issue 13): nothing is staged beside the
 * target, nothing in it is touched. And the check that finds it unchanged is faithful:
 * attributes that drifted (a directory's mode, a file's xattr, a symlink's target) and, with
 * --delete, an extra deep in the tree are still seen and dealt with.
 */
import { strict as assert } from 'node:assert';
import { chmod, link, lstat, mkdir, mkdtemp, readdir, readlink, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { listXattrs, setTimesNs, setXattr } from '../src/io/sys.js';

/** An old time, so that any change to a directory moves its mtime away from it. */
const OLD_S = 1_000_000_000;

describe('a second pull of an unchanged tree', () => {
  let dir = '';
  let source = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-pull-unchanged-'));
    const src = join(dir, 'src', 'tree');
    await mkdir(join(src, 'a', 'b'), { recursive: true });
    await writeFile(join(src, 'a', 'b', 'f.txt'), 'deep\n');
    await writeFile(join(src, 'top.txt'), 'top\n');
    await link(join(src, 'top.txt'), join(src, 'a', 'same.txt'));
    await symlink('a/b/f.txt', join(src, 'link'));
    setXattr(join(src, 'top.txt'), 'user.k', Buffer.from('v'));
    await chmod(join(src, 'a'), 0o750);
    await mkdir(join(dir, 'store'));
    await push(src, `${join(dir, 'store')}/`);
    source = join(dir, 'store', 'tree');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A fresh first pull into `name`/; returns the target. */
  async function firstPull(name: string): Promise<string> {
    await mkdir(join(dir, name));
    const r = await pull(source, `${join(dir, name)}/`);
    return r.target;
  }

  it('stages nothing: the destination directory, the tree and its entries keep their times and inodes', async () => {
    const target = await firstPull('noop');
    const parent = join(dir, 'noop');
    const paths = [parent, target, join(target, 'a'), join(target, 'a', 'b'), join(target, 'top.txt'), join(target, 'link')];
    // The destination's mtime moved far back: a staging directory made and removed beside
    // the target would set it to now. (The tree's own directories have their recorded times.)
    await utimes(parent, OLD_S, OLD_S);
    const before = await Promise.all(paths.map((p) => lstat(p, { bigint: true })));
    const r = await pull(source, `${parent}/`);
    assert.equal(r.bytesReceived, 0);
    assert.ok(r.bytesReused > 0, 'every file counted as reused');
    const afterwards = await Promise.all(paths.map((p) => lstat(p, { bigint: true })));
    for (let i = 0; i < paths.length; i++) {
      assert.equal(afterwards[i]!.ino, before[i]!.ino, `${paths[i]} kept its inode`);
      assert.equal(afterwards[i]!.mtimeNs, before[i]!.mtimeNs, `${paths[i]} kept its mtime`);
      assert.equal(afterwards[i]!.ctimeNs, before[i]!.ctimeNs, `${paths[i]} kept its ctime (nothing linked, chmod'ed or renamed)`);
    }
    assert.deepEqual(await readdir(parent), ['tree'], 'nothing left beside the target');
  });

  it('still sees attributes that drifted, each alone, and puts them back', async () => {
    const target = await firstPull('drift');
    const again = async () => assert.equal((await pull(source, `${join(dir, 'drift')}/`)).bytesReceived, 0);
    await chmod(join(target, 'a'), 0o700);
    await again();
    assert.equal((await lstat(join(target, 'a'))).mode & 0o7777, 0o750, "a directory's mode");
    setXattr(join(target, 'top.txt'), 'user.k', Buffer.from('changed'));
    await again();
    assert.equal(listXattrs(join(target, 'top.txt')).find((x) => x.name === 'user.k')?.value.toString(), 'v', "a file's xattr");
    // Same owner and time (and the tree's root's time put back): only the target differs.
    const was = await lstat(join(target, 'link'), { bigint: true });
    const root = await lstat(target, { bigint: true });
    await unlink(join(target, 'link'));
    await symlink('a/b/X.txt', join(target, 'link'));
    setTimesNs(join(target, 'link'), was.atimeNs, was.mtimeNs);
    setTimesNs(target, root.atimeNs, root.mtimeNs);
    await again();
    assert.equal(await readlink(join(target, 'link')), 'a/b/f.txt', "a symlink's target");
  });

  it('with --delete, still finds an extra deep in the tree and removes it; without, keeps it', async () => {
    const target = await firstPull('extra');
    await writeFile(join(target, 'a', 'b', 'extra.txt'), 'not in the source\n');
    const kept = await pull(source, `${join(dir, 'extra')}/`);
    assert.deepEqual(kept.deleted, []);
    assert.ok((await readdir(join(target, 'a', 'b'))).includes('extra.txt'));
    const r = await pull(source, `${join(dir, 'extra')}/`, { delete: true });
    assert.deepEqual(r.deleted, ['a/b/extra.txt']);
    assert.deepEqual((await readdir(join(target, 'a', 'b'))).sort(), ['f.txt']);
  });
});
