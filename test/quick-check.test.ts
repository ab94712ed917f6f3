import { strict as assert } from 'node:assert';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tmpdir } from 'node:os';
import { createChunker } from '../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { digestOf } from '../src/hash/digest.js';
import { setTimesNs } from '../src/io/sys.js';
import { push } from '../src/index.js';
import { RacyFiles } from '../src/transfer/racy.js';
import { cutAll } from './helpers/chunks.js';
import { isOneLineError, runCli, startCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';

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

    const cInode = (await stat(copy('sub/c.bin'))).ino;
    await utimes(join(tree, 'sub/b.bin'), MTIME_S + 5, MTIME_S + 5); // same content, a new mtime
    const bInode = (await stat(copy('sub/b.bin'))).ino;
    const full = await runCli(['push', tree, `${backup}/`, '--checksum']);
    assert.equal(full.code, 0, full.stderr);
    for (const n of names) assert.ok((await readFile(copy(n))).equals(await readFile(join(tree, n))), n);
    // Read, and found to be what the copy holds, with its size, mtime and mode: linked, not
    // written again; the same content under a new mtime is written with that mtime.
    assert.equal((await stat(copy('sub/c.bin'))).ino, cInode, 'an unchanged file read with --checksum keeps its copy');
    assert.notEqual((await stat(copy('sub/b.bin'))).ino, bInode);
    assert.equal((await stat(copy('sub/b.bin'))).mtimeMs, (MTIME_S + 5) * 1000);
    const v = await runCli(['verify', backup]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});

describe('pulls keep files whose size, mtime and mode are the manifest\'s (the quick check)', () => {
  const fx = useServer('xfer-quick-pull-');

  it('a single file: kept without being read; --checksum reads and repairs it; a new mtime is read', async () => {
    const src = join(fx.dir, 'disk.img');
    const v1 = pseudoRandom(6 * MiB, 11);
    await writeFile(src, v1);
    await utimes(src, MTIME_S, MTIME_S);
    assert.equal((await runCli(['push', src, `${fx.server.url}/disk.img`])).code, 0);
    const dest = join(fx.dir, 'restore', 'disk.img');
    await mkdir(join(fx.dir, 'restore'));
    assert.equal((await runCli(['pull', `${fx.server.url}/disk.img`, dest])).code, 0);
    assert.ok((await readFile(dest)).equals(v1));

    // The pulled copy edited behind xfer's back, size and mtime put back: trusted, as rsync would.
    const edited = Buffer.from(v1);
    pseudoRandom(4096, 12).copy(edited, 2 * MiB);
    await sneakyEdit(dest, edited);
    const inode = (await stat(dest)).ino;
    const quick = await runCli(['pull', `${fx.server.url}/disk.img`, dest, '--json']);
    assert.equal(quick.code, 0, quick.stderr);
    assert.equal(JSON.parse(quick.stdout).bytesReceived, 0);
    assert.ok((await readFile(dest)).equals(edited), 'the file was taken as the manifest\'s');
    assert.equal((await stat(dest)).ino, inode);

    const full = await runCli(['pull', `${fx.server.url}/disk.img`, dest, '--json', '--checksum']);
    assert.equal(full.code, 0, full.stderr);
    assert.ok(JSON.parse(full.stdout).bytesReceived > 0);
    assert.ok((await readFile(dest)).equals(v1), '--checksum reads the file and repairs it');

    await sneakyEdit(dest, edited);
    await utimes(dest, MTIME_S + 60, MTIME_S + 60); // another mtime: read, and repaired
    const again = await runCli(['pull', `${fx.server.url}/disk.img`, dest, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.ok((await readFile(dest)).equals(v1));
    assert.equal((await stat(dest)).mtimeMs, MTIME_S * 1000);
  });

  it('a tree (from a local store): matching files are linked into the new tree; others rebuilt; --checksum reads all', async () => {
    const tree = join(fx.dir, 'src', 'study');
    await mkdir(join(tree, 'sub'), { recursive: true });
    const names = ['a.dcm', 'sub/b.dcm', 'sub/c.dcm'];
    for (const [i, n] of names.entries()) {
      await writeFile(join(tree, n), pseudoRandom(90_000 + i, 20 + i));
      await utimes(join(tree, n), MTIME_S, MTIME_S);
    }
    const backup = join(fx.dir, 'backup');
    assert.equal((await runCli(['push', tree, `${backup}/`])).code, 0);
    const out = join(fx.dir, 'out');
    await mkdir(out);
    assert.equal((await runCli(['pull', join(backup, 'study'), `${out}/`])).code, 0);
    const got = (n: string) => join(out, 'study', n);

    const a2 = pseudoRandom(90_000, 30);
    await sneakyEdit(got('a.dcm'), a2); // not seen by the quick check
    const inode = (await stat(got('a.dcm'))).ino;
    await chmod(got('sub/b.dcm'), 0o600); // another mode: rebuilt with the manifest's
    await writeFile(got('sub/c.dcm'), 'damaged'); // another size: rebuilt
    const p = await runCli(['pull', join(backup, 'study'), `${out}/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    assert.ok((await readFile(got('a.dcm'))).equals(a2), 'a.dcm was kept as it is');
    assert.equal((await stat(got('a.dcm'))).ino, inode, 'linked into the new tree');
    assert.equal((await stat(got('sub/b.dcm'))).mode & 0o777, (await stat(join(tree, 'sub/b.dcm'))).mode & 0o777);
    assert.ok((await readFile(got('sub/c.dcm'))).equals(await readFile(join(tree, 'sub/c.dcm'))));

    const full = await runCli(['pull', join(backup, 'study'), `${out}/`, '--checksum']);
    assert.equal(full.code, 0, full.stderr);
    for (const n of names) assert.ok((await readFile(got(n))).equals(await readFile(join(tree, n))), n);
  });
});

describe('files written again right after a push read them (racily clean) are caught before the commit', () => {
  const fx = useServer('xfer-racy-');
  /** How far ahead of the clock the test stamps its file: the push must reach its wait before then. */
  const RACY_MTIME_LEAD_MS = 30_000;

  // Within the same millisecond (another sub-millisecond mtime), or within the same clock
  // tick (Linux stamps files from a clock that moves once per jiffy: the very same mtime).
  for (const [what, laterMs] of [['millisecond', 0.5], ['clock tick', 0]] as const) {
    it(`a same-size write within the recorded mtime's ${what} fails the push (run again), so no later quick check trusts it`, async () => {
      const name = `db-${laterMs}.img`;
      const src = join(fx.dir, name);
      const v1 = pseudoRandom(2 * MiB, 51 + laterMs * 10);
      await writeFile(src, v1);
      // An mtime ahead of the clock (as a file written while it is read has, or one stamped
      // by a clock ahead of ours): the push must wait before it looks at the file again, at
      // most RACY_COARSE_WINDOW_MS once every chunk is up. Far enough ahead that the push is
      // still before it when it gets there, however slowly a loaded machine starts, reads and
      // uploads (a lead of just under the wait was too short at load 10): the test's rewrite
      // below then always lands within the push's full wait.
      const mtimeMs = Date.now() + RACY_MTIME_LEAD_MS + 0.25;
      await utimes(src, mtimeMs / 1000, mtimeMs / 1000);
      const digests: Buffer[] = [];
      let o = 0;
      for (const len of cutAll(createChunker(DEFAULT_CHUNKER), v1)) {
        digests.push(digestOf('blake3', v1.subarray(o, o + len)));
        o += len;
      }
      const pushing = startCli(['push', src, `${fx.server.url}/${name}`]);
      // Once every chunk is on the server, the file has been read: write it again, same size,
      // with an mtime in the same millisecond (a write within the same clock tick).
      let uploaded = false;
      for (const until = Date.now() + RACY_MTIME_LEAD_MS; Date.now() < until && !uploaded && pushing.child.exitCode === null; ) {
        const r = await rawRequest(fx.server.url, 'POST', '/v1/chunks/missing?algorithm=blake3', Buffer.concat(digests));
        uploaded = r.body.every((b) => b === 0);
        if (!uploaded) await new Promise((res) => setTimeout(res, 10));
      }
      // Not a silent give-up: without the upload seen, the rewrite below could not land in the
      // push's wait and the test would prove nothing.
      assert.ok(uploaded, `the push uploaded every chunk within the wait (${pushing.stderr()})`);
      const v2 = pseudoRandom(2 * MiB, 52);
      await writeFile(src, v2);
      await utimes(src, (mtimeMs + laterMs) / 1000, (mtimeMs + laterMs) / 1000);
      const code = await pushing.exit;
      const stderr = pushing.stderr();
      assert.equal(code, 10, `the push fails with XFER_SOURCE_CHANGED's exit code: ${stderr}`);
      assert.ok(isOneLineError(stderr) && /changed right after it was read; run again/.test(stderr), stderr);
      await assert.rejects(stat(join(fx.root, 'files', name)), { code: 'ENOENT' }, 'nothing was committed');

      const again = await runCli(['push', src, `${fx.server.url}/${name}`]);
      assert.equal(again.code, 0, again.stderr);
      const quick = await runCli(['push', src, `${fx.server.url}/${name}`, '--json']);
      assert.equal(quick.code, 0, quick.stderr);
      assert.ok((await readFile(join(fx.root, 'files', name))).equals(v2), 'the server has what the file holds');
    });
  }
});

describe('a racily clean file that did not change passes the check again (RacyFiles.settle)', () => {
  it('whatever its nanosecond mtime: compared in the form the walk records (nanoseconds / 1e6), not stat().mtimeMs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-racy-same-'));
    const file = join(dir, 'f.bin');
    const data = pseudoRandom(4096, 77);
    await writeFile(file, data);
    const digest = digestOf('blake3', data);
    const secNs = BigInt(Math.floor(Date.now() / 1000) - 1) * 1_000_000_000n;
    // 40 mtimes a little under a second ago; stat().mtimeMs differs from nanoseconds / 1e6 in
    // the last bit for about a quarter of them (55 of 200 measured), so some always do.
    for (let k = 0; k < 40; k++) {
      const ns = secNs + BigInt(123_456_789 + k * 7_654_321);
      setTimesNs(file, ns, ns);
      const mtimeExactMs = Number((await stat(file, { bigint: true })).mtimeNs) / 1e6;
      const racy = new RacyFiles('blake3');
      racy.note(file, data.length, mtimeExactMs, digest, mtimeExactMs);
      assert.equal(racy.count, 1, 'noted: read within its window');
      await racy.settle();
    }
    await rm(dir, { recursive: true, force: true });
  });
});

describe('a single file pushed right after it was written passes its racy check when unchanged', () => {
  it('with an mtime whose stat().mtimeMs differs from nanoseconds / 1e6: its check compares the walk\'s form, as a tree\'s files do', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-racy-single-'));
    try {
      const file = join(dir, 'fresh.bin');
      const data = pseudoRandom(64 * 1024, 78);
      await writeFile(file, data);
      // An mtime just ahead of the clock (so the push notes the file as racily clean and
      // checks it again before the commit) on which the two forms differ in the last bit.
      const aheadNs = (BigInt(Date.now()) + 200n) * 1_000_000n;
      let differs = false;
      for (let k = 0; k < 40 && !differs; k++) {
        const ns = aheadNs + BigInt(123_457 + k * 7_654_321);
        setTimesNs(file, ns, ns);
        differs = (await stat(file)).mtimeMs !== Number((await stat(file, { bigint: true })).mtimeNs) / 1e6;
      }
      assert.ok(differs, 'an mtime on which stat().mtimeMs and nanoseconds / 1e6 differ');
      const r = await push(file, join(dir, 'out') + '/');
      assert.equal(r.bytesTotal, data.length);
      assert.ok((await readFile(join(dir, 'out', 'fresh.bin'))).equals(data));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
