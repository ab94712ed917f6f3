import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

/**
 * `xfer push . ./backup/`: the destination is inside the tree being read. Its target, its
 * store (.xfer) and its staging copies change while the push runs; they are left out of
 * what is read (it used to fail every time: "file changed while it was being read").
 */
describe('a local destination inside the source tree', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-inside-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function makeTree(name: string): Promise<string> {
    const tree = join(dir, name);
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.txt'), 'a');
    await writeFile(join(tree, 'sub', 'b.bin'), pseudoRandom(3 * 1024 * 1024, 5));
    return tree;
  }

  it('push . ./backup/ leaves the target, store and staging out of the scan, and runs again', async () => {
    const tree = await makeTree('proj');
    for (const round of [1, 2]) {
      const r = await runCli(['push', '.', './backup/', '--json'], { cwd: tree });
      assert.equal(r.code, 0, `round ${round}: ${r.stderr}`);
      if (round === 2) assert.equal(JSON.parse(r.stdout).chunksSent, 0);
    }
    const target = join(tree, 'backup', 'proj');
    assert.deepEqual((await readdir(target)).sort(), ['a.txt', 'backup', 'sub']);
    assert.deepEqual(await readdir(join(target, 'backup')), [], 'the destination directory is there, empty: nothing of the push itself');
    assert.ok((await readFile(join(target, 'sub', 'b.bin'))).equals(await readFile(join(tree, 'sub', 'b.bin'))));
    const v = await runCli(['verify', join(tree, 'backup')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });

  it('push . ./ (the target beside the files it copies)', async () => {
    const tree = await makeTree('here');
    for (const round of [1, 2]) {
      const r = await runCli(['push', '.', './'], { cwd: tree });
      assert.equal(r.code, 0, `round ${round}: ${r.stderr}`);
    }
    assert.deepEqual((await readdir(join(tree, 'here'))).sort(), ['a.txt', 'sub']);
  });

  it('other entries of the destination directory are still part of the source', async () => {
    const tree = await makeTree('mixed');
    await mkdir(join(tree, 'backup'));
    await writeFile(join(tree, 'backup', 'notes.txt'), 'mine');
    const r = await runCli(['push', tree, join(tree, 'backup/')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await readdir(join(tree, 'backup', 'mixed', 'backup')), ['notes.txt']);
  });
});
