import { strict as assert } from 'node:assert';
import { connect } from 'node:http2';
import { chmod, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { HEADER_BYTES, TRAILER_BYTES } from '../src/manifest/format.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';
import { buildRaw, RAW_FILE, RAW_SYMLINK } from './manifest-helpers.js';
import { stageList } from './helpers/stage.js';

/** Everything below `dir`, as relative paths (what a write through a symlink would leave). */
async function listAll(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true }).catch(() => [])) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory()) out.push(...(await listAll(dir, p)));
  }
  return out;
}


/**
 * Opens a stage of `data` at `remotePath` (its chunks never uploaded, so a stage that starts
 * waits for them) and resolves with its answer, or with 'wrote outside' as soon as anything
 * shows up in `outside`. The stream is then reset.
 */
async function stageRace(url: string, remotePath: string, data: Buffer, outside: string): Promise<{ status: number; body: string } | 'wrote outside'> {
  const session = connect(url);
  session.on('error', () => {});
  try {
    const req = session.request({ ':method': 'POST', ':path': `/v1/stage/${remotePath}?algorithm=blake3&mode=${0o4755}&mtimeMs=1700000000000&size=${data.length}` });
    req.on('error', () => {});
    const answer = new Promise<{ status: number; body: string }>((resolve) => {
      let status = 0;
      let body = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => resolve({ status, body }));
    });
    req.end(stageList(data));
    let stop = false;
    const watch = (async () => {
      while (!stop) {
        if ((await listAll(outside)).length > 0) return 'wrote outside' as const;
        await new Promise((r) => setTimeout(r, 10));
      }
      return 'wrote outside' as const;
    })();
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the stage neither answered nor wrote')), 5000).unref());
    try {
      return await Promise.race([answer, watch, timeout]);
    } finally {
      stop = true;
      req.close();
    }
  } finally {
    session.destroy();
  }
}

describe('the server never writes through a symlink on the way to a target', () => {
  const fx = useServer('xfer-symlink-');

  it('a symlink of a pushed tree is not followed by a later push of a file, a stage or a tree through it', async () => {
    const outside = join(fx.dir, 'outside-1');
    await mkdir(outside);
    const tree = join(fx.dir, 't');
    await mkdir(tree);
    await writeFile(join(tree, 'a.txt'), 'a');
    await symlink(outside, join(tree, 'l'));
    const p = await runCli(['push', tree, `${fx.server.url}/`]);
    assert.equal(p.code, 0, p.stderr);
    assert.ok((await lstat(join(fx.root, 'files', 't', 'l'))).isSymbolicLink(), 'the tree holds its symlink');

    const src = join(fx.dir, 'evil.sh');
    await writeFile(src, pseudoRandom(300 * 1024, 5));
    await chmod(src, 0o4755);
    // The commit used to answer 409 only after the rebuild had made newdir/deep through the link.
    const f = await runCli(['push', src, `${fx.server.url}/t/l/newdir/deep/f`]);
    assert.notEqual(f.code, 0);
    assert.match(f.stderr, /inside the pushed target "t"/);
    assert.deepEqual(await listAll(outside), []);

    // A stage used to create its staging copy (client bytes, mode 4755) in the outside directory.
    const r = await stageRace(fx.server.url, 't/l/evil.sh', pseudoRandom(2 * 1024 * 1024, 6), outside);
    assert.notEqual(r, 'wrote outside', 'the stage wrote through the symlink');
    assert.equal((r as { status: number }).status, 409, (r as { body: string }).body);
    assert.deepEqual(await listAll(outside), []);

    const sub = join(fx.dir, 'sub');
    await mkdir(sub);
    await writeFile(join(sub, 'x'), pseudoRandom(100 * 1024, 7));
    const t = await runCli(['push', sub, `${fx.server.url}/t/l/newdir2/sub`]);
    assert.notEqual(t.code, 0);
    assert.deepEqual(await listAll(outside), []);
    assert.deepEqual((await readdir(join(fx.root, 'files', 't'))).sort(), ['a.txt', 'l'], 'nothing was added to the pushed tree either');
  });

  it('a symlink a local user planted under the files directory is refused, at any depth, before anything is created', async () => {
    const outside = join(fx.dir, 'outside-2');
    await mkdir(outside);
    const files = join(fx.root, 'files');
    await symlink(outside, join(files, 'planted'));
    await mkdir(join(files, 'real'), { recursive: true });
    await symlink(outside, join(files, 'real', 'inner'));

    const src = join(fx.dir, 'payload');
    await writeFile(src, pseudoRandom(200 * 1024, 8));
    for (const remote of ['planted/evil.sh', 'planted/new/deep/evil.sh', 'real/inner/evil.sh', 'real/inner/new/evil.sh']) {
      const r = await runCli(['push', src, `${fx.server.url}/${remote}`]);
      assert.equal(r.code, 2, `${remote}: ${r.stderr}`);
      assert.match(r.stderr, /is a symbolic link on the server/);
      assert.doesNotMatch(r.stderr, new RegExp(fx.root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'the server root is not revealed');
    }
    const sub = join(fx.dir, 'subtree');
    await mkdir(sub);
    await writeFile(join(sub, 'y'), 'y');
    const t = await runCli(['push', sub, `${fx.server.url}/planted/tree`]);
    assert.equal(t.code, 2, t.stderr);

    const r = await stageRace(fx.server.url, 'planted/staged.bin', pseudoRandom(2 * 1024 * 1024, 9), outside);
    assert.notEqual(r, 'wrote outside', 'the stage wrote through the symlink');
    assert.equal((r as { status: number }).status, 400);
    assert.deepEqual(await listAll(outside), []);

    // A planted symlink as the target itself is refused too (a commit would chmod through it).
    await symlink(join(outside, 'victim'), join(files, 'victim'));
    const v = await runCli(['push', src, `${fx.server.url}/victim`]);
    assert.equal(v.code, 2, v.stderr);
    assert.deepEqual(await listAll(outside), []);
  });

  it('a tree manifest placing an entry below its own symlink entry is refused before anything is made', async () => {
    const outside = join(fx.dir, 'outside-3');
    await mkdir(outside);
    const data = Buffer.from('payload');
    const digest = digestOf('sha256', data);
    const manifest = await buildRaw([
      { type: RAW_SYMLINK, path: 'l', target: outside },
      { type: RAW_FILE, path: 'l/x', mode: 0o755, size: BigInt(data.length), chunks: [{ length: data.length, digest }], digest },
    ]);
    const res = await rawRequest(fx.server.url, 'PUT', '/v1/manifests/crafted', manifest);
    assert.equal(res.status, 400, res.body.toString());
    assert.equal(JSON.parse(res.body.toString()).code, 'XFER_MANIFEST_CORRUPT');
    // The same body as a tree stage streams it.
    const body = manifest.subarray(HEADER_BYTES, manifest.length - TRAILER_BYTES);
    const stage = await rawRequest(fx.server.url, 'POST', '/v1/stage/crafted?algorithm=sha256&kind=tree&chunker=fixed&size=4096', body);
    assert.equal(stage.status, 400, stage.body.toString());
    assert.equal(JSON.parse(stage.body.toString()).code, 'XFER_MANIFEST_CORRUPT');
    assert.deepEqual(await listAll(outside), []);
    await assert.rejects(lstat(join(fx.root, 'files', 'crafted')));
  });

  it('files the server materializes lose their setuid and setgid bits, and the quick check still keeps them', async () => {
    const tree = join(fx.dir, 'suid');
    await mkdir(tree);
    await writeFile(join(tree, 'tool'), pseudoRandom(20 * 1024, 10));
    await chmod(join(tree, 'tool'), 0o6755);
    await writeFile(join(tree, 'big'), pseudoRandom(200 * 1024, 11));
    await chmod(join(tree, 'big'), 0o4711);
    const file = join(fx.dir, 'suid-file');
    await writeFile(file, pseudoRandom(50 * 1024, 12));
    await chmod(file, 0o4755);
    for (let round = 0; round < 2; round++) {
      const p = await runCli(['push', tree, `${fx.server.url}/`]);
      assert.equal(p.code, 0, p.stderr);
      const f = await runCli(['push', file, `${fx.server.url}/suid-file`]);
      assert.equal(f.code, 0, f.stderr);
    }
    const files = join(fx.root, 'files');
    assert.equal((await stat(join(files, 'suid', 'tool'))).mode & 0o7777, 0o755);
    assert.equal((await stat(join(files, 'suid', 'big'))).mode & 0o7777, 0o711);
    assert.equal((await stat(join(files, 'suid-file'))).mode & 0o7777, 0o755);
    // The manifest keeps the bits: a pull gets them back.
    const back = join(fx.dir, 'pulled');
    const pl = await runCli(['pull', `${fx.server.url}/suid`, back]);
    assert.equal(pl.code, 0, pl.stderr);
    assert.equal((await stat(join(back, 'tool'))).mode & 0o7777, 0o6755);
    assert.ok((await readFile(join(back, 'big'))).equals(await readFile(join(tree, 'big'))));

    // An unchanged re-push links the committed files (same inode) instead of rebuilding them.
    const before = await stat(join(files, 'suid', 'big'));
    const again = await runCli(['push', tree, `${fx.server.url}/`]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal((await stat(join(files, 'suid', 'big'))).ino, before.ino, 'the unchanged file was rebuilt: the quick check saw a mode change');
  });
});
