import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sysIsNative } from '../src/io/sys.js';
import { Staging, treeSwapTestSeam } from '../src/reconstruct/staging.js';
import { stageTreeVersion, treeVersion } from './helpers/swap-tree.js';

const CHILD = fileURLToPath(new URL('./helpers/swap-and-die.js', import.meta.url));

/** Runs swap-and-die.js (commit, then SIGKILL right after the swap's first step); resolves with its exit signal. */
function commitAndDie(target: string, version: string): Promise<NodeJS.Signals | null> {
  const child = spawn(process.execPath, [CHILD, target, version], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => (code ? reject(new Error(`swap-and-die exited with ${code}: ${stderr}`)) : resolve(signal)));
  });
}

async function commitTree(target: string, version: string): Promise<void> {
  const staging = await Staging.create(target, 'tree');
  await stageTreeVersion(staging, version);
  await staging.commit();
}

/** The exchange needs the native addon (fatal where CI requires it). */
function needExchange(t: TestContext): boolean {
  if (sysIsNative()) return true;
  assert.notEqual(process.env.XFER_REQUIRE_NATIVE, '1', 'the native addon must be built where it is required');
  t.skip('native addon not built: trees are swapped with two renames');
  return false;
}

describe('tree swap: the target is the old tree or the new one at every moment', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-swap-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a process killed right after the first step of the swap leaves a complete tree at the target; the next run removes the old one', async (t) => {
    if (!needExchange(t)) return;
    const parent = join(dir, 'kill');
    const target = join(parent, 't');
    await mkdir(parent);
    await commitTree(target, 'old');
    assert.equal(await commitAndDie(target, 'new'), 'SIGKILL');
    assert.equal(await treeVersion(target), 'new', 'the target is the complete new tree');
    // The old tree is left under the dead process's staging name, nowhere else.
    const left = (await readdir(parent)).filter((n) => n !== 't');
    assert.equal(left.length, 1, left.join());
    assert.match(left[0]!, /^\.xfer-t\..*~\d+-[0-9a-f]+\.tmp$/);
    assert.equal(await treeVersion(join(parent, left[0]!)), 'old');
    await commitTree(target, 'next');
    assert.equal(await treeVersion(target), 'next');
    assert.deepEqual(await readdir(parent), ['t']);
  });

  it('a replaced tree goes at once: the new tree is at the target and the old one removed, nothing left beside it', async (t) => {
    if (!needExchange(t)) return;
    const parent = join(dir, 'plain');
    const target = join(parent, 't');
    await mkdir(parent);
    await commitTree(target, 'one');
    const oldIno = (await lstat(target)).ino;
    const seen: string[] = [];
    treeSwapTestSeam.afterFirstStep = async () => { seen.push(await treeVersion(target)); };
    try {
      await commitTree(target, 'two');
    } finally {
      delete treeSwapTestSeam.afterFirstStep;
    }
    assert.deepEqual(seen, ['two'], 'just after the exchange the target already is the new tree');
    assert.notEqual((await lstat(target)).ino, oldIno);
    assert.equal(await treeVersion(target), 'two');
    assert.deepEqual(await readdir(parent), ['t']);
  });

  it('a single file is still replaced by one rename: the staged inode becomes the target, the tree swap is not used', async () => {
    const parent = join(dir, 'file');
    const target = join(parent, 'f');
    await mkdir(parent);
    await writeFile(target, 'old');
    let called = false;
    treeSwapTestSeam.afterFirstStep = () => { called = true; };
    try {
      const staging = await Staging.create(target, 'file');
      const f = await staging.openFile({ type: 'file', path: '', mode: 0o644, mtimeMs: 1_700_000_000_000, size: 3 });
      await f.write(Buffer.from('new'), 0);
      await f.finish(3);
      const stagedIno = (await lstat(staging.pathOf(''))).ino;
      await staging.commit();
      assert.equal((await lstat(target)).ino, stagedIno);
    } finally {
      delete treeSwapTestSeam.afterFirstStep;
    }
    assert.equal(called, false);
    assert.equal(await readFile(target, 'utf8'), 'new');
    assert.deepEqual(await readdir(parent), ['f']);
  });
});
