/**
 * A tree keeps what `rsync -aHAX` keeps, through a local push, a push to a server and pulls
 * back: owners and groups (ids, and names mapped as rsync maps them), hard links, xattrs and
 * POSIX ACLs, FIFOs and device nodes, mtimes to the nanosecond, the root's own mode and
 * time; sockets are skipped with a notice. The server's copy, a trust boundary, gets no
 * device nodes, no security.* or trusted.* xattrs and no setuid bits, and a pull restores them
 * from the manifest. Runs as root (as tests and CI do).
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { chmod, lchown, lstat, mkdir, writeFile, link, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { setTimesNs, listXattrs, setXattr, makeNode, userId, groupId } from '../src/io/sys.js';
import { attributePolicy, localOwner } from '../src/reconstruct/attributes.js';
import { deviceNumber } from '../src/reconstruct/staging.js';
import { pull, push } from '../src/api.js';
import { runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

const NOBODY = userId('nobody')!;
const NOGROUP = groupId('nogroup')!;

/** Times with nanoseconds past the millisecond (and one whole millisecond). */
const NS = {
  root: 1_700_000_000_111_222_333n,
  sub: 1_700_000_001_000_000_001n,
  file: 1_700_000_002_123_456_789n,
  link: 1_700_000_003_999_999_999n,
  whole: 1_700_000_004_000_000_000n,
};

const BINARY = Buffer.from([0, 0xff, 0, 1, 0x80, 10]);

/** The source tree: every kind of entry and metadata. */
async function makeTree(src: string): Promise<void> {
  await mkdir(join(src, 'sub', 'deep'), { recursive: true });
  await mkdir(join(src, 'other'));
  await mkdir(join(src, 'acld'));
  await writeFile(join(src, 'owned'), 'owned by 1234:5678\n');
  await lchown(join(src, 'owned'), 1234, 5678);
  await writeFile(join(src, 'nobody.txt'), 'owned by nobody:nogroup\n');
  await lchown(join(src, 'nobody.txt'), NOBODY, NOGROUP);
  await writeFile(join(src, 'sub', 'a'), 'three names, one inode\n');
  await link(join(src, 'sub', 'a'), join(src, 'sub', 'b'));
  await link(join(src, 'sub', 'a'), join(src, 'other', 'c'));
  await writeFile(join(src, 'xattrs.txt'), 'with xattrs\n');
  setXattr(join(src, 'xattrs.txt'), 'user.text', Buffer.from('hello'));
  setXattr(join(src, 'xattrs.txt'), 'user.bin', BINARY);
  setXattr(join(src, 'xattrs.txt'), 'trusted.secret', Buffer.from('root only'));
  await writeFile(join(src, 'acl.txt'), 'with an ACL\n');
  execFileSync('setfacl', ['-m', 'u:1234:rwx,g:5678:r', join(src, 'acl.txt')]);
  execFileSync('setfacl', ['-d', '-m', 'u:1234:rx', join(src, 'acld')]);
  await writeFile(join(src, 'suid'), '#!/bin/sh\n');
  await chmod(join(src, 'suid'), 0o4755);
  makeNode(join(src, 'fifo'), 'fifo', 0o640);
  makeNode(join(src, 'null'), 'char', 0o666, 1, 3);
  makeNode(join(src, 'blk'), 'block', 0o660, 7, 200);
  execFileSync(process.execPath, ['-e', 'require("net").createServer().listen(process.argv[1], () => process.exit(0))', join(src, 'sock')]);
  await symlink('sub/a', join(src, 'link'));
  await lchown(join(src, 'link'), 1234, 5678);
  await lchown(join(src, 'other'), 4321, 8765);
  await writeFile(join(src, 'whole-ms'), 'x');
  await chmod(join(src, 'sub'), 0o750);
  await chmod(src, 0o751);
  // Times last, deepest first: making entries moves their directory's time.
  setTimesNs(join(src, 'link'), NS.link, NS.link);
  setTimesNs(join(src, 'xattrs.txt'), NS.file, NS.file);
  setTimesNs(join(src, 'whole-ms'), NS.whole, NS.whole);
  setTimesNs(join(src, 'sub', 'deep'), NS.sub, NS.sub);
  setTimesNs(join(src, 'sub'), NS.sub, NS.sub);
  setTimesNs(src, NS.root, NS.root);
}

/** `rsync -aHAX --dry-run --itemize-changes --checksum`: one line per difference, none if identical (the skipped socket aside). */
function rsyncDifferences(src: string, copy: string): string[] {
  const out = execFileSync('rsync', ['-aHAX', '--dry-run', '--itemize-changes', '--checksum', '--exclude=/sock', `${src}/`, `${copy}/`]).toString();
  return out.split('\n').filter((l) => l.trim() !== '');
}

function getfacl(path: string): string {
  return execFileSync('getfacl', ['--omit-header', '--numeric', path]).toString();
}

async function ok(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `xfer ${args.join(' ')}: ${r.stderr}`);
  return r;
}

describe('trees keep what rsync -aHAX keeps, locally, through a server and back', () => {
  const fx = useServer('xfer-meta-');
  const at = {} as { src: string; local: string; pulledLocal: string; served: string; pulledRemote: string; pushStderr: string };

  before(async () => {
    at.src = join(fx.dir, 'tree');
    await mkdir(at.src);
    await makeTree(at.src);
    at.pushStderr = (await ok(['push', '-q', at.src, `${join(fx.dir, 'backup')}/`])).stderr;
    at.local = join(fx.dir, 'backup', 'tree');
    // Pulled into a directory (cp's rule: <dir>/tree), so that the same command updates it again.
    // The rest through the API, in this process: the same code, without a CLI start each.
    at.pulledLocal = join(fx.dir, 'pulled-local', 'tree');
    await pull(at.local, `${join(fx.dir, 'pulled-local')}/`);
    await push(at.src, `${fx.server.url}/`);
    at.served = join(fx.root, 'files', 'tree');
    at.pulledRemote = join(fx.dir, 'pulled-remote', 'tree');
    await pull(`${fx.server.url}/tree`, `${join(fx.dir, 'pulled-remote')}/`);
  });

  it('rsync -aHAX --itemize-changes --checksum finds no difference between the source and a local push, its pull, or a pull from a server', () => {
    for (const copy of [at.local, at.pulledLocal, at.pulledRemote]) assert.deepEqual(rsyncDifferences(at.src, copy), [], copy);
  });

  it('owner and group ids are kept, numeric ones and named ones (nobody:nogroup), on files, directories and symlinks', async () => {
    for (const copy of [at.local, at.pulledLocal, at.served, at.pulledRemote]) {
      const owned = await lstat(join(copy, 'owned'));
      assert.deepEqual([owned.uid, owned.gid], [1234, 5678], copy);
      const nobody = await lstat(join(copy, 'nobody.txt'));
      assert.deepEqual([nobody.uid, nobody.gid], [NOBODY, NOGROUP], copy);
      const dir = await lstat(join(copy, 'other'));
      assert.deepEqual([dir.uid, dir.gid], [4321, 8765], `directory in ${copy}`);
      const link = await lstat(join(copy, 'link'));
      assert.deepEqual([link.uid, link.gid], [1234, 5678], `symlink in ${copy}`);
    }
  });

  it('owners are mapped by name where the name exists here, else by number; --numeric-ids uses numbers only', async () => {
    const meta = { type: 'file' as const, path: 'f', mode: 0o644, mtimeMs: 0, size: 0, uid: 4321, gid: 8765, owner: 'nobody', group: 'nogroup' };
    assert.deepEqual(localOwner(meta, attributePolicy()), { uid: NOBODY, gid: NOGROUP });
    assert.deepEqual(localOwner(meta, attributePolicy({ numericIds: true })), { uid: 4321, gid: 8765 });
    assert.deepEqual(localOwner({ ...meta, owner: 'no-such-user-xfer', group: 'no-such-group-xfer' }, attributePolicy()), { uid: 4321, gid: 8765 });
    // A push with --numeric-ids records the numbers without names.
    await ok(['push', '-q', '--numeric-ids', at.src, join(fx.dir, 'numeric', 'tree')]);
    const shown = JSON.parse((await ok(['manifest', 'show', '--json', join(fx.dir, 'numeric', 'tree')])).stdout);
    const nobody = shown.entries.find((e: { path: string }) => e.path === 'nobody.txt');
    assert.deepEqual([nobody.uid, nobody.gid, nobody.owner, nobody.group], [NOBODY, NOGROUP, undefined, undefined]);
    const pulled = join(fx.dir, 'numeric-pulled');
    await pull(join(fx.dir, 'numeric', 'tree'), pulled, { numericIds: true });
    assert.equal((await lstat(join(pulled, 'owned'))).uid, 1234);
  });

  it('hard links stay links within the tree: two names, across directories, a link count of 3', async () => {
    for (const copy of [at.local, at.pulledLocal, at.served, at.pulledRemote]) {
      const [a, b, c] = await Promise.all(['sub/a', 'sub/b', 'other/c'].map((p) => lstat(join(copy, p))));
      assert.equal(a!.ino, b!.ino, copy);
      assert.equal(a!.ino, c!.ino, copy);
      assert.equal(a!.nlink, 3, copy);
    }
  });

  it('xattrs are kept, binary values included, and POSIX ACLs (access and default) read the same with getfacl', async () => {
    for (const copy of [at.local, at.pulledLocal, at.pulledRemote]) {
      const x = new Map(listXattrs(join(copy, 'xattrs.txt')).map((a) => [a.name, a.value.toString('hex')]));
      assert.equal(x.get('user.text'), Buffer.from('hello').toString('hex'), copy);
      assert.equal(x.get('user.bin'), BINARY.toString('hex'), copy);
      assert.equal(x.get('trusted.secret'), Buffer.from('root only').toString('hex'), copy);
      for (const p of ['acl.txt', 'acld']) assert.equal(getfacl(join(copy, p)), getfacl(join(at.src, p)), `${p} in ${copy}`);
    }
    assert.equal(getfacl(join(at.served, 'acl.txt')), getfacl(join(at.src, 'acl.txt')));
  });

  it('FIFOs, character and block devices are recreated by a local push and by pulls', async () => {
    for (const copy of [at.local, at.pulledLocal, at.pulledRemote]) {
      assert.ok((await lstat(join(copy, 'fifo'))).isFIFO(), copy);
      const nul = await lstat(join(copy, 'null'), { bigint: true });
      assert.ok(nul.isCharacterDevice() && deviceNumber(nul.rdev) === '1,3', copy);
      const blk = await lstat(join(copy, 'blk'), { bigint: true });
      assert.ok(blk.isBlockDevice() && deviceNumber(blk.rdev) === '7,200', copy);
      assert.equal(Number(blk.mode & 0o7777n), 0o660);
    }
  });

  it('a socket is skipped with a notice, and the push still succeeds', async () => {
    assert.match(at.pushStderr, /^xfer: skipped \S+\/sock: a socket/m);
    await assert.rejects(lstat(join(at.local, 'sock')), /ENOENT/);
  });

  it('mtimes are kept to the nanosecond on files, directories and symlinks, and the root keeps its mode and mtime', async () => {
    for (const copy of [at.local, at.pulledLocal, at.served, at.pulledRemote]) {
      const ns = async (p: string) => (await lstat(join(copy, p), { bigint: true })).mtimeNs;
      assert.equal(await ns('xattrs.txt'), NS.file, copy);
      assert.equal(await ns('whole-ms'), NS.whole, copy);
      assert.equal(await ns('sub'), NS.sub, copy);
      assert.equal(await ns('sub/deep'), NS.sub, copy);
      assert.equal(await ns('link'), NS.link, copy);
      assert.equal(await ns(''), NS.root, copy);
      assert.equal((await lstat(copy)).mode & 0o7777, 0o751, copy);
      assert.equal((await lstat(join(copy, 'sub'))).mode & 0o7777, 0o750, copy);
    }
  });

  it('the server\'s copy gets no device nodes, no trusted.* xattrs and no setuid bit; a pull from it restores them', async () => {
    await assert.rejects(lstat(join(at.served, 'null')), /ENOENT/);
    await assert.rejects(lstat(join(at.served, 'blk')), /ENOENT/);
    assert.ok((await lstat(join(at.served, 'fifo'))).isFIFO());
    const names = listXattrs(join(at.served, 'xattrs.txt')).map((x) => x.name);
    assert.deepEqual(names, ['user.bin', 'user.text']);
    assert.equal((await lstat(join(at.served, 'suid'))).mode & 0o7777, 0o755);
    assert.equal((await lstat(join(at.pulledRemote, 'suid'))).mode & 0o7777, 0o4755);
    assert.ok((await lstat(join(at.pulledRemote, 'null'))).isCharacterDevice());
  });

  it('a second pull of an unchanged tree receives nothing and rewrites nothing: inodes and ctimes unchanged', async () => {
    const paths = ['', 'owned', 'sub', 'sub/a', 'sub/b', 'xattrs.txt', 'acl.txt', 'acld', 'link', 'fifo', 'null', 'blk'];
    for (const [source, copy] of [[at.local, at.pulledLocal], [`${fx.server.url}/tree`, at.pulledRemote]] as const) {
      const into = `${join(copy, '..')}/`;
      const before = await Promise.all(paths.map(async (p) => { const s = await lstat(join(copy, p), { bigint: true }); return `${p} ${s.ino} ${s.ctimeNs}`; }));
      assert.equal((await pull(source, into)).bytesReceived, 0);
      const after = await Promise.all(paths.map(async (p) => { const s = await lstat(join(copy, p), { bigint: true }); return `${p} ${s.ino} ${s.ctimeNs}`; }));
      assert.deepEqual(after, before, copy);
    }
  });

  it('a single file keeps its owner, xattrs and nanosecond mtime: local push, the server\'s (staged) copy and a pull', async () => {
    const file = join(fx.dir, 'single.bin');
    await writeFile(file, Buffer.alloc(300_000, 7));
    await lchown(file, 1234, 5678);
    setXattr(file, 'user.note', BINARY);
    setTimesNs(file, NS.file, NS.file);
    await push(file, `${join(fx.dir, 'single-backup')}/`);
    await push(file, `${fx.server.url}/`);
    await pull(`${fx.server.url}/single.bin`, join(fx.dir, 'single-pulled.bin'));
    for (const copy of [join(fx.dir, 'single-backup', 'single.bin'), join(fx.root, 'files', 'single.bin'), join(fx.dir, 'single-pulled.bin')]) {
      const st = await lstat(copy, { bigint: true });
      assert.deepEqual([st.uid, st.gid, st.mtimeNs], [1234n, 5678n, NS.file], copy);
      assert.equal(listXattrs(copy).find((x) => x.name === 'user.note')?.value.toString('hex'), BINARY.toString('hex'), copy);
    }
  });
});
