import { strict as assert } from 'node:assert';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { buildRaw, RAW_FILE, RAW_SYMLINK } from './manifest-helpers.js';

describe("local destinations: a tree's own symlinks are never gone through, a user's symlinks on the way are", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-own-links-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("a pull replacing a tree's symlink l with a directory l does not link the file l pointed to into the new tree", async () => {
    const outside = join(dir, 'outside');
    await mkdir(outside);
    // Same size, mtime and mode as the new version's l/x: the quick check would take it.
    await writeFile(join(outside, 'x'), pseudoRandom(1000, 1));
    await utimes(join(outside, 'x'), 1_600_000_000, 1_600_000_000);
    const src = join(dir, 'src', 't');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a'), 'a');
    await symlink(outside, join(src, 'l'));
    const repo = join(dir, 'repo');
    const dst = join(dir, 'dst');
    await mkdir(repo);
    await mkdir(dst);
    assert.equal((await runCli(['push', src, `${repo}/`])).code, 0);
    assert.equal((await runCli(['pull', join(repo, 't'), `${dst}/`])).code, 0);
    assert.ok((await lstat(join(dst, 't', 'l'))).isSymbolicLink());

    await unlink(join(src, 'l'));
    await mkdir(join(src, 'l'));
    await writeFile(join(src, 'l', 'x'), pseudoRandom(1000, 2));
    await utimes(join(src, 'l', 'x'), 1_600_000_000, 1_600_000_000);
    assert.equal((await runCli(['push', src, `${repo}/`])).code, 0);
    const p = await runCli(['pull', join(repo, 't'), `${dst}/`]);
    assert.equal(p.code, 0, p.stderr);
    assert.ok((await lstat(join(dst, 't', 'l'))).isDirectory());
    assert.ok((await readFile(join(dst, 't', 'l', 'x'))).equals(pseudoRandom(1000, 2)), 'l/x is the pushed file, not the one the old symlink led to');
    assert.equal((await stat(join(outside, 'x'))).nlink, 1, 'the outside file was hard-linked into the tree');
    assert.ok((await readFile(join(outside, 'x'))).equals(pseudoRandom(1000, 1)));
  });

  it('a pull of a tree manifest placing a file below its own symlink entry is refused, and writes nothing through it', async () => {
    const outside = join(dir, 'outside-pull');
    await mkdir(outside);
    // A store holding the chunk the crafted manifest names (so only validation can stop it).
    const data = Buffer.from('payload');
    const store = join(dir, 'crafted-store');
    await mkdir(store);
    await writeFile(join(dir, 'payload'), data);
    assert.equal((await runCli(['push', join(dir, 'payload'), `${store}/`])).code, 0);
    const digest = digestOf('blake3', data);
    const manifest = await buildRaw(
      [
        { type: RAW_SYMLINK, path: 'l', target: outside },
        { type: RAW_FILE, path: 'l/x', mode: 0o644, size: BigInt(data.length), chunks: [{ length: data.length, digest }], digest },
      ],
      { digestAlgorithm: 'blake3', chunker: [1, 16384, 65536, 262144] },
    );
    await writeFile(join(store, '.xfer', 'manifests', 'crafted'), manifest);
    const dst = join(dir, 'crafted-dst');
    await mkdir(dst);
    const p = await runCli(['pull', join(store, 'crafted'), `${dst}/`]);
    assert.equal(p.code, 8, p.stderr);
    assert.match(p.stderr, /inside "l", which is not a directory/);
    assert.deepEqual(await readdir(outside), []);
  });

  it("a push and a pull through a user's own symlinked directory work as before", async () => {
    const real = join(dir, 'real');
    await mkdir(real);
    const link = join(dir, 'link');
    await symlink(real, link);
    const src = join(dir, 'f.bin');
    await writeFile(src, pseudoRandom(20_000, 3));
    const push = await runCli(['push', src, join(link, 'sub', 'f.bin')]);
    assert.equal(push.code, 0, push.stderr);
    const pull = await runCli(['pull', join(link, 'sub', 'f.bin'), join(link, 'out', 'f.bin')]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.ok((await readFile(join(real, 'out', 'f.bin'))).equals(pseudoRandom(20_000, 3)));
  });
});
