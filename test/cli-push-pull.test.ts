import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { PACK_TARGET_BYTES } from '../src/store/pack.js';
import { damageStoredChunk, storedChunks } from './helpers/damage.js';
import { pseudoRandom } from './helpers/gen.js';
import { isOneLineError, runCli, sha256File, writeRandomFile } from './helpers/cli.js';

const MiB = 1024 * 1024;

interface PushJson {
  bytesTotal: number;
  bytesSent: number;
  chunksTotal: number;
  chunksSent: number;
  chunksReused: number;
  seconds: number;
}

describe('xfer push / pull / verify to a local directory', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function roundTrip(name: string, data: Buffer): Promise<PushJson> {
    const src = join(dir, 'src', name);
    await mkdir(join(dir, 'src'), { recursive: true });
    await writeFile(src, data);
    const backup = join(dir, `backup-${name}`);
    await mkdir(backup, { recursive: true });
    const p = await runCli(['push', src, backup, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const r = JSON.parse(p.stdout) as PushJson;
    assert.equal(r.bytesTotal, data.length);
    assert.ok((await readFile(join(backup, name))).equals(data), 'target rebuilt bit-identically');
    const out = join(dir, 'restored', name);
    await mkdir(join(dir, 'restored'), { recursive: true });
    const q = await runCli(['pull', join(backup, name), out, '--json']);
    assert.equal(q.code, 0, q.stderr);
    assert.ok((await readFile(out)).equals(data), 'pulled bit-identically');
    const v = await runCli(['verify', backup]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    return r;
  }

  const sizes: [string, number][] = [
    ['empty', 0], ['one-byte', 1], ['below-min', 16 * 1024 - 1], ['exactly-min', 16 * 1024], ['exactly-max', 256 * 1024],
    ['max-plus-one', 256 * 1024 + 1], ['segment-minus-one', 16 * MiB - 1], ['segment', 16 * MiB], ['segment-plus-one', 16 * MiB + 1],
    ['three-segments', 48 * MiB + 12345],
  ];
  for (const [name, size] of sizes) {
    it(`round-trips a ${name} file (${size} bytes)`, async () => {
      const r = await roundTrip(name, pseudoRandom(size, size + 1));
      if (size === 0) assert.equal(r.chunksTotal, 0);
      else assert.ok(r.chunksTotal >= 1);
      assert.equal(r.chunksSent + r.chunksReused, r.chunksTotal);
    });
  }

  // Over a pack's target size (its chunks go to two packs), and not a whole number of segments.
  const LARGE_BYTES = PACK_TARGET_BYTES + 128 * MiB + 12345;
  it(`round-trips a file larger than a pack (${LARGE_BYTES} bytes) and removes it afterwards`, async () => {
    const big = join(dir, 'big');
    await mkdir(big);
    try {
      const src = join(big, 'large.bin');
      await writeRandomFile(src, LARGE_BYTES, 42);
      const want = await sha256File(src);
      const p = await runCli(['push', src, join(big, 'backup/'), '--json']);
      assert.equal(p.code, 0, p.stderr);
      assert.equal(JSON.parse(p.stdout).bytesTotal, LARGE_BYTES);
      assert.equal(await sha256File(join(big, 'backup', 'large.bin')), want);
      assert.ok((await readdir(join(big, 'backup', '.xfer', 'packs'))).filter((n) => n.endsWith('.pack')).length >= 2, 'its chunks fill more than one pack');
      const q = await runCli(['pull', join(big, 'backup', 'large.bin'), join(big, 'pulled.bin'), '--json']);
      assert.equal(q.code, 0, q.stderr);
      assert.equal(await sha256File(join(big, 'pulled.bin')), want);
    } finally {
      await rm(big, { recursive: true, force: true });
    }
  });

  it('after one 4 KiB overwrite in a 256 MiB file, a second push writes at most 3 new chunks', async () => {
    const src = join(dir, 'dedup.bin');
    await writeRandomFile(src, 256 * MiB, 7);
    const backup = join(dir, 'dedup-backup');
    const first = await runCli(['push', src, `${backup}/`, '--json']);
    assert.equal(first.code, 0, first.stderr);
    const r1 = JSON.parse(first.stdout) as PushJson;
    assert.equal(r1.chunksSent, r1.chunksTotal);
    const fh = await open(src, 'r+');
    await fh.write(pseudoRandom(4096, 999), 0, 4096, 100 * MiB + 777);
    await fh.close();
    const second = await runCli(['push', src, `${backup}/`, '--json']);
    assert.equal(second.code, 0, second.stderr);
    const r2 = JSON.parse(second.stdout) as PushJson;
    assert.ok(r2.chunksSent >= 1 && r2.chunksSent <= 3, `sent ${r2.chunksSent} chunks`);
    assert.ok(r2.bytesSent <= 3 * 256 * 1024);
    assert.equal(r2.chunksReused, r2.chunksTotal - r2.chunksSent);
    assert.equal(await sha256File(join(backup, 'dedup.bin')), await sha256File(src));
  });

  it('round-trips a tree with nested dirs, symlinks, empty files and empty dirs', async () => {
    const tree = join(dir, 'tree');
    await mkdir(join(tree, 'a', 'b', 'c'), { recursive: true });
    await mkdir(join(tree, 'empty-dir'));
    await writeFile(join(tree, 'a', 'b', 'c', 'deep.bin'), pseudoRandom(300_000, 5));
    await writeFile(join(tree, 'a', 'empty.txt'), '');
    await writeFile(join(tree, 'top.txt'), 'hello\n');
    await writeFile(join(tree, 'a', 'dup.bin'), pseudoRandom(300_000, 5));
    await symlink('a/b/c/deep.bin', join(tree, 'link-to-deep'));
    await symlink('does-not-exist', join(tree, 'dangling'));
    const backup = join(dir, 'tree-backup');
    await mkdir(backup);
    const p = await runCli(['push', tree, backup, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const r = JSON.parse(p.stdout) as PushJson;
    assert.ok(r.chunksReused > 0, 'the duplicate file reuses chunks');
    const check = async (root: string) => {
      assert.ok((await readFile(join(root, 'a', 'b', 'c', 'deep.bin'))).equals(pseudoRandom(300_000, 5)));
      assert.equal((await readFile(join(root, 'a', 'empty.txt'))).length, 0);
      assert.equal(await readFile(join(root, 'top.txt'), 'utf8'), 'hello\n');
      assert.deepEqual(await readdir(join(root, 'empty-dir')), []);
      assert.equal(await readlink(join(root, 'link-to-deep')), 'a/b/c/deep.bin');
      assert.equal(await readlink(join(root, 'dangling')), 'does-not-exist');
      assert.ok((await lstat(join(root, 'dangling'))).isSymbolicLink());
    };
    await check(join(backup, 'tree'));
    const q = await runCli(['pull', join(backup, 'tree'), join(dir, 'tree-restored')]);
    assert.equal(q.code, 0, q.stderr);
    await check(join(dir, 'tree-restored'));
    // a second push of the unchanged tree sends nothing
    const again = JSON.parse((await runCli(['push', tree, backup, '--json'])).stdout) as PushJson;
    assert.equal(again.chunksSent, 0);
  });

  it('pull of an existing identical file keeps it; a damaged one is rebuilt from what is intact', async () => {
    const data = pseudoRandom(3 * MiB, 77);
    await roundTrip('reuse.bin', data);
    const dest = join(dir, 'restored', 'reuse.bin');
    const before = await stat(dest);
    const q = await runCli(['pull', join(dir, 'backup-reuse.bin', 'reuse.bin'), dest, '--json']);
    assert.equal(q.code, 0, q.stderr);
    const r = JSON.parse(q.stdout);
    assert.equal(r.bytesReceived, 0);
    assert.equal(r.bytesReused, data.length);
    assert.equal((await stat(dest)).ino, before.ino, 'an identical destination is not rewritten');
    // same size, one byte different: rebuilt, with every other chunk taken from the old file
    const damaged = Buffer.from(data);
    damaged[MiB] ^= 1;
    await writeFile(dest, damaged);
    const q2 = await runCli(['pull', join(dir, 'backup-reuse.bin', 'reuse.bin'), dest, '--json']);
    assert.equal(q2.code, 0, q2.stderr);
    const r2 = JSON.parse(q2.stdout);
    assert.ok(r2.bytesReceived > 0 && r2.bytesReceived <= 256 * 1024, `received ${r2.bytesReceived}`);
    assert.equal(r2.bytesReceived + r2.bytesReused, data.length);
    assert.ok((await readFile(dest)).equals(data));
  });

  it("removes a killed push's staging copy beside the target at the next push, and no one else's", async () => {
    const backup = join(dir, 'backup-orphans');
    await mkdir(backup, { recursive: true });
    const host = hostname().replace(/[^A-Za-z0-9_.-]/g, '_');
    // A pid that was alive and is not any more.
    const dead = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, ['-e', '']);
      child.on('exit', () => resolve(child.pid!));
    });
    const orphan = join(backup, `.xfer-orph.bin.${host}~${dead}-0a1b2c3d4e5f.tmp`);
    const live = join(backup, `.xfer-orph.bin.${host}~${process.pid}-0a1b2c3d4e5f.tmp`);
    const elsewhere = join(backup, `.xfer-orph.bin.other-host~${dead}-0a1b2c3d4e5f.tmp`);
    for (const f of [orphan, live, elsewhere]) await writeFile(f, 'partial copy');
    const src = join(dir, 'orph.bin');
    await writeFile(src, pseudoRandom(100_000, 5));
    const p = await runCli(['push', src, `${backup}/`]);
    assert.equal(p.code, 0, p.stderr);
    await assert.rejects(stat(orphan), /ENOENT/, 'the dead process\'s staging copy is gone');
    await stat(live); // a live process's stays
    await stat(elsewhere); // and so does another host's
  });

  it('pushes standard input (size unknown until it ends) and pulls it back identical', async () => {
    const data = pseudoRandom(3 * 4 * 1024 * 1024 + 5, 77); // three direct-write blocks and 5 bytes
    const backup = join(dir, 'backup-stdin');
    const p = await runCli(['push', '-', join(backup, 'stream.bin'), '--json'], { input: data });
    assert.equal(p.code, 0, p.stderr);
    assert.equal(JSON.parse(p.stdout).bytesTotal, data.length);
    assert.ok((await readFile(join(backup, 'stream.bin'))).equals(data), 'the rebuilt target has exactly the bytes read');
    const out = join(dir, 'stdin-back.bin');
    const q = await runCli(['pull', join(backup, 'stream.bin'), out]);
    assert.equal(q.code, 0, q.stderr);
    assert.ok((await readFile(out)).equals(data));
    // Standard input redirected from a file (read in large pieces) gives the same result.
    const src = join(dir, 'stdin-src.bin');
    await writeFile(src, data);
    const fh = await open(src, 'r');
    try {
      const r = await runCli(['push', '-', join(backup, 'redirected.bin'), '--json'], { inputFd: fh.fd });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).bytesTotal, data.length);
    } finally {
      await fh.close();
    }
    assert.ok((await readFile(join(backup, 'redirected.bin'))).equals(data));
  });

  it('refuses, before any work, a push that would put a copy inside a pushed tree', async () => {
    const tree = join(dir, 'study');
    await mkdir(join(tree, 'series'), { recursive: true });
    await writeFile(join(tree, 'series', 'a.dcm'), pseudoRandom(5000, 1));
    const backup = join(dir, 'backup-nest');
    assert.equal((await runCli(['push', tree, `${backup}/`])).code, 0);
    const before = (await readdir(join(backup, 'study'))).sort();
    // A file pushed into the tree would get a store inside it; so would a tree pushed to
    // study/ (a tree pushed to study itself updates it: test/cli-repush.test.ts).
    for (const [src, dest] of [[join(tree, 'series', 'a.dcm'), join(backup, 'study', 'x.dcm')], [tree, `${join(backup, 'study')}/`]] as const) {
      const r = await runCli(['push', src, dest]);
      assert.equal(r.code, 5, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, /study is a pushed tree: a copy cannot go inside it\. To replace it, push a tree to .*study \(no trailing \/\)/);
    }
    assert.deepEqual((await readdir(join(backup, 'study'))).sort(), before, 'nothing was written inside the pushed tree');
    const replace = await runCli(['push', tree, `${backup}/`, '--json']);
    assert.equal(replace.code, 0, replace.stderr);
  });

  it('a damaged chunk in the middle of a tree fails its pull cleanly while other files are in flight', async () => {
    const tree = join(dir, 'many');
    await mkdir(tree, { recursive: true });
    const files = Array.from({ length: 60 }, (_, i) => pseudoRandom(3000 + i * 500, 300 + i));
    for (const [i, f] of files.entries()) await writeFile(join(tree, `f${String(i).padStart(2, '0')}.bin`), f);
    const backup = join(dir, 'backup-many');
    const p = await runCli(['push', tree, `${backup}/`]);
    assert.equal(p.code, 0, p.stderr);
    // Damage the chunk of the 31st file (each file is one chunk).
    const victim = digestOf('blake3', files[30]!);
    await damageStoredChunk(join(backup, '.xfer'), { algorithm: 'blake3', digest: victim }, 7);
    const outParent = join(dir, 'many-out');
    await mkdir(outParent);
    const q = await runCli(['pull', join(backup, 'many'), join(outParent, 'copy')]);
    assert.equal(q.code, 7, q.stderr);
    assert.ok(isOneLineError(q.stderr), q.stderr);
    assert.match(q.stderr, new RegExp(`chunk ${victim.toString('hex')} is corrupt`));
    // No destination; only the partial a pull keeps for resuming.
    assert.deepEqual(await readdir(outParent), ['.xfer-copy.partial']);
    const again = await runCli(['pull', join(backup, 'many'), join(outParent, 'copy')]);
    assert.equal(again.code, 7, again.stderr);
    assert.deepEqual(await readdir(outParent), ['.xfer-copy.partial']);
  });

  it('a flipped byte in a stored chunk is detected by pull and by verify', async () => {
    const data = pseudoRandom(2 * MiB, 1234);
    await roundTrip('flip.bin', data);
    const backup = join(dir, 'backup-flip.bin');
    const [victim] = await storedChunks(join(backup, '.xfer'));
    await damageStoredChunk(join(backup, '.xfer'), victim!, 1000);
    const v = await runCli(['verify', backup, '--read-data']);
    assert.equal(v.code, 1);
    assert.match(v.stdout, /DAMAGED flip\.bin: corrupt chunk [0-9a-f]{64}/);
    const vj = await runCli(['verify', join(backup, 'flip.bin'), '--json', '--read-data']);
    assert.equal(vj.code, 1);
    assert.equal(JSON.parse(vj.stdout).damaged[0].kind, 'corrupt');
    const out = join(dir, 'flip-out.bin');
    const q = await runCli(['pull', join(backup, 'flip.bin'), out]);
    assert.equal(q.code, 7, q.stderr);
    assert.ok(isOneLineError(q.stderr), q.stderr);
    assert.match(q.stderr, /corrupt/);
    await assert.rejects(stat(out), /ENOENT/, 'no partial destination is left');
  });

  it('verify --read-data reads every rebuilt file: a byte flipped in the copy (mtime kept) or a deleted file of a tree is damage', async () => {
    const data = pseudoRandom(1 * MiB, 4321);
    await roundTrip('copyflip.bin', data);
    const backup = join(dir, 'backup-copyflip.bin');
    const copy = join(backup, 'copyflip.bin');
    const before = await stat(copy);
    const fh = await open(copy, 'r+');
    await fh.write(Buffer.from([data[5000]! ^ 0xff]), 0, 1, 5000);
    await fh.close();
    await utimes(copy, before.atime, before.mtime);
    const v = await runCli(['verify', backup, '--read-data']);
    assert.equal(v.code, 1, v.stdout);
    assert.match(v.stdout, /DAMAGED copyflip\.bin: file: the rebuilt file's content differs from its manifest/);
    assert.match(v.stdout, /1 rebuilt file checked, 1 problem$/m);
    // The chunks themselves are intact: --chunks-only says ok.
    assert.equal((await runCli(['verify', backup, '--chunks-only', '--read-data'])).code, 0);

    const tree = join(dir, 'src', 'vtree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.txt'), 'alpha');
    await writeFile(join(tree, 'sub', 'b.txt'), 'beta');
    const tb = join(dir, 'backup-vtree');
    await mkdir(tb);
    assert.equal((await runCli(['push', tree, tb])).code, 0);
    assert.equal((await runCli(['verify', tb])).code, 0);
    await rm(join(tb, 'vtree', 'sub', 'b.txt'));
    const vt = await runCli(['verify', join(tb, 'vtree'), '--json']);
    assert.equal(vt.code, 1);
    const r = JSON.parse(vt.stdout);
    assert.deepEqual(r.damaged.map((d: { path: string; kind: string }) => [d.path, d.kind]), [['sub/b.txt', 'file']]);
    assert.match(r.damaged[0].message, /missing/);
  });

  it('xfer manifest show prints a pushed target, as text and as JSON', async () => {
    const data = pseudoRandom(700_000, 21);
    await roundTrip('shown.bin', data);
    const target = join(dir, 'backup-shown.bin', 'shown.bin');
    const j = await runCli(['manifest', 'show', target, '--json']);
    assert.equal(j.code, 0, j.stderr);
    const m = JSON.parse(j.stdout);
    assert.equal(m.kind, 'file');
    assert.equal(m.totalBytes, data.length);
    assert.equal(m.digestAlgorithm, 'blake3');
    assert.equal(m.chunker.algorithm, 'fastcdc2020');
    assert.equal(m.entries[0].chunks.reduce((n: number, c: { length: number }) => n + c.length, 0), data.length);
    assert.equal(m.entries[0].chunks[1].offset, m.entries[0].chunks[0].length);
    const t = await runCli(['manifest', 'show', join(dir, 'backup-shown.bin', '.xfer', 'manifests', 'shown.bin')]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /fastcdc2020/);
    assert.match(t.stdout, new RegExp(m.digest));
    assert.ok(t.stdout.split('\n').length > m.chunkCount, 'one line per chunk');
  });

  it('xfer chunk --json reports sizes, dedup and the whole-file digest', async () => {
    const f = join(dir, 'chunk-me.bin');
    const block = pseudoRandom(MiB, 3);
    await writeFile(f, Buffer.concat([block, block, block]));
    const c = await runCli(['chunk', f, '--json']);
    assert.equal(c.code, 0, c.stderr);
    const j = JSON.parse(c.stdout);
    assert.equal(j.size, 3 * MiB);
    assert.ok(j.chunks > j.distinctChunks, 'repeated blocks dedup');
    assert.ok(j.distinctBytes < 2 * MiB);
    assert.match(j.digest, /^[0-9a-f]{64}$/);
    assert.equal(typeof j.seconds, 'number');
    const l = await runCli(['chunk', f, '--json', '--list', '--fixed', '64K', '--digest', 'sha256']);
    assert.equal(l.code, 0, l.stderr);
    const lj = JSON.parse(l.stdout);
    assert.equal(lj.list.length, 48);
    assert.deepEqual(lj.list[1], { offset: 65536, length: 65536, digest: lj.list[17].digest });
    assert.equal(lj.digest, (await sha256File(f)));
    const s = await runCli(['chunk', '-', '--json'], { input: Buffer.concat([block, block, block]) });
    assert.equal(JSON.parse(s.stdout).digest, j.digest, 'stdin gives the same digest as the file');
  });

  describe('bad input gets one clear line and a non-zero exit', () => {
    const cases: [string, string[], number, RegExp][] = [
      ['missing source', ['push', '/nonexistent/file', '/tmp/x'], 3, /nonexistent\/file: no such file/],
      ['min larger than avg', ['chunk', '/etc/hostname', '--min', '128K', '--avg', '64K'], 2, /minimum 131072 is larger than average 65536/],
      ['invalid size', ['chunk', '/etc/hostname', '--avg', '12Q'], 2, /invalid --avg size "12Q"/],
      ['unknown digest', ['chunk', '/etc/hostname', '--digest', 'md5'], 2, /unknown digest "md5"/],
      ['fixed with cdc sizes', ['chunk', '/etc/hostname', '--fixed', '64K', '--min', '4K'], 2, /--fixed cannot be combined/],
      ['pull from nowhere', ['pull', '/nonexistent/dir/name', '/tmp/y'], 3, /no xfer store/],
      ['retries not a count', ['push', '/etc/hostname', 'http://127.0.0.1:9/x', '--retries', 'many'], 2, /--retries: expected a whole number from 0 to 999, got "many"/],
      ['negative retries', ['pull', 'http://127.0.0.1:9/x', '/tmp/y', '--retries', '-1'], 2, /--retries: expected a whole number/],
      ['no server at first contact: no retries', ['push', '/etc/hostname', 'http://127.0.0.1:9/x'], 14, /cannot reach http:\/\/127\.0\.0\.1:9: connection refused \(is xfer serve running there, on that port\?\)$/m],
    ];
    for (const [name, args, code, re] of cases) {
      it(name, async () => {
        const r = await runCli(args);
        assert.equal(r.code, code, r.stderr);
        assert.ok(isOneLineError(r.stderr), r.stderr);
        assert.match(r.stderr, re);
      });
    }

    it('a missing temp directory (TMPDIR)', async () => {
      const d = await mkdtemp(join(tmpdir(), 'xfer-notmp-'));
      try {
        const r = await runCli(['push', '/etc/hostname', join(d, 'dest/')], { env: { ...process.env, TMPDIR: join(d, 'no-such-tmp') } });
        assert.equal(r.code, 3, r.stderr);
        assert.ok(isOneLineError(r.stderr), r.stderr);
        assert.match(r.stderr, /no-such-tmp: no such file or directory/);
      } finally {
        await rm(d, { recursive: true, force: true });
      }
    });

    it('unreadable source (permission denied)', async () => {
      // root reads everything, so as root the CLI runs as nobody (uid/gid 65534)
      const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
      const open = await mkdtemp(join(tmpdir(), 'xfer-perm-'));
      try {
        await chmod(open, 0o777);
        const f = join(open, 'secret.bin');
        await writeFile(f, 'x', { mode: 0o000 });
        await chmod(f, 0o000);
        const r = await runCli(['push', f, join(open, 'perm/')], asNobody);
        assert.equal(r.code, 4, r.stderr);
        assert.ok(isOneLineError(r.stderr), r.stderr);
        assert.match(r.stderr, /secret\.bin: permission denied/);
      } finally {
        await rm(open, { recursive: true, force: true });
      }
    });

    it('a corrupt manifest', async () => {
      await roundTrip('manifest-victim.bin', pseudoRandom(100_000, 9));
      const m = join(dir, 'backup-manifest-victim.bin', '.xfer', 'manifests', 'manifest-victim.bin');
      const bytes = await readFile(m);
      bytes[bytes.length - 3] ^= 1;
      await writeFile(m, bytes);
      const q = await runCli(['pull', join(dir, 'backup-manifest-victim.bin', 'manifest-victim.bin'), join(dir, 'mv-out')]);
      assert.equal(q.code, 8, q.stderr);
      assert.ok(isOneLineError(q.stderr), q.stderr);
      const s = await runCli(['manifest', 'show', m]);
      assert.equal(s.code, 8);
      const v = await runCli(['verify', join(dir, 'backup-manifest-victim.bin')]);
      assert.equal(v.code, 1);
      assert.match(v.stdout, /manifest/);
    });
  });
});
