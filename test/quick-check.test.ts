import { strict as assert } from 'node:assert';
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

const MiB = 1024 * 1024;
const MTIME_S = 1_700_000_000;

/** Rewrites `path` with `data` (same size) and puts its mtime back: the quick check cannot see it. */
async function sneakyEdit(path: string, data: Buffer): Promise<void> {
  const st = await stat(path);
  assert.equal(data.length, st.size);
  await writeFile(path, data);
  await utimes(path, st.atime, st.mtime);
}

describe('pushes skip files whose size and mtime are unchanged since the last push (the quick check)', () => {
  const fx = useServer('xfer-quick-');

  it('a single file: unchanged size and mtime are not read again; --checksum reads it; a new mtime is read', async () => {
    const src = join(fx.dir, 'disk.img');
    const v1 = pseudoRandom(8 * MiB, 1);
    await writeFile(src, v1);
    await utimes(src, MTIME_S, MTIME_S);
    assert.equal((await runCli(['push', src, `${fx.server.url}/disk.img`])).code, 0);
    const served = join(fx.root, 'files', 'disk.img');
    const inode = (await stat(served)).ino;

    const v2 = Buffer.from(v1);
    pseudoRandom(4096, 2).copy(v2, 3 * MiB);
    await sneakyEdit(src, v2);
    const quick = await runCli(['push', src, `${fx.server.url}/disk.img`, '--json']);
    assert.equal(quick.code, 0, quick.stderr);
    assert.equal(JSON.parse(quick.stdout).chunksSent, 0);
    assert.ok((await readFile(served)).equals(v1), 'the file was taken as unchanged, as rsync would');
    assert.equal((await stat(served)).ino, inode, 'and the server kept it as it was');

    const full = await runCli(['push', src, `${fx.server.url}/disk.img`, '--json', '--checksum']);
    assert.equal(full.code, 0, full.stderr);
    assert.ok(JSON.parse(full.stdout).chunksSent >= 1);
    assert.ok((await readFile(served)).equals(v2), '--checksum reads every file');

    const v3 = Buffer.from(v2);
    pseudoRandom(4096, 3).copy(v3, 5 * MiB);
    await writeFile(src, v3); // a new mtime
    assert.equal((await runCli(['push', src, `${fx.server.url}/disk.img`])).code, 0);
    assert.ok((await readFile(served)).equals(v3));
  });

  it('a tree: only files with a new size or mtime are read; a different chunker reads them all', async () => {
    const tree = join(fx.dir, 'series');
    await mkdir(join(tree, 'sub'), { recursive: true });
    const names = ['a.dcm', 'b.dcm', 'sub/c.dcm', 'sub/d.dcm'];
    for (const [i, n] of names.entries()) {
      await writeFile(join(tree, n), pseudoRandom(150_000 + i, 10 + i));
      await utimes(join(tree, n), MTIME_S, MTIME_S);
    }
    assert.equal((await runCli(['push', tree, `${fx.server.url}/`])).code, 0);
    const served = (n: string) => join(fx.root, 'files', 'series', n);

    // b: edited behind the quick check's back; c: edited with a new mtime
    const b2 = pseudoRandom(150_001, 99);
    await sneakyEdit(join(tree, 'b.dcm'), b2);
    const c2 = pseudoRandom(150_002, 98);
    await writeFile(join(tree, 'sub/c.dcm'), c2);
    const p = await runCli(['push', tree, `${fx.server.url}/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const r = JSON.parse(p.stdout);
    assert.ok(r.chunksSent >= 1 && r.chunksSent <= 4, `only c.dcm's chunks went (${r.chunksSent})`);
    assert.ok((await readFile(served('sub/c.dcm'))).equals(c2));
    assert.ok(!(await readFile(served('b.dcm'))).equals(b2), 'b.dcm was not read');

    // A push cut with another chunker cannot reuse the old chunk lists: every file is read.
    const other = await runCli(['push', tree, `${fx.server.url}/`, '--json', '--avg', '32K', '--min', '8K', '--max', '128K']);
    assert.equal(other.code, 0, other.stderr);
    assert.ok((await readFile(served('b.dcm'))).equals(b2), 'b.dcm was read this time');
    for (const n of names) assert.ok((await readFile(served(n))).equals(await readFile(join(tree, n))), n);
  });

  it('local pushes too: unchanged files are linked from the current copy, not read; --checksum reads them', async () => {
    const tree = join(fx.dir, 'local-src', 'scans');
    await mkdir(join(tree, 'sub'), { recursive: true });
    const names = ['a.bin', 'sub/b.bin', 'sub/c.bin'];
    for (const [i, n] of names.entries()) {
      await writeFile(join(tree, n), pseudoRandom(120_000 + i, 40 + i));
      await utimes(join(tree, n), MTIME_S, MTIME_S);
    }
    const backup = join(fx.dir, 'backup');
    assert.equal((await runCli(['push', tree, `${backup}/`])).code, 0);
    const copy = (n: string) => join(backup, 'scans', n);
    const inode = (await stat(copy('a.bin'))).ino;

    const a2 = pseudoRandom(120_000, 77);
    await sneakyEdit(join(tree, 'a.bin'), a2);
    const c2 = pseudoRandom(5000, 78);
    await writeFile(join(tree, 'sub/c.bin'), c2);
    const damaged = pseudoRandom(3000, 79);
    await writeFile(copy('sub/b.bin'), damaged); // the backup copy changed behind xfer's back
    const p = await runCli(['push', tree, `${backup}/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    assert.ok(!(await readFile(copy('a.bin'))).equals(a2), 'a.bin was not read');
    assert.equal((await stat(copy('a.bin'))).ino, inode, 'its copy is kept (linked into the new version)');
    assert.equal((await stat(copy('a.bin'))).nlink, 1);
    assert.ok((await readFile(copy('sub/c.bin'))).equals(c2));
    assert.ok((await readFile(copy('sub/b.bin'))).equals(await readFile(join(tree, 'sub/b.bin'))), 'a damaged copy is not reused');

    const full = await runCli(['push', tree, `${backup}/`, '--checksum']);
    assert.equal(full.code, 0, full.stderr);
    for (const n of names) assert.ok((await readFile(copy(n))).equals(await readFile(join(tree, n))), n);
    const v = await runCli(['verify', backup]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});
