import { strict as assert } from 'node:assert';
import { connect } from 'node:http2';
import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { HEADER_BYTES, TRAILER_BYTES } from '../src/manifest/format.js';
import { openManifestFile } from '../src/manifest/reader.js';
import { StageHub, UnchangedError } from '../src/server/stage.js';
import { chunkerQuery, STAGE_END_BYTES, STAGE_RECORD_BYTES } from '../src/protocol/stage-format.js';
import { LocalStore } from '../src/store/local.js';
import { putChunksOf, writeFileManifest } from './helpers/chunks.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';
import { stageList } from './helpers/stage.js';

const MiB = 1024 * 1024;


/** The body of a manifest (what a tree stage streams): between the header and the trailer. */
function manifestBody(manifest: Buffer): Buffer {
  return manifest.subarray(HEADER_BYTES, manifest.length - TRAILER_BYTES);
}

function treeStagePath(name: string): string {
  return `/v1/stage/${name}?algorithm=blake3&kind=tree&${chunkerQuery(DEFAULT_CHUNKER)}`;
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

  it('standard input is not staged (its size is unknown): its commit rebuilds it as before', async () => {
    const before0 = fx.server.stats();
    const data = pseudoRandom(3 * MiB, 90);
    const q = await runCli(['push', '-', `${fx.server.url}/stdin.bin`, '--json'], { input: data });
    assert.equal(q.code, 0, q.stderr);
    assert.ok((await readFile(join(fx.root, 'files', 'stdin.bin'))).equals(data));
    const s = fx.server.stats();
    assert.equal(s.commits - before0.commits, 1);
    assert.equal(s.commitsStaged - before0.commitsStaged, 0);
  });

  it('a tree is built by its stage from its manifest body as the push writes it, and swapped in at commit', async () => {
    const tree = join(fx.dir, 'exam');
    await mkdir(join(tree, 'series1', 'empty-dir'), { recursive: true });
    await mkdir(join(tree, 'series2'), { recursive: true });
    const contents = new Map<string, Buffer>([
      ['series1/im0.dcm', pseudoRandom(40_000, 81)], // staged in memory on the server
      ['series1/im1.dcm', pseudoRandom(300_000, 82)],
      ['series2/volume.dcm', pseudoRandom(3 * MiB, 83)],
      ['empty.txt', Buffer.alloc(0)],
    ]);
    for (const [f, data] of contents) await writeFile(join(tree, f), data);
    await symlink('series2/volume.dcm', join(tree, 'latest'));
    await chmod(join(tree, 'series1/im1.dcm'), 0o640);
    await utimes(join(tree, 'series1/im0.dcm'), 1_600_000_000, 1_600_000_000);
    const before0 = fx.server.stats();
    const p = await runCli(['push', tree, `${fx.server.url}/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const served = (f: string) => join(fx.root, 'files', 'exam', f);
    for (const [f, data] of contents) assert.ok((await readFile(served(f))).equals(data), f);
    assert.equal(await readlink(served('latest')), 'series2/volume.dcm');
    assert.ok((await stat(served('series1/empty-dir'))).isDirectory());
    assert.equal((await stat(served('series1/im1.dcm'))).mode & 0o777, 0o640);
    assert.equal((await stat(served('series1/im0.dcm'))).mtimeMs, 1_600_000_000_000);
    let s = fx.server.stats();
    assert.equal(s.commits - before0.commits, 1);
    assert.equal(s.commitsStaged - before0.commitsStaged, 1, 'the commit swapped in the staged tree');
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);

    // Again with a change: staged again, the unchanged files linked from the committed tree.
    const inode = (await stat(served('series2/volume.dcm'))).ino;
    const changed = pseudoRandom(300_000, 84);
    await writeFile(join(tree, 'series1/im1.dcm'), changed);
    const p2 = await runCli(['push', tree, `${fx.server.url}/`, '--json']);
    assert.equal(p2.code, 0, p2.stderr);
    assert.ok((await readFile(served('series1/im1.dcm'))).equals(changed));
    assert.equal((await stat(served('series2/volume.dcm'))).ino, inode, 'an unchanged file is linked, not rewritten');
    s = fx.server.stats();
    assert.equal(s.commitsStaged - before0.commitsStaged, 2);
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);
  });

  it('a tree stage is swapped in only for the manifest whose body it read; any other commit rebuilds', async () => {
    // Two trees pushed (so every chunk is stored), their manifests as the server keeps them.
    for (const [name, seed] of [['t1', 91], ['t2', 92]] as const) {
      const dir = join(fx.dir, 'raw', name);
      await mkdir(join(dir, 'sub'), { recursive: true });
      await writeFile(join(dir, 'sub', 'a.bin'), pseudoRandom(150_000, seed));
      await writeFile(join(dir, 'b.bin'), pseudoRandom(2 * MiB, seed + 10));
      assert.equal((await runCli(['push', dir, `${fx.server.url}/`])).code, 0);
    }
    const m1 = (await rawRequest(fx.server.url, 'GET', '/v1/manifests/t1')).body;
    const m2 = (await rawRequest(fx.server.url, 'GET', '/v1/manifests/t2')).body;
    const body1 = Buffer.concat([manifestBody(m1), Buffer.from([0xff])]);

    // The body of t1 staged under r1, then t1's manifest committed there: swapped in.
    let before0 = fx.server.stats();
    const staged = rawRequest(fx.server.url, 'POST', treeStagePath('r1'), body1);
    await eventually('the stage has built its tree', async () => (await stagingLeftovers(join(fx.root, 'files'))).length > 0);
    const c1 = await rawRequest(fx.server.url, 'PUT', '/v1/manifests/r1', m1);
    assert.equal(c1.status, 200, c1.body.toString());
    assert.equal((await staged).status, 200);
    assert.equal(fx.server.stats().commitsStaged - before0.commitsStaged, 1);
    assert.ok((await readFile(join(fx.root, 'files', 'r1', 'b.bin'))).equals(await readFile(join(fx.dir, 'raw', 't1', 'b.bin'))));

    // The body of t1 staged under r2, t2's manifest committed there: the stage is dropped
    // and the commit rebuilds t2.
    before0 = fx.server.stats();
    const wrong = rawRequest(fx.server.url, 'POST', treeStagePath('r2'), body1);
    await eventually('the stage has built its tree', async () => (await stagingLeftovers(join(fx.root, 'files'))).length > 0);
    const c2 = await rawRequest(fx.server.url, 'PUT', '/v1/manifests/r2', m2);
    assert.equal(c2.status, 200, c2.body.toString());
    const w = await wrong;
    assert.equal(JSON.parse(w.body.toString()).code, 'XFER_ABORTED');
    const s = fx.server.stats();
    assert.equal(s.commits - before0.commits, 1);
    assert.equal(s.commitsStaged - before0.commitsStaged, 0);
    assert.ok((await readFile(join(fx.root, 'files', 'r2', 'b.bin'))).equals(await readFile(join(fx.dir, 'raw', 't2', 'b.bin'))));
    assert.ok((await readFile(join(fx.root, 'files', 'r2', 'sub', 'a.bin'))).equals(await readFile(join(fx.dir, 'raw', 't2', 'sub', 'a.bin'))));
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);
  });

  it('a tree stage whose client goes away is discarded with its staging tree', async () => {
    // A manifest whose chunks the server lacks (pushed to a local directory): its stage
    // builds what it can and waits for the rest.
    const dir = join(fx.dir, 'raw', 't4');
    await mkdir(join(dir, 'sub'), { recursive: true });
    await writeFile(join(dir, 'sub', 'a.bin'), pseudoRandom(100_000, 94));
    await writeFile(join(dir, 'b.bin'), pseudoRandom(MiB, 95));
    const local = join(fx.dir, 'raw', 'local');
    await mkdir(local, { recursive: true });
    assert.equal((await runCli(['push', dir, `${local}/`])).code, 0);
    const body = manifestBody(await readFile(join(local, '.xfer', 'manifests', 't4')));
    const session = connect(fx.server.url);
    try {
      const req = session.request({ ':method': 'POST', ':path': treeStagePath('t4') });
      req.on('error', () => {});
      req.write(body);
      await eventually('the stage has made its staging tree', async () => (await stagingLeftovers(join(fx.root, 'files'))).length > 0);
      req.close(0x8); // CANCEL, as a killed client's reset
      await eventually('the staging tree is gone', async () => (await stagingLeftovers(join(fx.root, 'files'))).length === 0);
    } finally {
      session.destroy();
    }
    await assert.rejects(stat(join(fx.root, 'files', 't4')), { code: 'ENOENT' });
  });

  it('malformed tree stages get 400 with a clear code and leave nothing behind', async () => {
    const dir = join(fx.dir, 'raw', 't3');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'x.bin'), pseudoRandom(100_000, 93));
    assert.equal((await runCli(['push', dir, `${fx.server.url}/`])).code, 0);
    const body = manifestBody((await rawRequest(fx.server.url, 'GET', '/v1/manifests/t3')).body);
    const end = Buffer.from([0xff]);
    const cases: [string, Buffer, string][] = [
      ['/v1/stage/q1?algorithm=blake3&kind=tree', Buffer.concat([body, end]), 'XFER_INVALID_ARGUMENT'], // no chunker
      ['/v1/stage/q2?algorithm=blake3&kind=tree&chunker=fastcdc2020&min=9&avg=8&max=7', Buffer.concat([body, end]), 'XFER_INVALID_ARGUMENT'],
      ['/v1/stage/q3?algorithm=blake3&kind=directory', Buffer.concat([body, end]), 'XFER_INVALID_ARGUMENT'],
      [treeStagePath('q4'), Buffer.concat([Buffer.from([0x07]), body, end]), 'XFER_MANIFEST_CORRUPT'], // unknown entry type
      [treeStagePath('q5'), Buffer.concat([body, end, Buffer.alloc(3)]), 'XFER_MANIFEST_CORRUPT'], // bytes after the end
      [treeStagePath('q6'), body.subarray(0, body.length - 5), 'XFER_MANIFEST_CORRUPT'], // ends inside an entry
    ];
    for (const [path, b, code] of cases) {
      const r = await rawRequest(fx.server.url, 'POST', path, b);
      assert.equal(r.status, 400, `${path}: ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body.toString()).code, code, path);
    }
    assert.deepEqual(await stagingLeftovers(join(fx.root, 'files')), []);
  });

  it('a stage whose file does not hash to the announced digest is refused and leaves nothing behind', async () => {
    const src = join(fx.dir, 'a.bin');
    const v1 = pseudoRandom(6 * MiB, 72);
    await writeFile(src, v1);
    assert.equal((await runCli(['push', src, `${fx.server.url}/a.bin`])).code, 0);
    // Every chunk is present; the end record claims another digest. (Under the same name
    // the list would repeat the committed one, and the stage would build nothing.)
    const r = await rawRequest(fx.server.url, 'POST', stagePath('a2.bin', v1.length), stageList(v1, Buffer.alloc(32, 0xaa)));
    assert.equal(r.status, 422, r.body.toString()); // XFER_VERIFY_FAILED: the client's data is wrong (core/errors.ts)
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
    const records = await putChunksOf(store, data);
    await store.flush();
    const manifest = join(dir, 'manifest');
    const meta = await writeFileManifest(manifest, data, records);
    const target = join(dir, 'target.bin');
    await writeFile(target, data);
    const hub = new StageHub(store, max);
    const stage = hub.begin({ kind: 'file', name: 'target.bin', algorithm: 'blake3', meta, target }, (async function* () {
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
