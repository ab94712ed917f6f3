import { strict as assert } from 'node:assert';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isOneLineError, runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

/**
 * Running a push again is how a copy is brought up to date, or a failed push resumed: the
 * command that succeeded once succeeds again and updates the same target, locally and on a
 * server. A tree pushed to `dest/tree` is that target the second time, not a directory to
 * copy into (cp's rule would nest tree/tree, which a pushed tree cannot hold).
 */
describe('the same push, run again, updates its target', () => {
  const f = useServer('xfer-repush-');

  async function makeTree(name: string): Promise<string> {
    const tree = join(f.dir, name);
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.txt'), 'first a');
    await writeFile(join(tree, 'sub', 'b.txt'), 'first b');
    return tree;
  }

  /** Pushes `tree` to `dest` three times (the third after a change) and returns the third result. */
  async function pushThrice(tree: string, dest: string): Promise<void> {
    const first = await runCli(['push', tree, dest, '--json']);
    assert.equal(first.code, 0, first.stderr);
    const again = await runCli(['push', tree, dest, '--json']);
    assert.equal(again.code, 0, `the same command again: ${again.stderr}`);
    assert.equal(JSON.parse(again.stdout).chunksSent, 0, 'nothing new to send');
    await writeFile(join(tree, 'a.txt'), 'second a, longer');
    await writeFile(join(tree, 'new.txt'), 'new');
    const changed = await runCli(['push', tree, dest, '--json']);
    assert.equal(changed.code, 0, changed.stderr);
  }

  it('to a local path naming the pushed tree (push ./tree backup/tree)', async () => {
    const tree = await makeTree('local-src');
    const target = join(f.dir, 'backup', 'copy');
    await pushThrice(tree, target);
    assert.deepEqual((await readdir(target)).sort(), ['a.txt', 'new.txt', 'sub']);
    assert.equal(await readFile(join(target, 'a.txt'), 'utf8'), 'second a, longer');
    const v = await runCli(['verify', join(f.dir, 'backup')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^ok: 1 manifest,/);
  });

  it('to a server path naming the pushed tree (push ./tree http://host/tree)', async () => {
    const tree = await makeTree('remote-src');
    await pushThrice(tree, `${f.server.url}/trees/copy`);
    const target = join(f.root, 'files', 'trees', 'copy');
    assert.deepEqual((await readdir(target)).sort(), ['a.txt', 'new.txt', 'sub']);
    assert.equal(await readFile(join(target, 'a.txt'), 'utf8'), 'second a, longer');
    const l = await runCli(['ls', `${f.server.url}/trees/`, '--json']);
    assert.equal(l.code, 0, l.stderr);
    assert.deepEqual((JSON.parse(l.stdout) as { entries: { path: string }[] }).entries.map((e) => e.path), ['trees/copy']);
  });

  it('a real directory that is not a pushed target still takes the copy inside it (cp)', async () => {
    const tree = await makeTree('plain-src');
    const plain = join(f.dir, 'plain');
    await mkdir(plain);
    const p = await runCli(['push', tree, plain, '--json']);
    assert.equal(p.code, 0, p.stderr);
    assert.ok((await stat(join(plain, 'plain-src', 'sub', 'b.txt'))).isFile());
  });

  it('a file still cannot go inside a pushed tree, locally or on a server (exit 5)', async () => {
    const tree = await makeTree('file-src');
    const local = join(f.dir, 'file-backup', 'tree');
    assert.equal((await runCli(['push', tree, local])).code, 0);
    const remote = `${f.server.url}/file-tree`;
    assert.equal((await runCli(['push', tree, remote])).code, 0);
    for (const dest of [local, remote, `${local}/`, `${remote}/`]) {
      const r = await runCli(['push', join(tree, 'a.txt'), dest]);
      assert.equal(r.code, 5, `${dest}: ${r.stderr}`);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, /is a pushed tree: a copy cannot go inside it/);
    }
  });
});
