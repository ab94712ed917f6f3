/**
 * Fidelity: a tree with every kind of entry and every piece of metadata `rsync -aHAX`
 * keeps comes out of xfer identical, as Debian's rsync judges it:
 *   rsync -aHAX --numeric-ids --checksum --dry-run --itemize-changes src/ copy/
 * prints one line per entry that differs (content, type, mode, owner, group, nanosecond
 * mtime, hard-link grouping, ACL, xattr, device numbers, symlink target), and nothing when
 * the copy is identical. Runs as root, as tests and CI do (owners, devices, trusted.*).
 *
 * Each case checks first content, structure, symlinks and permission bits (rsync -rlp
 * --checksum), then, as a subtest, every piece of metadata (rsync -aHAX), so a failure says
 * which level broke. The server's own copy is a trust boundary: it never holds device nodes
 * or trusted or security xattrs a client sent (they stay in the manifest, and a pull from
 * the server restores them, which the pull cases check in full).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmod, lchown, link, lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer as createUnixServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { groupId, listXattrs, makeNode, setTimesNs, setXattr, userId } from '../src/io/sys.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { startServeProcess } from './helpers/server.js';
import { requireTools } from './helpers/tools.js';

const MiB = 1024 * 1024;
/** Ids that name nobody on the machine: carried as numbers. */
const OTHER_UID = 1234;
const OTHER_GID = 5678;
/** A user and group every Debian system has: carried by name (and id). */
const NAMED_USER = 'daemon';
const NAMED_GROUP = 'daemon';
/** The socket: skipped by xfer with a notice (rsync would copy it), so left out of the comparison. */
const SOCKET = 'run/app.sock';
/** Entries a destination had that the source lacks. */
const EXTRAS = ['extra.txt', 'a/extra-dir/inside.bin'];

/** Every mtime is a distinct whole second plus a nanosecond part no millisecond clock has. */
const BASE_NS = 1_700_000_000_000_000_000n;
const timeNs = (i: number): bigint => BASE_NS + BigInt(i) * 1_000_000_000n + 123_456_789n + BigInt(i);

const sh = (cmd: string, args: string[]): void => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
};

/**
 * Builds the source tree at `root`; returns the listening socket's server (closed by the
 * caller). Entry times are set last, children before their directories, the root last.
 */
async function buildTree(root: string): Promise<Server> {
  const p = (rel: string) => join(root, rel);
  for (const d of ['a/b/c', 'shared', 'tmp', 'acl-dir', 'nodes', 'run']) await mkdir(p(d), { recursive: true });

  // Regular files: empty, small, a few MiB whose first two MiB repeat.
  await writeFile(p('empty'), '');
  await writeFile(p('small.txt'), 'a small file\n');
  const block = pseudoRandom(MiB, 13);
  await writeFile(p('a/big.bin'), Buffer.concat([block, block, pseudoRandom(MiB + 12_345, 14)]));
  await writeFile(p('a/b/c/deep.txt'), 'deep\n');
  await writeFile(p('a/b/secret.key'), pseudoRandom(700, 15));
  await writeFile(p('acl-dir/report.csv'), 'x,y\n1,2\n');

  // Hard links: two names across directories, three names across three directories.
  await writeFile(p('a/two-names'), 'one inode, two names\n');
  await link(p('a/two-names'), p('shared/two-names-too'));
  await writeFile(p('three-1'), pseudoRandom(5000, 16));
  await link(p('three-1'), p('a/b/three-2'));
  await link(p('three-1'), p('tmp/three-3'));

  // Symlinks: relative, absolute, dangling.
  await symlink('a/b/c/deep.txt', p('rel-link'));
  await symlink('/etc/hostname', p('abs-link'));
  await symlink('nowhere/missing', p('a/dangling'));

  // Special files: FIFO, character device (/dev/null's numbers), block device (a loop's), socket.
  makeNode(p('nodes/fifo'), 'fifo', 0o640);
  makeNode(p('nodes/null'), 'char', 0o666, 1, 3);
  makeNode(p('nodes/loop'), 'block', 0o660, 7, 123);
  const sock = createUnixServer();
  await new Promise<void>((r) => sock.listen(p(SOCKET), r));

  // Owners: ids nobody has, and a named user and group.
  const namedUid = userId(NAMED_USER);
  const namedGid = groupId(NAMED_GROUP);
  assert.ok(namedUid !== undefined && namedGid !== undefined, `user and group ${NAMED_USER}:${NAMED_GROUP} exist`);
  await lchown(p('a/b/secret.key'), OTHER_UID, OTHER_GID);
  await lchown(p('a/b'), OTHER_UID, OTHER_GID);
  await lchown(p('rel-link'), OTHER_UID, OTHER_GID);
  await lchown(p('small.txt'), namedUid, namedGid);
  await lchown(p('nodes/fifo'), namedUid, OTHER_GID);

  // Extended attributes: binary and empty user.* values on files and a directory, trusted.* (root).
  setXattr(p('small.txt'), 'user.binary', Buffer.from([0, 1, 2, 0xff, 0, 0x0a, 0x0d, 0x80]));
  setXattr(p('small.txt'), 'user.empty', Buffer.alloc(0));
  setXattr(p('a/big.bin'), 'user.mime_type', Buffer.from('application/octet-stream'));
  setXattr(p('a'), 'user.dir-note', pseudoRandom(300, 17));
  setXattr(p('three-1'), 'trusted.origin', Buffer.from('root only'));

  // POSIX ACLs: an access ACL on a file, and access and default ACLs on a directory.
  sh('setfacl', ['-m', `u:${OTHER_UID}:rw-,g:${OTHER_GID}:r--,m::rw-`, p('acl-dir/report.csv')]);
  sh('setfacl', ['-m', `u:${OTHER_UID}:rwx,g:${OTHER_GID}:r-x`, p('acl-dir')]);
  sh('setfacl', ['-d', '-m', `u::rwx,g::r-x,o::---,u:${OTHER_UID}:rwx`, p('acl-dir')]);

  // Modes: setgid and sticky directories, a private one, odd file modes (after chown, which clears set-id bits).
  await chmod(p('shared'), 0o2775);
  await chmod(p('tmp'), 0o1777);
  await chmod(p('a/b'), 0o700);
  await chmod(p('a/b/secret.key'), 0o600);
  await chmod(p('three-1'), 0o755);
  await chmod(p('empty'), 0o444);
  await chmod(root, 0o750);

  // Nanosecond mtimes on every entry (symlinks their own), deepest first, the root last.
  const order = [
    'empty', 'small.txt', 'a/big.bin', 'a/b/c/deep.txt', 'a/b/secret.key', 'acl-dir/report.csv', 'a/two-names', 'three-1',
    'rel-link', 'abs-link', 'a/dangling', 'nodes/fifo', 'nodes/null', 'nodes/loop',
    'a/b/c', 'a/b', 'a', 'shared', 'tmp', 'acl-dir', 'nodes', 'run', '',
  ];
  for (const [i, rel] of order.entries()) setTimesNs(p(rel), timeNs(i), timeNs(i));
  return sock;
}

/**
 * The lines `rsync --dry-run --itemize-changes --checksum` prints comparing `src` with
 * `copy` (each a directory; compared as its contents, the root's own metadata included),
 * the socket left out. No line means identical for the flags given.
 */
function rsyncDiff(flags: string[], src: string, copy: string, extra: string[] = []): string[] {
  const r = spawnSync('rsync', [...flags, '--dry-run', '--itemize-changes', '--checksum', `--exclude=/${SOCKET}`, ...extra, `${src}/`, `${copy}/`], { encoding: 'utf8' });
  assert.equal(r.status, 0, `rsync failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '');
}

/**
 * rsync -aHAX --numeric-ids: every piece of metadata (and, with --delete, entries the source
 * lacks); --modify-window=-1 compares mtimes to the nanosecond (rsync's default is whole seconds).
 */
const FULL = ['-aHAX', '--numeric-ids', '--modify-window=-1'];
/**
 * What xfer carried before the metadata work: content, structure, symlinks and permission
 * bits of everything but the special files (which -rlp would only note as skipped).
 */
const BASIC = ['-rlp', '--exclude=/nodes/*'];
/** The root's own mode is part of the metadata work: left out of the basic comparison. */
const ROOT_LINE = /^\.d\S* \.\/$/;

function assertSame(flags: string[], src: string, copy: string, what: string, extra: string[] = []): void {
  const lines = rsyncDiff(flags, src, copy, extra).filter((l) => flags !== BASIC || !ROOT_LINE.test(l));
  assert.deepEqual(lines, [], `${what}: rsync ${flags.join(' ')} ${extra.join(' ')} itemizes differences:\n${lines.join('\n')}`);
}

/** The basic comparison, then the full one as a subtest. */
async function assertFaithful(t: TestContext, src: string, copy: string, what: string, extra: string[] = []): Promise<void> {
  assertSame(BASIC, src, copy, what, extra);
  await t.test('identical as rsync -aHAX sees it: owners, hard links, xattrs, ACLs, nodes, ns mtimes, the root', () => {
    assertSame(FULL, src, copy, what, extra);
  });
}

/** A push or pull of the tree succeeds (the socket is skipped with a notice, not an error). */
function assertTransferred(r: { code: number; stderr: string }, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
}

describe('a tree with every kind of entry and metadata comes back identical, as rsync -aHAX compares', () => {
  let dir: string;
  let src: string;
  let sock: Server | undefined;
  let serve: Awaited<ReturnType<typeof startServeProcess>> | undefined;
  let serveRoot: string;
  let pushedToServer: Promise<void> | undefined;

  before(async () => {
    requireTools('rsync', 'setfacl', 'getfacl', 'setfattr', 'getfattr');
    dir = await mkdtemp(join(tmpdir(), 'xfer-fidelity-'));
    src = join(dir, 'tree');
    sock = await buildTree(src);
    serveRoot = join(dir, 'serve-root');
    serve = await startServeProcess(['--root', serveRoot, '--port', '0', '--quiet']);
  });
  after(async () => {
    await serve?.stop();
    await new Promise<void>((r) => (sock ? sock.close(() => r()) : r()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The tree pushed to the server once, for the cases that pull it. */
  const pushToServer = (): Promise<void> =>
    (pushedToServer ??= runCli(['push', src, `${serve!.url}/`]).then((r) => assertTransferred(r, 'push to xfer serve')));

  it('a push skips the socket with a notice naming it, and nothing else', async (t) => {
    const r = await runCli(['push', src, `${join(dir, 'notice')}/`]);
    assertTransferred(r, 'push');
    const notices = r.stderr.split('\n').filter((l) => l !== '');
    assert.ok(notices.some((l) => l.includes(SOCKET)), `the skipped socket is reported: ${r.stderr}`);
    await t.test('no other notice: FIFOs and device nodes are carried', () => {
      assert.deepEqual(notices.filter((l) => !l.includes(SOCKET)), []);
    });
  });

  it('push to a local destination: the rebuilt tree is identical to the source', async (t) => {
    const backup = join(dir, 'backup');
    assertTransferred(await runCli(['push', src, `${backup}/`]), 'push to a local destination');
    await assertFaithful(t, src, join(backup, 'tree'), 'local push');
  });

  it('push to xfer serve: the tree the server rebuilds under its root is identical to the source', async (t) => {
    await pushToServer();
    const copy = join(serveRoot, 'files', 'tree');
    // What the server withholds by design (see the file comment); everything else must match.
    await assertFaithful(t, src, copy, 'push to xfer serve', ['--exclude=/nodes/null', '--exclude=/nodes/loop', '--filter=-x trusted.*', '--filter=-x security.*']);
    await t.test('the server\'s copy holds no device node and no trusted.* xattr a client sent', async () => {
      for (const node of ['nodes/null', 'nodes/loop']) await assert.rejects(lstat(join(copy, node)), { code: 'ENOENT' }, node);
      assert.deepEqual(listXattrs(join(copy, 'three-1')).filter((x) => x.name.startsWith('trusted.')), []);
    });
  });

  it('pull from xfer serve into a new directory: identical to the source', async (t) => {
    await pushToServer();
    const out = join(dir, 'pulled');
    assertTransferred(await runCli(['pull', `${serve!.url}/tree`, out]), 'pull');
    await assertFaithful(t, src, out, 'pull from xfer serve');
  });

  /**
   * `<dir>/<name>/tree`, an older copy of the tree: one file changed, one symlink removed,
   * and entries the source lacks. Pulled onto with `xfer pull <url>/tree <dir>/<name>/`.
   */
  async function existingCopy(name: string): Promise<string> {
    const dest = join(dir, name, 'tree');
    await mkdir(join(dir, name));
    sh('rsync', ['-aHAX', `--exclude=/${SOCKET}`, `${src}/`, `${dest}/`]);
    await writeFile(join(dest, 'a/b/c/deep.txt'), 'an older version\n');
    await rm(join(dest, 'rel-link'));
    await mkdir(join(dest, 'a/extra-dir'));
    await writeFile(join(dest, EXTRAS[0]!), 'only at the destination\n');
    await writeFile(join(dest, EXTRAS[1]!), pseudoRandom(3000, 18));
    return dest;
  }

  it('pull onto an existing tree without --delete: entries the source lacks are kept, the rest is identical', async (t) => {
    await pushToServer();
    const dest = await existingCopy('existing-keep');
    assertTransferred(await runCli(['pull', `${serve!.url}/tree`, `${join(dest, '..')}/`]), 'pull onto an existing tree');
    assert.ok((await readFile(join(dest, EXTRAS[0]!))).equals(Buffer.from('only at the destination\n')), `${EXTRAS[0]} kept`);
    assert.ok((await readFile(join(dest, EXTRAS[1]!))).equals(pseudoRandom(3000, 18)), `${EXTRAS[1]} kept`);
    // Without --delete rsync does not look at extras: the comparison is of the source's entries.
    await assertFaithful(t, src, dest, 'pull onto an existing tree');
  });

  it('pull onto an existing tree with --delete: the result is identical, entries the source lacks are gone', async (t) => {
    await pushToServer();
    const dest = await existingCopy('existing-delete');
    assertTransferred(await runCli(['pull', `${serve!.url}/tree`, `${join(dest, '..')}/`, '--delete']), 'pull --delete onto an existing tree');
    // --delete: rsync itemizes "*deleting" for anything at the destination the source lacks.
    await assertFaithful(t, src, dest, 'pull --delete onto an existing tree', ['--delete']);
  });
});
