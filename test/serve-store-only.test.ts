import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { remove } from '../src/targets.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { BIN, isOneLineError, runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest } from './helpers/server.js';
import { apparentBytes } from './helpers/server-root.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const MTIME_S = 1_700_000_000;
const SERVE_REFUSAL_WAIT_MS = 10_000;

/** Asserts that a server on these options refuses to start with a message matching `why` (one that starts is closed, not left to hold the test open). */
async function assertRefused(options: Parameters<typeof createServer>[0], why: RegExp): Promise<void> {
  let started: XferServer | undefined;
  try {
    started = await createServer(options);
  } catch (err) {
    assert.match((err as Error).message, why);
    return;
  }
  await started.close();
  assert.fail(`the server started on ${options.root}; expected a refusal matching ${why}`);
}

/**
 * `xfer serve` with `args`, expected to refuse to start: its exit code and stderr. One that
 * starts instead is stopped after SERVE_REFUSAL_WAIT_MS (code -1), not left to hang the test.
 */
async function serveRefusal(args: string[]): Promise<{ code: number; stderr: string }> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), SERVE_REFUSAL_WAIT_MS);
  const code = await new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
  clearTimeout(timer);
  return { code, stderr };
}

/** Regular files under `dir`, by path relative to it. */
async function filesUnder(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...(await filesUnder(join(dir, e.name), `${prefix}${e.name}/`)));
    else out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

describe('xfer serve --no-files: a store-only server keeps chunks, manifests and versions, and rebuilds nothing', () => {
  let dir: string;
  let root: string;
  let server: XferServer | undefined;
  /** The file pushed (twice: two versions) and the tree, as pushed last. */
  let file: string;
  let tree: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-store-only-'));
    root = join(dir, 'root');
    file = join(dir, 'vol.bin');
    tree = join(dir, 'tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.bin'), pseudoRandom(300 * KiB, 1));
    await writeFile(join(tree, 'sub', 'b.bin'), pseudoRandom(200 * KiB, 2));
    for (const f of ['a.bin', 'sub/b.bin']) await utimes(join(tree, f), MTIME_S, MTIME_S);
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a push of a file (two versions) and a tree stores one copy: no files/ in the root, the root about the unique bytes pushed; pulls are bit-identical, ls lists them', async () => {
    server = await createServer({ root, port: 0, storeOnly: true });
    const v1 = pseudoRandom(8 * MiB, 7);
    await writeFile(file, v1);
    await push(file, `${server.url}/backup/vol.bin`);
    const v2 = Buffer.from(v1);
    pseudoRandom(4 * KiB, 8).copy(v2, 3 * MiB);
    await writeFile(file, v2);
    await push(file, `${server.url}/backup/vol.bin`);
    await push(tree, `${server.url}/trees/t`);
    assert.equal(server.stats().commitsStaged, 0, 'no stage: GET /v1/info says stage: false');

    const entries = await readdir(root);
    assert.ok(!entries.includes('files'), `nothing rebuilt under the root: ${entries.join(', ')}`);
    // 8 MiB + one edited chunk + 500 KiB of tree, each once (a rebuilt copy would double it).
    const unique = v1.length + 500 * KiB;
    const used = await apparentBytes(root);
    assert.ok(used < unique * 1.1, `root holds ${used} bytes for ${unique} unique bytes pushed`);

    const out = join(dir, 'pulled');
    await mkdir(out);
    await pull(`${server.url}/backup/vol.bin`, join(out, 'vol.bin'));
    assert.ok((await readFile(join(out, 'vol.bin'))).equals(v2), 'the file pulls bit-identical');
    await pull(`${server.url}/trees/t`, join(out, 't'));
    assert.deepEqual(await filesUnder(join(out, 't')), ['a.bin', 'sub/b.bin']);
    for (const f of ['a.bin', 'sub/b.bin']) assert.ok((await readFile(join(out, 't', f))).equals(await readFile(join(tree, f))), `${f} pulls bit-identical`);

    const ls = await runCli(['ls', `${server.url}/`, '--json']);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /backup\/vol\.bin/);
    assert.match(ls.stdout, /trees\/t/);
  });

  it('verify is clean, read-data too, and its report says that no rebuilt file was checked, and why', async () => {
    for (const extra of [[], ['--read-data']]) {
      const r = await runCli(['verify', `${server!.url}/`, ...extra]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /^ok: .*rebuilt files not checked: the server stores chunks and manifests only \(xfer serve --no-files\)/m);
    }
    const json = await runCli(['verify', `${server!.url}/`, '--json']);
    const report = JSON.parse(json.stdout) as { rebuilt: boolean; rebuiltSkipped?: string; damaged: unknown[]; versions: number };
    assert.equal(report.rebuilt, false);
    assert.match(report.rebuiltSkipped ?? '', /--no-files/);
    assert.deepEqual(report.damaged, []);
    assert.ok(report.versions >= 2, 'the versions are kept and verified');
  });

  it('a stage sent anyway is refused with one line saying why (400), and nothing is rebuilt', async () => {
    const info = JSON.parse((await rawRequest(server!.url, 'GET', '/v1/info')).body.toString()) as { stage: boolean; stageTrees: boolean };
    assert.deepEqual([info.stage, info.stageTrees], [false, false]);
    const r = await rawRequest(server!.url, 'POST', '/v1/stage/x.bin?algorithm=blake3&mode=420&mtimeMs=0&size=0', Buffer.alloc(0));
    assert.equal(r.status, 400);
    assert.match(JSON.parse(r.body.toString()).message, /--no-files.*no stages/);
    assert.ok(!(await readdir(root)).includes('files'));
  });

  it('rm removes a target and its versions; gc then frees its chunks; the rest still pulls', async () => {
    assert.equal((await remove(`${server!.url}/backup/vol.bin`)).removed.length, 1);
    const before = await apparentBytes(root);
    const g = await runCli(['gc', `${server!.url}/`, '--grace', '0', '--json']);
    assert.equal(g.code, 0, g.stderr);
    assert.ok(JSON.parse(g.stdout).freedBytes >= 8 * MiB, g.stdout);
    assert.ok((await apparentBytes(root)) < before - 8 * MiB);
    const out = join(dir, 'pulled-after-gc');
    await pull(`${server!.url}/trees/t`, out);
    assert.ok((await readFile(join(out, 'a.bin'))).equals(await readFile(join(tree, 'a.bin'))));
  });

  it('the mode is the root\'s: restarted store-only it serves what it holds; without --no-files it is refused with one line naming the flag', async () => {
    await server!.close();
    server = undefined;
    assert.equal((await readFile(join(root, 'mode'), 'utf8')).trim(), 'store-only');
    await assertRefused({ root, port: 0 }, /store-only root .*serve it with --no-files/);
    const cli = await serveRefusal(['--root', root, '--port', '0']);
    assert.equal(cli.code, 2, cli.stderr);
    assert.ok(isOneLineError(cli.stderr), cli.stderr);
    assert.match(cli.stderr, /^xfer: .*--no-files/);
    assert.ok(!(await readdir(root)).includes('files'), 'the refused start made nothing');

    server = await createServer({ root, port: 0, storeOnly: true });
    const out = join(dir, 'pulled-after-restart');
    await pull(`${server.url}/trees/t`, out);
    assert.ok((await readFile(join(out, 'sub', 'b.bin'))).equals(await readFile(join(tree, 'sub', 'b.bin'))));
  });

  it('two servers starting at once on a new root in different modes: the first record made wins, the other start is refused', async () => {
    const race = join(dir, 'race-root');
    const starts = await Promise.allSettled([createServer({ root: race, port: 0 }), createServer({ root: race, port: 0, storeOnly: true })]);
    for (const s of starts) if (s.status === 'fulfilled') await s.value.close();
    assert.equal(starts.filter((s) => s.status === 'fulfilled').length, 1, 'exactly one started');
    const refused = starts.find((s) => s.status === 'rejected') as PromiseRejectedResult;
    const recorded = (await readFile(join(race, 'mode'), 'utf8')).trim();
    assert.match((refused.reason as Error).message, recorded === 'files' ? /holds rebuilt files/ : /store-only root/);
  });

  it('a root served with files (recorded, or from before the record: files/ there) is refused --no-files; --in-place-above with --no-files is refused', async () => {
    const filesRoot = join(dir, 'files-root');
    const s = await createServer({ root: filesRoot, port: 0 });
    await s.close();
    await assertRefused({ root: filesRoot, port: 0, storeOnly: true }, /holds rebuilt files .*serve it without --no-files/);
    await unlink(join(filesRoot, 'mode')); // a root from before the mode was recorded
    const cli = await serveRefusal(['--root', filesRoot, '--port', '0', '--no-files']);
    assert.equal(cli.code, 2, cli.stderr);
    assert.ok(isOneLineError(cli.stderr), cli.stderr);
    assert.match(cli.stderr, /^xfer: .*holds rebuilt files/);

    const fresh = join(dir, 'fresh-root');
    const r = await serveRefusal(['--root', fresh, '--port', '0', '--no-files', '--in-place-above', '1G']);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /^xfer: --in-place-above .*--no-files/);
  });
});
