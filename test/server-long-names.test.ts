import { strict as assert } from 'node:assert';
import { mkdir, readdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Staging } from '../src/reconstruct/staging.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';

/** The owner tag this host puts in staging names (reconstruct/staging.ts). */
const HOST_TAG = hostname().replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);

describe('long names: valid names of up to 255 bytes work, over-long paths are refused cleanly', () => {
  const fx = useServer('xfer-long-');

  it('files and trees named with 224 to 255 bytes are pushed to a server and pulled back', async () => {
    // One push each; the 255-byte one again changed (its staging beside the old version),
    // and pulled back (a pull's resumable staging name).
    const names = ['f'.repeat(224), '\u20ac'.repeat(85) /* 255 bytes of 3-byte characters */, 'g'.repeat(255)];
    for (const [i, name] of names.entries()) {
      const src = join(fx.dir, `src${i}`);
      await mkdir(src);
      await writeFile(join(src, name), pseudoRandom(50_000, i));
      const p = await runCli(['push', join(src, name), `${fx.server.url}/long/${name}`]);
      assert.equal(p.code, 0, p.stderr);
    }
    const name = names[2]!;
    await writeFile(join(fx.dir, 'src2', name), pseudoRandom(50_000, 12));
    const p = await runCli(['push', join(fx.dir, 'src2', name), `${fx.server.url}/long/${name}`]);
    assert.equal(p.code, 0, p.stderr);
    const pulledFile = join(fx.dir, 'pulled-file');
    await mkdir(pulledFile);
    const lf = await runCli(['pull', `${fx.server.url}/long/${name}`, `${pulledFile}/`]);
    assert.equal(lf.code, 0, lf.stderr);
    assert.ok((await readFile(join(pulledFile, name))).equals(pseudoRandom(50_000, 12)));
    const tree = join(fx.dir, 't'.repeat(250));
    await mkdir(join(tree, 'h'.repeat(255)), { recursive: true });
    await writeFile(join(tree, 'h'.repeat(255), 'x'), 'x');
    const t = await runCli(['push', tree, `${fx.server.url}/long/`]);
    assert.equal(t.code, 0, t.stderr);
    const pulled = join(fx.dir, 'pulled-tree');
    await mkdir(pulled);
    const l = await runCli(['pull', `${fx.server.url}/long/${'t'.repeat(250)}`, `${pulled}/`]);
    assert.equal(l.code, 0, l.stderr);
    assert.equal(await readFile(join(pulled, 't'.repeat(250), 'h'.repeat(255), 'x'), 'utf8'), 'x');
    assert.deepEqual((await readdir(join(fx.root, 'files', 'long'))).filter((n) => n.startsWith('.xfer-')), []);
  });

  it('a remote path too long for the server is a 400 before anything is created; one just short enough works', async () => {
    const src = join(fx.dir, 'small');
    await writeFile(src, pseudoRandom(1000, 40));
    assert.equal((await runCli(['push', src, `${fx.server.url}/small`])).code, 0);
    const manifest = (await rawRequest(fx.server.url, 'GET', '/v1/manifests/small')).body;
    // Valid manifest names whose paths on the server fit in PATH_MAX (4095 bytes and a NUL).
    const nameBytes = 4095 - 20 - Buffer.byteLength(join(fx.root, 'files')) - 1;
    const nameEndingIn = (last: string) => {
      const segments: string[] = [];
      let rest = nameBytes - last.length - 1;
      for (let i = 0; rest > 201; i++, rest -= 201) segments.push(`${i}`.padStart(200, 'p'));
      const name = [...segments, 'r'.repeat(rest), last].join('/');
      assert.equal(Buffer.byteLength(name), nameBytes);
      return name;
    };
    // A short last segment: the staging copy's name beside it is longer, and does not fit.
    const long = nameEndingIn('short');
    const before = await readdir(join(fx.root, 'files'));
    const put = await rawRequest(fx.server.url, 'PUT', `/v1/manifests/${long}`, manifest);
    assert.equal(put.status, 400, put.body.toString());
    assert.match(JSON.parse(put.body.toString()).message, /too long for this server/);
    const stage = await rawRequest(fx.server.url, 'POST', `/v1/stage/${long}?algorithm=blake3&mode=420&mtimeMs=0&size=0`, Buffer.alloc(0));
    assert.equal(stage.status, 400, stage.body.toString());
    assert.deepEqual(await readdir(join(fx.root, 'files')), before, 'no directory was made for it');
    // A 200-byte last segment: its staging name (a cut of it and a hash) is no longer: it fits.
    const fits = nameEndingIn('s'.repeat(200));
    const ok = await rawRequest(fx.server.url, 'PUT', `/v1/manifests/${fits}`, manifest);
    assert.equal(ok.status, 200, ok.body.toString());
    assert.ok((await readFile(join(fx.root, 'files', ...fits.split('/')))).equals(await readFile(src)));
  });

  it('a tree whose entries overflow PATH_MAX on the server fails with a clean error naming no staging copy, and leaves nothing', async () => {
    // The file's path at the source is 4090 bytes (under PATH_MAX, 4096 with its NUL); on
    // the server the root and the staging name (`.xfer-deep.<host>~<pid>-<hex>.tmp` in place
    // of `deep`) add at least 44 bytes, whatever the length of the host name or the pid.
    // (Cut by whole 200-byte segments, the path once fell up to 200 bytes short, and a pid
    // of 3 digits or fewer, frequent where pid_max is 32768, made the tree fit: exit 0.)
    const tree = join(fx.dir, 'deep');
    const SOURCE_FILE_PATH_BYTES = 4090;
    const segments: string[] = [];
    for (let rest = SOURCE_FILE_PATH_BYTES - Buffer.byteLength(tree) - '/f'.length; rest > 0;) {
      let n = Math.min(200, rest - 1);
      if (rest - (n + 1) === 1) n--; // never leave a 1-byte rest: it cannot hold '/' and a name
      segments.push('d'.repeat(n));
      rest -= n + 1;
    }
    assert.equal(Buffer.byteLength(join(tree, ...segments, 'f')), SOURCE_FILE_PATH_BYTES);
    await mkdir(join(tree, ...segments), { recursive: true });
    await writeFile(join(tree, ...segments, 'f'), 'f');
    const p = await runCli(['push', tree, `${fx.server.url}/n1/n2/deep`]);
    assert.equal(p.code, 2, p.stderr);
    assert.match(p.stderr, /too long/);
    assert.doesNotMatch(p.stderr, new RegExp(`${HOST_TAG}~|\\.xfer-`), 'the message names the staging copy');
    assert.deepEqual((await readdir(join(fx.root, 'files'))).filter((n) => n === 'n1'), [], 'the directories made for it are removed');
  });

  it('a staging confined to a root refuses its final rename if the way to the target became a symlink', async () => {
    const root = join(fx.dir, 'confined');
    const outside = join(fx.dir, 'confined-outside');
    await mkdir(join(root, 'a'), { recursive: true });
    await mkdir(outside);
    const target = join(root, 'a', 'b', 'f');
    const staging = await Staging.create(target, 'file', { confineTo: root });
    const f = await staging.openFile({ type: 'file', path: '', mode: 0o644, mtimeMs: 0, size: 1 });
    await f.write(Buffer.from('x'), 0);
    await f.finish(1);
    // A local user swaps a directory on the way for a symlink, taking the staged copy along.
    await rename(join(root, 'a', 'b'), join(outside, 'b'));
    await symlink(join(outside, 'b'), join(root, 'a', 'b'));
    await assert.rejects(staging.commit(), /"a\/b" is a symbolic link/);
    await staging.abort();
    assert.deepEqual(await readdir(join(outside, 'b')), [], 'nothing was renamed into place through the link');
  });
});
