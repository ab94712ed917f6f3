/** --stats counts entries by kind as rsync does: hard links as files, devices and FIFOs apart, the root as a directory. */
import { strict as assert } from 'node:assert';
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeNode } from '../src/io/sys.js';
import { runCli } from './helpers/cli.js';

describe('--stats: Number of files by kind', () => {
  it('counts reg (hard links included), dir (the root included), link, dev and special, and leaves out kinds with none, as rsync prints them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-stats-kinds-'));
    try {
      const src = join(dir, 'tree');
      await mkdir(join(src, 'sub'), { recursive: true });
      await writeFile(join(src, 'a'), 'a\n');
      await link(join(src, 'a'), join(src, 'sub', 'a-again'));
      await symlink('a', join(src, 'to-a'));
      makeNode(join(src, 'null'), 'char', 0o666, 1, 3);
      makeNode(join(src, 'pipe'), 'fifo', 0o644);
      const r = await runCli(['push', src, `${join(dir, 'backup')}/`, '--stats']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Number of files: 7 \(reg: 2, dir: 2, link: 1, dev: 1, special: 1\)$/m);
      const plain = await runCli(['push', join(src, 'sub'), `${join(dir, 'backup2')}/`, '--stats']);
      assert.equal(plain.code, 0, plain.stderr);
      assert.match(plain.stdout, /^Number of files: 2 \(reg: 1, dir: 1\)$/m);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
