import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, open, readdir, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestToHex, type ChunkId } from '../src/core/ids.js';
import { isXferError, MemoryStore, push, verify, type VerifyProgress } from '../src/index.js';
import { heldChunkPlaces } from '../src/server/held.js';
import { createServer } from '../src/server/server.js';
import { LocalStore } from '../src/store/local.js';
import type { OpOptions } from '../src/store/store.js';
import { isOneLineError, runCli } from './helpers/cli.js';
import { damageStoredChunk, flipByte, storedChunks } from './helpers/damage.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, startServeProcess, useServer } from './helpers/server.js';

const KiB = 1024;
const MTIME_S = 1_700_000_000;

interface JsonReport {
  readonly chunksRead: number;
  readonly readData: string;
  readonly filesChecked: number;
  readonly damaged: { manifest: string; path: string; kind: string; digest?: string; message: string }[];
  readonly damagedChunks: { digest: string; kind: string; files: { manifest: string; path: string }[] }[];
}

/**
 * Flips a byte `at` bytes into every copy of chunk `digest` (hex) the rebuilt files of the
 * server root `root` hold, their mtimes put back to the nanosecond (damage their identity
 * does not show).
 */
async function damageEveryHeldCopy(root: string, digest: string, at: number): Promise<void> {
  const store = await LocalStore.open(join(root, 'store'), { create: false });
  let places;
  try {
    places = (await heldChunkPlaces(root, store)).filter((p) => digestToHex(p.id.digest) === digest);
  } finally {
    await store.close();
  }
  assert.ok(places.length > 0, `no rebuilt file holds ${digest}`);
  for (const p of places) await flipByte(p.file, p.offset + at, true);
}

/** A tree of three files, two of them the same bytes (their chunks shared), mtimes fixed. */
async function makeTree(dir: string, seed: number): Promise<string> {
  const tree = join(dir, 'tree');
  await mkdir(join(tree, 'sub'), { recursive: true });
  await writeFile(join(tree, 'a.bin'), pseudoRandom(300 * KiB, seed));
  await writeFile(join(tree, 'sub', 'twin.bin'), pseudoRandom(300 * KiB, seed));
  await writeFile(join(tree, 'other.bin'), pseudoRandom(200 * KiB, seed + 1));
  for (const f of ['a.bin', 'sub/twin.bin', 'other.bin']) await utimes(join(tree, f), MTIME_S, MTIME_S);
  return tree;
}

/** The chunk ids of one file as its own push stores them (a scratch store). */
async function chunksOf(file: string): Promise<Set<string>> {
  const store = new MemoryStore();
  await push(file, store);
  const out = new Set<string>();
  for await (const id of store.listChunks()) out.add(digestToHex(id.digest));
  return out;
}

describe('verify jobs on a local destination: existence from the index by default, data with --read-data', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-verify-jobs-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a chunk missing from the store is found without --read-data (no data read); --json names each chunk and every file it breaks', async () => {
    const work = join(dir, 'missing');
    const tree = await makeTree(work, 1);
    const dest = join(work, 'dest');
    await mkdir(dest);
    // The tree's chunks in one pack, then another file's in a second: the first pack goes.
    assert.equal((await runCli(['push', tree, `${dest}/`, '-q'])).code, 0);
    const packs = join(dest, '.xfer', 'packs');
    const first = await readdir(packs);
    const lone = join(work, 'lone.bin');
    await writeFile(lone, pseudoRandom(100 * KiB, 9));
    assert.equal((await runCli(['push', lone, `${dest}/`, '-q'])).code, 0);
    assert.equal((await runCli(['verify', dest])).code, 0);
    for (const f of first) await unlink(join(packs, f));

    const r = await runCli(['verify', dest, '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as JsonReport;
    assert.equal(report.chunksRead, 0, 'existence only: no chunk read');
    assert.equal(report.readData, 'none');
    const expected = new Set([...(await chunksOf(join(tree, 'a.bin'))), ...(await chunksOf(join(tree, 'other.bin')))]);
    assert.deepEqual(new Set(report.damagedChunks.map((c) => c.digest)), expected);
    for (const c of report.damagedChunks) {
      assert.equal(c.kind, 'missing');
      const files = c.files.map((f) => `${f.manifest}:${f.path}`).sort();
      // a.bin's chunks are sub/twin.bin's too: both files are named for each.
      assert.ok(files.length === 2 ? files.join() === 'tree:a.bin,tree:sub/twin.bin' : files.join() === 'tree:other.bin', files.join());
      for (const f of c.files) assert.ok(report.damaged.some((d) => d.digest === c.digest && d.manifest === f.manifest && d.path === f.path && d.kind === 'missing'));
    }
    const human = await runCli(['verify', dest]);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^DAMAGED tree\/sub\/twin\.bin: missing chunk [0-9a-f]{64}/m);
    assert.match(human.stdout, /^FAILED: 2 manifests, 4 files, .* problems \(\d+ damaged chunks\)$/m);
    // The other push's file is intact, and so is every rebuilt file.
    assert.ok(!report.damaged.some((d) => d.manifest === 'lone.bin' || d.kind === 'file'));
  });

  it('a flipped byte in a stored chunk is found only with --read-data, naming the chunk and its files', async () => {
    const work = join(dir, 'flip');
    const tree = await makeTree(work, 2);
    const dest = join(work, 'dest');
    await mkdir(dest);
    assert.equal((await runCli(['push', tree, `${dest}/`, '-q'])).code, 0);
    const shared = [...(await chunksOf(join(tree, 'a.bin')))][0]!;
    const victim = (await storedChunks(join(dest, '.xfer'))).find((id) => digestToHex(id.digest) === shared)!;
    await damageStoredChunk(join(dest, '.xfer'), victim, 100);

    const quick = await runCli(['verify', dest]);
    assert.equal(quick.code, 0, quick.stdout);
    const r = await runCli(['verify', dest, '--read-data', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as JsonReport;
    assert.deepEqual(report.damagedChunks.map((c) => [c.digest, c.kind, c.files.map((f) => f.path).sort()]), [[shared, 'corrupt', ['a.bin', 'sub/twin.bin']]]);
    assert.equal(report.damaged.length, 2);
    assert.ok(report.chunksRead > 0);
  });

  it('--read-data-subset n/t: the t runs read every chunk once between them; a corrupt chunk is found by exactly one', async () => {
    const work = join(dir, 'subset');
    const tree = await makeTree(work, 3);
    const dest = join(work, 'dest');
    await mkdir(dest);
    assert.equal((await runCli(['push', tree, `${dest}/`, '-q'])).code, 0);
    const all = await storedChunks(join(dest, '.xfer'));
    await damageStoredChunk(join(dest, '.xfer'), all[0]!, 10);
    const t = 3;
    let read = 0;
    const finders: number[] = [];
    for (let n = 1; n <= t; n++) {
      const r = await verify(dest, { readDataSubset: `${n}/${t}`, chunksOnly: true });
      assert.equal(r.readData, `${n}/${t}`);
      read += r.chunksRead;
      // Read as corrupt by one run; the runs after it find it set aside by that read (absent).
      if (r.damagedChunks.some((c) => c.digest === digestToHex(all[0]!.digest) && c.kind === 'corrupt')) finders.push(n);
      // Deterministic: the same part reads the same chunks each time.
      assert.equal((await verify(dest, { readDataSubset: `${n}/${t}`, chunksOnly: true })).chunksRead, r.chunksRead);
    }
    assert.equal(read, all.length, 'every stored chunk read by exactly one of the runs');
    assert.equal(finders.length, 1, `found by runs ${finders.join()}`);
    const everything = await verify(dest, { readDataSubset: '100%', chunksOnly: true });
    assert.equal(everything.chunksRead, all.length);
    for (const bad of ['0/3', '4/3', '0%', '101%', 'half']) {
      const r = await runCli(['verify', dest, '--read-data-subset', bad]);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.ok(isOneLineError(r.stderr), r.stderr);
    }
  });

  it('a rebuilt file modified on disk is reported: by its mtime or size without --read-data, by its content with it', async () => {
    const work = join(dir, 'rebuilt');
    const tree = await makeTree(work, 4);
    const dest = join(work, 'dest');
    await mkdir(dest);
    assert.equal((await runCli(['push', tree, `${dest}/`, '-q'])).code, 0);
    const copy = join(dest, 'tree', 'other.bin');
    const fh = await open(copy, 'r+');
    await fh.write(Buffer.from('changed'), 0, 7, 1000);
    await fh.close();
    let r = await runCli(['verify', dest, '--json']);
    assert.equal(r.code, 1, r.stdout);
    let report = JSON.parse(r.stdout) as JsonReport;
    assert.deepEqual(report.damaged.map((d) => [d.manifest, d.path, d.kind]), [['tree', 'other.bin', 'file']]);
    assert.match(report.damaged[0]!.message, /modified: mtime/);
    // Its mtime put back: only reading it tells.
    await utimes(copy, MTIME_S, MTIME_S);
    assert.equal((await runCli(['verify', dest])).code, 0);
    r = await runCli(['verify', dest, '--read-data', '--json']);
    assert.equal(r.code, 1, r.stdout);
    report = JSON.parse(r.stdout) as JsonReport;
    assert.deepEqual(report.damaged.map((d) => [d.path, d.kind]), [['other.bin', 'file']]);
    assert.match(report.damaged[0]!.message, /content differs/);
    // Gone altogether.
    await unlink(copy);
    r = await runCli(['verify', dest]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /DAMAGED tree\/other\.bin: file: the rebuilt file is missing/);
  });
});

describe('a server verifies itself (POST /v1/verify)', () => {
  const fx = useServer('xfer-verify-server-');

  it('checks its chunks and rebuilt files: a corrupt chunk at the server is named with its files, in its own words without its paths', async () => {
    const tree = await makeTree(fx.dir, 5);
    const url = `${fx.server.url}/backups/`;
    assert.equal((await runCli(['push', tree, url, '-q'])).code, 0);
    let r = await runCli(['verify', fx.server.url, '--read-data']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok: 1 manifest \(and 1 version\), 3 files, .*3 rebuilt files checked$/m);

    const shared = [...(await chunksOf(join(tree, 'a.bin')))][0]!;
    // Damaged where it lies: in both rebuilt files that hold it (one copy on disk,
    // server/held.ts), their mtimes kept (only a read finds it).
    await damageEveryHeldCopy(fx.root, shared, 50);
    assert.equal((await runCli(['verify', `${fx.server.url}/backups/tree`])).code, 0, 'existence only: the chunk is there');
    r = await runCli(['verify', `${fx.server.url}/backups/tree`, '--read-data', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as JsonReport;
    assert.deepEqual(report.damagedChunks.map((c) => [c.digest, c.kind, c.files.map((f) => `${f.manifest}:${f.path}`).sort()]), [
      [shared, 'corrupt', ['backups/tree:a.bin', 'backups/tree:sub/twin.bin']],
    ]);
    assert.ok(!r.stdout.includes(fx.root), 'no server path in the report');

    // A rebuilt file changed at the server, found without reading data.
    await writeFile(join(fx.root, 'files', 'backups', 'tree', 'other.bin'), 'tampered');
    r = await runCli(['verify', `${fx.server.url}/backups/`, '--json']);
    assert.equal(r.code, 1);
    // The chunk the read found corrupt was set aside by it: absent until a push stores it again.
    // The changed file no longer holds its chunks (server/held.ts): they are missing too.
    assert.deepEqual([...new Set((JSON.parse(r.stdout) as JsonReport).damaged.map((d) => `${d.path} ${d.kind}`))].map((x) => x.split(' ')), [
      ['a.bin', 'missing'],
      ['sub/twin.bin', 'missing'],
      ['other.bin', 'missing'],
      ['other.bin', 'file'],
    ]);
    assert.equal((await runCli(['push', tree, url, '-q'])).code, 0);
    assert.equal((await runCli(['verify', `${fx.server.url}/backups/`, '--chunks-only'])).code, 0);
  });

  it('the endpoint answers NDJSON ending in a report; a missing target is 404 and a bad subset 400', async () => {
    const res = await rawRequest(fx.server.url, 'POST', '/v1/verify?prefix=backups&chunks-only=1');
    assert.equal(res.status, 200);
    const lines = res.body.toString('utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.at(-1).report, res.body.toString());
    assert.equal((await rawRequest(fx.server.url, 'POST', '/v1/verify?prefix=nothing')).status, 404);
    assert.equal((await rawRequest(fx.server.url, 'POST', '/v1/verify?subset=0%2F2')).status, 400);
    assert.equal((await rawRequest(fx.server.url, 'POST', '/v1/verify?prefix=..%2Fx')).status, 400);
  });
});

/** A MemoryStore whose has() waits while `hold` is set (and ends with its signal). */
class HeldStore extends MemoryStore {
  hold: Promise<void> | undefined;
  entered = 0;
  override async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    this.entered++;
    if (this.hold) {
      await new Promise<void>((resolve, reject) => {
        options?.signal?.addEventListener('abort', () => reject(options.signal!.reason), { once: true });
        void this.hold!.then(resolve);
      });
    }
    return super.has(ids, options);
  }
}

describe('a server runs one verify at a time, ends it when its client goes, and asks for its token', () => {
  it('a second verify is refused while one runs; aborting the first frees the server; progress lines come meanwhile', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-verify-busy-'));
    const store = new HeldStore();
    const server = await createServer({ root: join(dir, 'root'), port: 0, store, token: 'sesame' });
    let release: (() => void) | undefined;
    try {
      await writeFile(join(dir, 'f.bin'), pseudoRandom(100 * KiB, 7));
      await push(join(dir, 'f.bin'), `${server.url}/f.bin`, { token: 'sesame' });
      store.entered = 0;
      store.hold = new Promise<void>((r) => (release = r));
      const controller = new AbortController();
      const seen: VerifyProgress[] = [];
      const first = verify(server.url, { token: 'sesame', signal: controller.signal, onProgress: (p) => seen.push(p) });
      first.catch(() => {});
      while (store.entered === 0) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 1300));
      assert.ok(seen.length >= 1, 'a progress line while the job runs');
      await assert.rejects(verify(server.url, { token: 'sesame', retries: 0, signal: AbortSignal.timeout(5000) }), (err) => isXferError(err) && /already running/.test(err.message));
      controller.abort();
      await assert.rejects(first, (err) => isXferError(err, 'XFER_ABORTED'));
      // The server saw its client go, ended that job, and takes the next one.
      store.hold = undefined;
      let report;
      for (let i = 0; i < 100 && !report; i++) {
        report = await verify(server.url, { token: 'sesame', retries: 0 }).catch((err) => {
          if (!/already running/.test((err as Error).message)) throw err;
          return new Promise<undefined>((r) => setTimeout(() => r(undefined), 20));
        });
      }
      assert.deepEqual(report?.damaged, []);
      const denied = await runCli(['verify', server.url]);
      assert.equal(denied.code, 12, denied.stderr);
      assert.equal((await runCli(['verify', server.url, '--token', 'sesame'])).code, 0);
    } finally {
      release?.();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('xfer serve --verify-every runs verify in the background and reports in its log', () => {
  it('logs "all intact", then the damage of a corrupt chunk (with --verify-subset 100%)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-verify-every-'));
    const root = join(dir, 'root');
    const serve = await startServeProcess(['--root', root, '--port', '0', '--verify-every', '150ms', '--verify-subset', '100%', '--log-format', 'json']);
    try {
      const src = join(dir, 'f.bin');
      await writeFile(src, pseudoRandom(150 * KiB, 8));
      assert.equal((await runCli(['push', src, `${serve.url}/f.bin`, '-q'])).code, 0);
      const waitFor = async (re: RegExp) => {
        for (let i = 0; i < 200 && !re.test(serve.stderr()); i++) await new Promise((r) => setTimeout(r, 50));
        assert.match(serve.stderr(), re);
      };
      await waitFor(/"msg":"scheduled verify: all intact".*"manifests":1|"manifests":1.*"msg":"scheduled verify: all intact"/);
      const [victim] = await storedChunks(join(root, 'store'));
      await damageStoredChunk(join(root, 'store'), victim!, 5);
      await waitFor(/scheduled verify: DAMAGE found/);
      // The target, and its versions (every commit is one: they share the chunk) after it.
      const warns = serve.stderr().split('\n').filter((l) => l.includes('verify found damage')).map((l) => JSON.parse(l) as { target: string; kind: string; digest: string });
      const record = warns.find((w) => w.target === 'f.bin')!;
      assert.ok(warns.some((w) => w.target.startsWith('f.bin@')), 'the version sharing the chunk is named too');
      assert.deepEqual([record.target, record.kind, record.digest], ['f.bin', 'corrupt', digestToHex(victim!.digest)]);
    } finally {
      assert.equal(await serve.stop(), 0);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a duration without a unit, or a subset without a schedule (exit 2)', async () => {
    for (const args of [['--verify-every', '24'], ['--verify-every', 'soon'], ['--verify-subset', '5%']]) {
      const r = await runCli(['serve', '--root', join(tmpdir(), 'xfer-never-made'), '--port', '0', ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
    }
  });
});
