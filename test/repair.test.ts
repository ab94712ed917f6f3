/*
 * Repair (issue 16, item 6), the measured bar: one flipped byte where a store keeps a
 * chunk, on each store kind (a local destination's pack, a server's rebuilt file, which
 * holds its current tree's chunks (server/held.ts), a store-only server's pack, an S3
 * store's pack on moto), is found by verify, named with the file it breaks, and healed by
 * the next push of the tree (the verify's read sets the damaged chunk aside, or lists it in
 * the server root's held/damaged, so the push stores it again): verify is clean afterwards
 * and a pull is bit-identical. And a push to a server that needs a chunk the server holds
 * damaged, unknown to anyone, succeeds: the server finds it at the commit, sets it aside,
 * and the client sends it again from its source.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { pull, push } from '../src/api.js';
import { digestToHex, type ChunkId } from '../src/core/ids.js';
import { verify } from '../src/inspect.js';
import { LocalStore, SET_ASIDE_RECHECK_MS } from '../src/store/local.js';
import { PACK_MAGIC, PACK_RECORD_HEADER_BYTES } from '../src/store/pack.js';
import { heldChunkPlaces } from '../src/server/held.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { runCli } from './helpers/cli.js';
import { damageStoredChunk, storedChunks } from './helpers/damage.js';
import { pseudoRandom } from './helpers/gen.js';
import { listKeys, motoMissing, useS3Service } from './helpers/s3.js';
import { useServer } from './helpers/server.js';

const FILES = ['a.bin', 'b.bin', 'c.bin'];
const FILE_BYTES = 200 * 1024;

/** A tree of FILES, distinct random content each (another `seed`: content no other such tree has). */
async function makeTree(dir: string, seed = 100): Promise<Map<string, Buffer>> {
  await mkdir(dir, { recursive: true });
  const data = new Map(FILES.map((n, i) => [n, pseudoRandom(FILE_BYTES, seed + i)]));
  for (const [n, d] of data) await writeFile(join(dir, n), d);
  return data;
}

/** The file of `tree` whose content holds `chunk`. */
function fileHolding(tree: Map<string, Buffer>, chunk: Buffer): string {
  const found = [...tree].filter(([, d]) => d.includes(chunk)).map(([n]) => n);
  assert.equal(found.length, 1);
  return found[0]!;
}

/** Asserts the pulled tree at `dir` is `tree`, byte for byte. */
async function assertTree(dir: string, tree: Map<string, Buffer>): Promise<void> {
  for (const [n, d] of tree) assert.ok((await readFile(join(dir, n))).equals(d), `${n} pulled bit-identical`);
}

describe('repair: a flipped byte in a stored pack is found by verify, named, and healed by the next push', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-repair-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a local destination', async () => {
    const src = join(dir, 'local-src', 'tree');
    const tree = await makeTree(src);
    const dest = join(dir, 'local-dest');
    await mkdir(dest);
    assert.equal((await runCli(['push', src, `${dest}/`, '--quiet'])).code, 0);
    const storeDir = join(dest, '.xfer');
    const id = (await storedChunks(storeDir))[0]!;
    const chunk = await chunkBytes(storeDir, id);
    await damageStoredChunk(storeDir, id, 100);

    let r = await runCli(['verify', dest, '--json', '--read-data']);
    assert.equal(r.code, 1, r.stderr);
    const damaged = (JSON.parse(r.stdout) as { damaged: { path: string; kind: string; digest: string }[] }).damaged;
    assert.deepEqual(damaged.map((d) => [d.path, d.kind, d.digest]), [[fileHolding(tree, chunk), 'corrupt', digestToHex(id.digest)]]);

    r = await runCli(['push', src, `${dest}/`, '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(['verify', dest, '--read-data']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    r = await runCli(['pull', join(dest, 'tree'), join(dir, 'local-back'), '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    await assertTree(join(dir, 'local-back'), tree);
  });

  describe('a server', () => {
    const fx = useServer('xfer-repair-server-');

    it('damage in a rebuilt file (its mtime kept) found by xfer verify <root> (another process, the server running) is healed by the next plain push', async () => {
      const src = join(fx.dir, 'src', 'tree');
      const tree = await makeTree(src);
      const url = `${fx.server.url}/tree`;
      assert.equal((await runCli(['push', src, url, '--quiet'])).code, 0);
      const storeDir = join(fx.root, 'store');
      // The tree's files hold its chunks (one copy on disk, server/held.ts): the damage is in one of them.
      const { id, bytes: chunk } = await heldChunk(fx.root);
      await damageStoredChunk(storeDir, id, 100);

      const name = fileHolding(tree, chunk);
      // The chunk, and the rebuilt file it lies in (its whole-file digest).
      assert.deepEqual(await verifyRoot(fx.root, 'tree'), [`${name}: corrupt ${digestToHex(id.digest)}`, `${name}: file`]);
      // The verify appended it to held/damaged, which the server looks at this often.
      await new Promise((resolve) => setTimeout(resolve, SET_ASIDE_RECHECK_MS + 10));

      const r = await runCli(['push', src, url, '--quiet']);
      assert.equal(r.code, 0, r.stderr);
      const v = await runCli(['verify', `${fx.server.url}/`, '--read-data']);
      assert.equal(v.code, 0, `the server's own verify is clean: ${v.stdout}${v.stderr}`);
      assert.deepEqual(await verifyRoot(fx.root, 'tree'), []);
      assert.equal((await runCli(['pull', url, join(fx.dir, 'back'), '--quiet'])).code, 0);
      await assertTree(join(fx.dir, 'back'), tree);
    });

    it('a push needing a chunk the server holds damaged, found by nobody yet, succeeds: sent again at the commit', async () => {
      const src = join(fx.dir, 'src2', 'tree');
      // Content no other target has: only the first target's files hold it.
      const tree = await makeTree(src, 200);
      assert.equal((await runCli(['push', src, `${fx.server.url}/one`, '--quiet'])).code, 0);
      const storeDir = join(fx.root, 'store');
      // Damage a chunk of this tree where it lies (a rebuilt file of 'one', its mtime kept),
      // then push the same tree under another name: every chunk is "present", so only the
      // server's rebuild at the commit reads the bad one.
      const { id, bytes } = await heldChunk(fx.root, tree);
      await damageStoredChunk(storeDir, id, 100);

      const r = await runCli(['push', src, `${fx.server.url}/two`, '--quiet']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await verifyRoot(fx.root, 'two'), []);
      // The chunk is stored again (the second target's file holds it): every chunk of the
      // first target is whole again; its own rebuilt file stays damaged until it is pushed.
      assert.deepEqual(await verifyRoot(fx.root, 'one'), [`${fileHolding(tree, bytes)}: file`]);
      assert.equal((await runCli(['push', src, `${fx.server.url}/one`, '--quiet'])).code, 0);
      assert.deepEqual(await verifyRoot(fx.root, 'one'), [], 'the first target is whole again after its next push');
      assert.equal((await runCli(['pull', `${fx.server.url}/two`, join(fx.dir, 'back2'), '--quiet'])).code, 0);
      await assertTree(join(fx.dir, 'back2'), tree);

      // The same with --checksum, which today's bug report names.
      await damageStoredChunk(storeDir, await chunkOf(fx.root, tree), 200);
      const checked = await runCli(['push', '--checksum', src, `${fx.server.url}/three`, '--quiet']);
      assert.equal(checked.code, 0, checked.stderr);
      assert.deepEqual(await verifyRoot(fx.root, 'three'), []);
    });
  });

  describe('a store-only server (--no-files): its packs hold every chunk', () => {
    let root = '';
    let server: XferServer | undefined;
    before(async () => {
      root = join(dir, 'store-only-root');
      server = await createServer({ root, port: 0, storeOnly: true });
    });
    after(async () => {
      await server?.close();
    });

    it('pack damage found by xfer verify <root> (another process, the server running) is healed by the next push: the server reads the set-aside list', async () => {
      const src = join(dir, 'store-only-src', 'tree');
      const tree = await makeTree(src, 300);
      const url = `${server!.url}/tree`;
      assert.equal((await runCli(['push', src, url, '--quiet'])).code, 0);
      const storeDir = join(root, 'store');
      const id = (await storedChunks(storeDir))[0]!;
      const chunk = await chunkBytes(storeDir, id);
      await damageStoredChunk(storeDir, id, 100);

      assert.deepEqual(await verifyRoot(root, 'tree'), [`${fileHolding(tree, chunk)}: corrupt ${digestToHex(id.digest)}`]);
      await new Promise((resolve) => setTimeout(resolve, SET_ASIDE_RECHECK_MS + 10)); // the server looks at the set-aside list this often

      assert.equal((await runCli(['push', src, url, '--quiet'])).code, 0);
      assert.deepEqual(await verifyRoot(root, 'tree'), []);
      assert.equal((await runCli(['pull', url, join(dir, 'store-only-back'), '--quiet'])).code, 0);
      await assertTree(join(dir, 'store-only-back'), tree);
    });
  });

  describe('an S3 store', { skip: motoMissing() }, () => {
    const f = useS3Service('moto');
    const xfer = (...args: string[]) =>
      runCli([...args, '--s3-endpoint', f.service.endpoint!, '--s3-path-style'], {
        env: credentials,
      });

    const credentials = { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1' };
    let s3: { s3Endpoint: string; s3PathStyle: boolean };
    const saved: Record<string, string | undefined> = {};
    before(() => {
      s3 = { s3Endpoint: f.service.endpoint!, s3PathStyle: true };
      for (const [k, v] of Object.entries(credentials)) {
        saved[k] = process.env[k];
        process.env[k] = v;
      }
    });
    after(() => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    });

    it('a byte flipped in a pack object', async () => {
      const src = join(dir, 's3-src', 'tree');
      const tree = await makeTree(src);
      const base = `${f.service.base}repair/`;
      // The library for all but the verify that names the damage: each CLI run costs a start of the SDK.
      await push(src, base, s3);
      // The store is the bucket's root (the location's path names the target).
      const packs = (await listKeys(f.service, f.service.base)).filter((k) => k.startsWith('packs/'));
      assert.equal(packs.length, 1);
      // The pack's first chunk: its bytes start after the magic and one record header.
      const bucket = base.slice('s3://'.length).split('/')[0]!;
      const Key = packs[0]!;
      const body = Buffer.from(await (await f.service.client.send(new GetObjectCommand({ Bucket: bucket, Key }))).Body!.transformToByteArray());
      const first = PACK_MAGIC.length + PACK_RECORD_HEADER_BYTES;
      const length = body.readUInt32LE(PACK_MAGIC.length + 8);
      const chunk = Buffer.from(body.subarray(first, first + length));
      body[first + 100] ^= 0x10;
      await f.service.client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body }));

      const r = await xfer('verify', base, '--json', '--read-data');
      assert.equal(r.code, 1, r.stderr);
      const damaged = (JSON.parse(r.stdout) as { damaged: { path: string; kind: string }[] }).damaged;
      assert.deepEqual(damaged.map((d) => [d.path, d.kind]), [[fileHolding(tree, chunk), 'corrupt']]);

      await push(src, base, s3);
      assert.deepEqual((await verify(base, { ...s3, readData: true })).damaged, []);
      await pull(`${base}tree`, join(dir, 's3-back'), s3);
      await assertTree(join(dir, 's3-back'), tree);
    });
  });
});

/** The stored bytes of chunk `id` (read before any damage). */
async function chunkBytes(storeDir: string, id: ChunkId): Promise<Buffer> {
  const store = await LocalStore.open(storeDir, { create: false });
  try {
    return Buffer.from(await store.get(id));
  } finally {
    await store.close();
  }
}

/** A chunk a rebuilt file of the server root `root` holds (server/held.ts), with its bytes (read before any damage). */
async function heldChunk(root: string, tree?: Map<string, Buffer>): Promise<{ id: ChunkId; bytes: Buffer }> {
  const store = await LocalStore.open(join(root, 'store'), { create: false });
  try {
    for (const p of await heldChunkPlaces(root, store)) {
      const fh = await open(p.file, 'r');
      const bytes = Buffer.alloc(p.length);
      try {
        await fh.read(bytes, 0, p.length, p.offset);
      } finally {
        await fh.close();
      }
      if (!tree || [...tree.values()].some((d) => d.includes(bytes))) return { id: p.id, bytes };
    }
  } finally {
    await store.close();
  }
  throw new Error('no held chunk of the tree');
}

/** A chunk of `tree` a rebuilt file of the server root `root` holds. */
async function chunkOf(root: string, tree: Map<string, Buffer>): Promise<ChunkId> {
  return (await heldChunk(root, tree)).id;
}

/** The damage `xfer verify <root> --read-data` (another process) finds in target `name` (`<path>: <kind> <digest>`). */
async function verifyRoot(root: string, name: string): Promise<string[]> {
  const r = await runCli(['verify', root, '--read-data', '--json']);
  const report = JSON.parse(r.stdout) as { damaged: { manifest: string; path: string; kind: string; digest?: string }[] };
  assert.equal(r.code, report.damaged.length > 0 ? 1 : 0, r.stderr);
  return report.damaged.filter((d) => d.manifest === name).map((d) => `${d.path}: ${d.kind}${d.digest ? ` ${d.digest}` : ''}`);
}
