import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

/** Every entry below `root` with its type, size, mode, mtime, inode and content digest: any write shows. */
async function snapshot(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = await readdir(dir).catch(() => undefined);
    if (!names) return;
    for (const name of names.sort()) {
      const abs = join(dir, name);
      const path = rel ? `${rel}/${name}` : name;
      const st = await lstat(abs);
      let what = '';
      if (st.isFile()) what = createHash('sha256').update(await readFile(abs)).digest('hex');
      else if (st.isSymbolicLink()) what = await readlink(abs);
      out.push(`${path} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${st.ino} ${what}`);
      if (st.isDirectory()) await walk(abs, path);
    }
  };
  await walk(root, '');
  return out;
}

/** A small source tree: a.txt, b.log, sub/c.txt, sub/d.log, cache/ (with a name a walk would refuse), keep.log. */
async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'sub'), { recursive: true });
  await mkdir(join(root, 'cache'));
  await writeFile(join(root, 'a.txt'), 'a\n');
  await writeFile(join(root, 'b.log'), 'b\n');
  await writeFile(join(root, 'keep.log'), 'keep\n');
  await writeFile(join(root, 'sub', 'c.txt'), 'c\n');
  await writeFile(join(root, 'sub', 'd.log'), 'd\n');
  // A name xfer refuses to read: the push succeeds only if the excluded directory is not entered.
  await writeFile(join(root, 'cache', 'bad\\name'), 'x\n');
}

async function names(root: string): Promise<string[]> {
  return (await snapshot(root)).map((l) => l.split(' ')[0]!);
}

function ok(r: { code: number; stdout: string; stderr: string }): void {
  assert.equal(r.code, 0, r.stdout + r.stderr);
}

describe('rsync habits: --exclude, --include and --exclude-from', () => {
  const fx = useServer('xfer-habits-filter-');

  it('push leaves out what the rules exclude, in command-line order, and does not enter an excluded directory', async () => {
    const src = join(fx.dir, 'f1', 'tree');
    await makeTree(src);
    const rules = join(fx.dir, 'f1', 'rules');
    await writeFile(rules, '# caches\ncache/\n\n; logs\n*.log\n');
    const r = await runCli(['push', src, join(fx.dir, 'f1', 'backup') + '/', '-q', '--include', 'keep.log', '--exclude-from', rules]);
    ok(r);
    assert.deepEqual(await names(join(fx.dir, 'f1', 'backup', 'tree')), ['a.txt', 'keep.log', 'sub', 'sub/c.txt']);
    const remote = await runCli(['push', src, `${fx.server.url}/`, '-q', '--exclude', 'cache', '--exclude', '/b.log', '--exclude', 'sub/*.log']);
    ok(remote);
    assert.deepEqual(await names(join(fx.root, 'files', 'tree')), ['a.txt', 'keep.log', 'sub', 'sub/c.txt']);
  });

  it('pull leaves out what the rules exclude; with --delete, excluded entries at the destination are kept (protected)', async () => {
    const src = join(fx.dir, 'f2', 'tree');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    await writeFile(join(src, 'b.log'), 'b\n');
    const backup = join(fx.dir, 'f2', 'backup');
    ok(await runCli(['push', src, `${backup}/`, '-q']));
    const out = join(fx.dir, 'f2', 'out');
    ok(await runCli(['pull', join(backup, 'tree'), `${out}/`, '-q', '--exclude', '*.log']));
    assert.deepEqual(await names(join(out, 'tree')), ['a.txt']);
    await writeFile(join(out, 'tree', 'mine.log'), 'mine\n');
    await writeFile(join(out, 'tree', 'extra.txt'), 'extra\n');
    const del = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--json', '--delete', '--exclude', '*.log']);
    ok(del);
    assert.deepEqual(JSON.parse(del.stdout).deleted, ['extra.txt']);
    assert.deepEqual(await names(join(out, 'tree')), ['a.txt', 'mine.log']);
  });

  it('a server\'s copy keeps the entries a push excludes, though it mirrors the pushed tree', async () => {
    const src = join(fx.dir, 'f4', 'tree');
    await mkdir(join(src, 'logs'), { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    await writeFile(join(src, 'gone.txt'), 'gone\n');
    await writeFile(join(src, 'x.log'), 'x\n');
    await writeFile(join(src, 'logs', 'y.txt'), 'y\n');
    ok(await runCli(['push', src, `${fx.server.url}/kept`, '-q']));
    await rm(join(src, 'x.log'));
    await rm(join(src, 'logs'), { recursive: true });
    await rm(join(src, 'gone.txt'));
    await writeFile(join(src, 'a.txt'), 'a2\n');
    const dry = await runCli(['push', src, `${fx.server.url}/kept`, '-n', '--json', '--exclude', '*.log', '--exclude', 'logs/']);
    ok(dry);
    assert.deepEqual(JSON.parse(dry.stdout).deleted, ['gone.txt']);
    const r = await runCli(['push', src, `${fx.server.url}/kept`, '--json', '--exclude', '*.log', '--exclude', 'logs/']);
    ok(r);
    assert.deepEqual(JSON.parse(r.stdout).deleted, ['gone.txt']);
    assert.deepEqual(await names(join(fx.root, 'files', 'kept')), ['a.txt', 'logs', 'logs/y.txt', 'x.log']);
    const out = join(fx.dir, 'f4', 'out');
    ok(await runCli(['pull', `${fx.server.url}/kept`, out, '-q']));
    assert.equal(await readFile(join(out, 'logs', 'y.txt'), 'utf8'), 'y\n');
    assert.equal(await readFile(join(out, 'a.txt'), 'utf8'), 'a2\n');
  });

  it('a local push with --delete keeps excluded entries of the target', async () => {
    const src = join(fx.dir, 'f3', 'tree');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    const backup = join(fx.dir, 'f3', 'backup');
    ok(await runCli(['push', src, `${backup}/`, '-q']));
    await mkdir(join(backup, 'tree', 'local'));
    await writeFile(join(backup, 'tree', 'local', 'cfg'), 'cfg\n');
    await writeFile(join(backup, 'tree', 'stray.txt'), 'stray\n');
    const r = await runCli(['push', src, `${backup}/`, '--json', '--delete', '--exclude', 'local/']);
    ok(r);
    assert.deepEqual(JSON.parse(r.stdout).deleted, ['stray.txt']);
    assert.deepEqual(await names(join(backup, 'tree')), ['a.txt', 'local', 'local/cfg']);
  });
});

describe('rsync habits: -n/--dry-run writes nothing anywhere', () => {
  const fx = useServer('xfer-habits-dry-');

  it('push to a new local destination: lists every file, creates nothing (not even the store)', async () => {
    const src = join(fx.dir, 'd1', 'tree');
    await makeTree(src);
    const dest = join(fx.dir, 'd1', 'dest');
    const before = await snapshot(join(fx.dir, 'd1'));
    const r = await runCli(['push', src, `${dest}/`, '-n', '--exclude', 'cache/']);
    ok(r);
    assert.deepEqual(await snapshot(join(fx.dir, 'd1')), before);
    assert.match(r.stdout, /^>f a\.txt \(2 B\)$/m);
    assert.match(r.stdout, /^>f sub\/d\.log \(2 B\)$/m);
    assert.match(r.stdout, /dry run, nothing written: would push .*: 5 files of 5 \(13 B of 13 B\), 13 B in 5 chunks the destination lacks; 0 entries deleted/);
  });

  it('push to an existing local target: only the changed file and only the chunk it lacks; --delete lists what would go; nothing changes', async () => {
    const src = join(fx.dir, 'd2', 'tree');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'same.txt'), 'same\n');
    await writeFile(join(src, 'changed.txt'), 'old\n');
    const backup = join(fx.dir, 'd2', 'backup');
    ok(await runCli(['push', src, `${backup}/`, '-q']));
    await writeFile(join(src, 'changed.txt'), 'new content\n');
    await writeFile(join(src, 'dup.txt'), 'same\n'); // its one chunk the destination has
    await writeFile(join(backup, 'tree', 'extra.txt'), 'extra\n');
    const before = await snapshot(backup);
    const r = await runCli(['push', src, `${backup}/`, '-n', '--delete', '--json']);
    ok(r);
    assert.deepEqual(await snapshot(backup), before);
    const j = JSON.parse(r.stdout);
    assert.equal(j.dryRun, true);
    assert.deepEqual(j.transferred, [{ path: 'changed.txt', size: 12 }, { path: 'dup.txt', size: 5 }]);
    assert.equal(j.bytesSent, 12, 'only the chunk the destination lacks');
    assert.deepEqual(j.deleted, ['extra.txt']);
  });

  it('push to a server: asks it which chunks it has and lists what its copy would lose; the server root is untouched', async () => {
    const src = join(fx.dir, 'd3', 'tree');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    await writeFile(join(src, 'gone.txt'), 'gone\n');
    ok(await runCli(['push', src, `${fx.server.url}/`, '-q']));
    await writeFile(join(src, 'b.txt'), 'b is new\n');
    await writeFile(join(src, 'gone.txt'), 'x'); // replaced below by a removal
    await import('node:fs/promises').then((fs) => fs.rm(join(src, 'gone.txt')));
    const before = await snapshot(fx.root);
    const r = await runCli(['push', src, `${fx.server.url}/`, '-n', '--json']);
    ok(r);
    assert.deepEqual(await snapshot(fx.root), before);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.transferred, [{ path: 'b.txt', size: 9 }]);
    assert.equal(j.bytesSent, 9);
    assert.deepEqual(j.deleted, ['gone.txt']);
  });

  it('pull: lists the files that differ and what --delete would remove; the destination is untouched', async () => {
    const src = join(fx.dir, 'd4', 'tree');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    await writeFile(join(src, 'b.txt'), 'b\n');
    const backup = join(fx.dir, 'd4', 'backup');
    ok(await runCli(['push', src, `${backup}/`, '-q']));
    const out = join(fx.dir, 'd4', 'out');
    ok(await runCli(['pull', join(backup, 'tree'), `${out}/`, '-q']));
    await writeFile(join(out, 'tree', 'b.txt'), 'changed here\n');
    await writeFile(join(out, 'tree', 'extra.txt'), 'extra\n');
    const before = await snapshot(join(fx.dir, 'd4'));
    const r = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--dry-run', '--delete']);
    ok(r);
    assert.deepEqual(await snapshot(join(fx.dir, 'd4')), before);
    assert.equal(r.stdout.split('\n').filter((l) => /^(>f|\*deleting) /.test(l)).join('\n'), '>f b.txt (2 B)\n*deleting extra.txt');
    const fresh = await runCli(['pull', `${fx.server.url}/nothing-here`, join(fx.dir, 'd4', 'new'), '-n']);
    assert.notEqual(fresh.code, 0);
    assert.deepEqual(await snapshot(join(fx.dir, 'd4')), before);
  });
});

describe('rsync habits: -v, --stats, -P', () => {
  const fx = useServer('xfer-habits-verbose-');

  it('-v lists each file transferred and each entry deleted, locally and to a server, and --json lists a server copy\'s deletions', async () => {
    const src = join(fx.dir, 'v1', 'tree');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    await writeFile(join(src, 'sub', 'b.txt'), 'b\n');
    const backup = join(fx.dir, 'v1', 'backup');
    const first = await runCli(['push', src, `${backup}/`, '-v']);
    ok(first);
    assert.deepEqual(first.stdout.split('\n').filter((l) => l.startsWith('>f')), ['>f a.txt (2 B)', '>f sub/b.txt (2 B)']);
    ok(await runCli(['push', src, `${fx.server.url}/`, '-q']));
    await writeFile(join(src, 'a.txt'), 'a2\n');
    await import('node:fs/promises').then((fs) => fs.rm(join(src, 'sub'), { recursive: true }));
    const local = await runCli(['push', src, `${backup}/`, '-v', '--delete']);
    ok(local);
    assert.deepEqual(local.stdout.split('\n').filter((l) => /^(>f|\*deleting) /.test(l)), ['>f a.txt (3 B)', '*deleting sub/b.txt', '*deleting sub']);
    const remote = await runCli(['push', src, `${fx.server.url}/`, '-v']);
    ok(remote);
    assert.deepEqual(remote.stdout.split('\n').filter((l) => /^(>f|\*deleting) /.test(l)).sort(), ['*deleting sub', '*deleting sub/b.txt', '>f a.txt (3 B)']);
    await writeFile(join(src, 'c.txt'), 'c\n');
    const json = await runCli(['push', src, `${fx.server.url}/`, '--json', '-v']);
    ok(json);
    assert.deepEqual(JSON.parse(json.stdout).transferred, [{ path: 'c.txt', size: 2 }]);
    await import('node:fs/promises').then((fs) => fs.rm(join(src, 'c.txt')));
    const gone = await runCli(['push', src, `${fx.server.url}/`, '--json']);
    ok(gone);
    assert.deepEqual(JSON.parse(gone.stdout).deleted, ['c.txt']);
  });

  it('--stats prints rsync\'s summary on stdout and a "stats" object with --json', async () => {
    const src = join(fx.dir, 's1', 'tree');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'a.txt'), 'hello\n');
    await writeFile(join(src, 'sub', 'copy.txt'), 'hello\n');
    const backup = join(fx.dir, 's1', 'backup');
    const r = await runCli(['push', src, `${backup}/`, '--stats']);
    ok(r);
    assert.match(r.stdout, /^Number of files: 4 \(reg: 2, dir: 2\)$/m);
    assert.match(r.stdout, /^Number of regular files transferred: 2$/m);
    assert.match(r.stdout, /^Total file size: 12 bytes$/m);
    assert.match(r.stdout, /^Literal data: 6 bytes$/m);
    assert.match(r.stdout, /^Matched data: 6 bytes/m);
    assert.match(r.stdout, /^total size is 12 bytes {2}speedup is 2\.00$/m);
    const out = join(fx.dir, 's1', 'out');
    const p = await runCli(['pull', join(backup, 'tree'), `${out}/`, '--stats', '--json', '-v']);
    ok(p);
    assert.deepEqual(JSON.parse(p.stdout).transferred, [{ path: 'a.txt', size: 6 }, { path: 'sub/copy.txt', size: 6 }]);
    const s = JSON.parse(p.stdout).stats;
    assert.deepEqual(
      { files: s.files, dirs: s.dirs, filesTransferred: s.filesTransferred, bytesTotal: s.bytesTotal, bytesReceived: s.bytesReceived, literalBytes: s.literalBytes, matchedBytes: s.matchedBytes },
      { files: 2, dirs: 2, filesTransferred: 2, bytesTotal: 12, bytesReceived: 6, literalBytes: 6, matchedBytes: 6 },
    );
  });

  it('-P shows the progress line even when stderr is not a terminal', async () => {
    const src = join(fx.dir, 'p1', 'f.bin');
    await mkdir(join(fx.dir, 'p1'));
    await writeFile(join(src), Buffer.alloc(200_000, 7));
    const plain = await runCli(['push', src, join(fx.dir, 'p1', 'a') + '/']);
    ok(plain);
    assert.doesNotMatch(plain.stderr, / of 195\.31 KiB/);
    const r = await runCli(['push', src, join(fx.dir, 'p1', 'b') + '/', '-P']);
    ok(r);
    assert.match(r.stderr, / of 195\.31 KiB/);
  });
});

describe('rsync habits: a trailing / on a source directory means its contents', () => {
  const fx = useServer('xfer-habits-slash-');

  it('push dir/ dest puts dir\'s entries in dest; push dir dest/ puts dest/dir; pull target/ out puts the entries in out', async () => {
    const src = join(fx.dir, 't1', 'dir');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    await writeFile(join(src, 'sub', 'b.txt'), 'b\n');
    const dest = join(fx.dir, 't1', 'dest');
    await mkdir(dest);
    ok(await runCli(['push', `${src}/`, dest, '-q']));
    assert.deepEqual(await names(dest), ['a.txt', 'sub', 'sub/b.txt']);
    ok(await runCli(['push', `${src}/`, `${dest}/`, '-q'])); // again, with a trailing / on dest: the same target
    assert.deepEqual(await names(dest), ['a.txt', 'sub', 'sub/b.txt']);
    const into = join(fx.dir, 't1', 'into');
    await mkdir(into);
    ok(await runCli(['push', src, into, '-q']));
    // The store beside it holds the manifest of dir and its first version (issue 16).
    const versions = (await names(join(into, '.xfer', 'manifests', '.xfer'))).map((n) => `.xfer/manifests/.xfer/${n}`);
    assert.deepEqual(await names(into), ['.xfer', '.xfer/locks', '.xfer/manifests', '.xfer/manifests/.xfer', ...versions, '.xfer/manifests/dir', '.xfer/packs', ...(await names(join(into, '.xfer', 'packs'))).map((n) => `.xfer/packs/${n}`), '.xfer/store.json', '.xfer/tmp', 'dir', 'dir/a.txt', 'dir/sub', 'dir/sub/b.txt']);
    const refused = await runCli(['push', `${src}/`, into, '-q']);
    assert.notEqual(refused.code, 0, 'a directory holding pushed targets does not take a tree\'s contents');
    assert.match(refused.stderr, /^xfer: .*holds pushed targets/);
    const out = join(fx.dir, 't1', 'out');
    await mkdir(out); // an existing directory: without the trailing / on the source, the tree would go to out/dir
    ok(await runCli(['pull', `${join(into, 'dir')}/`, out, '-q']));
    assert.deepEqual(await names(out), ['a.txt', 'sub', 'sub/b.txt']);
  });

  it('to a server, dir/ puts the contents at the URL\'s path; the path must name the target', async () => {
    const src = join(fx.dir, 't2', 'dir');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    ok(await runCli(['push', `${src}/`, `${fx.server.url}/named`, '-q']));
    assert.deepEqual(await names(join(fx.root, 'files', 'named')), ['a.txt']);
    const bare = await runCli(['push', `${src}/`, `${fx.server.url}/`, '-q']);
    assert.notEqual(bare.code, 0);
    assert.match(bare.stderr, /^xfer: .*name the target in the URL/);
    const out = join(fx.dir, 't2', 'out');
    await mkdir(out);
    ok(await runCli(['pull', `${fx.server.url}/named/`, out, '-q']));
    assert.deepEqual(await names(out), ['a.txt']);
  });
});
