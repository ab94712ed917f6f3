import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { ScanPool } from '../src/scan/pool.js';
import { OWNER_HOST } from '../src/io/owner.js';
import { acquireLock } from '../src/store/lock.js';
import { runCli } from './helpers/cli.js';

const API_ROUNDS = 12;
const CLI_ROUNDS = 2;

/** Every file under `root`, by relative path, with its content. */
async function treeContents(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out.set(p.slice(root.length + 1), await readFile(p, 'utf8'));
  }
  return out;
}

describe('two pushes to one local target at once', () => {
  let dir: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-concurrent-'));
    pool = new ScanPool();
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Two different trees named t, each replacing <backup>/t; small, so that pushes overlap. */
  async function makeSources(): Promise<{ sources: Record<'a' | 'b', string>; expected: Map<string, string>[] }> {
    const sources = { a: join(dir, 'a', 't'), b: join(dir, 'b', 't') };
    for (const [k, root] of Object.entries(sources)) {
      await rm(root, { recursive: true, force: true });
      await mkdir(join(root, 'sub'), { recursive: true });
      for (let i = 0; i < 12; i++) await writeFile(join(root, i % 2 ? 'sub' : '', `${k}${i}.txt`), `${k} file ${i}\n`.repeat(50 + i));
    }
    return { sources, expected: [await treeContents(sources.a), await treeContents(sources.b)] };
  }

  /** The tree on disk is one of `expected`, and the one its stored manifest describes. */
  async function assertConsistent(target: string, expected: Map<string, string>[], what: string): Promise<void> {
    const onDisk = await treeContents(target);
    assert.ok(expected.some((t) => isDeepEqual(onDisk, t)), `${what}: the target is one of the two trees`);
    const pulled = await mkdtemp(join(dir, 'pulled-'));
    await pull(target, join(pulled, 't'), { pool });
    assert.ok(isDeepEqual(await treeContents(join(pulled, 't')), onDisk), `${what}: the stored manifest describes the tree on disk`);
    await rm(pulled, { recursive: true });
  }

  it(`in one process, run one after the other: after each of ${API_ROUNDS} rounds the tree on disk is the stored manifest's`, async () => {
    const { sources, expected } = await makeSources();
    const backup = join(dir, 'backup-api');
    await mkdir(backup);
    for (let round = 1; round <= API_ROUNDS; round++) {
      // With delete: each push makes the target exactly its tree (by default the other's
      // files, which this one lacks, would be kept).
      await Promise.all([push(sources.a, `${backup}/`, { pool, delete: true }), push(sources.b, `${backup}/`, { pool, delete: true })]);
      await assertConsistent(join(backup, 't'), expected, `round ${round}`);
    }
    assert.deepEqual(await readdir(join(backup, '.xfer', 'locks')), [], 'no lock is left behind');
  });

  it(`as two xfer processes, likewise (${CLI_ROUNDS} rounds), both exiting 0`, async () => {
    const { sources, expected } = await makeSources();
    const backup = join(dir, 'backup-cli');
    await mkdir(backup);
    for (let round = 1; round <= CLI_ROUNDS; round++) {
      const [ra, rb] = await Promise.all([runCli(['push', sources.a, `${backup}/`, '-q', '--delete']), runCli(['push', sources.b, `${backup}/`, '-q', '--delete'])]);
      assert.equal(ra.code, 0, ra.stderr);
      assert.equal(rb.code, 0, rb.stderr);
      await assertConsistent(join(backup, 't'), expected, `round ${round}`);
    }
    assert.deepEqual(await readdir(join(backup, '.xfer', 'locks')), [], 'no lock is left behind');
  });

  it('a lock left by a dead process is broken, with its drafts; a live holder is waited for', { timeout: 5_000 }, async () => {
    const file = join(dir, 'locks', 't');
    await mkdir(join(dir, 'locks'));
    // A pid that is not running: a child that has exited.
    const dead = await new Promise<number>((resolve) => {
      const c = spawn(process.execPath, ['-e', '']);
      c.on('exit', () => resolve(c.pid!));
    });
    await writeFile(file, `${OWNER_HOST}~${dead} 0123456789abcdef\n`);
    // The draft of a process killed while it waited, and a live process's (this one's).
    const deadDraft = `t.${OWNER_HOST}~${dead}-0a1b2c.new`;
    const liveDraft = `t.${OWNER_HOST}~${process.pid}-3d4e5f.new`;
    await writeFile(join(dir, 'locks', deadDraft), 'x');
    await writeFile(join(dir, 'locks', liveDraft), 'x');
    const lock = await acquireLock(file);
    assert.deepEqual((await readdir(join(dir, 'locks'))).sort(), [liveDraft, 't'].sort(), 'the dead draft is removed');
    await rm(join(dir, 'locks', liveDraft));
    assert.match(await readFile(file, 'utf8'), new RegExp(`^${OWNER_HOST}~${process.pid} `));
    let waitedFor: string | undefined;
    const controller = new AbortController();
    const second = acquireLock(file, { signal: controller.signal, onWait: (h) => (waitedFor = h) });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(waitedFor, `${OWNER_HOST}~${process.pid}`);
    await lock.release();
    const lock2 = await second;
    await lock.release(); // a second release of the first lock does not remove the second
    assert.match(await readFile(file, 'utf8'), /~\d+ /);
    await lock2.release();
    assert.deepEqual(await readdir(join(dir, 'locks')), []);
  });
});

function isDeepEqual(a: Map<string, string>, b: Map<string, string>): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
