import { strict as assert } from 'node:assert';
import { connect } from 'node:http2';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createChunker } from '../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { digestOf } from '../src/hash/digest.js';
import { ManifestWriter } from '../src/manifest/writer.js';
import { openManifestFile } from '../src/manifest/reader.js';
import type { ChunkRecord, EntryMeta } from '../src/manifest/types.js';
import { StageHub, UnchangedError } from '../src/server/stage.js';
import { STAGE_END_BYTES, STAGE_RECORD_BYTES } from '../src/store/stage-format.js';
import { LocalStore } from '../src/store/local.js';
import { cutAll } from './helpers/chunks.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';

const MiB = 1024 * 1024;

/** The stage list of `data` as push would send it; `digest` overrides the end record's. */
function stageList(data: Buffer, digest = digestOf('blake3', data)): Buffer {
  const parts: Buffer[] = [];
  let o = 0;
  for (const len of cutAll(createChunker(DEFAULT_CHUNKER), data)) {
    const r = Buffer.alloc(STAGE_RECORD_BYTES);
    r.writeUInt32BE(len, 0);
    digestOf('blake3', data.subarray(o, o + len)).copy(r, 4);
    parts.push(r);
    o += len;
  }
  const end = Buffer.alloc(STAGE_END_BYTES);
  end.writeBigUInt64BE(BigInt(data.length), 4);
  Buffer.from(digest).copy(end, 12);
  return Buffer.concat([...parts, end]);
}

function stagePath(name: string, size: number): string {
  return `/v1/stage/${name}?algorithm=blake3&mode=420&mtimeMs=1700000000000&size=${size}`;
}

/** Files in `dir` whose names mark them as staging copies (`.xfer-...`). */
async function stagingLeftovers(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith('.xfer-'));
}

async function eventually(what: string, check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('server stages: a pushed file is rebuilt while its chunks arrive', () => {
  const fx = useServer('xfer-stage-');

  it('first and incremental pushes of a file are built by their stages and swapped in at commit', async () => {
    const src = join(fx.dir, 'volume.bin');
    const v1 = pseudoRandom(24 * MiB, 71);
    await writeFile(src, v1);
    await utimes(src, 1_600_000_000, 1_600_000_000);
    const before0 = fx.server.stats();
    const p1 = await runCli(['push', src, `${fx.server.url}/ct/volume.bin`, '--json']);
    assert.equal(p1.code, 0, p1.stderr);
    const target = join(fx.root, 'files', 'ct', 'volume.bin');
    assert.ok((await readFile(target)).equals(v1));
    assert.equal((await stat(target)).mtimeMs, 1_600_000_000_000, 'the entry mtime is kept');
    let s = fx.server.stats();
    assert.equal(s.commits - before0.commits, 1);
    assert.equal(s.commitsStaged - before0.commitsStaged, 1, 'the commit swapped in the staged file');

    // Overwrites and an insertion: the stage reuses the old target in place and takes the
    // new chunks from their (delta) uploads.
    const v2 = Buffer.concat([v1.subarray(0, 7 * MiB), pseudoRandom(5000, 3), v1.subarray(7 * MiB)]);
    for (const off of [MiB + 17, 15 * MiB, 23 * MiB + 5]) pseudoRandom(4096, off).copy(v2, off);
    await writeFile(src, v2);
    const p2 = await runCli(['push', src, `${fx.server.url}/ct/volume.bin`, '--json']);
    assert.equal(p2.code, 0, p2.stderr);
    assert.ok(JSON.parse(p2.stdout).chunksSent < 20);
    assert.ok((await readFile(target)).equals(v2));
    s = fx.server.stats();
    assert.equal(s.commitsStaged - before0.commitsStaged, 2);
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files', 'ct')), []);

    // Pushing the same content again: the stage finds the committed chunk list repeated and
    // builds nothing; the commit keeps the very file (same inode).
    const inode = (await stat(target)).ino;
    const p3 = await runCli(['push', src, `${fx.server.url}/ct/volume.bin`, '--json']);
    assert.equal(p3.code, 0, p3.stderr);
    assert.equal(JSON.parse(p3.stdout).chunksSent, 0);
    assert.ok((await readFile(target)).equals(v2));
    assert.equal((await stat(target)).ino, inode, 'the unchanged target was not rewritten');
    s = fx.server.stats();
    assert.equal(s.commits - before0.commits, 3);
    assert.equal(s.commitsStaged - before0.commitsStaged, 2);

    // A change in the last chunk only: the stage holds back until it, then builds it all.
    const v3 = Buffer.from(v2);
    v3[v3.length - 1] ^= 0xff;
    await writeFile(src, v3);
    const p4 = await runCli(['push', src, `${fx.server.url}/ct/volume.bin`, '--json']);
    assert.equal(p4.code, 0, p4.stderr);
    assert.ok((await readFile(target)).equals(v3));
    assert.equal(fx.server.stats().commitsStaged - before0.commitsStaged, 3);
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files', 'ct')), []);
  });

  it('trees and standard input are not staged: their commit rebuilds them as before', async () => {
    const tree = join(fx.dir, 'series');
    await mkdir(tree, { recursive: true });
    for (let i = 0; i < 5; i++) await writeFile(join(tree, `im${i}.dcm`), pseudoRandom(300_000 + i, 80 + i));
    const before0 = fx.server.stats();
    const p = await runCli(['push', tree, `${fx.server.url}/series`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const data = pseudoRandom(3 * MiB, 90);
    const q = await runCli(['push', '-', `${fx.server.url}/stdin.bin`, '--json'], { input: data });
    assert.equal(q.code, 0, q.stderr);
    assert.ok((await readFile(join(fx.root, 'files', 'stdin.bin'))).equals(data));
    const s = fx.server.stats();
    assert.equal(s.commits - before0.commits, 2);
    assert.equal(s.commitsStaged - before0.commitsStaged, 0);
  });

  it('a stage whose file does not hash to the announced digest is refused and leaves nothing behind', async () => {
    const src = join(fx.dir, 'a.bin');
    const v1 = pseudoRandom(6 * MiB, 72);
    await writeFile(src, v1);
    assert.equal((await runCli(['push', src, `${fx.server.url}/a.bin`])).code, 0);
    // Every chunk is present; the end record claims another digest. (Under the same name
    // the list would repeat the committed one, and the stage would build nothing.)
    const r = await rawRequest(fx.server.url, 'POST', stagePath('a2.bin', v1.length), stageList(v1, Buffer.alloc(32, 0xaa)));
    assert.equal(r.status, 500, r.body.toString()); // XFER_VERIFY_FAILED maps to 500 (core/errors.ts)
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_VERIFY_FAILED');
    await assert.rejects(stat(join(fx.root, 'files', 'a2.bin')), { code: 'ENOENT' });
    const same = await rawRequest(fx.server.url, 'POST', stagePath('a.bin', v1.length), stageList(v1, Buffer.alloc(32, 0xaa)));
    assert.deepEqual(JSON.parse(same.body.toString()), { unchanged: true });
    assert.ok((await readFile(join(fx.root, 'files', 'a.bin'))).equals(v1));
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);
  });

  it('malformed stage lists and parameters get 400 with a clear code', async () => {
    const data = pseudoRandom(MiB, 73);
    const tooLong = Buffer.alloc(STAGE_RECORD_BYTES);
    tooLong.writeUInt32BE(64 * MiB, 0);
    const list = stageList(data);
    const badSize = Buffer.from(list);
    badSize.writeBigUInt64BE(BigInt(data.length + 1), list.length - STAGE_END_BYTES + 4);
    const cases: [string, Buffer][] = [
      [stagePath('m1.bin', data.length), tooLong],
      [stagePath('m2.bin', data.length), badSize],
      [stagePath('m3.bin', data.length), Buffer.concat([list, Buffer.alloc(4)])],
      ['/v1/stage/m4.bin?algorithm=blake3&mode=420&size=5', list],
      ['/v1/stage/m5.bin?algorithm=md5&mode=420&mtimeMs=0&size=5', list],
      [stagePath('../m6.bin', data.length), list],
    ];
    for (const [path, body] of cases) {
      const r = await rawRequest(fx.server.url, 'POST', path, body);
      assert.equal(r.status, 400, `${path}: ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body.toString()).code, 'XFER_INVALID_ARGUMENT', path);
    }
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);
  });

  it('a stage whose client goes away is discarded with its staging copy', async () => {
    const src = join(fx.dir, 'b.bin');
    const v1 = pseudoRandom(4 * MiB, 74);
    await writeFile(src, v1);
    assert.equal((await runCli(['push', src, `${fx.server.url}/b.bin`])).code, 0);
    const v2 = pseudoRandom(4 * MiB, 75); // chunks the server does not have: the stage waits for them
    const session = connect(fx.server.url);
    try {
      const req = session.request({ ':method': 'POST', ':path': stagePath('b.bin', v2.length) });
      req.on('error', () => {});
      const list = stageList(v2);
      req.write(list.subarray(0, list.length - STAGE_END_BYTES));
      await eventually('the stage has opened its staging copy', async () => (await stagingLeftovers(join(fx.root, 'files'))).length > 0);
      req.close(0x8); // CANCEL, as a killed client's reset
      await eventually('the staging copy is gone', async () => (await stagingLeftovers(join(fx.root, 'files'))).length === 0);
    } finally {
      session.destroy();
    }
    assert.ok((await readFile(join(fx.root, 'files', 'b.bin'))).equals(v1), 'the target is untouched');
    // and the next push of the target works as usual
    await writeFile(src, v2);
    const p = await runCli(['push', src, `${fx.server.url}/b.bin`]);
    assert.equal(p.code, 0, p.stderr);
    assert.ok((await readFile(join(fx.root, 'files', 'b.bin'))).equals(v2));
  });

  it('a newer push of the same target takes over from a stage still waiting for its chunks', async () => {
    const waiting = pseudoRandom(2 * MiB, 76);
    const stale = rawRequest(fx.server.url, 'POST', stagePath('c.bin', waiting.length), stageList(waiting));
    await eventually('the first stage has opened its staging copy', async () => (await stagingLeftovers(join(fx.root, 'files'))).length > 0);
    const src = join(fx.dir, 'c.bin');
    const data = pseudoRandom(3 * MiB, 77);
    await writeFile(src, data);
    const before0 = fx.server.stats();
    const p = await runCli(['push', src, `${fx.server.url}/c.bin`]);
    assert.equal(p.code, 0, p.stderr);
    const r = await stale;
    assert.ok(r.status >= 400, `the stale stage was answered ${r.status}`);
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_ABORTED');
    assert.equal(fx.server.stats().commitsStaged - before0.commitsStaged, 1);
    assert.ok((await readFile(join(fx.root, 'files', 'c.bin'))).equals(data));
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);
  });

  it('a tree pushed again keeps its unchanged files as they are (hard links), and rebuilds the others', async () => {
    const tree = join(fx.dir, 'study');
    await mkdir(join(tree, 'series1'), { recursive: true });
    const files = ['series1/a.dcm', 'series1/b.dcm', 'series1/c.dcm', 'd.dcm', 'e.dcm'];
    for (const [i, f] of files.entries()) await writeFile(join(tree, f), pseudoRandom(200_000 + i * 1000, 100 + i));
    assert.equal((await runCli(['push', tree, `${fx.server.url}/`])).code, 0);
    const served = (f: string) => join(fx.root, 'files', 'study', f);
    const inode = async (f: string) => (await stat(served(f))).ino;
    const before1 = new Map<string, number>();
    for (const f of files) before1.set(f, await inode(f));

    // a.dcm: content changed; b.dcm: same content, new mtime; c.dcm: damaged on the server
    // (its size changed there); d.dcm, e.dcm: untouched.
    await writeFile(join(tree, 'series1/a.dcm'), pseudoRandom(200_000, 555));
    await utimes(join(tree, 'series1/b.dcm'), 1_650_000_000, 1_650_000_000);
    await writeFile(served('series1/c.dcm'), 'tampered');
    const p = await runCli(['push', tree, `${fx.server.url}/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    for (const f of files) assert.ok((await readFile(served(f))).equals(await readFile(join(tree, f))), `${f} is the source's`);
    assert.equal(await inode('d.dcm'), before1.get('d.dcm'), 'an unchanged file is kept, not rewritten');
    assert.equal(await inode('e.dcm'), before1.get('e.dcm'));
    for (const f of ['series1/a.dcm', 'series1/b.dcm', 'series1/c.dcm']) assert.notEqual(await inode(f), before1.get(f), `${f} is rebuilt`);
    assert.equal((await stat(served('series1/b.dcm'))).mtimeMs, 1_650_000_000_000);
    assert.equal((await stat(served('d.dcm'))).nlink, 1, 'the old tree is gone: no second link remains');
  });
});

describe('StageHub: holding back while the list repeats the committed one', () => {
  /** A committed file of `data` (store + manifest) and a stage of the same list, holding back at most `max` records. */
  async function stageSameAs(dir: string, data: Buffer, max: number) {
    const store = await LocalStore.open(join(dir, 'store'), { create: true });
    const records: ChunkRecord[] = [];
    let o = 0;
    for (const len of cutAll(createChunker(DEFAULT_CHUNKER), data)) {
      const digest = digestOf('blake3', data.subarray(o, o + len));
      await store.put({ algorithm: 'blake3', digest }, data.subarray(o, o + len));
      records.push({ length: len, digest });
      o += len;
    }
    await store.flush();
    const manifest = join(dir, 'manifest');
    const w = await ManifestWriter.create(manifest, { kind: 'file', digestAlgorithm: 'blake3', chunker: DEFAULT_CHUNKER });
    const meta: EntryMeta = { type: 'file', path: '', mode: 0o644, mtimeMs: 1_700_000_000_000, size: data.length };
    await w.beginEntry(meta);
    await w.addChunks(records);
    await w.endEntry(data.length, digestOf('blake3', data));
    await w.finish();
    const target = join(dir, 'target.bin');
    await writeFile(target, data);
    const hub = new StageHub(store, max);
    const stage = hub.begin({ name: 'target.bin', algorithm: 'blake3', meta, target }, (async function* () {
      yield stageList(data);
    })(), new AbortController().signal, await openManifestFile(manifest));
    return { store, stage, records, target };
  }

  it('an unchanged list within the bound builds nothing; beyond it, the file is built', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-hold-'));
    try {
      const data = pseudoRandom(3 * MiB, 61);
      const small = await stageSameAs(join(dir, 'a'), data, 1 << 18);
      await assert.rejects(small.stage.result, UnchangedError);
      await small.store.close();

      const bounded = await stageSameAs(join(dir, 'b'), data, 4);
      assert.ok(bounded.records.length > 8);
      const inode = (await stat(bounded.target)).ino;
      const r = await bounded.stage.commit(async () => {});
      assert.equal(r.bytesTotal, data.length);
      assert.ok((await readFile(bounded.target)).equals(data));
      assert.notEqual((await stat(bounded.target)).ino, inode, 'built and swapped in, not held back to the end');
      await bounded.store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
