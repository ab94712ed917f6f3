import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer } from '../src/server/server.js';
import type { ServerLogger } from '../src/server/log.js';

/** The owner tag's host part in staging names (reconstruct/staging.ts). */
const HOST_TAG = hostname().replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);

/** The pid of a process that has exited (a killed server's). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

/** Every path under `dir` (not following symlinks), relative, sorted. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      out.push(relative(dir, join(d, e.name)));
      if (e.isDirectory()) await visit(join(d, e.name));
    }
  };
  await visit(dir);
  return out.sort();
}

describe('server start: staging copies of dead server processes are swept', () => {
  let dir: string;
  let live: ReturnType<typeof spawn> | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-sweep-'));
  });
  after(async () => {
    live?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('removes a dead pid\'s copies (files and trees, any depth); keeps a live pid\'s, another host\'s, look-alikes, and all behind a symlink', async () => {
    const root = join(dir, 'root');
    const files = join(root, 'files');
    const outside = join(dir, 'outside');
    const dead = await deadPid();
    live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    const name = (stem: string, pid: number, host = HOST_TAG, tail = '.tmp') => `.xfer-${stem}.${host}~${pid}-0123456789ab${tail}`;
    const deadFile = join('a', name('f', dead));
    const deadTree = join('a', 'b', name('t', dead, HOST_TAG, '.tmp.old'));
    const deadTreeNew = join('a', 'b', name('t', dead));
    await mkdir(join(files, deadTree, 'sub'), { recursive: true });
    await writeFile(join(files, deadTree, 'sub', 'x'), 'old tree');
    await mkdir(join(files, deadTreeNew), { recursive: true });
    await writeFile(join(files, deadFile), 'staged');
    const kept = [
      name('live', live.pid!),
      name('mine', process.pid),
      name('other-host', dead, 'elsewhere.example'),
      `${name('not-ours', dead)}.bak`,
      join('a', 'f'),
      join('user', '.xfer-notes.txt'),
    ];
    for (const k of kept) {
      await mkdir(join(files, k, '..'), { recursive: true });
      await writeFile(join(files, k), 'keep');
    }
    // A symlinked directory under files/ is not entered: what it points at is not ours.
    await mkdir(outside);
    await writeFile(join(outside, name('o', dead)), 'outside');
    await symlink(outside, join(files, 'ln'));

    const done: object[] = [];
    const note = (fields: object, message?: string) => { if (message?.startsWith('start-up sweep')) done.push(fields); };
    const log: ServerLogger = { debug: note, info: note, warn: () => {}, error: () => {} };
    const server = await createServer({ root, port: 0, logger: log });
    try {
      for (let i = 0; i < 100 && done.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(done.length, 1, 'the sweep finished');
      assert.deepEqual({ ...done[0], visited: undefined }, { removed: 3, visited: undefined, partial: false });
    } finally {
      await server.close();
    }
    const left = await tree(files);
    for (const gone of [deadFile, deadTree, deadTreeNew]) assert.ok(!left.includes(gone), `${gone} was removed`);
    for (const k of kept) assert.ok(left.includes(k), `${k} is kept`);
    assert.ok(left.includes('ln'));
    assert.deepEqual(await readdir(outside), [name('o', dead)]);
  });
});
