import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Staging } from '../src/reconstruct/staging.js';
import { createServer } from '../src/server/server.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

/** Names in `dir` that mark staging copies (`.xfer-...`). */
async function stagings(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('.xfer-')).sort();
}

/** The pid of a process that has exited (a killed push's). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

/** The owner tag this host puts in staging names (reconstruct/staging.ts). */
const HOST_TAG = hostname().replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);

describe('staging leftovers: none is left behind, none blocks a later run, none of a user is taken', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-leftovers-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a pull killed while removing the old tree (its .partial.old left) does not block later pulls', async () => {
    const src = join(dir, 'k', 't');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'd', 'a'), pseudoRandom(10_000, 1));
    const repo = join(dir, 'k', 'repo');
    const dst = join(dir, 'k', 'dst');
    await mkdir(repo);
    await mkdir(dst);
    assert.equal((await runCli(['push', src, `${repo}/`])).code, 0);
    const first = await runCli(['pull', join(repo, 't'), `${dst}/`]);
    assert.equal(first.code, 0, first.stderr);
    // What a pull killed during `rm -r` of the old tree leaves.
    await mkdir(join(dst, '.xfer-t.partial.old', 'sub'), { recursive: true });
    await writeFile(join(dst, '.xfer-t.partial.old', 'sub', 'f'), 'old');
    await writeFile(join(src, 'd', 'a'), pseudoRandom(10_000, 2));
    assert.equal((await runCli(['push', src, `${repo}/`])).code, 0);
    const again = await runCli(['pull', join(repo, 't'), `${dst}/`]);
    assert.equal(again.code, 0, again.stderr);
    assert.ok((await readFile(join(dst, 't', 'd', 'a'))).equals(pseudoRandom(10_000, 2)));
    assert.deepEqual(await stagings(dst), []);
  });

  it('a .partial.old left by a killed pull goes also when the next pull finds the tree already as pulled', async () => {
    const src = join(dir, 'k2', 't');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'd', 'a'), pseudoRandom(10_000, 5));
    const repo = join(dir, 'k2', 'repo');
    const dst = join(dir, 'k2', 'dst');
    await mkdir(repo);
    await mkdir(dst);
    assert.equal((await runCli(['push', src, `${repo}/`])).code, 0);
    assert.equal((await runCli(['pull', join(repo, 't'), `${dst}/`])).code, 0);
    await mkdir(join(dst, '.xfer-t.partial.old', 'sub'), { recursive: true });
    await writeFile(join(dst, '.xfer-t.partial.old', 'sub', 'f'), 'old');
    const again = await runCli(['pull', join(repo, 't'), `${dst}/`]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await stagings(dst), []);
  });

  it('an unchanged local re-push of a file leaves no hard-linked staging copy beside it', async () => {
    const src = join(dir, 'u', 'f.bin');
    await mkdir(join(dir, 'u', 'dst'), { recursive: true });
    await writeFile(src, pseudoRandom(100_000, 3));
    for (let i = 0; i < 2; i++) {
      const r = await runCli(['push', src, join(dir, 'u', 'dst', 'f.bin')]);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.deepEqual(await stagings(join(dir, 'u', 'dst')), []);
  });

  it("a push removes a dead push's staging copies (.tmp and .tmp.old) and nothing that is not provably one", async () => {
    const base = join(dir, 'o');
    const src = join(base, 'src', 'foo');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'x'), 'x');
    const dst = join(base, 'dst');
    await mkdir(dst);
    assert.equal((await runCli(['push', src, `${dst}/`])).code, 0);
    const dead = await deadPid();
    const orphans = [`.xfer-foo.${HOST_TAG}~${dead}-0123456789ab.tmp`, `.xfer-foo.${HOST_TAG}~${dead}-ba9876543210.tmp.old`];
    const users = [
      '.xfer-foo.bar~1-abc.tmp',
      `.xfer-foo.${HOST_TAG}~${dead}-abc.tmp`,
      `.xfer-foo.${HOST_TAG}~${dead}-0123456789ab.tmp.bak`,
      `.xfer-foo.${HOST_TAG}~0${dead}-0123456789ab.tmp`,
      `.xfer-foo.x.${HOST_TAG}~${dead}-0123456789ab.tmp`,
    ];
    for (const n of orphans) await mkdir(join(dst, n, 'inside'), { recursive: true });
    for (const n of users) await writeFile(join(dst, n), 'a user file');
    await writeFile(join(src, 'x'), 'changed');
    const r = await runCli(['push', src, `${dst}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await stagings(dst), [...users].sort());
  });

  it('directories made for a failed staging stay while another staging uses them, and go with the last of them', async () => {
    const root = join(dir, 'made');
    await mkdir(root);
    const meta = { type: 'file' as const, path: '', mode: 0o644, mtimeMs: 0, size: 1 };
    // A stage made n1/n2 and is discarded while the commit of a neighbour is about to write there.
    const s1 = await Staging.create(join(root, 'n1', 'n2', 'a'), 'file', { confineTo: root });
    const s2 = await Staging.create(join(root, 'n1', 'n2', 'b'), 'file', { confineTo: root });
    await s1.abort();
    assert.ok((await stat(join(root, 'n1', 'n2'))).isDirectory(), 'the directories in use were removed');
    const f = await s2.openFile(meta);
    await f.write(Buffer.from('b'), 0);
    await f.finish(1);
    await s2.abort();
    assert.deepEqual(await readdir(root), [], 'the last failed staging removes them');

    const s3 = await Staging.create(join(root, 'm1', 'a'), 'file', { confineTo: root });
    const s4 = await Staging.create(join(root, 'm1', 'b'), 'file', { confineTo: root });
    await s3.abort();
    const g = await s4.openFile(meta);
    await g.write(Buffer.from('b'), 0);
    await g.finish(1);
    await s4.commit();
    assert.deepEqual(await readdir(join(root, 'm1')), ['b']);
  });

  it('a server start empties its own tmp directory', async () => {
    const root = join(dir, 'srv');
    await mkdir(join(root, 'tmp', 'manifest-AbC123'), { recursive: true });
    await writeFile(join(root, 'tmp', 'manifest-AbC123', 'manifest'), pseudoRandom(1000, 4));
    const server = await createServer({ root, port: 0 });
    try {
      assert.deepEqual(await readdir(join(root, 'tmp')), []);
    } finally {
      await server.close();
    }
  });
});
