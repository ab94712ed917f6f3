import { strict as assert } from 'node:assert';
import { mkdir, open, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { HeldStore } from '../src/server/held.js';
import { silentLogger } from '../src/server/log.js';
import { LocalStore } from '../src/store/local.js';
import { verifyManifests } from '../src/transfer/verify.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';

const MiB = 1024 * 1024;
const MTIME_S = 1_700_000_000;

/**
 * Overwrites `length` bytes of `path` at `offset` in place and puts its mtime back: size
 * and mtime say nothing changed (bit rot, or a local user's edit behind the server's back).
 */
async function damageKeepingMetadata(path: string, offset: number, length: number): Promise<void> {
  const st = await stat(path);
  const fh = await open(path, 'r+');
  try {
    await fh.write(pseudoRandom(length, 4242), 0, length, offset);
  } finally {
    await fh.close();
  }
  await utimes(path, st.atime, st.mtime);
  const after = await stat(path);
  assert.equal(after.size, st.size);
  assert.equal(after.mtimeMs, st.mtimeMs);
}

/**
 * The server's own check of its materialized copy of `name` (xfer verify's, run on its root,
 * with the chunks its rebuilt files hold: server/held.ts).
 */
async function damagedOnServer(root: string, name: string): Promise<string[]> {
  const store = await HeldStore.open(await LocalStore.open(join(root, 'store'), { create: false }), { root, filesDir: join(root, 'files'), log: silentLogger });
  try {
    const r = await verifyManifests(store, store, [name], { readData: true, targetOf: (n) => join(root, 'files', ...n.split('/')) });
    return r.damaged.map((d) => `${d.path || '(file)'}: ${d.kind}`);
  } finally {
    await store.close();
  }
}

describe('push --checksum to a server decides by content: a materialized copy damaged behind its size and mtime is repaired', () => {
  const fx = useServer('xfer-checksum-server-');

  it('a single file: a plain push keeps the damaged copy (the quick check), push --checksum rewrites it', async () => {
    const src = join(fx.dir, 'disk.img');
    const data = pseudoRandom(MiB + 300_000, 11);
    await writeFile(src, data);
    await utimes(src, MTIME_S, MTIME_S);
    const url = `${fx.server.url}/disk.img`;
    assert.equal((await runCli(['push', src, url])).code, 0);
    const served = join(fx.root, 'files', 'disk.img');
    assert.ok((await readFile(served)).equals(data));

    await damageKeepingMetadata(served, MiB / 2, 5000);
    // The file, and the chunks it holds that the damage hit (one copy on disk: server/held.ts).
    const damaged = await damagedOnServer(fx.root, 'disk.img');
    assert.ok(damaged.includes('(file): file') && damaged.every((d) => d === '(file): file' || d === '(file): corrupt'), damaged.join(', '));

    const plain = await runCli(['push', src, url]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.ok(!(await readFile(served)).equals(data), 'the quick check trusts size and mtime: the damage stays (documented)');

    const checked = await runCli(['push', '--checksum', src, url]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.ok((await readFile(served)).equals(data), '--checksum: the server re-read its copy and rewrote it');
    assert.deepEqual(await damagedOnServer(fx.root, 'disk.img'), []);
    assert.equal((await stat(served)).mtimeMs, MTIME_S * 1000);
  });

  it('a tree: a plain push keeps a damaged file, push --checksum rewrites it and keeps the others right', async () => {
    const tree = join(fx.dir, 'series');
    await mkdir(join(tree, 'sub'), { recursive: true });
    const files = new Map([
      ['a.dcm', pseudoRandom(200_000, 21)],
      ['sub/b.dcm', pseudoRandom(300_000, 22)],
      ['sub/c.dcm', pseudoRandom(150_000, 23)],
    ]);
    for (const [n, d] of files) {
      await writeFile(join(tree, n), d);
      await utimes(join(tree, n), MTIME_S, MTIME_S);
    }
    const url = `${fx.server.url}/t`;
    assert.equal((await runCli(['push', tree, url])).code, 0);
    const served = (n: string) => join(fx.root, 'files', 't', ...n.split('/'));

    await damageKeepingMetadata(served('sub/b.dcm'), 1000, 3000);
    // The file, and the chunks it holds that the damage hit (one copy on disk, a tree's files too: server/held.ts).
    const damaged = await damagedOnServer(fx.root, 't');
    assert.ok(damaged.includes('sub/b.dcm: file') && damaged.every((d) => d === 'sub/b.dcm: file' || d === 'sub/b.dcm: corrupt'), damaged.join(', '));

    const plain = await runCli(['push', tree, url]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.ok(!(await readFile(served('sub/b.dcm'))).equals(files.get('sub/b.dcm')!), 'the quick check keeps the damaged file (documented)');

    const checked = await runCli(['push', '-c', tree, url]);
    assert.equal(checked.code, 0, checked.stderr);
    for (const [n, d] of files) assert.ok((await readFile(served(n))).equals(d), `${n} is the source's`);
    assert.deepEqual(await damagedOnServer(fx.root, 't'), []);
  });

  it('checksum takes 0 or 1 only', async () => {
    const r = await rawRequest(fx.server.url, 'PUT', '/v1/manifests/x?checksum=yes', Buffer.alloc(0));
    assert.equal(r.status, 400);
    assert.match(r.body.toString(), /checksum must be 0 or 1/);
  });
});
