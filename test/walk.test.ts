/** The source walk: manifest order, entry types and attributes, what it skips and refuses. */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from '../src/core/errors.js';
import { walkTree, type WalkSkip } from '../src/scan/walk.js';

async function walkAll(root: string, onSkip?: (s: WalkSkip) => void): Promise<{ path: string; type: string; size: number; mtimeMs: number }[]> {
  const out = [];
  for await (const e of walkTree(root, { onSkip })) out.push({ path: e.meta.path, type: e.meta.type, size: e.meta.size, mtimeMs: e.meta.mtimeMs });
  return out;
}

describe('walkTree', () => {
  it('yields parents before children, siblings in byte order of their names, with types, sizes and mtimes', async () => {
    const root = await mkdtemp(join(tmpdir(), 'xfer-walk-'));
    try {
      await mkdir(join(root, 'b', 'inner'), { recursive: true });
      await mkdir(join(root, 'a'));
      await writeFile(join(root, 'B.txt'), 'upper');
      await writeFile(join(root, 'b', 'inner', 'z.bin'), Buffer.alloc(3000));
      await writeFile(join(root, 'b', 'é.txt'), 'é');
      await writeFile(join(root, 'b', 'e.txt'), '');
      await symlink('b/e.txt', join(root, 'link'));
      await utimes(join(root, 'B.txt'), 1_600_000_000.5, 1_600_000_000.5);
      // deep enough that a recursive walk would nest many levels
      let deep = join(root, 'd');
      for (let i = 0; i < 40; i++) deep = join(deep, `l${i}`);
      await mkdir(deep, { recursive: true });
      await writeFile(join(deep, 'leaf'), 'x');

      const entries = await walkAll(root);
      const paths = entries.map((e) => e.path);
      const deepPaths = Array.from({ length: 40 }, (_, i) => ['d', ...Array.from({ length: i + 1 }, (_, k) => `l${k}`)].join('/'));
      assert.deepEqual(paths, [
        '', // the root's own entry
        'B.txt', 'a', 'b', 'b/e.txt', 'b/inner', 'b/inner/z.bin', 'b/é.txt',
        'd', ...deepPaths, `${deepPaths[39]}/leaf`, 'link',
      ]);
      const byPath = new Map(entries.map((e) => [e.path, e]));
      assert.equal(byPath.get('b')!.type, 'dir');
      assert.equal(byPath.get('b/inner/z.bin')!.size, 3000);
      assert.equal(byPath.get('link')!.type, 'symlink');
      assert.equal(byPath.get('B.txt')!.mtimeMs, 1_600_000_000_500);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('reports what it skips (a socket, as rsync does; FIFOs are entries) and refuses names with a backslash', async () => {
    const root = await mkdtemp(join(tmpdir(), 'xfer-walk-'));
    try {
      await writeFile(join(root, 'a.txt'), 'a');
      execFileSync('mkfifo', [join(root, 'pipe')]);
      execFileSync(process.execPath, ['-e', 'require("net").createServer().listen(process.argv[1], () => process.exit(0))', join(root, 'sock')]);
      const skipped: WalkSkip[] = [];
      const entries = await walkAll(root, (s) => skipped.push(s));
      assert.deepEqual(entries.map((e) => [e.path, e.type]), [['', 'dir'], ['a.txt', 'file'], ['pipe', 'fifo']]);
      assert.equal(skipped.length, 1);
      assert.equal(skipped[0]!.path, join(root, 'sock'));
      assert.match(skipped[0]!.reason, /socket/);
      assert.equal(skipped[0]!.lost, false);
      await mkdir(join(root, 'sub'));
      await writeFile(join(root, 'sub', 'x\\y'), '');
      await assert.rejects(walkAll(root), (err: unknown) => err instanceof InvalidArgumentError && /backslash/.test(err.message));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
