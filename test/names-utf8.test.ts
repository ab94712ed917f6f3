/**
 * Names that are not valid UTF-8: a manifest holds UTF-8 names only, so such an entry is
 * skipped and reported by its escaped name, the rest of the tree is copied, and the push
 * exits 23 (partial transfer, rsync's code). Nothing is stored altered.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { escapeName } from '../src/scan/names.js';
import { walkTree, type WalkSkip } from '../src/scan/walk.js';
import { runCli } from './helpers/cli.js';

/** `dir/<bytes>` as a Buffer path (the only way to name a file that is not valid UTF-8). */
const bytePath = (dir: string, ...name: number[]): Buffer => Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(name)]);
const ascii = (s: string): number[] => [...Buffer.from(s)];

describe('names and symlink targets that are not valid UTF-8', () => {
  let dir: string;
  let src: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-names-'));
    src = join(dir, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'good.txt'), 'good\n');
    await writeFile(join(src, 'd', 'café.txt'), 'valid UTF-8 is kept\n');
    await writeFile(bytePath(join(src, 'd'), ...ascii('bad'), 0xff, ...ascii('.txt')), 'lost\n'); // d/bad\xff.txt
    await mkdir(bytePath(src, ...ascii('dir'), 0xc3)); // dir\xc3 (a truncated é), with a file inside
    await writeFile(Buffer.concat([bytePath(src, ...ascii('dir'), 0xc3), Buffer.from('/inner.txt')]), 'lost too\n');
    await symlink(Buffer.from([...ascii('tgt'), 0xfe]), join(src, 'link')); // target tgt\xfe
    await symlink('good.txt', join(src, 'goodlink'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('escapeName shows valid UTF-8 as it is and every other byte, control characters and backslashes escaped', () => {
    assert.equal(escapeName(Buffer.from('café.txt')), 'café.txt');
    assert.equal(escapeName(Buffer.from([0x62, 0xff, 0x2e])), 'b\\xff.');
    assert.equal(escapeName(Buffer.from([0x64, 0xc3])), 'd\\xc3');
    assert.equal(escapeName(Buffer.from([0xed, 0xa0, 0x80])), '\\xed\\xa0\\x80'); // an encoded surrogate is not UTF-8
    assert.equal(escapeName(Buffer.from('a\nb\\c')), 'a\\x0ab\\\\c');
  });

  it('the walk skips them, reporting each as lost by its escaped path, and yields the rest', async () => {
    const skips: WalkSkip[] = [];
    const paths: string[] = [];
    for await (const e of walkTree(src, { onSkip: (s) => skips.push(s) })) paths.push(e.meta.path);
    assert.deepEqual(paths, ['', 'd', 'd/café.txt', 'good.txt', 'goodlink']); // '': the root's own entry
    assert.deepEqual(
      skips.map((s) => [s.path, s.lost, s.reason]),
      [
        [join(src, 'd', 'bad\\xff.txt'), true, 'its name is not valid UTF-8, which a manifest cannot hold'],
        [join(src, 'dir\\xc3'), true, 'its name is not valid UTF-8, which a manifest cannot hold'],
        [join(src, 'link'), true, 'its target tgt\\xfe is not valid UTF-8, which a manifest cannot hold'],
      ],
    );
  });

  it('a push copies everything else, reports each on one line, and exits 23', async () => {
    const backup = join(dir, 'backup');
    const r = await runCli(['push', src, `${backup}/`, '--json']);
    assert.equal(r.code, 23, r.stderr);
    assert.equal(JSON.parse(r.stdout).entriesLost, 3);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      `xfer: skipped ${join(src, 'd', 'bad\\xff.txt')}: its name is not valid UTF-8, which a manifest cannot hold`,
      `xfer: skipped ${join(src, 'dir\\xc3')}: its name is not valid UTF-8, which a manifest cannot hold`,
      `xfer: skipped ${join(src, 'link')}: its target tgt\\xfe is not valid UTF-8, which a manifest cannot hold`,
      'xfer: partial transfer: 3 entries could not be copied (see above)',
    ]);
    const target = join(backup, 'src');
    assert.deepEqual((await readdir(target)).sort(), ['d', 'good.txt', 'goodlink'], 'no entry stored under an altered name');
    assert.deepEqual(await readdir(join(target, 'd')), ['café.txt']);
    assert.equal(await readFile(join(target, 'd', 'café.txt'), 'utf8'), 'valid UTF-8 is kept\n');
    assert.equal(await readlink(join(target, 'goodlink')), 'good.txt');
    // What was stored is whole and consistent: a pull of it exits 0.
    const pulled = join(dir, 'pulled');
    const p = await runCli(['pull', target, pulled]);
    assert.equal(p.code, 0, p.stderr);
    assert.deepEqual((await readdir(pulled)).sort(), ['d', 'good.txt', 'goodlink']);
  });
});
